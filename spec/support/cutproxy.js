// A TCP proxy on loopback that can lose a server's answers, for specs that
// need a connection to break at a chosen point (spec/support/cutproxy.lua
// drives it).
//   node cutproxy.js HOST:PORT   prints "listening <port>", then forwards.
// SIGUSR1 arms it ("armed"): the next data a client sends is forwarded, and
// as soon as the server answers it the proxy closes both sockets without
// passing the answer on ("cut"). The server has then run some or all of
// what was sent and the client knows none of it: the case a client's retry
// must survive. It disarms itself after one cut.
'use strict';
const net = require('net');

const [host, port] = (process.argv[2] || '').split(':');
if (!host || !Number(port)) {
  process.stderr.write('usage: node cutproxy.js HOST:PORT\n');
  process.exit(2);
}

let armed = false;
process.on('SIGUSR1', () => {
  armed = true;
  process.stdout.write('armed\n');
});

const server = net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  let cutting = false;
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('data', (d) => {
    if (armed) { armed = false; cutting = true; }
    upstream.write(d);
  });
  upstream.on('data', (d) => {
    if (cutting) {
      close();
      process.stdout.write(`cut ${d.length}\n`);
      return;
    }
    client.write(d);
  });
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', close);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\n`));
// A spec that dies without stopping it does not leave it behind for long.
setTimeout(() => process.exit(0), 120000).unref();
