// Socket.IO on Node with @socket.io/redis-adapter: a peer of the livefeed benchmark suite.
// A client joins a tool's room with 42["subscribe", tool] and is told 42["subscribed", tool];
// publishers emit "story" to the room with @socket.io/redis-emitter (see publish.js).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function option(name) {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0 || index + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[index + 1];
}

async function main() {
  const port = Number(option("port"));
  const redisUrl = option("redis-url");
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.writeHead(req.url === "/readyz" ? 200 : 404, { "Content-Type": "text/plain" });
    res.end("ok\n");
  });
  const io = new Server(httpServer, {
    transports: ["websocket"],
    adapter: createAdapter(pubClient, subClient),
    serveClient: false,
  });
  io.on("connection", (socket) => {
    socket.on("subscribe", (tool) => {
      socket.join(String(tool));
      socket.emit("subscribed", tool);
    });
  });
  httpServer.listen({ port, host: "127.0.0.1", backlog: 4096 });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
