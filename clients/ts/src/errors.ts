/** The errors a request promise rejects with. */

import type { ErrorCode } from "./generated.js";

/**
 * Why a request failed: a protocol error code from the gateway, or one of the client's own
 * reasons.
 * - `connection_lost`: the request was on the wire when the connection dropped, and it is not
 *   one the client may safely resend (joins, direct sends, authority requests).
 * - `closed`: the client stopped (by `close()` or a terminal close code).
 * - `room_lost`: the room could not be resumed after a reconnect (see `resumeCode`).
 * - `message_too_big`: the frame exceeds the gateway's `max_message_bytes`; it was not sent.
 * - `protocol`: the gateway answered in a way the protocol does not allow.
 */
export type RequestErrorCode = ErrorCode | "connection_lost" | "closed" | "room_lost" | "message_too_big" | "protocol";

/** A failed request. */
export class HoldfastError extends Error {
  override readonly name = "HoldfastError";

  constructor(
    /** The stable reason. */
    readonly code: RequestErrorCode,
    message: string,
    /** For `room_lost`: the code of the failed resume. */
    readonly resumeCode?: ErrorCode,
  ) {
    super(message);
  }

  /**
   * Whether the gateway refused the operation as not permitted: `forbidden` (join, publish,
   * send), or a room that could not be resumed because the user may no longer join it.
   */
  get forbidden(): boolean {
    return this.code === "forbidden" || this.resumeCode === "forbidden";
  }
}

/**
 * The gateway answered `forbidden`: the user may not join that room, publish there or message
 * that user. The connection stays up.
 */
export class ForbiddenError extends HoldfastError {
  constructor(message: string) {
    super("forbidden", message);
  }
}

/** The request was on the wire when the connection dropped and may or may not have been applied. */
export class ConnectionLostError extends HoldfastError {
  constructor(message: string) {
    super("connection_lost", message);
  }
}

/** The client stopped (by `close()` or a terminal close code). */
export class ClosedError extends HoldfastError {
  constructor(message: string) {
    super("closed", message);
  }
}

/** The room could not be resumed (nor joined again) after a reconnect; see `resumeCode`. */
export class RoomLostError extends HoldfastError {
  constructor(message: string, resumeCode: ErrorCode) {
    super("room_lost", message, resumeCode);
  }
}

/** The frame exceeds the gateway's `max_message_bytes`; it was not sent. */
export class MessageTooBigError extends HoldfastError {
  constructor(message: string) {
    super("message_too_big", message);
  }
}

/** The error class for `code`, so applications can match with `instanceof` or on `code`. */
export function errorFor(code: RequestErrorCode, message: string): HoldfastError {
  switch (code) {
    case "forbidden":
      return new ForbiddenError(message);
    case "connection_lost":
      return new ConnectionLostError(message);
    case "closed":
      return new ClosedError(message);
    case "message_too_big":
      return new MessageTooBigError(message);
    default:
      return new HoldfastError(code, message);
  }
}
