'use strict';
// Room broadcast peer on the Node `ws` library, for holdfast-bench.
//
// A socket joins the room named by its `room` query parameter. A text frame with a `room` field
// is broadcast verbatim to every socket of that room (the sender included); any other frame is
// echoed to its sender. A socket with more than MAX_BUFFERED bytes waiting is terminated, so a
// slow reader cannot grow the server without bound.
//
// Usage: node ws-server.js [--port 9001] [--host 127.0.0.1]

const { WebSocketServer } = require('ws');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
};
const host = arg('host', '127.0.0.1');
const port = Number(arg('port', process.env.PORT || 9001));
const MAX_BUFFERED = 4 * 1024 * 1024;

/** @type {Map<string, Set<import('ws').WebSocket>>} */
const rooms = new Map();

const wss = new WebSocketServer({ host, port, perMessageDeflate: false, clientTracking: false });

wss.on('connection', (ws, req) => {
  const room = new URL(req.url, 'http://peer').searchParams.get('room');
  if (room) {
    let members = rooms.get(room);
    if (!members) {
      members = new Set();
      rooms.set(room, members);
    }
    members.add(ws);
  }
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg && typeof msg.room === 'string') {
      const members = rooms.get(msg.room);
      if (!members) return;
      for (const peer of members) {
        if (peer.bufferedAmount > MAX_BUFFERED) {
          peer.terminate();
        } else {
          peer.send(text);
        }
      }
    } else {
      ws.send(text);
    }
  });
  ws.on('close', () => {
    if (!room) return;
    const members = rooms.get(room);
    if (members) {
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
    }
  });
  ws.on('error', () => {});
});

wss.on('listening', () => console.error(`ws peer listening on ${host}:${port} (pid ${process.pid})`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
