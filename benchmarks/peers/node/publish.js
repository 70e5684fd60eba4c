// The Node publisher: @socket.io/redis-emitter, same stdin/stdout protocol as
// benchmarks/publisher.py (JSON lines: publish / sync / quit).
"use strict";

const readline = require("node:readline");
const { performance } = require("node:perf_hooks");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");

const PAD = "lorem ipsum dolor sit amet ".repeat(6);

function option(name) {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0 || index + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[index + 1];
}

const wallClock = () => (performance.timeOrigin + performance.now()) / 1000;
const monotonic = () => performance.now() / 1000;
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// Mirrors benchmarks/payload.py story(): the same ~350-byte event, with "@t=" first in body.
function story(tool, seq) {
  const now = wallClock();
  return {
    type: "event",
    tool,
    id: `${Math.floor(now * 1000)}-${seq}`,
    kind: "story",
    ts: Math.round(now * 1e6) / 1e6,
    data: {
      author: { handle: "bench" },
      title: `Benchmark story ${seq}`,
      body: `@t=${now.toFixed(6)} ${PAD}`,
    },
  };
}

// A small deterministic generator (mulberry32) so a seed picks the same tools each run.
function rng(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function publishAtRate(emitter, tools, rate, duration, seed) {
  const random = rng(seed);
  const total = Math.max(1, Math.round(rate * duration));
  const perTool = new Array(tools.length).fill(0);
  const cpu0 = process.cpuUsage();
  const start = monotonic();
  let sent = 0;
  let maxLag = 0;
  while (sent < total) {
    const due = start + sent / rate;
    let now = monotonic();
    if (due > now) {
      await sleep(due - now);
      now = monotonic();
    }
    maxLag = Math.max(maxLag, now - due);
    const batch = Math.min(total, Math.floor((now - start) * rate) + 1) - sent;
    for (let i = 0; i < batch; i += 1) {
      const index = tools.length > 1 ? Math.floor(random() * tools.length) : 0;
      perTool[index] += 1;
      emitter.to(tools[index]).emit("story", story(tools[index], sent));
      sent += 1;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    sent,
    per_tool: perTool,
    elapsed: monotonic() - start,
    max_lag: maxLag,
    cpu: (cpu.user + cpu.system) / 1e6,
  };
}

async function main() {
  const client = createClient({ url: option("url") });
  await client.connect();
  const emitter = new Emitter(client);
  const tools = option("tools").split(",");
  let seq = 1e9;
  console.log(JSON.stringify({ ready: true, pid: process.pid }));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    if (command.op === "quit") break;
    let answer;
    if (command.op === "sync") {
      for (const tool of tools) {
        seq += 1;
        emitter.to(tool).emit("story", story(tool, seq));
      }
      answer = { ok: true };
    } else {
      answer = await publishAtRate(emitter, tools, command.rate, command.duration, command.seed || 1);
    }
    console.log(JSON.stringify(answer));
  }
  await client.quit();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
