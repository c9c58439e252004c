/**
 * The frames of Holdfast protocol v1 (docs/PROTOCOL.md), as TypeScript types.
 *
 * The interfaces are written by hand for readable docs, and checked at compile time against
 * `generated.ts`, which the holdfast-protocol crate generates: the union of frame types must
 * equal the crate's list, and each interface's keys must equal the crate's fields for that
 * frame. A frame or field added in Rust therefore fails `tsc` here until it is described.
 */

import type {
  CLIENT_FRAME_FIELDS,
  ClientFrameType,
  ErrorCode,
  SERVER_FRAME_FIELDS,
  ServerFrameType,
} from "./generated.js";

/** Any JSON value; Holdfast never inspects application data. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Whether a member is connected (`online`) or dropped within its reconnection window (`away`). */
export type MemberStatus = "online" | "away";

/** One member of a room. */
export interface Member {
  /** The member's id within the room; kept across reconnects. */
  player_id: string;
  /** The member's user id. */
  user_id: string;
  /** Whether the member is connected. */
  status: MemberStatus;
}

// Client frames.

export interface AuthFrame {
  type: "auth";
  token: string;
}
export interface JoinFrame {
  type: "join";
  room: string;
  /** A join token for this room (a JWT with `sub` and `room`) from the application. */
  token?: string;
  id?: string;
}
export interface LeaveFrame {
  type: "leave";
  room: string;
  id?: string;
}
export interface PublishFrame {
  type: "publish";
  room: string;
  data: unknown;
  id?: string;
  traceparent?: string;
}
export interface SendFrame {
  type: "send";
  to: string;
  data: unknown;
  id?: string;
}
export interface ClaimAuthorityFrame {
  type: "claim_authority";
  room: string;
  id?: string;
}
export interface ReleaseAuthorityFrame {
  type: "release_authority";
  room: string;
  id?: string;
}
export interface ReconnectFrame {
  type: "reconnect";
  room: string;
  player_id: string;
  token: string;
  last_sequence: number;
  /** The epoch `last_sequence` belongs to, so the server can tell a rolled-back stream. */
  epoch?: string;
  /** The join token the room was joined with, if any: the join policy is checked again. */
  join_token?: string;
  id?: string;
}
export interface RefreshFrame {
  type: "refresh";
  token: string;
  id?: string;
}
export interface PingFrame {
  type: "ping";
  id?: string;
}
/** Replaces the room's state (the member holding authority only). */
export interface SetStateFrame {
  type: "set_state";
  room: string;
  state: unknown;
  id?: string;
}

/** A frame a client sends. */
export type ClientFrame =
  | AuthFrame
  | JoinFrame
  | LeaveFrame
  | PublishFrame
  | SendFrame
  | ClaimAuthorityFrame
  | ReleaseAuthorityFrame
  | ReconnectFrame
  | RefreshFrame
  | PingFrame
  | SetStateFrame;

// Server frames.

export interface WelcomeFrame {
  type: "welcome";
  protocol: number;
  user_id: string;
  session_id: string;
  node_id: string;
  ping_interval_ms: number;
  pong_timeout_ms: number;
  max_message_bytes: number;
  /** When the token expires, Unix seconds. */
  expires_at: number;
}
export interface JoinedFrame {
  type: "joined";
  room: string;
  player_id: string;
  /** Every member (absent when the room's presence mode is not `full`). */
  members?: Member[];
  /** Members, connected or away, this one included. */
  member_count: number;
  authority: string | null;
  /** The room's position: the member receives every room message after it. */
  seq: number;
  epoch: string;
  reconnection_token?: string;
  /** The room's latest state, when it has one. */
  state?: unknown;
  /** The `seq` of the `state_set` that set `state`. */
  state_seq?: number;
  /** The room messages after `state_seq` up to `seq` (the changes on top of `state`). */
  events?: RoomFrame[];
  /** Messages after `state_seq` the room no longer holds. */
  gap?: Gap;
  id?: string;
}
export interface LeftFrame {
  type: "left";
  room: string;
  seq: number;
  epoch: string;
  id?: string;
}
export interface EventFrame {
  type: "event";
  room: string;
  seq: number;
  epoch: string;
  /** Server time of publication, Unix milliseconds. */
  ts: number;
  /** The publisher's player id. */
  from: string;
  user_id: string;
  data: unknown;
  /** The publisher's message id. */
  id?: string;
  traceparent?: string;
}
/** A member's status in a `presence` change. */
export type PresenceStatus = "online" | "away" | "left";
/** One member's new status. */
export interface MemberUpdate {
  player_id: string;
  user_id: string;
  status: PresenceStatus;
}
/**
 * Membership changes, coalesced. Presence is state, not part of the room's stream: no `seq`,
 * never replayed. Apply each change as an idempotent update of the member list.
 */
export interface PresenceFrame {
  type: "presence";
  room: string;
  /** Absent when the room's presence mode is `count`. */
  changes?: MemberUpdate[];
  /** Members, connected or away, after these changes. */
  count: number;
}
export interface AuthorityChangedFrame {
  type: "authority_changed";
  room: string;
  seq: number;
  epoch: string;
  authority: string | null;
}
export interface AckFrame {
  type: "ack";
  id: string;
  room?: string;
  /** For `publish`: the event's sequence number. */
  seq?: number;
}
export interface MessageFrame {
  type: "message";
  /** The sender's user id. */
  from: string;
  ts: number;
  data: unknown;
}
export interface RefreshedFrame {
  type: "refreshed";
  expires_at: number;
  id?: string;
}
/** The sequence range a resuming client missed and the server can no longer replay. */
export interface Gap {
  from: number;
  to: number;
  epoch: string;
}
export interface ReconnectedFrame {
  type: "reconnected";
  room: string;
  player_id: string;
  events: RoomFrame[];
  recovered: boolean;
  gap?: Gap;
  /** The client's messages of its old epoch that the room's stream no longer has. */
  rolled_back?: Gap;
  /** Every member (absent when the room's presence mode is not `full`). */
  members?: Member[];
  member_count: number;
  authority: string | null;
  seq: number;
  epoch: string;
  reconnection_token: string;
  /** `"snapshot"`: `events` starts with the room's latest `state_set`; `gap` is what it covers. */
  recovered_from?: "snapshot";
  id?: string;
}
export interface ReconnectionFailedFrame {
  type: "reconnection_failed";
  room: string;
  code: ErrorCode;
  message: string;
  id?: string;
}
export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  id?: string;
}
export interface PongFrame {
  type: "pong";
  id?: string;
}
export interface ServerShutdownFrame {
  type: "server_shutdown";
  reason: string;
  reconnect_after_ms: number;
}
/** The room's state was replaced: a room message with its own `seq`. */
export interface StateSetFrame {
  type: "state_set";
  room: string;
  seq: number;
  epoch: string;
  state: unknown;
}

/** The room-scoped frames that carry `seq` and `epoch` and pass through stream positions. */
export type RoomFrame = EventFrame | AuthorityChangedFrame | StateSetFrame;

/** A frame the server sends. */
export type ServerFrame =
  | WelcomeFrame
  | JoinedFrame
  | LeftFrame
  | RoomFrame
  | PresenceFrame
  | AckFrame
  | MessageFrame
  | RefreshedFrame
  | ReconnectedFrame
  | ReconnectionFailedFrame
  | ErrorFrame
  | PongFrame
  | ServerShutdownFrame;

/** Whether a server frame is one of the room-scoped stream frames. */
export function isRoomFrame(frame: ServerFrame): frame is RoomFrame {
  switch (frame.type) {
    case "event":
    case "authority_changed":
    case "state_set":
      return true;
    default:
      return false;
  }
}

// Compile-time checks against the generated lists. Each alias below fails to compile (its
// constraint is not met) when the hand-written types and the protocol crate disagree.

type Equal<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
type KeysOf<F> = Exclude<keyof F, "type">;
type ClientFields = {
  [T in ClientFrameType]: Equal<
    KeysOf<Extract<ClientFrame, { type: T }>>,
    (typeof CLIENT_FRAME_FIELDS)[T][number]
  >;
};
type ServerFields = {
  [T in ServerFrameType]: Equal<
    KeysOf<Extract<ServerFrame, { type: T }>>,
    (typeof SERVER_FRAME_FIELDS)[T][number]
  >;
};

/** Exported only so the compiler keeps the checks; it carries no runtime value. */
export type ProtocolChecks = [
  Assert<Equal<ClientFrame["type"], ClientFrameType>>,
  Assert<Equal<ServerFrame["type"], ServerFrameType>>,
  Assert<Equal<ClientFields[ClientFrameType], true>>,
  Assert<Equal<ServerFields[ServerFrameType], true>>,
];
