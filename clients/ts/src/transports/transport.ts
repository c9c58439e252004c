/**
 * The seam between the client and a way of carrying frames: WebSocket, server-sent events, or
 * long-polling.
 *
 * A transport opens one {@link Connection} per session attempt. It authenticates with the token
 * it is given, hands every server frame to {@link TransportHandlers.onFrame} in order, and
 * reports the end of the connection exactly once through {@link TransportHandlers.onClose}
 * (unless the client dropped or closed it, after which it reports nothing). Room membership,
 * resume, dedupe and heartbeats live in the client and are the same on every transport.
 */

import type { ClientFrame, ServerFrame } from "../protocol.js";

/** The transports, in the order the client tries them by default. */
export type TransportName = "websocket" | "sse" | "polling";

/** How a connection ended. */
export interface CloseInfo {
  /**
   * The close code when the server gave one: the WebSocket close code, the `code` of an SSE
   * `close` event or of a poll's `closed`, or a code mapped from an HTTP refusal (401 with
   * `token_expired` maps to 4002, other 401s to 4006, 413 to 1009). Absent when the connection
   * was lost without one.
   */
  code?: number;
  /** A human-readable reason. */
  reason: string;
}

/** What a connection reports to the client. */
export interface TransportHandlers {
  /** Called with each server frame, in order. */
  onFrame(frame: ServerFrame): void;
  /** Called on any sign of life from the server (frames and keep-alives alike). */
  onActivity(): void;
  /** Called once when the connection ends by itself. */
  onClose(info: CloseInfo): void;
}

/** One live attempt at a session over some transport. */
export interface Connection {
  /** The transport carrying this connection. */
  readonly transport: TransportName;
  /** The encoding of its frames (fallback transports are always JSON). */
  readonly encoding?: Encoding;
  /** Queues `frame` for the server; frames are delivered in the order they were sent. */
  send(frame: ClientFrame): void;
  /**
   * Ends the connection politely, and with it the session (a close frame on a WebSocket, an
   * explicit end request on the fallbacks); no more callbacks.
   */
  close(code?: number, reason?: string): void;
  /**
   * Cuts the connection without waiting for anything, as a network failure would; no more
   * callbacks. A browser cannot abort a WebSocket's TCP connection, so the WebSocket transport
   * closes it and ignores everything after; the gateway keeps the member away either way.
   */
  drop(): void;
}

/** A minimal structural type of the WHATWG `WebSocket`, so Node's `ws` package also fits. */
export interface WebSocketLike {
  readonly readyState: number;
  /** The subprotocol the server chose (empty when it chose none). */
  readonly protocol?: string;
  /** Set to `"arraybuffer"` so binary messages arrive as bytes. */
  binaryType?: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A constructor of {@link WebSocketLike} sockets. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/**
 * How frames are encoded on the WebSocket: `json` (text messages, the default) or `msgpack`
 * (binary MessagePack messages, which also carry binary `data`). SSE and long-polling are JSON.
 */
export type Encoding = "json" | "msgpack";

/** A `fetch` implementation (the global one by default). */
export type FetchLike = typeof fetch;

/** What every transport needs to open a connection. */
export interface ConnectParams {
  /** The token for this attempt. */
  token: string;
  /** Receives the connection's frames and its end. */
  handlers: TransportHandlers;
}

/** Opens connections over one transport. */
export type Transport = (params: ConnectParams) => Connection;

/** Parses one JSON server frame; returns `undefined` (and drops it) when it is not an object with a `type`. */
export function parseFrame(text: string): ServerFrame | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === "object" && typeof (value as { type?: unknown }).type === "string") {
      return value as ServerFrame;
    }
  } catch {
    // An unreadable frame is dropped, as the Rust client does.
  }
  return undefined;
}

/** Maps an HTTP refusal of a fallback request to a close code, so terminal refusals stop the client. */
export async function refusal(response: Response): Promise<CloseInfo> {
  let body = "";
  try {
    body = (await response.text()).trim();
  } catch {
    // The body is only used to tell an expired token from a bad one.
  }
  const reason = `HTTP ${response.status}${body ? `: ${body.slice(0, 200)}` : ""}`;
  if (response.status === 401) {
    return { code: body.includes("token_expired") ? 4002 : 4006, reason };
  }
  if (response.status === 413) return { code: 1009, reason };
  return { reason };
}
