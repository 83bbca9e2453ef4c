// A TLS front for a plain-HTTP server, for the HTTPS tests of the DynamoDB store:
//   node tls_proxy.js CERT KEY LISTEN_PORT TARGET_PORT
// Prints "listening <port>" once it accepts connections (LISTEN_PORT 0: a port the kernel picks, so
// no other process can take it first); forwards each request to 127.0.0.1:TARGET_PORT.
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

const [cert, key, listenPort, targetPort] = process.argv.slice(2);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  const upstream = http.request(
    { host: '127.0.0.1', port: Number(targetPort), method: req.method, path: req.url, headers: req.headers },
    (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
  upstream.on('error', () => { res.writeHead(502); res.end(); });
  req.pipe(upstream);
});
server.listen(Number(listenPort), '127.0.0.1', () => console.log(`listening ${server.address().port}`));
