/*
 * dashboard.js: the live dashboard served at "/" (static/index.html), for a wall
 * screen. One column per stream (a tool, or "*" for every tool) with its items, its
 * presence count and an events-per-minute sparkline; the tools live in the URL
 * (/?tools=*,flask,kubernetes). Items are rendered by LiveFeedWidget.renderItem, so
 * the dashboard and the widget treat event data as text in exactly the same way.
 * Test hooks: docs/client.md.
 */
(() => {
  "use strict";
  const { LiveFeed, LiveFeedWidget: W } = globalThis;
  const TOOL = /^(\*|[a-z0-9][a-z0-9._-]{0,63})$/;
  const DEFAULT_TOOLS = ["*", "flask", "django", "kubernetes"];
  const MAX_COLUMNS = 12;
  const ITEMS = 50; // per column
  const HISTORY = 20;
  const MINUTES = 30; // sparkline window, one bucket per minute
  const QUIET_MS = 1500; // after `subscribed`, history is replaying: no highlight

  const $ = (sel) => document.querySelector(sel);
  const main = $("#columns");
  const input = $("#tools");
  const stateEl = $('[data-testid="state"]');
  const lastEventEl = $("#last-event");
  const template = $("#column-template");
  const feed = new LiveFeed({ history: HISTORY, presence: true });
  const columns = new Map(); // stream key -> column
  let lastEventAt = 0;

  // ---- tools in the URL ------------------------------------------------------

  function parseTools(text) {
    const seen = new Set();
    for (const raw of String(text || "").split(",")) {
      const tool = raw.trim().toLowerCase();
      if (TOOL.test(tool) && seen.size < MAX_COLUMNS) seen.add(tool);
    }
    return [...seen];
  }

  function toolsFromUrl() {
    const tools = parseTools(new URLSearchParams(location.search).get("tools"));
    return tools.length ? tools : DEFAULT_TOOLS;
  }

  function setTools(tools, { push = false } = {}) {
    const removed = [...columns.keys()].filter((key) => !tools.includes(key));
    const added = tools.filter((key) => !columns.has(key));
    for (const key of removed) {
      columns.get(key).section.remove();
      columns.delete(key);
    }
    for (const key of added) columns.set(key, makeColumn(key));
    for (const key of tools) main.append(columns.get(key).section); // URL order
    main.dataset.count = String(tools.length);
    feed.unsubscribe(removed);
    feed.subscribe(added);
    input.value = tools.join(", ");
    // Slugs and "*" need no escaping, and a readable URL is the point.
    const url = `${location.pathname}?tools=${tools.join(",")}${location.hash}`;
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
    showEmbed(tools);
  }

  // ---- columns -----------------------------------------------------------------

  function makeColumn(key) {
    const section = template.content.firstElementChild.cloneNode(true);
    const name = W.toolName(key);
    const slug = key === "*" ? "-all" : key; // "col--all": no slug starts with "-", so no tool "all" collides
    const hook = (sel, id) => {
      const node = section.querySelector(sel);
      node.dataset.testid = `${id}-${key}`;
      return node;
    };
    section.dataset.tool = key;
    section.setAttribute("aria-labelledby", `col-${slug}`);
    const title = section.querySelector(".col-title");
    title.id = `col-${slug}`;
    title.textContent = name;
    if (key !== "*") title.append(" ", Object.assign(document.createElement("span"), { className: "slug", textContent: key }));
    const remove = section.querySelector(".remove");
    remove.setAttribute("aria-label", `Remove ${name}`);
    remove.addEventListener("click", () => {
      const rest = [...columns.keys()].filter((k) => k !== key);
      setTools(rest.length ? rest : DEFAULT_TOOLS, { push: true });
    });
    const ul = hook(".items", "items");
    ul.setAttribute("aria-label", `Latest from ${name}`);
    const col = {
      key,
      section,
      count: hook(".count", "presence"),
      spark: hook(".spark", "spark"),
      epm: hook(".epm", "epm"),
      empty: section.querySelector(".empty"),
      list: new W.FeedList(ul, { limit: ITEMS, showTool: key === "*" }),
      times: [], // event timestamps (UNIX s) within the sparkline window
      quietUntil: Infinity, // set by `subscribed`
      dirty: false,
    };
    drawSpark(col);
    return col;
  }

  function markDirty(col) {
    if (col.dirty) return;
    col.dirty = true;
    requestAnimationFrame(() => {
      col.dirty = false;
      drawSpark(col);
    });
  }

  const SVG = "http://www.w3.org/2000/svg";

  function drawSpark(col, now = Date.now() / 1000) {
    const buckets = new Array(MINUTES).fill(0);
    col.times = col.times.filter((t) => now - t < MINUTES * 60);
    for (const t of col.times) {
      const age = Math.max(0, now - t); // a server clock slightly ahead: count it as now
      buckets[MINUTES - 1 - Math.floor(age / 60)] += 1;
    }
    const perMinute = buckets[MINUTES - 1];
    const peak = Math.max(1, ...buckets);
    const points = buckets.map((n, i) => [(i * 120) / (MINUTES - 1), 26 - (n / peak) * 23]);
    const line = points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("points", `0,28 ${line} 120,28`);
    area.setAttribute("class", "spark-area");
    const stroke = document.createElementNS(SVG, "polyline");
    stroke.setAttribute("points", line);
    stroke.setAttribute("class", "spark-line");
    col.spark.replaceChildren(area, stroke);
    col.spark.setAttribute("aria-label",
      `${perMinute} events in the last minute; peak ${buckets.reduce((a, b) => Math.max(a, b), 0)} per minute over ${MINUTES} minutes`);
    col.epm.textContent = String(perMinute);
  }

  // ---- the feed ----------------------------------------------------------------

  const STATE_TEXT = {
    idle: () => "Connecting…",
    connecting: () => "Connecting…",
    open: (s) => `Live · ${s.transport === "sse" ? "SSE" : "WebSocket"}`,
    reconnecting: (s) => (s.waitingForToken ? "Token expired"
      : `Reconnecting${s.delay ? ` in ${Math.max(1, Math.round(s.delay / 1000))} s` : ""}…`),
    closed: () => "Offline",
  };

  feed.on("state", (s) => {
    stateEl.dataset.state = s.state;
    stateEl.dataset.transport = s.transport || "";
    stateEl.textContent = STATE_TEXT[s.state](s);
  });

  feed.on("subscribed", (f) => {
    const col = columns.get(f.tool);
    if (col) col.quietUntil = Date.now() + QUIET_MS;
  });

  feed.on("event", (ev) => {
    const col = columns.get(ev.channel || ev.tool);
    if (!col) return;
    // A story on several tools reaches the firehose once per tool: one story, one count.
    const repeat = col.list.has(ev);
    col.list.add(ev, { fresh: Date.now() > col.quietUntil });
    col.empty.hidden = col.list.size > 0;
    const ts = Number(ev.ts);
    if (!repeat && Number.isFinite(ts)) col.times.push(ts);
    markDirty(col);
    if (!lastEventAt) lastEventEl.textContent = "Last event just now";
    lastEventAt = Date.now();
  });

  feed.on("presence", (p) => {
    const col = columns.get(p.tool);
    if (!col) return;
    col.count.textContent = String(p.count);
    col.count.dataset.count = String(p.count);
  });

  feed.on("error", (e) => {
    const col = e.tool && columns.get(e.tool);
    if (col) col.empty.textContent = `Not available (${e.code}).`;
    console.warn("livefeed:", e.code, e.message || "");
  });

  feed.on("gap", (g) => console.info(`livefeed: ${g.tool} resumed past kept history; replaying from the oldest kept event`));

  // ---- page ----------------------------------------------------------------------

  function showEmbed(tools) {
    const tool = tools.find((t) => t !== "*") || "flask";
    const src = new URL("static/widget.js", location.href).href;
    $("#embed").textContent = `<script src="${src}" data-tool="${tool}" async></script>`;
  }

  function tick() {
    for (const col of columns.values()) drawSpark(col);
    lastEventEl.textContent = lastEventAt
      ? `Last event ${W.relativeTime(lastEventAt / 1000)}` : "No events yet";
  }

  $("#picker").addEventListener("submit", (e) => {
    e.preventDefault();
    const tools = parseTools(input.value);
    setTools(tools.length ? tools : DEFAULT_TOOLS, { push: true });
  });
  addEventListener("popstate", () => setTools(toolsFromUrl()));

  setTools(toolsFromUrl());
  feed.connect();
  tick();
  setInterval(tick, 5000);
  globalThis.livefeedDashboard = { feed, columns }; // for the console and tests
})();
