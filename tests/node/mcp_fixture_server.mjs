// An MCP server written with the official TypeScript SDK for the tests and the benchmark: it offers the
// tools the MCP conformance suite (@modelcontextprotocol/conformance, `server` mode) calls, with the
// contents its scenarios expect, over Streamable HTTP at /mcp with sessions. Used by
// tests/mcp_conformance_test.cc (toolgate fronts it through an `mcp` connector) and bench/mcp.sh.
//
// Usage: PORT=0 [JSON_RESPONSE=1] node mcp_fixture_server.mjs
// Listens on 127.0.0.1:$PORT (0 or unset: a port the kernel picks) and prints one line
// "listening on 127.0.0.1:<port>" once it accepts connections. Runs until killed. A POST is answered with
// an SSE stream (the SDK's default), or with application/json when JSON_RESPONSE=1 (the SDK's
// enableJsonResponse; then nothing can be sent to the client during a call).
import http from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  CallToolRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ListToolsRequestSchema,
  isInitializeRequest,
} from "@modelcontextprotocol/sdk/types.js";

// A 1x1 PNG and a WAV of 8 silent 8 kHz samples: the smallest valid media the scenarios accept.
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
function tinyWav() {
  const samples = 8;
  const b = Buffer.alloc(44 + samples * 2);
  b.write("RIFF", 0);
  b.writeUInt32LE(36 + samples * 2, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);      // fmt chunk size
  b.writeUInt16LE(1, 20);       // PCM
  b.writeUInt16LE(1, 22);       // mono
  b.writeUInt32LE(8000, 24);    // sample rate
  b.writeUInt32LE(16000, 28);   // byte rate
  b.writeUInt16LE(2, 32);       // block align
  b.writeUInt16LE(16, 34);      // bits per sample
  b.write("data", 36);
  b.writeUInt32LE(samples * 2, 40);
  return b.toString("base64");
}
const WAV = tinyWav();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ type: "text", text: t });
const noArgs = { type: "object", properties: {} };

// name -> [description, inputSchema, handler(args, extra)].
const TOOLS = {
  test_simple_text: ["Returns one text block", noArgs, async () => ({
    content: [text("This is a simple text response for testing.")],
  })],
  test_image_content: ["Returns one PNG image", noArgs, async () => ({
    content: [{ type: "image", data: PNG, mimeType: "image/png" }],
  })],
  test_audio_content: ["Returns one WAV clip", noArgs, async () => ({
    content: [{ type: "audio", data: WAV, mimeType: "audio/wav" }],
  })],
  test_embedded_resource: ["Returns an embedded text resource", noArgs, async () => ({
    content: [{
      type: "resource",
      resource: { uri: "test://embedded-resource", mimeType: "text/plain", text: "This is an embedded resource content." },
    }],
  })],
  test_multiple_content_types: ["Returns text, an image and a resource", noArgs, async () => ({
    content: [
      text("Multiple content types test:"),
      { type: "image", data: PNG, mimeType: "image/png" },
      {
        type: "resource",
        resource: { uri: "test://mixed-content-resource", mimeType: "application/json", text: '{"test":"data","value":123}' },
      },
    ],
  })],
  test_error_handling: ["Always fails with isError", noArgs, async () => ({
    isError: true,
    content: [text("This tool intentionally returns an error for testing")],
  })],
  // The ones below need messages from the server to the client during the call.
  test_tool_with_logging: ["Logs three messages while it runs", noArgs, async (_args, extra) => {
    for (const [i, msg] of ["Tool execution started", "Tool processing data", "Tool execution completed"].entries()) {
      if (i > 0) await sleep(50);
      await extra.sendNotification({ method: "notifications/message", params: { level: "info", data: msg } });
    }
    return { content: [text("Tool with logging executed successfully")] };
  }],
  test_tool_with_progress: ["Reports progress 0, 50, 100", noArgs, async (_args, extra) => {
    const token = extra._meta?.progressToken;
    for (const [i, progress] of [0, 50, 100].entries()) {
      if (i > 0) await sleep(50);
      if (token !== undefined) {
        await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress, total: 100 } });
      }
    }
    return { content: [text("Tool with progress executed successfully")] };
  }],
  test_sampling: ["Asks the client's model", {
    type: "object", properties: { prompt: { type: "string" } }, required: ["prompt"],
  }, async (args, extra) => {
    const r = await extra.sendRequest({
      method: "sampling/createMessage",
      params: { messages: [{ role: "user", content: text(String(args.prompt)) }], maxTokens: 100 },
    }, CreateMessageResultSchema);
    return { content: [text(`LLM response: ${r.content?.text ?? JSON.stringify(r.content)}`)] };
  }],
  test_elicitation: ["Asks the user for input", {
    type: "object", properties: { message: { type: "string" } }, required: ["message"],
  }, async (args, extra) => {
    const r = await extra.sendRequest({
      method: "elicitation/create",
      params: {
        message: String(args.message),
        requestedSchema: {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        },
      },
    }, ElicitResultSchema);
    return { content: [text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`)] };
  }],
  json_schema_2020_12_tool: ["Tool with JSON Schema 2020-12 features", {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    type: "object",
    $defs: { address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } } },
    properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
    additionalProperties: false,
  }, async (args) => ({ content: [text(`received ${JSON.stringify(args)}`)] })],
};

function makeServer() {
  const server = new Server({ name: "toolgate-conformance-fixture", version: "1.0.0" },
                             { capabilities: { tools: {}, logging: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: Object.entries(TOOLS).map(([name, [description, inputSchema]]) => ({ name, description, inputSchema })),
  }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const tool = TOOLS[req.params.name];
    if (!tool) return { isError: true, content: [text(`unknown tool ${req.params.name}`)] };
    try {
      return await tool[2](req.params.arguments ?? {}, { ...extra, _meta: req.params._meta });
    } catch (e) {
      return { isError: true, content: [text(`${req.params.name} failed: ${e?.message ?? e}`)] };
    }
  });
  return server;
}

const transports = new Map();  // session id -> transport

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString("utf8");
  if (raw === "") return undefined;
  try { return JSON.parse(raw); } catch { return null; }
}

function refuse(res, status, message) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message } }));
}

const httpServer = http.createServer(async (req, res) => {
  try {
    if (new URL(req.url, "http://x").pathname !== "/mcp") return refuse(res, 404, "not found");
    const body = req.method === "POST" ? await readBody(req) : undefined;
    const sid = req.headers["mcp-session-id"];
    let transport = sid ? transports.get(sid) : undefined;
    if (sid && !transport) return refuse(res, 404, "Session not found");
    if (!transport) {
      if (req.method !== "POST" || !isInitializeRequest(body)) return refuse(res, 400, "Bad Request: no session");
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: process.env.JSON_RESPONSE === "1",
        onsessioninitialized: (id) => transports.set(id, transport),
      });
      const t = transport;
      t.onclose = () => { if (t.sessionId) transports.delete(t.sessionId); };
      await makeServer().connect(t);
    }
    await transport.handleRequest(req, res, body);
  } catch (e) {
    if (!res.headersSent) refuse(res, 500, String(e?.message ?? e));
  }
});
httpServer.keepAliveTimeout = 60000;
httpServer.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${httpServer.address().port}`);
});
