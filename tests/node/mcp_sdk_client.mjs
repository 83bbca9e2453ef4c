// The official MCP TypeScript SDK as a client of toolgate's /mcp front door (used by
// tests/mcp_gateway_test.cc). Usage: node mcp_sdk_client.mjs URL TOKEN TOOL ARGS_JSON
// Prints one JSON line: the negotiated version, the tool list and the call's result.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, tool, args] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "toolgate-test", version: "1.0.0" });
try {
  await client.connect(transport);
  const tools = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args) });
  console.log(JSON.stringify({
    protocolVersion: transport.protocolVersion,
    sessionId: transport.sessionId ?? null,
    serverVersion: client.getServerVersion(),
    tools: tools.tools,
    result,
  }));
  await transport.terminateSession();
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exitCode = 1;
}
