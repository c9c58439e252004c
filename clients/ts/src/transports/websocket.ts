/**
 * The WebSocket transport: `GET /ws` upgraded, one JSON frame per text message.
 *
 * The token goes in-band as the first frame (`auth`) rather than in the URL, so it stays out of
 * access logs and a bad or expired token comes back as a close code (4006, 4002) the browser can
 * see; an HTTP 401 on the upgrade would look like any other failed connection.
 */

import type { ClientFrame } from "../protocol.js";
import { parseFrame, type Connection, type Transport, type WebSocketConstructor, type WebSocketLike } from "./transport.js";

/** Opens WebSocket connections to `url` (for example `wss://host/ws`). */
export function websocketTransport(url: string, WebSocketImpl: WebSocketConstructor): Transport {
  return ({ token, handlers }) => {
    const socket: WebSocketLike = new WebSocketImpl(url);
    /** Set once the client dropped or closed the connection, or it ended: no more callbacks. */
    let done = false;
    const silence = () => {
      done = true;
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    };
    socket.onopen = () => {
      if (!done) socket.send(JSON.stringify({ type: "auth", token } satisfies ClientFrame));
    };
    socket.onmessage = (ev) => {
      if (done) return;
      handlers.onActivity();
      if (typeof ev.data !== "string") return;
      const frame = parseFrame(ev.data);
      if (frame) handlers.onFrame(frame);
    };
    socket.onclose = (ev) => {
      if (done) return;
      silence();
      // 1005 (no status) and 1006 (abnormal) are produced locally, never sent by a gateway.
      const code = ev.code === 1005 || ev.code === 1006 ? undefined : ev.code;
      handlers.onClose({ code, reason: ev.reason || (code ? `closed with ${code}` : "the WebSocket connection was lost") });
    };
    // An error is always followed by a close event, which reports it.
    socket.onerror = () => {};
    const connection: Connection = {
      transport: "websocket",
      send(frame) {
        // Frames are only sent after `welcome`, so the socket is open; a closing socket drops
        // them, and the client resends what matters after the next connection.
        if (!done && socket.readyState === 1) socket.send(JSON.stringify(frame));
      },
      close(code = 1000, reason = "") {
        silence();
        try {
          socket.close(code, reason);
        } catch {
          // Closing a socket that is already closing is not an error worth reporting.
        }
      },
      drop() {
        connection.close(1000, "dropped");
      },
    };
    return connection;
  };
}
