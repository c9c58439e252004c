'use strict';
// Room broadcast peer on socket.io, for holdfast-bench.
//
// WebSocket transport only (no long-polling upgrade), no compression. A socket joins the room
// named by its `room` handshake query parameter. `pub` events `{room, data}` are emitted to the
// whole room as `ev` (the sender included); `echo` events are emitted back to the sender.
//
// Usage: node socketio-server.js [--port 9002] [--host 127.0.0.1]

const http = require('http');
const { Server } = require('socket.io');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
};
const host = arg('host', '127.0.0.1');
const port = Number(arg('port', process.env.PORT || 9002));

const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
});

io.on('connection', (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === 'string' && room) socket.join(room);
  socket.on('pub', (msg) => {
    if (msg && typeof msg.room === 'string') io.to(msg.room).emit('ev', msg);
  });
  socket.on('echo', (msg) => socket.emit('echo', msg));
});

server.listen(port, host, () =>
  console.error(`socket.io peer listening on ${host}:${port} (pid ${process.pid})`),
);
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
