/**
 * The WebSocket transport: `GET /ws` upgraded. With the `json` encoding each frame is one JSON
 * text message; with `msgpack` the client offers the `holdfast.v1.msgpack` subprotocol and,
 * when the gateway accepts it, each frame in both directions is one binary MessagePack message
 * (a gateway that does not know the subprotocol answers without one, and the client speaks
 * JSON).
 *
 * The token goes in-band as the first frame (`auth`) rather than in the URL, so it stays out of
 * access logs and a bad or expired token comes back as a close code (4006, 4002) the browser can
 * see; an HTTP 401 on the upgrade would look like any other failed connection.
 */

import { decodeMsgpack, encodeMsgpack } from "../msgpack.js";
import type { ClientFrame, ServerFrame } from "../protocol.js";
import { parseFrame, type Connection, type Encoding, type Transport, type WebSocketConstructor, type WebSocketLike } from "./transport.js";

/** The subprotocol of each encoding. */
export const SUBPROTOCOLS: Record<Encoding, string> = {
  json: "holdfast.v1.json",
  msgpack: "holdfast.v1.msgpack",
};

/** Opens WebSocket connections to `url` (for example `wss://host/ws`). */
export function websocketTransport(url: string, WebSocketImpl: WebSocketConstructor, encoding: Encoding = "json"): Transport {
  /**
   * Browsers fail the handshake when subprotocols were offered and the gateway answers with
   * none (a gateway without MessagePack). After an attempt that offered them failed before
   * opening, the next one offers none; if that one opens, the gateway speaks JSON only and the
   * client stays with JSON.
   */
  let offerNext = encoding === "msgpack";
  /** Set once a connection without the offer opened after one with it failed: JSON from then on. */
  let jsonOnly = false;
  return ({ token, handlers }) => {
    // JSON clients offer no subprotocol, so they work with every gateway version.
    const offered = offerNext && !jsonOnly;
    const socket: WebSocketLike = offered ? new WebSocketImpl(url, [SUBPROTOCOLS.msgpack, SUBPROTOCOLS.json]) : new WebSocketImpl(url);
    socket.binaryType = "arraybuffer";
    /** Whether the socket opened. */
    let opened = false;
    /** The encoding in use, known once the socket is open. */
    let binary = false;
    /** Set once the client dropped or closed the connection, or it ended: no more callbacks. */
    let done = false;
    const silence = () => {
      done = true;
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    };
    const write = (frame: ClientFrame) => socket.send(binary ? encodeMsgpack(frame) : JSON.stringify(frame));
    socket.onopen = () => {
      if (done) return;
      opened = true;
      binary = socket.protocol === SUBPROTOCOLS.msgpack;
      if (!offered && encoding === "msgpack") jsonOnly = true;
      write({ type: "auth", token });
    };
    socket.onmessage = (ev) => {
      if (done) return;
      handlers.onActivity();
      const frame = typeof ev.data === "string" ? parseFrame(ev.data) : decodeBinary(ev.data);
      if (frame) handlers.onFrame(frame);
    };
    socket.onclose = (ev) => {
      if (done) return;
      silence();
      // Offered and refused before opening: try without; plain and failed too: the network,
      // not the subprotocol, so offer again (unless the gateway is known to speak JSON only).
      if (!opened && encoding === "msgpack") offerNext = !offered;
      // 1005 (no status) and 1006 (abnormal) are produced locally, never sent by a gateway.
      const code = ev.code === 1005 || ev.code === 1006 ? undefined : ev.code;
      handlers.onClose({ code, reason: ev.reason || (code ? `closed with ${code}` : "the WebSocket connection was lost") });
    };
    // An error is always followed by a close event, which reports it.
    socket.onerror = () => {};
    const connection: Connection = {
      transport: "websocket",
      get encoding(): Encoding {
        return binary ? "msgpack" : "json";
      },
      send(frame) {
        // Frames are only sent after `welcome`, so the socket is open; a closing socket drops
        // them, and the client resends what matters after the next connection.
        if (!done && socket.readyState === 1) write(frame);
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

/** Decodes one binary message (an `ArrayBuffer`, or a Node `Buffer`); drops what is not a frame. */
function decodeBinary(data: unknown): ServerFrame | undefined {
  let bytes: Uint8Array;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (data instanceof Uint8Array) bytes = data;
  else return undefined;
  try {
    const value = decodeMsgpack(bytes);
    if (value !== null && typeof value === "object" && typeof (value as { type?: unknown }).type === "string") {
      return value as ServerFrame;
    }
  } catch {
    // An unreadable frame is dropped, as a JSON one is.
  }
  return undefined;
}
