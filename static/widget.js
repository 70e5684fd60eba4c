/*
 * widget.js: the embeddable livefeed widget. Reference: docs/client.md.
 *
 *   <script src="https://HOST/static/widget.js" data-tool="flask" async></script>
 *
 * Renders in a shadow root right after its script tag (or into data-target), over
 * one LiveFeed connection per server shared by every widget on the page; it loads
 * livefeed.js from its own directory when the page has not. Every field of an event
 * is inserted as text or as a checked http(s) URL, never as HTML.
 *
 * Loaded without data-tool/data-tools it mounts nothing and only defines
 * globalThis.LiveFeedWidget ({mount, renderItem, FeedList, ...}), which the
 * dashboard uses to render items the same way.
 */
(() => {
  "use strict";
  // Read now: document.currentScript is only set while this script runs (async or not).
  const script = document.currentScript;

  function makeApi() {
    const TOOL = /^(\*|[a-z0-9][a-z0-9._-]{0,63})$/;
    const LOADING = Symbol.for("livefeed.widget.loading"); // one livefeed.js load per page
    const REMOVAL_CHECK_MS = 2000; // how often a widget checks it is still on the page

    // ---- pieces of text ------------------------------------------------------

    /** The URL if it parses and is http/https, else null. */
    function safeUrl(value) {
      if (typeof value !== "string" || !value) return null;
      try {
        const u = new URL(value);
        return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
      } catch {
        return null;
      }
    }

    /** "amazon-web-services" -> "Amazon Web Services"; "*" -> "All tools". */
    function toolName(slug) {
      if (slug === "*") return "All tools";
      return String(slug).split(/[-_]/).filter(Boolean)
        .map((w) => w[0].toUpperCase() + w.slice(1)).join(" ");
    }

    /** "started_using" -> "started using". */
    function verbText(verb) {
      return String(verb || "did something with").replace(/[_-]+/g, " ").trim();
    }

    function handleText(handle) {
      return "@" + String(handle || "someone").replace(/^@/, "");
    }

    function plural(n, word) {
      return `${n} ${word}${n === 1 ? "" : "s"} ago`;
    }

    /** Relative time of a UNIX-seconds timestamp: "just now", "5 min ago", "2 days ago". */
    function relativeTime(ts, now = Date.now()) {
      const s = Math.max(0, Math.round(now / 1000 - Number(ts)));
      if (!Number.isFinite(s)) return "";
      if (s < 10) return "just now";
      if (s < 60) return `${s} s ago`;
      const m = Math.floor(s / 60);
      if (m < 60) return `${m} min ago`;
      const h = Math.floor(m / 60);
      if (h < 24) return plural(h, "hour");
      const d = Math.floor(h / 24);
      return d < 14 ? plural(d, "day") : plural(Math.floor(d / 7), "week");
    }

    // ---- rendering: the only place event data becomes DOM --------------------

    function el(tag, className, text) {
      const node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined && text !== null) node.textContent = String(text);
      return node;
    }

    function avatar(person, small) {
      const box = el("span", small ? "avatar small" : "avatar");
      box.setAttribute("aria-hidden", "true"); // decorative: the handle is next to it
      const initial = () => {
        box.textContent = String(person.handle || "?").replace(/^@/, "").slice(0, 1).toUpperCase();
      };
      const src = safeUrl(person.avatar_url);
      if (!src) {
        initial();
        return box;
      }
      const img = el("img");
      img.alt = "";
      img.loading = "lazy";
      img.referrerPolicy = "no-referrer";
      img.src = src;
      img.addEventListener("error", () => { img.remove(); initial(); });
      box.append(img);
      return box;
    }

    function timeEl(ts) {
      const t = el("time", "when", relativeTime(ts));
      const date = new Date(Number(ts) * 1000);
      if (!Number.isNaN(date.getTime())) {
        t.dateTime = date.toISOString();
        t.title = date.toLocaleString();
      }
      t.dataset.ts = String(ts);
      return t;
    }

    function renderStory(li, d, ev, opts) {
      const author = d.author && typeof d.author === "object" ? d.author : {};
      const main = el("div", "main");
      const meta = el("p", "meta");
      meta.append(el("span", "handle", handleText(author.handle)), " ", el("span", "muted", "shared a post"));
      if (opts.showTool) meta.append(" ", el("span", "tool", toolName(ev.tool)));
      meta.append(" ", timeEl(ev.ts));
      main.append(meta);
      const who = [author.name, author.title].filter((x) => typeof x === "string" && x);
      if (who.length) main.append(el("p", "job", who.join(" · ")));
      const title = el("p", "title");
      const href = safeUrl(d.url);
      if (d.trending === true) title.append(el("span", "badge trending", "Trending"), " ");
      if (href) {
        const a = el("a", null, d.title || href);
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow ugc";
        title.append(a);
      } else {
        title.append(el("span", null, d.title || "(untitled)"));
      }
      main.append(title);
      if (d.body && opts.body !== false) main.append(el("p", "body", d.body));
      const tags = Array.isArray(d.tags) ? d.tags.filter((t) => typeof t === "string" && t) : [];
      if (tags.length) {
        const ul = el("ul", "tags");
        ul.setAttribute("aria-label", "Tags");
        for (const tag of tags.slice(0, 20)) ul.append(el("li", "tag", tag));
        main.append(ul);
      }
      li.append(avatar(author, false), main);
    }

    function renderActivity(li, d, ev, opts) {
      const actor = d.actor && typeof d.actor === "object" ? d.actor : {};
      const main = el("div", "main");
      const line = el("p", "line");
      line.append(
        el("span", "handle", handleText(actor.handle)),
        ` ${verbText(d.verb)} `,
        el("span", "target", toolName(d.tool || ev.tool)),
      );
      if (opts.showTool && d.tool !== ev.tool) line.append(" ", el("span", "tool", toolName(ev.tool)));
      line.append(" ", timeEl(ev.ts));
      main.append(line);
      li.append(avatar(actor, true), main);
    }

    /** An <li> for one event envelope. opts: showTool, body (default true). */
    function renderItem(ev, opts = {}) {
      const kind = ev.kind === "story" ? "story" : "activity";
      const li = el("li", `item ${kind}`);
      li.dataset.id = String(ev.id);
      li.dataset.tool = String(ev.tool);
      li.dataset.kind = kind;
      if (ev.channel) li.dataset.channel = String(ev.channel);
      const data = ev.data && typeof ev.data === "object" ? ev.data : {};
      if (kind === "story") renderStory(li, data, ev, opts);
      else renderActivity(li, data, ev, opts);
      return li;
    }

    /**
     * A list of items kept newest first (by `ts`) and at most `limit` long, without
     * repeats: by stream and id, and for stories also by (ts, author, title), since a
     * story published to several tools arrives once per tool (and so, several times
     * over the firehose). Relative times refresh every 15 s while the list is shown.
     */
    class FeedList {
      constructor(ul, { limit = 10, showTool = false, body = true } = {}) {
        this.ul = ul;
        this.limit = limit;
        this.opts = { showTool, body };
        this.keys = new Map(); // key -> li, both kinds of key
        this.timer = setInterval(() => {
          if (!this.ul.isConnected) clearInterval(this.timer);
          else this.refreshTimes();
        }, 15000);
      }

      static keysOf(ev) {
        const keys = [`${ev.channel || ev.tool} ${ev.id}`];
        if (ev.kind === "story" && ev.data && ev.data.author) {
          keys.push(JSON.stringify([ev.ts, ev.data.author.handle, ev.data.title]));
        }
        return keys;
      }

      /** Whether the list shows this event already (the same id, or the same story). */
      has(ev) {
        return FeedList.keysOf(ev).some((k) => this.keys.has(k));
      }

      /** Insert an event; returns its <li>, or null if it was a repeat or too old. */
      add(ev, { fresh = false } = {}) {
        if (this.has(ev)) return null;
        const keys = FeedList.keysOf(ev);
        const li = renderItem(ev, this.opts);
        li.dataset.ts = String(ev.ts);
        let next = this.ul.firstElementChild;
        while (next && Number(next.dataset.ts) >= Number(ev.ts)) next = next.nextElementSibling;
        this.ul.insertBefore(li, next);
        for (const k of keys) this.keys.set(k, li);
        li._livefeedKeys = keys;
        while (this.ul.children.length > this.limit) this.remove(this.ul.lastElementChild);
        if (!li.isConnected) return null;
        if (fresh) li.classList.add("fresh");
        return li;
      }

      remove(li) {
        for (const k of li._livefeedKeys || []) this.keys.delete(k);
        li.remove();
      }

      clear() {
        for (const li of [...this.ul.children]) this.remove(li);
      }

      get size() {
        return this.ul.children.length;
      }

      refreshTimes(now = Date.now()) {
        for (const t of this.ul.querySelectorAll("time[data-ts]")) {
          t.textContent = relativeTime(t.dataset.ts, now);
        }
      }
    }

    // ---- the embed ---------------------------------------------------------

    const numberOr = (text, fallback) => {
      const n = parseInt(text, 10);
      return Number.isNaN(n) ? fallback : n; // "0" is a number, not a missing value
    };

    function optionsFrom(ds) {
      const list = (s) => String(s || "").split(",").map((x) => x.trim()).filter(Boolean);
      // Slugs are lower case; "Flask" can only mean "flask" (the dashboard reads them so too).
      const tools = list(ds.tools || ds.tool).map((t) => t.toLowerCase()).filter((t) => {
        if (TOOL.test(t)) return true;
        console.warn(`livefeed widget: ignoring invalid tool ${JSON.stringify(t)}`);
        return false;
      });
      const kinds = list(ds.kinds || "story,activity").filter((k) => k === "story" || k === "activity");
      return {
        tools,
        items: Math.max(1, Math.min(100, numberOr(ds.items, 10))),
        kinds: kinds.length ? kinds : ["story", "activity"],
        theme: ["light", "dark", "auto"].includes(ds.theme) ? ds.theme : "auto",
        presence: !/^(off|false|no|0)$/i.test(ds.presence || "on"),
        token: ds.token || null,
        target: ds.target || null,
      };
    }

    function loadClient(src) {
      if (globalThis.LiveFeed) return Promise.resolve(globalThis.LiveFeed);
      if (!globalThis[LOADING]) {
        globalThis[LOADING] = new Promise((resolve, reject) => {
          const tag = document.createElement("script");
          tag.src = new URL("livefeed.js", src).href;
          tag.async = true;
          tag.onload = () => (globalThis.LiveFeed
            ? resolve(globalThis.LiveFeed)
            : reject(new Error("livefeed.js did not define LiveFeed")));
          tag.onerror = () => reject(new Error(`could not load ${tag.src}`));
          document.head.append(tag);
        });
      }
      return globalThis[LOADING];
    }

    // Hosts put on the page: one not on it now, but in here, was removed (one in <head>
    // waits for the body, and is not removed meanwhile).
    const placed = new WeakSet();

    function place(host, script, target) {
      let into = null;
      if (target) {
        // A selector the page got wrong must not throw into the page: warn, and
        // place the widget as if there were no data-target.
        try {
          into = document.querySelector(target);
        } catch {
          console.warn(`livefeed widget: data-target ${JSON.stringify(target)} is not a CSS selector`);
          target = null;
        }
      }
      if (target && !into && document.readyState === "loading") {
        // The target may come later in the document than this script (a script in
        // <head>, or an async one that ran early): look again once it is all parsed.
        document.addEventListener("DOMContentLoaded", () => place(host, script, target));
        return;
      }
      if (target && !into) console.warn(`livefeed widget: no element matches ${target}`);
      const put = (append) => {
        append();
        placed.add(host);
      };
      if (into) put(() => into.append(host));
      else if (script && script.parentNode && script.parentNode !== document.head) put(() => script.after(host));
      else if (document.body) put(() => document.body.append(host));
      else document.addEventListener("DOMContentLoaded", () => put(() => document.body.append(host)));
    }

    let sheet = null; // one constructed stylesheet shared by every widget on the page

    // A constructed stylesheet is not "inline style" to a Content-Security-Policy, so a
    // host page with a strict style-src still styles the widget; <style> is the fallback.
    function adoptStyles(root) {
      try {
        if (!sheet) {
          sheet = new CSSStyleSheet();
          sheet.replaceSync(CSS);
        }
        root.adoptedStyleSheets = [sheet];
      } catch {
        root.append(el("style", null, CSS));
      }
    }

    const ANNOUNCE_GAP = 10000; // ms between two messages of a widget's live region
    const EMPTY = "Nothing yet: new posts and activity appear here as they happen.";

    const STATUS = {
      idle: "Connecting…",
      connecting: "Connecting…",
      open: "Live",
      reconnecting: "Reconnecting…",
      closed: "Offline",
    };

    /** Mount a widget for `script` (its src locates the server) with optionsFrom() options;
     *  returns its host element, or null when there is no tool to show. */
    function mount(script, opts) {
      if (!opts.tools.length) {
        // Nothing to show: no empty box on the page, and no connection for nothing.
        console.warn("livefeed widget: no valid tool in data-tool/data-tools; nothing mounted");
        return null;
      }
      const host = document.createElement("livefeed-widget");
      host.dataset.theme = opts.theme;
      host.dataset.tools = opts.tools.join(",");
      const root = host.attachShadow({ mode: "open" }); // open, so tests can look inside
      const names = opts.tools.map(toolName).join(", ");
      adoptStyles(root);
      const box = el("section", "lf");
      box.setAttribute("aria-label", `Live feed: ${names}`);
      const head = el("header", "head");
      const title = el("p", "heading", names);
      const status = el("p", "status", STATUS.idle);
      status.dataset.testid = "state";
      status.dataset.state = "idle";
      head.append(title, status);
      const presence = el("p", "presence");
      presence.dataset.testid = "presence";
      presence.hidden = true;
      const ul = el("ul", "items");
      ul.setAttribute("role", "list"); // keep list semantics despite list-style: none (Safari)
      ul.setAttribute("aria-label", `Latest from ${names}`);
      const empty = el("p", "empty", EMPTY);
      const announcer = el("p", "sr-only");
      announcer.setAttribute("aria-live", "polite");
      announcer.dataset.testid = "announcer";
      box.append(head, presence, ul, empty, announcer);
      root.append(box);
      place(host, script, opts.target);

      const src = (script && script.src) || location.href;
      loadClient(src).then(
        (LiveFeed) => run(LiveFeed.shared({ url: new URL("../", src).href }), opts, { host, status, presence, ul, empty, announcer }),
        (err) => {
          status.textContent = "Unavailable";
          status.dataset.state = "closed";
          console.error("livefeed widget:", err);
        },
      );
      return host;
    }

    function summary(ev) {
      const d = ev.data || {};
      if (ev.kind === "story") return `New story by ${handleText((d.author || {}).handle)}: ${d.title}`;
      return `${handleText((d.actor || {}).handle)} ${verbText(d.verb)} ${toolName(d.tool || ev.tool)}`;
    }

    // The widgets living on each shared feed, so that the connection they opened is
    // closed when the last one goes. Each widget holds its tools as their own owner
    // (LiveFeed.subscribe's `owner`): removing one gives up only what no other widget,
    // and nothing the page's own code, still holds.
    const usage = new WeakMap(); // feed -> { widgets, started }

    function claim(feed, owner, tools, options) {
      let use = usage.get(feed);
      if (!use) usage.set(feed, (use = { widgets: 0, started: ["idle", "closed"].includes(feed.state) }));
      use.widgets += 1;
      feed.subscribe(tools, { ...options, owner });
    }

    function release(feed, owner, tools) {
      const use = usage.get(feed);
      feed.unsubscribe(tools, { owner }); // presence stops counting this viewer
      use.widgets -= 1;
      // The widgets opened this feed and the last one is gone: close the connection.
      if (use.started && !use.widgets && !feed.tools.length) {
        usage.delete(feed);
        feed.close();
      }
    }

    function run(feed, opts, ui) {
      const wanted = new Set(opts.tools);
      const list = new FeedList(ui.ul, { limit: opts.items, showTool: wanted.size > 1 || wanted.has("*") });
      let quietUntil = Date.now() + 3000; // a history replay is not news: do not announce it
      let pending = [];
      let announceTimer = null;
      const refused = new Map(); // tool -> error code, for tools the server would not subscribe

      const showEmpty = () => {
        ui.empty.hidden = list.size > 0;
        // Every tool refused (a private tool without a valid token, say): say so, rather
        // than wait "for the first post" forever.
        const text = opts.tools.every((t) => refused.has(t))
          ? `Not available (${[...new Set(refused.values())].join(", ")}).`
          : EMPTY;
        if (ui.empty.textContent !== text) ui.empty.textContent = text;
      };
      const add = (ev, fresh) => {
        const key = ev.channel || ev.tool;
        // The firehose has every tool's events: beside it, a tool's own copies are
        // repeats. (Unless the server refused the firehose: then they are all there is.)
        const firehose = wanted.has("*") && feed.tools.includes("*");
        if (firehose ? key !== "*" : !wanted.has(key)) return;
        if (!opts.kinds.includes(ev.kind)) return;
        const li = list.add(ev, { fresh });
        showEmpty();
        if (li && fresh) announce(ev);
      };
      // Batched so that a burst is one message, not a queue of interruptions, and at
      // most one message per ANNOUNCE_GAP: a busy feed is a summary now and then, not a
      // voice that never stops.
      let announcedAt = -Infinity;
      const announce = (ev) => {
        pending.push(ev);
        if (announceTimer) return;
        const wait = Math.max(1000, announcedAt + ANNOUNCE_GAP - Date.now());
        announceTimer = setTimeout(() => {
          ui.announcer.textContent = pending.length > 1 ? `${pending.length} new items` : summary(pending[0]);
          pending = [];
          announceTimer = null;
          announcedAt = Date.now();
        }, wait);
      };
      const showPresence = () => {
        const known = opts.tools.map((t) => feed.presence(t)).filter(Boolean);
        ui.presence.hidden = !opts.presence || known.length === 0;
        // Counts are per tool, and a viewer of this widget is in each of its tools: the
        // largest is the best figure (a sum would count every such viewer once per tool).
        const count = Math.max(0, ...known.map((p) => p.count));
        ui.presence.textContent = `${count} viewing now`;
        ui.presence.dataset.count = String(count);
      };
      const showState = ({ state, waitingForToken }) => {
        // A token that expired waits for the page's setToken(): not a reconnect under way.
        ui.status.textContent = waitingForToken ? "Token expired" : STATUS[state] || state;
        ui.status.dataset.state = state;
      };

      const listeners = {
        // Events during the quiet window are the history replay: listed, not highlighted.
        event: (ev) => add(ev, Date.now() > quietUntil),
        presence: (p) => wanted.has(p.tool) && showPresence(),
        state: showState,
        subscribed: (f) => {
          if (!wanted.has(f.tool)) return;
          quietUntil = Date.now() + 1500;
          if (refused.delete(f.tool)) showEmpty(); // allowed after all (a new token)
        },
        error: (e) => {
          if (!e || !wanted.has(e.tool)) return;
          refused.set(e.tool, e.code);
          console.warn(`livefeed widget: ${e.tool}: ${e.code}${e.message ? `: ${e.message}` : ""}`);
          showEmpty();
        },
      };
      for (const [type, fn] of Object.entries(listeners)) feed.on(type, fn);
      // Another widget may have subscribed these already: start from what it received.
      for (const key of wanted) for (const ev of feed.recent(key)) add(ev, false);
      // More history when some kinds are hidden, so that the list still fills up.
      const history = opts.kinds.length < 2 ? Math.min(100, opts.items * 3) : opts.items;
      if (opts.token) feed.setToken(opts.token); // one token per server and page: the last one wins
      const owner = Symbol("widget");
      claim(feed, owner, opts.tools, { history, presence: true });
      showState(feed);
      showPresence();
      showEmpty();
      feed.connect();

      // Once the host page removes the widget (a single-page app moving on), stop
      // listening and give up its subscriptions, so that it no longer counts as a viewer.
      const watch = setInterval(() => {
        if (ui.host.isConnected || !placed.has(ui.host)) return;
        clearInterval(watch);
        for (const [type, fn] of Object.entries(listeners)) feed.off(type, fn);
        release(feed, owner, opts.tools);
      }, REMOVAL_CHECK_MS);
    }

    return { mount, optionsFrom, renderItem, FeedList, safeUrl, toolName, verbText, relativeTime };
  }

  // Colours checked for WCAG AA (4.5:1 for text) against their own background.
  const CSS = `
:host { all: initial; display: block; contain: content; }
:host {
  --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --link: #0550ae;
  --chip-bg: #eff2f5; --chip-fg: #393f46; --hot-bg: #fff1e5; --hot-fg: #8a3200;
  --live: #1a7f37; --focus: #0969da; --fresh: #fff8c5;
}
:host([data-theme="dark"]) {
  --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #30363d; --link: #58a6ff;
  --chip-bg: #21262d; --chip-fg: #c9d1d9; --hot-bg: #3d1d00; --hot-fg: #ffb77c;
  --live: #3fb950; --focus: #58a6ff; --fresh: #2e2a12;
}
@media (prefers-color-scheme: dark) {
  :host([data-theme="auto"]) {
    --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #30363d; --link: #58a6ff;
    --chip-bg: #21262d; --chip-fg: #c9d1d9; --hot-bg: #3d1d00; --hot-fg: #ffb77c;
    --live: #3fb950; --focus: #58a6ff; --fresh: #2e2a12;
  }
}
.lf {
  box-sizing: border-box; max-width: 100%; padding: 12px 14px;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif;
  color: var(--fg); background: var(--bg); border: 1px solid var(--line); border-radius: 10px;
}
.lf *, .lf *::before { box-sizing: border-box; }
p { margin: 0; }
.head { display: flex; align-items: baseline; justify-content: space-between; gap: 8px; }
.heading { font-weight: 650; font-size: 15px; }
.status { font-size: 12px; color: var(--muted); white-space: nowrap; }
.status::before { content: ""; display: inline-block; width: 8px; height: 8px; margin-right: 6px;
  border-radius: 50%; background: var(--muted); vertical-align: 0; }
.status[data-state="open"]::before { background: var(--live); }
.presence { font-size: 12px; color: var(--muted); margin-top: 2px; }
.items { list-style: none; margin: 8px 0 0; padding: 0; }
.item { display: flex; gap: 10px; padding: 10px 0; border-top: 1px solid var(--line); }
.item:first-child { border-top: 0; }
.fresh { animation: fresh 2.5s ease-out; }
@keyframes fresh { from { background: var(--fresh); } to { background: transparent; } }
@media (prefers-reduced-motion: reduce) { .fresh { animation: none; } }
.avatar { flex: none; width: 32px; height: 32px; border-radius: 50%; overflow: hidden;
  display: grid; place-items: center; background: var(--chip-bg); color: var(--chip-fg);
  font-weight: 650; font-size: 14px; }
.avatar.small { width: 24px; height: 24px; font-size: 12px; }
.avatar img { width: 100%; height: 100%; object-fit: cover; }
.main { min-width: 0; flex: 1; overflow-wrap: anywhere; }
.meta, .line { color: var(--fg); }
.handle { font-weight: 600; }
.muted, .name, .job, .when { color: var(--muted); }
.job { font-size: 12px; }
.when { font-size: 12px; white-space: nowrap; }
.tool { font-size: 11px; padding: 0 6px; border-radius: 999px; border: 1px solid var(--line); color: var(--muted); }
.target { font-weight: 600; }
.title { margin-top: 4px; font-weight: 600; font-size: 15px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
a:focus-visible { outline: 2px solid var(--focus); outline-offset: 2px; border-radius: 2px; }
.body { margin-top: 4px; color: var(--fg); display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; }
.tags { list-style: none; margin: 6px 0 0; padding: 0; display: flex; flex-wrap: wrap; gap: 4px; }
.tag { font-size: 12px; padding: 1px 8px; border-radius: 999px; background: var(--chip-bg); color: var(--chip-fg); }
.badge { font-size: 11px; font-weight: 650; padding: 1px 6px; border-radius: 4px; vertical-align: 1px; }
.trending { background: var(--hot-bg); color: var(--hot-fg); }
.empty { color: var(--muted); font-size: 13px; padding: 8px 0; }
.empty[hidden], .presence[hidden] { display: none; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  clip-path: inset(50%); white-space: nowrap; }
`;

  const api = globalThis.LiveFeedWidget || (globalThis.LiveFeedWidget = makeApi());
  if (script && (script.dataset.tool || script.dataset.tools)) {
    api.mount(script, api.optionsFrom(script.dataset));
  }
})();
