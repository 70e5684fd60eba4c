// ES-module entry for livefeed.js: import { LiveFeed } from "https://HOST/static/livefeed.mjs";
// livefeed.js is a classic script (it sets globalThis.LiveFeed); importing it for its side
// effect and re-exporting the global is what lets one implementation serve both ways.
import "./livefeed.js";

const LiveFeed = globalThis.LiveFeed;
// Evaluated as a module, livefeed.js has no document.currentScript to find its server by.
LiveFeed.defaultUrl ??= new URL("../", import.meta.url).href;

export { LiveFeed };
export default LiveFeed;
