// A small local HTTP proxy that adds `Authorization: Bearer $TOOLGATE_PROXY_TOKEN` to every request and
// forwards it, streaming both ways, to one upstream origin. The MCP conformance suite sends no
// Authorization, toolgate's /mcp requires it (design §17.8): tests/mcp_conformance_test.cc puts this in
// between. Every other header (Host, Origin, Accept, Mcp-Session-Id, ...) is forwarded as sent.
//
// Usage: TOOLGATE_PROXY_TOKEN=<jwt> node bearer_proxy.mjs http://127.0.0.1:<port>
// Listens on 127.0.0.1 on a port the kernel picks and prints "listening on 127.0.0.1:<port>".
import http from "node:http";

const upstream = new URL(process.argv[2]);
const token = process.env.TOOLGATE_PROXY_TOKEN ?? "";
const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const out = http.request({
    host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent,
  }, (answer) => {
    res.writeHead(answer.statusCode, answer.rawHeaders);
    answer.pipe(res);
  });
  out.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
    res.end(`proxy: ${e.message}`);
  });
  req.pipe(out);
});
server.listen(0, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${server.address().port}`));
