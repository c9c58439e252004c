// This file is generated from the holdfast-protocol crate by
// `cargo run -q -p holdfast-protocol --example gen_ts > clients/ts/src/generated.ts`.
// Do not edit it by hand: crates/holdfast-protocol/tests/ts_generated.rs fails when it
// differs from the generator's output.

/** The protocol version announced in `welcome`. */
export const PROTOCOL_VERSION = 1;
/** Longest client message `id`, in bytes. */
export const MAX_ID_LEN = 64;
/** Longest room name, in bytes. */
export const MAX_ROOM_LEN = 128;
/** Longest token, in bytes. */
export const MAX_TOKEN_LEN = 8192;
/** Longest user id accepted as a `send` target, in bytes. */
export const MAX_USER_LEN = 256;
/** `Sec-WebSocket-Protocol` of JSON frames (text messages; the default). */
export const SUBPROTOCOL_JSON = "holdfast.v1.json";
/** `Sec-WebSocket-Protocol` of MessagePack frames (binary messages). */
export const SUBPROTOCOL_MSGPACK = "holdfast.v1.msgpack";
/** The key of the JSON form of raw bytes: `{"$base64": "..."}`. */
export const BASE64_KEY = "$base64";

/** Every `code` of an `error` or `reconnection_failed` frame. */
export const ERROR_CODES = [
  "bad_json",
  "unknown_type",
  "invalid_frame",
  "not_authenticated",
  "already_authenticated",
  "auth_failed",
  "token_expired",
  "token_user_mismatch",
  "not_in_room",
  "already_in_room",
  "too_many_rooms",
  "room_full",
  "rate_limited",
  "authority_taken",
  "not_authority",
  "user_offline",
  "draining",
  "reconnection_token_invalid",
  "reconnection_expired",
  "reconnection_failed",
  "broker_unavailable",
  "internal",
  "forbidden",
] as const;

/** The `code` of an `error` or `reconnection_failed` frame. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The close codes a Holdfast gateway sends, by name. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  Replaced: 4000,
  SlowConsumer: 4001,
  TokenExpired: 4002,
  RateLimited: 4003,
  AuthTimeout: 4004,
  HeartbeatTimeout: 4005,
  AuthFailed: 4006,
  DisconnectedByServer: 4007,
} as const;

/** A close code a Holdfast gateway sends. */
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Each close code's reason text and whether a client should reconnect after it. */
export const CLOSE_CODES: Readonly<Record<CloseCode, { readonly reason: string; readonly reconnect: boolean }>> = {
  1000: { reason: "normal", reconnect: false },
  1001: { reason: "going_away", reconnect: true },
  1002: { reason: "protocol_error", reconnect: false },
  1007: { reason: "invalid_payload", reconnect: false },
  1008: { reason: "policy_violation", reconnect: false },
  1009: { reason: "message_too_big", reconnect: false },
  1011: { reason: "internal_error", reconnect: true },
  4000: { reason: "replaced", reconnect: false },
  4001: { reason: "slow_consumer", reconnect: true },
  4002: { reason: "token_expired", reconnect: false },
  4003: { reason: "rate_limited", reconnect: true },
  4004: { reason: "auth_timeout", reconnect: true },
  4005: { reason: "heartbeat_timeout", reconnect: true },
  4006: { reason: "auth_failed", reconnect: false },
  4007: { reason: "disconnected_by_server", reconnect: false },
};

/**
 * Whether a client should reconnect (after backoff) when the gateway closed with `code`.
* Returns `undefined` for a code the gateway does not send (for example 1006, a connection
* lost without a close frame), which a client treats as a transient failure.
 */
export function shouldReconnect(code: number): boolean | undefined {
  return (CLOSE_CODES as Record<number, { reconnect: boolean } | undefined>)[code]?.reconnect;
}

/** Every `type` a client may send. */
export const CLIENT_FRAME_TYPES = [
  "auth",
  "join",
  "leave",
  "publish",
  "send",
  "claim_authority",
  "release_authority",
  "reconnect",
  "refresh",
  "ping",
  "set_state",
] as const;

/** The `type` of a client frame. */
export type ClientFrameType = (typeof CLIENT_FRAME_TYPES)[number];

/** Every `type` the server sends. */
export const SERVER_FRAME_TYPES = [
  "welcome",
  "joined",
  "left",
  "event",
  "presence",
  "authority_changed",
  "ack",
  "message",
  "refreshed",
  "reconnected",
  "reconnection_failed",
  "error",
  "pong",
  "server_shutdown",
  "state_set",
] as const;

/** The `type` of a server frame. */
export type ServerFrameType = (typeof SERVER_FRAME_TYPES)[number];

/** The fields of every client frame (besides `type`), optional ones included. */
export const CLIENT_FRAME_FIELDS = {
  auth: ["token"] as const,
  join: ["id", "room", "token"] as const,
  leave: ["id", "room"] as const,
  publish: ["data", "id", "room", "traceparent"] as const,
  send: ["data", "id", "to"] as const,
  claim_authority: ["id", "room"] as const,
  release_authority: ["id", "room"] as const,
  reconnect: ["epoch", "id", "join_token", "last_sequence", "player_id", "room", "token"] as const,
  refresh: ["id", "token"] as const,
  ping: ["id"] as const,
  set_state: ["id", "room", "state"] as const,
} as const;

/** The fields of every server frame (besides `type`), optional ones included. */
export const SERVER_FRAME_FIELDS = {
  welcome: ["expires_at", "max_message_bytes", "node_id", "ping_interval_ms", "pong_timeout_ms", "protocol", "session_id", "user_id"] as const,
  joined: ["authority", "epoch", "events", "gap", "id", "member_count", "members", "player_id", "reconnection_token", "room", "seq", "state", "state_seq"] as const,
  left: ["epoch", "id", "room", "seq"] as const,
  event: ["data", "epoch", "from", "id", "room", "seq", "traceparent", "ts", "user_id"] as const,
  presence: ["changes", "count", "room"] as const,
  authority_changed: ["authority", "epoch", "room", "seq"] as const,
  ack: ["id", "room", "seq"] as const,
  message: ["data", "from", "ts"] as const,
  refreshed: ["expires_at", "id"] as const,
  reconnected: ["authority", "epoch", "events", "gap", "id", "member_count", "members", "player_id", "reconnection_token", "recovered", "recovered_from", "rolled_back", "room", "seq"] as const,
  reconnection_failed: ["code", "id", "message", "room"] as const,
  error: ["code", "id", "message"] as const,
  pong: ["id"] as const,
  server_shutdown: ["reason", "reconnect_after_ms"] as const,
  state_set: ["epoch", "room", "seq", "state"] as const,
} as const;
