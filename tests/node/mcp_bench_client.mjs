// Load driver for bench/mcp.sh (a benchmark, not a test): CLIENTS official-SDK clients (`Client` with
// `StreamableHTTPClientTransport`, one session each) call one tool back to back for SECONDS after a
// warm-up, and the latency of every call is kept.
//
// Usage: [TOOLGATE_TOKEN=<jwt>] node mcp_bench_client.mjs URL TOOL CLIENTS SECONDS
// Prints one JSON line: clients, calls, errors (isError results and thrown calls), calls_per_s,
// p50_ms/p90_ms/p99_ms/max_ms, with_execution_id (results that carry toolgate's execution id),
// all_calls (with the warm-up's) and client_cpu_ms_per_call (this process's CPU time per measured call).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, tool, clientsArg, secondsArg] = process.argv.slice(2);
const clients = Number(clientsArg ?? 1);
const seconds = Number(secondsArg ?? 5);
const token = process.env.TOOLGATE_TOKEN;
const WARMUP_MS = 1000;

// The SDK client adds an abort listener per call to a signal it keeps, and Node warns at every one
// past its limit: thousands of lines per run. Said once (it is the client's, not the server's).
let listenersWarned = false;
process.removeAllListeners("warning");
process.on("warning", (w) => {
  if (w.name !== "MaxListenersExceededWarning") return console.error(w);
  if (!listenersWarned) console.error(`note (SDK client, said once): ${w.message}`);
  listenersWarned = true;
});

async function connect() {
  const transport = new StreamableHTTPClientTransport(new URL(url), token ? {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  } : undefined);
  const client = new Client({ name: "toolgate-bench", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

const sessions = await Promise.all(Array.from({ length: clients }, connect));
const latencies = [];
let errors = 0;
let withExecutionId = 0;
let measuring = false;
let allCalls = 0;

async function loop({ client }, until) {
  while (Date.now() < until()) {
    const t0 = process.hrtime.bigint();
    let failed = false;
    let result;
    try {
      result = await client.callTool({ name: tool, arguments: {} });
      failed = result.isError === true;
    } catch {
      failed = true;
    }
    allCalls++;
    if (!measuring) continue;
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (failed) errors++;
    if (result?._meta?.["io.toolgate/execution_id"]) withExecutionId++;
  }
}

// Warm-up: connections, sessions and JIT.
const warmEnd = Date.now() + WARMUP_MS;
await Promise.all(sessions.map((s) => loop(s, () => warmEnd)));

measuring = true;
const cpuStart = process.cpuUsage();
const start = process.hrtime.bigint();
const end = Date.now() + seconds * 1000;
await Promise.all(sessions.map((s) => loop(s, () => end)));
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpuStart);

latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : 0;
const round = (x) => Math.round(x * 1000) / 1000;
console.log(JSON.stringify({
  clients,
  calls: latencies.length,
  errors,
  with_execution_id: withExecutionId,
  seconds: round(elapsed),
  calls_per_s: Math.round(latencies.length / elapsed),
  p50_ms: round(pct(0.5)),
  p90_ms: round(pct(0.9)),
  p99_ms: round(pct(0.99)),
  max_ms: round(latencies[latencies.length - 1] ?? 0),
  all_calls: allCalls,
  client_cpu_ms_per_call: round((cpu.user + cpu.system) / 1000 / Math.max(1, latencies.length)),
}));
await Promise.all(sessions.map(async ({ client, transport }) => {
  try { await transport.terminateSession(); } catch {}
  await client.close();
}));
