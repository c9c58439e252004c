/**
 * The Holdfast browser client.
 *
 * ```ts
 * import { HoldfastClient } from "@holdfast/client";
 * const client = new HoldfastClient({ url: "https://chat.example.com", token });
 * client.on("event", (e) => console.log(e.room, e.seq, e.data));
 * client.connect();
 * await client.join("lobby");
 * const seq = await client.publish("lobby", { text: "hello" });
 * ```
 */

export { HoldfastClient } from "./client.js";
export type { ClientEvents, ClientOptions, ClientState, Membership, TokenSource } from "./client.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { StreamPosition } from "./position.js";
export type { Verdict } from "./position.js";
export { ClosedError, ConnectionLostError, errorFor, ForbiddenError, HoldfastError, MessageTooBigError, RoomLostError } from "./errors.js";
export { RoomChannel } from "./room.js";
export type { JoinTokenSource, RoomEvents, RoomOptions, RoomStatus } from "./room.js";
export { decodeMsgpack, encodeMsgpack } from "./msgpack.js";
export type { MsgpackExtension } from "./msgpack.js";
export type { RequestErrorCode } from "./errors.js";
export { Emitter } from "./emitter.js";
export * from "./generated.js";
export * from "./protocol.js";
export type { CloseInfo, Connection, Encoding, FetchLike, TransportName, WebSocketConstructor, WebSocketLike } from "./transports/transport.js";
