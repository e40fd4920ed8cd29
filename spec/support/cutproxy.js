// A TCP proxy on loopback that can lose a server's answers, for specs that
// need a connection to break at a chosen point (spec/support/cutproxy.lua
// drives it).
//   node cutproxy.js HOST:PORT [PASS_FILE]   prints "listening <port>", then forwards.
// Every chunk of a server's answer it passes on is reported ("answer <bytes>"),
// so a spec can learn how large an answer is.
// SIGUSR1 arms it ("armed"): the next data a client sends is forwarded, and
// of the server's answer to it only the first PASS bytes are passed on (PASS
// read from PASS_FILE when it exists, else 0); then the proxy closes both
// sockets ("cut <passed>"). The server has then run some or all of what was
// sent and the client knows only the answers in those bytes, the last one
// perhaps in part: the case a client's retry must survive. It disarms itself
// after one cut.
'use strict';
const fs = require('fs');
const net = require('net');

const [host, port] = (process.argv[2] || '').split(':');
const passFile = process.argv[3];
if (!host || !Number(port)) {
  process.stderr.write('usage: node cutproxy.js HOST:PORT [PASS_FILE]\n');
  process.exit(2);
}

let armed = null; // bytes to pass before the cut, once armed
process.on('SIGUSR1', () => {
  let pass = 0;
  if (passFile && fs.existsSync(passFile)) pass = Number(fs.readFileSync(passFile, 'utf8').trim());
  if (!Number.isInteger(pass) || pass < 0) {
    process.stderr.write(`cutproxy: bad byte count in ${passFile}\n`);
    process.exit(2);
  }
  armed = pass;
  process.stdout.write('armed\n');
});

const server = net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  let left = null; // bytes still to pass before cutting this connection
  let passed = 0;
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('data', (d) => {
    if (armed !== null) { left = armed; armed = null; }
    upstream.write(d);
  });
  upstream.on('data', (d) => {
    if (left === null) {
      process.stdout.write(`answer ${d.length}\n`);
      client.write(d);
      return;
    }
    const part = d.subarray(0, left);
    left -= part.length;
    passed += part.length;
    if (left > 0) {
      client.write(part);
      return;
    }
    // end() flushes what was written before it closes: the client reads
    // exactly the bytes passed, then the end of the connection.
    upstream.destroy();
    client.end(part);
    process.stdout.write(`cut ${passed}\n`);
  });
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', () => { if (left === null || left > 0) close(); });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
// A spec that dies without stopping it does not leave it behind for long.
setTimeout(() => process.exit(0), 120000).unref();
