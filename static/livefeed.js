/*
 * livefeed.js: the browser client for a livefeed server. Reference: docs/client.md.
 *
 * A classic script with no dependencies and no build step:
 *   <script src="https://HOST/static/livefeed.js"></script>  ->  window.LiveFeed
 *   import { LiveFeed } from "https://HOST/static/livefeed.mjs";  (a 5-line wrapper)
 * A file cannot be both a classic script and a module with `export` (that word is a
 * syntax error in a classic script), hence the wrapper. Evaluating this file twice
 * (a page tag plus a widget, or a tag plus the module) keeps the first copy, so
 * everything on a page shares one class and one LiveFeed.shared() registry.
 */
(() => {
  "use strict";
  if (globalThis.LiveFeed) return;

  const TOOL = /^(\*|[a-z0-9][a-z0-9._-]{0,63})$/;
  const MAX_HISTORY = 100;
  const RECENT = 100; // events kept per stream for recent(), so a late widget starts full
  // Client frames are capped at 4 KiB (CONTRACT.md "Limits"); 100 long slugs with
  // cursors are not, so subscribe/unsubscribe frames are split below this many chars.
  const FRAME_BUDGET = 3500;
  // SSE liveness: the server's `event: ping` comes every `interval` s (15 by default);
  // nothing at all for two intervals and this slack means the stream is dead.
  const SSE_PING_DEFAULT_MS = 15000;
  const SSE_SLACK_MS = 5000;
  // After the server's `rate_limited` (it answers the first frame over its rate and drops
  // the rest unanswered), subscribes not yet confirmed are sent again after this long.
  const RATE_RETRY_MS = 1000;
  const PAGE = Symbol("page"); // the owner of subscriptions made without one

  // What each close code means for the next attempt (CONTRACT.md "Close codes").
  // Any other code (1000, 1006 network loss, 1011...) is "retry": back off, resume.
  const CLOSE_ACTIONS = {
    1001: "resume", // server shutting down or restarting
    1012: "resume", // service restart
    4008: "resume", // slow consumer: we fell behind, the server dropped us
    4029: "later", // too many requests: back off longer
    4001: "token", // token expired: ask the app for a fresh one
    4003: "stop", // forbidden: do not reconnect
    1008: "stop", // policy violation: do not reconnect
    1009: "stop", // our frame was too large: the same frames would be refused again
  };
  const STOP_CODES = { 4003: "forbidden", 1008: "policy_violation", 1009: "frame_too_large" };

  // Where this file was loaded from: the server that serves /static/livefeed.js also
  // serves /ws and /sse. Null when evaluated as a module (no currentScript);
  // livefeed.mjs then fills LiveFeed.defaultUrl in from import.meta.url.
  const script = typeof document !== "undefined" ? document.currentScript : null;
  const scriptUrl = script && script.src ? new URL("../", script.src).href : null;

  /** Compare two `<ms>-<seq>` ids numerically: negative, 0 or positive. */
  function compareIds(a, b) {
    const [aMs, aSeq = "0"] = String(a).split("-");
    const [bMs, bSeq = "0"] = String(b).split("-");
    return compareDigits(aMs, bMs) || compareDigits(aSeq, bSeq);
  }

  // Digit strings compared by length, then text: exact at any size, unlike Number().
  function compareDigits(a, b) {
    a = a.replace(/^0+(?=\d)/, "");
    b = b.replace(/^0+(?=\d)/, "");
    if (a.length !== b.length) return a.length - b.length;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /**
   * Retry timer with exponential backoff and full jitter: the n-th schedule() waits
   * a uniform random time in [floor, floor + min(cap, base * 2^n)]. Full jitter
   * spreads the clients of a restarted server over the whole window instead of
   * bringing them back in waves. reset() once a connection has proved stable.
   */
  class RetryTimer {
    constructor(callback, { base = 1000, cap = 30000 } = {}) {
      this.callback = callback;
      this.base = base;
      this.cap = cap;
      this.tries = 0; // schedules since the last reset()
      this.timer = null;
    }

    schedule(floor = 0) {
      this.cancel();
      const delay = floor + Math.random() * Math.min(this.cap, this.base * 2 ** this.tries);
      this.tries += 1;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.callback();
      }, delay);
      return delay;
    }

    cancel() {
      clearTimeout(this.timer);
      this.timer = null;
    }

    reset() {
      this.tries = 0;
    }
  }

  function resolveBase(url) {
    const here = typeof location !== "undefined" ? location.href : undefined;
    // Last resort (livefeed.js imported as a module, not through livefeed.mjs): the
    // page's own server at its root, not the page's path with "/" appended.
    const base = url || LiveFeed.defaultUrl || (here && new URL("/", here).href);
    if (!base) throw new TypeError("livefeed: pass options.url");
    const u = new URL(base, here);
    if (u.protocol === "ws:") u.protocol = "http:";
    if (u.protocol === "wss:") u.protocol = "https:";
    if (!u.pathname.endsWith("/")) u.pathname += "/";
    u.search = "";
    u.hash = "";
    return u.href;
  }

  function toolList(tools) {
    const list = typeof tools === "string" ? tools.split(",") : Array.from(tools || []);
    return list.map((t) => String(t).trim()).filter(Boolean);
  }

  function clampHistory(n) {
    return Math.max(0, Math.min(MAX_HISTORY, Math.floor(Number(n) || 0)));
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  function report(err) {
    if (typeof reportError === "function") reportError(err);
    else setTimeout(() => { throw err; });
  }

  class LiveFeed {
    /**
     * options: url (server base; default: where livefeed.js was loaded from), tools,
     * history (0..100, default 20), presence (default true), token (string, or a
     * function returning a string or a Promise of one, called before every attempt),
     * transport ("auto" | "websocket" | "sse"), sseAfter (3), pingInterval (30000 ms,
     * 0 = off), pingTimeout (10000), connectTimeout (10000), stableAfter (10000),
     * retry ({base: 1000, cap: 30000}). Nothing happens until connect().
     */
    constructor(options = {}) {
      this.url = resolveBase(options.url);
      this.history = clampHistory(options.history ?? 20);
      this.presenceDefault = options.presence !== false;
      this.transportMode = options.transport || "auto";
      this.sseAfter = options.sseAfter ?? 3; // attempts without a welcome before "auto" tries SSE
      this.pingInterval = options.pingInterval ?? 30000;
      this.pingTimeout = options.pingTimeout ?? 10000;
      this.connectTimeout = options.connectTimeout ?? 10000;
      this.stableAfter = options.stableAfter ?? 10000; // open this long: backoff starts over
      this.slowFloor = options.slowFloor ?? 10000; // minimum wait after close 4029
      this.state = "idle"; // idle | connecting | open | reconnecting | closed
      this.transport = null; // "websocket" | "sse" while connecting or open
      this._token = options.token ?? null;
      this._subs = new Map(); // stream key ("flask", "*") -> {history, presence, confirmed, owners}
      // Streams the server refused as `forbidden`, kept with their owners: a new token
      // (setToken) or a new subscribe() of the key asks for them again.
      this._refused = new Map();
      this._refusedAtNextOpen = false; // a token function was set: ask for them then
      this._toSubscribe = new Set(); // changes of this task, sent together after it (_change)
      this._toUnsubscribe = new Set();
      this._changeQueued = false;
      this._cursors = new Map(); // stream key -> last id emitted or SSE position: resume point and dedupe bound
      this._presence = new Map(); // tool -> {tool, count, users}; users null until a full frame
      this._recent = new Map(); // stream key -> last RECENT events, oldest first
      this._listeners = new Map();
      this._retry = new RetryTimer(() => this._open(), options.retry);
      this._conn = null; // the current attempt; callbacks of older attempts see a mismatch and stop
      this._failures = 0; // consecutive attempts on this transport that never opened
      this._worked = { websocket: false, sse: false }; // a transport that once opened is kept
      this._useSse = this.transportMode === "sse" || typeof WebSocket === "undefined";
      this._stopped = true;
      this._awaitingToken = false; // closed with 4001 and only a static token to retry with
      this._toldToWait = false; // the last close was 4029: the wait is the server's
      this._ref = 0;
      this._pings = new Map(); // ref -> {resolve, reject}
      // Back online: retry now, unless the wait is the server's "reconnect later".
      this._onOnline = () => {
        if (this.state === "reconnecting" && !this._awaitingToken && !this._toldToWait) {
          this._retry.cancel();
          this._open();
        }
      };
      if (options.tools) this.subscribe(options.tools);
    }

    // ---- public API ------------------------------------------------------------

    /** Start connecting (and keep reconnecting until close()). */
    connect() {
      if (!this._stopped) return this;
      this._stopped = false;
      if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
      this._open();
      return this;
    }

    /** Stop for good; cursors are kept, so a later connect() resumes. */
    close() {
      this._stopped = true;
      this._awaitingToken = false;
      this._retry.cancel();
      if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
      this._drop();
      if (this.state !== "closed") this._setState("closed", { reason: "client" });
      return this;
    }

    /**
     * Add streams (a list or "a,b"); history/presence apply to the ones new here.
     * `owner` (any value; the page's own by default) holds them until it unsubscribes:
     * a stream stays while any owner holds it, so widgets sharing a feed with the
     * page's code cannot take each other's streams away.
     */
    subscribe(tools, { history = this.history, presence = this.presenceDefault, owner = PAGE } = {}) {
      const list = toolList(tools);
      const bad = list.find((t) => !TOOL.test(t));
      if (bad !== undefined) throw new TypeError(`livefeed: invalid tool ${JSON.stringify(bad)}`);
      const added = [];
      for (const key of list) {
        if (this._refused.has(key)) {
          // Asked again: try again (a token given since may allow it now).
          const refused = this._refused.get(key);
          this._refused.delete(key);
          refused.owners.add(owner);
          this._subs.set(key, refused);
          added.push(key);
          continue;
        }
        const sub = this._subs.get(key);
        if (sub) {
          sub.owners.add(owner);
          sub.history = Math.max(sub.history, clampHistory(history)); // used on a fresh resubscribe
          if (presence && !sub.presence) {
            // Asked for presence by a new owner: subscribe again with it (the server
            // starts presence frames on a live subscription, and replays nothing).
            sub.presence = true;
            added.push(key);
          }
          continue;
        }
        // Not `confirmed` until the server's `subscribed`: an event of an earlier
        // subscription to the key, still in flight, is not this one's.
        this._subs.set(key, {
          history: clampHistory(history),
          presence: Boolean(presence),
          confirmed: false,
          owners: new Set([owner]),
        });
        added.push(key);
      }
      if (added.length) this._change(added, []);
      return this;
    }

    /**
     * Give up `owner`'s hold on streams (the page's by default); a stream no owner
     * holds any more is dropped, and its cursor, recent events and presence forgotten.
     */
    unsubscribe(tools, { owner = PAGE } = {}) {
      for (const key of toolList(tools)) {
        const refused = this._refused.get(key);
        if (refused && refused.owners.delete(owner) && !refused.owners.size) this._refused.delete(key);
      }
      const removed = toolList(tools).filter((key) => {
        const sub = this._subs.get(key);
        if (!sub || !sub.owners.delete(owner) || sub.owners.size) return false;
        return this._subs.delete(key);
      });
      for (const key of removed) {
        this._cursors.delete(key);
        this._recent.delete(key);
        this._presence.delete(key);
      }
      if (removed.length) this._change([], removed);
      return this;
    }

    /**
     * Replace the token: a string, a function, or null (none: a logout). After a 4001
     * close this is what reconnects. A string or null takes effect at once: on an open
     * WebSocket a string goes as an `auth` frame; null, and any change over SSE,
     * reconnects (cursors kept, nothing missed). A function is asked at the next
     * connection.
     */
    setToken(token) {
      const previous = this._token;
      this._token = token;
      // A string or null is the server's at once (an `auth` frame or a reconnect); a
      // function only at the next connection, so refused streams wait for that one.
      if (token !== previous) {
        if (typeof token === "function") this._refusedAtNextOpen = true;
        else this._askAgainForRefused();
      }
      const conn = this._conn;
      if (this._awaitingToken) {
        this._awaitingToken = false;
        const delay = this._retry.schedule();
        this._setState("reconnecting", { reason: "token", delay: Math.round(delay) });
      } else if (typeof token === "function" || !conn || token === previous || (!token && !previous)) {
        // A function is asked at the next connection; and null, undefined and "" are all
        // no token: from one to another nothing changes for the server.
      } else if (!conn.opened || !conn.ws) {
        // An attempt under way with the old token, or an SSE stream (its token is in
        // its URL): start again with this one. Cursors are kept, so nothing is missed.
        // (An attempt still fetching a token sees the change itself, in `_open`.)
        if (conn.ws || conn.es) this._open();
      } else if (token && token.length < FRAME_BUDGET) {
        // Tools given up before the token changed go before it (the new token may no
        // longer allow them); tools asked for go after it, at the end of the task
        // (they may need the new token).
        this._sendChanges({ subscribes: false });
        const auth = { type: "auth", token };
        this._send(auth);
        // Once the server answers `authenticated`, a 4001 is about this token: see _lost.
        if (auth.ref !== undefined) conn.auths.set(auth.ref, token); // undefined: not sent
      } else {
        // No token (a logout: no frame drops one), or one too long for a client frame
        // (the server would close with 1009): reconnect, with the token in the URL.
        this._open();
      }
      return this;
    }

    /** Application-level ping over WebSocket; resolves with the round trip in ms. */
    ping(timeout = this.pingTimeout) {
      const conn = this._conn;
      if (!conn || !conn.ws || !conn.opened) {
        return Promise.reject(new Error("livefeed: no open WebSocket"));
      }
      const ref = String(++this._ref);
      const started = Date.now();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._pings.delete(ref);
          reject(new Error("livefeed: ping timeout"));
        }, timeout);
        const settle = (fn) => (value) => {
          clearTimeout(timer);
          this._pings.delete(ref);
          fn(value);
        };
        this._pings.set(ref, { resolve: settle(() => resolve(Date.now() - started)), reject: settle(reject) });
        this._send({ type: "ping", ref });
      });
    }

    on(type, fn) {
      if (!this._listeners.has(type)) this._listeners.set(type, new Set());
      this._listeners.get(type).add(fn);
      return this;
    }

    off(type, fn) {
      const set = this._listeners.get(type);
      if (set) set.delete(fn);
      return this;
    }

    get tools() {
      return [...this._subs.keys()];
    }

    /** Resume point of a stream key: the last id emitted, or a newer SSE position; or undefined. */
    cursor(key) {
      return this._cursors.get(key);
    }

    /** Latest presence of a tool: {tool, count, users|null}, or undefined if unknown. */
    presence(tool) {
      return this._presence.get(tool);
    }

    /** The last events emitted for a stream key (at most 100, oldest first). */
    recent(key, limit = RECENT) {
      const list = this._recent.get(key) || [];
      return list.slice(Math.max(0, list.length - limit));
    }

    /** One instance per server URL, for widgets that should share a connection. */
    static shared(options = {}) {
      const url = resolveBase(options.url);
      let feed = sharedFeeds.get(url);
      if (!feed) {
        feed = new LiveFeed({ ...options, url });
        sharedFeeds.set(url, feed);
      }
      return feed;
    }

    // Streams refused as `forbidden` go back among the subscriptions, to be asked for
    // with the next subscribe (or on the next connection), under the new token.
    _askAgainForRefused() {
      if (!this._refused.size) return;
      const keys = [...this._refused.keys()];
      for (const key of keys) this._subs.set(key, this._refused.get(key));
      this._refused.clear();
      this._change(keys, []);
    }

    // ---- connection lifecycle ------------------------------------------------

    // Changes of tools made in one task go out together once it ends: a page that
    // subscribes 50 tools one call at a time would otherwise send 50 frames (or reopen
    // an SSE stream 50 times), and the server drops frames over its rate.
    _change(added, removed) {
      for (const key of removed) if (!this._toSubscribe.delete(key)) this._toUnsubscribe.add(key);
      for (const key of added) this._toSubscribe.add(key);
      if (this._changeQueued) return;
      this._changeQueued = true;
      queueMicrotask(() => {
        this._changeQueued = false;
        this._sendChanges();
      });
    }

    // Send the changes gathered so far (or only the unsubscribes, before an `auth`).
    _sendChanges({ subscribes = true } = {}) {
      const removed = [...this._toUnsubscribe];
      const added = subscribes ? [...this._toSubscribe].filter((key) => this._subs.has(key)) : [];
      this._toUnsubscribe.clear();
      if (subscribes) this._toSubscribe.clear();
      if (!removed.length && !added.length) return;
      this._sync(() => {
        if (removed.length) this._sendChunked((tools) => ({ type: "unsubscribe", tools }), removed);
        if (added.length) this._sendSubscribe(added);
      });
    }

    // Apply a change of tools to the current attempt. WebSocket: send `frames` once
    // open (before the welcome, the welcome's subscribe covers every tool). SSE: the
    // URL is the subscription, so a stream already requested is reopened, resuming.
    _sync(frames) {
      const conn = this._conn;
      if (!conn) return;
      if (conn.ws) {
        if (conn.opened) frames();
      } else if (conn.es || conn.opened) {
        this._open();
      }
    }

    async _open() {
      if (this._stopped) return;
      this._drop();
      const conn = { opened: false, since: new Map(), fullPresence: new Set(), auths: new Map() };
      this._conn = conn;
      this.transport = this._useSse ? "sse" : "websocket";
      this._setState("connecting");
      // From here, fetching the token included: a token function that never settles is
      // a failed attempt like any other, retried with backoff.
      conn.timer = setTimeout(
        () => this._lost(conn, { code: 0, reason: "connect timeout" }),
        this.connectTimeout,
      );
      const source = this._token;
      let token;
      try {
        token = typeof source === "function" ? await source() : source;
      } catch (err) {
        if (this._conn !== conn) return;
        this._emit("error", { code: "token_error", message: String((err && err.message) || err) });
        this._lost(conn, { code: 0, reason: "token function failed" });
        return;
      }
      if (this._conn !== conn) return; // closed or restarted while the token was fetched
      if (this._token !== source) {
        this._open(); // replaced while it was fetched: use the new one
        return;
      }
      conn.token = token;
      conn.dialed = true; // a failure from here on may be the transport's
      if (this._refusedAtNextOpen) {
        // The new token function's first token: refused streams are subscribed with
        // every other stream of this attempt.
        this._refusedAtNextOpen = false;
        for (const [key, sub] of this._refused) this._subs.set(key, sub);
        this._refused.clear();
      }
      // This attempt subscribes every tool held now: changes not yet sent are in it
      // (cleared here, not earlier: a `connecting` listener may still have made some).
      this._toSubscribe.clear();
      this._toUnsubscribe.clear();
      if (this.transport === "sse") this._openSse(conn, token);
      else this._openWs(conn, token);
    }

    _openWs(conn, token) {
      const url = new URL("ws", this.url);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (token) url.searchParams.set("token", token);
      try {
        conn.ws = new WebSocket(url.href);
      } catch (err) {
        this._lost(conn, { code: 0, reason: String(err) });
        return;
      }
      conn.ws.onmessage = (e) => this._conn === conn && this._onFrame(conn, parse(e.data));
      conn.ws.onclose = (e) => this._lost(conn, { code: e.code, reason: e.reason });
    }

    _openSse(conn, token) {
      const keys = this.tools;
      if (!keys.length) {
        this._opened(conn); // nothing to stream yet; subscribe() reopens with tools
        return;
      }
      const url = new URL("sse", this.url);
      const q = url.searchParams;
      q.set("tools", keys.join(","));
      const fresh = keys.filter((k) => !this._cursors.has(k));
      const history = Math.max(0, ...fresh.map((k) => this._subs.get(k).history));
      if (history) q.set("history", String(history));
      if (keys.some((k) => this._subs.get(k).presence)) q.set("presence", "1");
      // The same `key:id,key:id` cursor the server puts in `id:` lines, built from our
      // own cursors so that it also covers what arrived over WebSocket before.
      const resume = keys.filter((k) => this._cursors.has(k));
      for (const k of resume) conn.since.set(k, this._cursors.get(k)); // for a `gap` report
      if (resume.length) q.set("last_event_id", resume.map((k) => `${k}:${this._cursors.get(k)}`).join(","));
      if (token) q.set("token", token);
      const es = new EventSource(url.href);
      conn.es = es;
      const onData = (e) => {
        if (this._conn !== conn) return;
        conn.heard = Date.now();
        this._onFrame(conn, parse(e.data));
      };
      // Named events carry the same JSON as WebSocket frames (`ping` is SSE's own).
      for (const name of ["story", "activity", "presence", "subscribed", "position", "ping", "message"]) {
        es.addEventListener(name, onData);
      }
      // The server says why it ends a stream, with the WebSocket close code.
      es.addEventListener("close", (e) => {
        const { code = 0, reason = "" } = parse(e.data) || {};
        this._lost(conn, { code, reason });
      });
      es.onopen = () => {
        if (this._conn !== conn) return;
        this._opened(conn);
        this._watchSse(conn);
      };
      es.onerror = (e) => {
        if (typeof e.data === "string") return onData(e); // an `event: error` frame, not a failure
        // EventSource would retry by itself, with a fixed delay and its own cursor;
        // we close it and retry with backoff, jitter and our cursors instead.
        if (!conn.opened && this._failures >= 1 && this._conn === conn) this._askWhySse(url.href);
        this._lost(conn, { code: 0, reason: "sse error" });
      };
    }

    // EventSource reports a refused request (a 400: over the server's tool limit, a
    // malformed query) only as an `error` with no status, and would be retried for ever
    // without a word to the page. From the second attempt in a row that never opened,
    // the same URL is fetched once to read the server's JSON error, emitted as an
    // `error` event with its `status` (once per code, until a stream opens). Retries go
    // on (the server's config may change). A refused origin gives no readable answer
    // (no CORS header), and token problems come inside a stream, as on WebSocket.
    async _askWhySse(href) {
      if (typeof fetch !== "function" || typeof AbortController !== "function") return;
      const url = new URL(href);
      url.searchParams.set("history", "0"); // if it opens after all, replay nothing
      url.searchParams.delete("last_event_id");
      const abort = new AbortController();
      try {
        const response = await fetch(url.href, { signal: abort.signal, headers: { Accept: "text/event-stream" } });
        if (response.ok) return; // it opens now: an outage that ended
        const body = await response.json().catch(() => null);
        const error = body && body.error;
        if (!error || typeof error.code !== "string" || error.code === this._sseRefusal) return;
        this._sseRefusal = error.code;
        this._emit("error", { code: error.code, message: error.message, field: error.field, status: response.status });
      } catch (_) {
        // Unreachable, or a response this origin may not read: nothing more to learn.
      } finally {
        abort.abort(); // a stream that did open is not kept
      }
    }

    _opened(conn) {
      clearTimeout(conn.timer);
      conn.opened = true;
      this._failures = 0;
      this._sseRefusal = null;
      this._worked[this.transport] = true;
      conn.stable = setTimeout(() => this._retry.reset(), this.stableAfter);
      this._setState("open");
    }

    // A half-open SSE stream (a laptop that slept, a NAT that forgot it) looks open for
    // ever: EventSource only notices when the TCP connection fails. The server's pings
    // are the stream's heartbeat.
    _watchSse(conn) {
      if (!(this.pingInterval > 0 && this.pingTimeout > 0)) return; // checks turned off
      conn.heard = Date.now();
      conn.watchdog = setInterval(() => {
        const every = conn.pingEvery || SSE_PING_DEFAULT_MS;
        if (Date.now() - conn.heard > 2 * every + SSE_SLACK_MS) {
          this._lost(conn, { code: 0, reason: "sse stream silent" });
        }
      }, 1000);
    }

    _welcome(conn, frame) {
      conn.connectionId = frame.connection_id;
      this._sendSubscribe(this.tools); // before "open", so a state listener's subscribe() is not sent twice
      this._opened(conn);
      if (this.pingInterval > 0 && this.pingTimeout > 0) {
        conn.pinger = setInterval(() => {
          this.ping().catch(() => this._lost(conn, { code: 0, reason: "ping timeout" }));
        }, this.pingInterval);
      }
    }

    // The current attempt failed or closed: decide what comes next.
    _lost(conn, { code, reason }) {
      if (this._conn !== conn) return;
      this._drop();
      if (this._stopped) return;
      // Toward a switch of transport, only attempts that reached no server: no close
      // code (0: timeout, SSE error) or 1006. A server's own close (1001 while it
      // drains, 4029, 1011) proves the transport gets through.
      if (!conn.opened && conn.dialed && (code === 0 || code === 1006)) this._failures += 1;
      const action = CLOSE_ACTIONS[code] || "retry";
      const detail = { code, reason };
      this._toldToWait = action === "later";
      if (action === "stop") {
        this._stopped = true;
        this._emit("error", { code: STOP_CODES[code], close: code, message: reason });
        this._setState("closed", detail);
        return;
      }
      if (action === "token") {
        // A string token the server had not taken yet (given while this attempt was
        // made, or an `auth` frame crossing the close) is tried at once; the one that
        // expired (the connection's, or the last one it answered `authenticated` to)
        // waits for setToken().
        if (typeof this._token !== "function" && this._token === conn.token) {
          this._awaitingToken = true; // setToken() reconnects
          this._setState("reconnecting", { ...detail, waitingForToken: true });
          this._emit("tokenexpired", detail);
          return;
        }
        this._emit("tokenexpired", detail); // the token function is asked again below
      }
      this._maybeSwitchTransport();
      const delay = this._retry.schedule(action === "later" ? this.slowFloor : 0);
      this._setState("reconnecting", { ...detail, delay: Math.round(delay) });
    }

    // "auto": a WebSocket that never got a welcome `sseAfter` times in a row is probably
    // blocked (proxy, firewall), so try SSE; and back if SSE never opened either. A
    // transport that once opened is kept: its failures are outages, not blockage.
    _maybeSwitchTransport() {
      if (this.transportMode !== "auto" || typeof WebSocket === "undefined") return;
      if (this._failures < this.sseAfter || this._worked[this._useSse ? "sse" : "websocket"]) return;
      this._useSse = !this._useSse;
      this._failures = 0;
    }

    _drop() {
      const conn = this._conn;
      if (!conn) return;
      this._conn = null;
      clearTimeout(conn.timer);
      clearTimeout(conn.stable);
      clearInterval(conn.pinger);
      clearInterval(conn.watchdog);
      clearTimeout(conn.rateRetry);
      if (conn.ws) {
        conn.ws.onmessage = conn.ws.onclose = null;
        if (conn.ws.readyState < 2) conn.ws.close(1000);
      }
      if (conn.es) conn.es.close();
      for (const p of [...this._pings.values()]) p.reject(new Error("livefeed: connection closed"));
    }

    _setState(state, detail = {}) {
      const previous = this.state;
      this.state = state;
      this._emit("state", { state, previous, transport: this.transport, ...detail });
    }

    // ---- frames ----------------------------------------------------------------

    _onFrame(conn, frame) {
      if (!frame || typeof frame !== "object") return;
      switch (frame.type) {
        case "welcome":
          return this._welcome(conn, frame);
        case "event":
          return this._onEvent(frame);
        case "presence":
          conn.fullPresence.add(frame.tool);
          return this._setPresence(frame.tool, frame.count, frame.users);
        case "subscribed":
          return this._onSubscribed(conn, frame);
        case "position":
          return this._onPosition(frame);
        case "ping": // SSE's heartbeat (its arrival was noted by the listener)
          if (frame.interval > 0) conn.pingEvery = frame.interval * 1000;
          return undefined;
        case "unsubscribed":
          return this._emit("unsubscribed", frame);
        case "authenticated":
          // The server holds the token of that `auth` frame now (and frames are taken
          // in order: any sent before it were answered already).
          if (conn.auths.has(frame.ref)) {
            conn.token = conn.auths.get(frame.ref);
            for (const ref of conn.auths.keys()) {
              conn.auths.delete(ref);
              if (ref === frame.ref) break;
            }
          }
          return undefined;
        case "pong":
          return this._pings.has(frame.ref) && this._pings.get(frame.ref).resolve();
        case "error":
          if (frame.tool) this._refuse(frame);
          if (frame.code === "rate_limited") this._resubscribeLater(conn);
          return this._emit("error", frame);
        default:
          return undefined; // unknown frame types are ignored, for forward compatibility
      }
    }

    // An error about one tool (forbidden, invalid_tool, too_many_subscriptions) means it
    // is not subscribed: not retried on every reconnect. What the feed knew of it goes
    // (a count shown for a tool it cannot see would be stale). A forbidden one is kept
    // aside, with its cursor, for a new token; the others are dropped.
    _refuse(frame) {
      const key = frame.tool;
      const sub = this._subs.get(key);
      if (!sub) return;
      this._subs.delete(key);
      this._presence.delete(key);
      this._recent.delete(key);
      if (frame.code === "forbidden") {
        sub.confirmed = false;
        this._refused.set(key, sub);
      } else {
        this._cursors.delete(key);
      }
    }

    // Frames over the server's rate are dropped without a reply: a subscribe among them
    // would never be answered, its stream silent until the next connection. Once the
    // rate allows, whatever is still unconfirmed is asked for again (a subscribe that
    // was only slow is answered twice, which is harmless).
    _resubscribeLater(conn) {
      if (conn.rateRetry) return;
      conn.rateRetry = setTimeout(() => {
        conn.rateRetry = null;
        if (this._conn !== conn) return;
        const unconfirmed = [...this._subs].filter(([, sub]) => !sub.confirmed).map(([key]) => key);
        if (unconfirmed.length) this._sendSubscribe(unconfirmed);
      }, RATE_RETRY_MS * (1 + Math.random() / 2));
    }

    _onEvent(ev) {
      const key = ev.channel || ev.tool;
      const sub = this._subs.get(key);
      if (!sub || !sub.confirmed || typeof ev.id !== "string") return; // in flight after unsubscribe
      const last = this._cursors.get(key);
      if (last !== undefined && compareIds(ev.id, last) <= 0) return; // already emitted
      this._cursors.set(key, ev.id);
      if (!this._recent.has(key)) this._recent.set(key, []);
      const recent = this._recent.get(key);
      recent.push(ev);
      if (recent.length > RECENT) recent.shift();
      this._emit("event", ev);
    }

    _onSubscribed(conn, frame) {
      const tool = frame.tool;
      const sub = this._subs.get(tool);
      if (sub) sub.confirmed = true; // the server sends it before any event of the tool
      // `subscribed` carries a count only; a full presence frame already received on
      // this connection is newer and wins. Users stay unknown (null) until a full frame.
      if (typeof frame.presence === "number" && !conn.fullPresence.has(tool)) {
        this._setPresence(tool, frame.presence, null);
      }
      this._emit("subscribed", frame);
      if (frame.recovered === false) {
        this._emit("gap", { tool, since: conn.since.get(tool) });
      }
    }

    // Once a subscription is live the server reports where the stream stands (SSE's
    // `event: position`; over WebSocket a `position` frame, asked for in the subscribe).
    // Everything up to that id was replayed or is older than what we asked for, so it
    // is a resume point even for a tool that has not had an event since we subscribed.
    _onPosition(frame) {
      const key = frame.tool;
      const sub = this._subs.get(key);
      // Not confirmed: an earlier subscription's position, in flight after it ended;
      // taken, it would make this one's replay look already emitted.
      if (!sub || !sub.confirmed || typeof frame.id !== "string") return;
      const last = this._cursors.get(key);
      if (last === undefined || compareIds(frame.id, last) > 0) this._cursors.set(key, frame.id);
    }

    _setPresence(tool, count, users) {
      if (typeof tool !== "string" || !this._subs.has(tool)) return;
      const state = { tool, count: Number(count) || 0, users: Array.isArray(users) ? users : null };
      this._presence.set(tool, state);
      this._emit("presence", state);
    }

    // One frame per kind of request (resume with `since`, or `history` N), so the
    // server never has to guess which of the two applies to a tool.
    _sendSubscribe(keys) {
      const conn = this._conn;
      const groups = new Map();
      for (const key of keys) {
        const sub = this._subs.get(key);
        const since = this._cursors.get(key);
        if (since) conn.since.set(key, since);
        const name = since ? `since ${sub.presence}` : `history ${sub.history} ${sub.presence}`;
        if (!groups.has(name)) groups.set(name, []);
        groups.get(name).push(key);
      }
      for (const group of groups.values()) {
        const { history, presence } = this._subs.get(group[0]);
        const resume = this._cursors.has(group[0]);
        this._sendChunked((tools) => {
          // `position` (livefeed's extension): where each stream starts, so a stream
          // with no event yet still has a cursor to resume from after a reconnect.
          const frame = { type: "subscribe", tools, presence, position: true };
          if (resume) frame.since = Object.fromEntries(tools.map((t) => [t, this._cursors.get(t)]));
          else if (history) frame.history = history;
          return frame;
        }, group);
      }
    }

    _sendChunked(make, tools) {
      let chunk = [];
      for (const tool of tools) {
        if (chunk.length && JSON.stringify(make([...chunk, tool])).length > FRAME_BUDGET) {
          this._send(make(chunk));
          chunk = [];
        }
        chunk.push(tool);
      }
      if (chunk.length) this._send(make(chunk));
    }

    _send(frame) {
      const ws = this._conn && this._conn.ws;
      if (!ws || ws.readyState !== 1) return;
      if (frame.ref === undefined) frame.ref = String(++this._ref);
      ws.send(JSON.stringify(frame));
    }

    _emit(type, detail) {
      const set = this._listeners.get(type);
      if (!set) return;
      for (const fn of [...set]) {
        try {
          fn.call(this, detail);
        } catch (err) {
          report(err); // a throwing listener must not break the connection
        }
      }
    }
  }

  const sharedFeeds = new Map(); // resolved url -> LiveFeed, for LiveFeed.shared()
  LiveFeed.defaultUrl = scriptUrl;
  LiveFeed.compareIds = compareIds;
  LiveFeed.RetryTimer = RetryTimer;
  LiveFeed.version = "1.0.0";
  globalThis.LiveFeed = LiveFeed;
})();
