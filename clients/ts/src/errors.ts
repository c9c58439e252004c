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
