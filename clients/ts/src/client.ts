/**
 * The Holdfast client: one session with a gateway, kept alive across drops.
 *
 * # Life of a client
 * 1. `connect()` opens a connection on the current transport (WebSocket first). The session
 *    starts at `welcome`: the client resumes every room it is in with `reconnect` (its latest
 *    reconnection token and the last `seq` it delivered), then sends the requests that waited.
 * 2. While connected it sends an application `ping` every `ping_interval_ms` and presumes the
 *    connection dead after `ping_interval_ms + pong_timeout_ms` without any inbound traffic.
 * 3. When the connection ends, pending requests are sorted: publishes and leaves are kept and
 *    resent with the same id (the gateway dedupes publishes), joins, direct sends and authority
 *    requests that were on the wire fail with `connection_lost` because they may or may not
 *    have been applied. Unless the close code is terminal, the client reconnects after a
 *    backoff with full jitter (or the hint of `server_shutdown`).
 * 4. When a transport fails to reach a session `fallbackAfter` times in a row, the client moves
 *    to the next one (WebSocket, then SSE, then long-polling) and reports it as `transport`.
 *
 * Room frames pass through each room's {@link StreamPosition}, so replays never reach the
 * application twice and losses surface as `gap` events.
 */

import { Backoff, type BackoffOptions } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ClosedError, ConnectionLostError, errorFor, HoldfastError, MessageTooBigError, RoomLostError } from "./errors.js";
import { encodeMsgpack } from "./msgpack.js";
import { RoomChannel, type RoomOptions } from "./room.js";
import { CloseCode, shouldReconnect, type ErrorCode } from "./generated.js";
import { StreamPosition } from "./position.js";
import {
  isRoomFrame,
  type AckFrame,
  type AuthorityChangedFrame,
  type ClientFrame,
  type ErrorFrame,
  type EventFrame,
  type JoinedFrame,
  type LeftFrame,
  type Member,
  type PresenceFrame,
  type MessageFrame,
  type ReconnectedFrame,
  type ReconnectFrame,
  type ReconnectionFailedFrame,
  type RoomFrame,
  type ServerFrame,
  type WelcomeFrame,
} from "./protocol.js";
import { pollingTransport } from "./transports/polling.js";
import { sseTransport } from "./transports/sse.js";
import type {
  CloseInfo,
  Connection,
  Encoding,
  FetchLike,
  Transport,
  TransportName,
  WebSocketConstructor,
} from "./transports/transport.js";
import { websocketTransport } from "./transports/websocket.js";

/** Where the client stands. */
export type ClientState = "disconnected" | "connecting" | "connected";

/** A token, or a function that returns a fresh one for every connection attempt and refresh. */
export type TokenSource = string | (() => string | Promise<string>);

/** Settings of a {@link HoldfastClient}. */
export interface ClientOptions {
  /**
   * The gateway's base URL, for example `https://chat.example.com` (a `ws:`/`wss:` URL is also
   * accepted). The endpoints are `/ws`, `/sse` and `/poll` under it unless given below.
   */
  url: string;
  /**
   * The token. With a function, the client asks for a new token before every reconnection and
   * before the current one expires (sending `refresh`), and it reconnects after close 4002.
   */
  token: TokenSource;
  /** The transports to use, in order of preference (default: all three, WebSocket first). */
  transports?: TransportName[];
  /** Failed attempts in a row on one transport before the next one is tried (default 2). */
  fallbackAfter?: number;
  /** Overrides the WebSocket endpoint (default `<url>/ws` with a `ws:`/`wss:` scheme). */
  websocketUrl?: string;
  /** Overrides the SSE stream endpoint (default `<url>/sse`); frames go to `<sseUrl>/send`. */
  sseUrl?: string;
  /** Overrides the long-polling endpoint (default `<url>/poll`); frames go to `<pollUrl>/send`. */
  pollUrl?: string;
  /** The reconnection backoff (default 250 ms doubling up to 30 s, full jitter). */
  backoff?: BackoffOptions;
  /** How long an attempt may take to reach `welcome`, in milliseconds (default 10000). */
  connectTimeoutMs?: number;
  /** How long one long-poll may take before it is presumed lost, in milliseconds (default 40000). */
  pollTimeoutMs?: number;
  /**
   * The WebSocket implementation (default the global `WebSocket`). Node.js 20 has none: pass
   * the `ws` package's (`import WebSocket from "ws"`). Node.js 22 and browsers need nothing.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * The WebSocket encoding: `json` (default) or `msgpack` (binary MessagePack frames, offered
   * as the `holdfast.v1.msgpack` subprotocol; JSON when the gateway does not accept it). The
   * fallback transports always speak JSON.
   */
  encoding?: Encoding;
  /**
   * This device's id, sent as the `device` parameter: with `session.single_socket = "device"`
   * the gateway replaces only an older session of the same user and device (default none).
   */
  device?: string;
  /**
   * Joins a room again by itself when it could not be resumed after a reconnect (for example
   * after a single node restarted and lost its rooms); its queued publishes are then sent with
   * their ids. Default true; with false the room is lost (`resume_failed`, `room_lost`).
   */
  autoRejoin?: boolean;
  /**
   * While connected over SSE or long-polling, how often to check whether WebSocket works
   * again, in milliseconds (default 30000, 0 to never check); when it does, the client moves
   * back to WebSocket. It also tries WebSocket first again after every lost connection.
   */
  upgradeProbeMs?: number;
  /** The `fetch` implementation for SSE and long-polling (default the global `fetch`). */
  fetch?: FetchLike;
  /** The source of randomness for jitter and request ids (default `Math.random`). */
  random?: () => number;
}

/** A room membership as reported by `joined`. */
export interface Membership {
  room: string;
  playerId: string;
  /** Every member (empty when the room's presence mode is not `full`). */
  members: Member[];
  /** Members, connected or away, this one included. */
  memberCount: number;
  authority: string | null;
  seq: number;
  epoch: string;
}

/** The events of a {@link HoldfastClient}, by name. */
export interface ClientEvents {
  /** The client's state changed. */
  state: ClientState;
  /** The client chose a transport for its next attempts (first at `connect()`, then on fallback). */
  transport: { transport: TransportName; reason: string };
  /** A session started (`welcome`). */
  connected: { userId: string; sessionId: string; nodeId: string; transport: TransportName };
  /** The connection ended; `willReconnect` tells whether the client will try again. */
  disconnected: { code?: number; reason: string; willReconnect: boolean };
  /** The client stopped for good. */
  closed: { code?: number; reason: string };
  /** A room event, once and in order. */
  event: EventFrame;
  /**
   * Members joined, dropped (`away`, may come back), came back (`online`) or left: coalesced,
   * outside the room's stream. Apply each change as an idempotent update of the member list.
   */
  presence: PresenceFrame;
  authority_changed: AuthorityChangedFrame;
  /** Data sent directly to this user. */
  message: MessageFrame;
  /** Room frames `from..=to` of `epoch` are lost; fetch them from the application's store. */
  gap: { room: string; from: number; to: number; epoch: string };
  /**
   * A room was resumed after a reconnect, emitted after the `gap` (if any) and the replayed
   * frames; its members and authority as they are now.
   */
  resumed: {
    room: string;
    recovered: boolean;
    /** Empty when the room's presence mode is not `full`. */
    members: Member[];
    memberCount: number;
    authority: string | null;
    seq: number;
    epoch: string;
  };
  /**
   * A room could not be resumed. With `rejoining` (the `autoRejoin` default) the client joins
   * it again and reports `rejoined`; otherwise it is no longer in it.
   */
  resume_failed: { room: string; code: ErrorCode; message: string; rejoining: boolean };
  /**
   * A room that could not be resumed was joined again: a new membership, so what happened in
   * the room meanwhile is not replayed (fetch it from the application's store if it matters).
   */
  rejoined: Membership;
  /** The gateway is draining; the client reconnects after `reconnectAfterMs` plus jitter. */
  server_shutdown: { reason: string; reconnectAfterMs: number };
  /** An `error` frame that answered no pending request. */
  error: ErrorFrame;
  /** Every frame in either direction, for logs and debugging. */
  frame: { direction: "in" | "out"; frame: ServerFrame | ClientFrame };
}

/** The pause before resending unacknowledged publishes after an anonymous `rate_limited` error. */
const RATE_LIMIT_RETRY_MS = 1000;
/** The pause before retrying a token refresh that failed. */
const REFRESH_RETRY_MS = 1000;

/** One room the client is a member of. */
interface RoomState {
  /** The member's id in the room, needed to resume it. */
  playerId: string;
  /** The latest reconnection token; single-use, so replaced on every resume. */
  token: string | undefined;
  /** The join token the room was joined with, presented again on resume. */
  joinToken: string | undefined;
  /** What the application has seen of the room's stream. */
  position: StreamPosition;
  /** Whether the membership is live on the current connection; room requests wait otherwise. */
  live: boolean;
  /** The latest room state snapshot the gateway reported, if any. */
  state?: { state: unknown; seq: number };
}

/** A request waiting for its reply. */
type Pending =
  | { kind: "join"; room: string; token?: string; rejoin?: boolean; sent: boolean; resolve: (m: Membership) => void; reject: (e: HoldfastError) => void }
  | { kind: "leave"; room: string; sent: boolean; resolve: () => void; reject: (e: HoldfastError) => void }
  | { kind: "publish"; room: string; data: unknown; sent: boolean; resolve: (seq: number) => void; reject: (e: HoldfastError) => void }
  | { kind: "send"; to: string; data: unknown; sent: boolean; resolve: () => void; reject: (e: HoldfastError) => void }
  | { kind: "authority"; room: string; claim: boolean; sent: boolean; resolve: () => void; reject: (e: HoldfastError) => void }
  | { kind: "state"; room: string; state: unknown; sent: boolean; resolve: (seq: number | undefined) => void; reject: (e: HoldfastError) => void }
  | { kind: "resume"; room: string; sent: boolean }
  | { kind: "refresh"; sent: boolean };

/** A client of one Holdfast gateway. */
export class HoldfastClient extends Emitter<ClientEvents> {
  private readonly options: ClientOptions;
  private readonly backoff: Backoff;
  private readonly transports: { name: TransportName; open: Transport }[];
  private readonly fallbackAfter: number;
  private readonly random: () => number;
  /** Random per-client prefix of request ids, so ids stay unique across clients of one user. */
  private readonly idPrefix: string;
  private nextOrder = 0;

  private _state: ClientState = "disconnected";
  /** The index of the transport in use in `transports`. */
  private transportIndex = 0;
  /** Attempts in a row on the current transport that did not reach `welcome`. */
  private transportFailures = 0;
  /** Reconnection attempts since the last connection that stayed up; drives the backoff. */
  private attempts = 0;
  /** The live connection, if any. */
  private connection: Connection | undefined;
  /** The `welcome` of the live connection, once received. */
  private welcome: WelcomeFrame | undefined;
  /** When the live connection was welcomed, to tell a stable connection from a flapping one. */
  private welcomedAt = 0;
  /** The current token's expiry (Unix seconds) from `welcome` or `refreshed`. */
  private expiresAt = 0;
  /** The reconnect delay hinted by `server_shutdown` on the current connection. */
  private shutdownHintMs: number | undefined;
  /** Set until `connect()` and again by `close()` or a terminal close code: no reconnects. */
  private stopped = true;
  /** Set when the client stopped after running; new requests fail until `connect()`. */
  private finished = false;
  /** Bumped on every new attempt, so callbacks of an abandoned attempt are ignored. */
  private generation = 0;

  private readonly rooms = new Map<string, RoomState>();
  /** The room objects handed out by `room()`, by name. */
  private readonly channels = new Map<string, RoomChannel>();
  /** The WebSocket endpoint, also used to probe whether WebSocket works again. */
  private readonly wsUrl: string | undefined;
  private probeTimer: ReturnType<typeof setInterval> | undefined;
  /** Requests awaiting replies, by id, in the order they were made. */
  private readonly pending = new Map<string, Pending>();

  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private deadTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private retransmitTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the last inbound traffic arrived (`Date.now()`). */
  private lastActivity = 0;

  constructor(options: ClientOptions) {
    super();
    this.options = options;
    this.random = options.random ?? Math.random;
    this.backoff = new Backoff(options.backoff, this.random);
    this.fallbackAfter = Math.max(1, options.fallbackAfter ?? 2);
    this.idPrefix = `${Math.floor(this.random() * 36 ** 8).toString(36).padStart(8, "0")}-`;
    const base = new URL(options.url);
    const http = new URL(base.href);
    if (http.protocol === "ws:") http.protocol = "http:";
    if (http.protocol === "wss:") http.protocol = "https:";
    const ws = new URL(http.href);
    ws.protocol = http.protocol === "https:" ? "wss:" : "ws:";
    const under = (u: URL, path: string) => `${u.origin}${u.pathname.replace(/\/$/, "")}${path}`;
    const withDevice = (u: string) =>
      options.device === undefined ? u : `${u}${u.includes("?") ? "&" : "?"}device=${encodeURIComponent(options.device)}`;
    const wsUrl = withDevice(options.websocketUrl ?? under(ws, "/ws"));
    const sseUrl = options.sseUrl ?? under(http, "/sse");
    const pollUrl = options.pollUrl ?? under(http, "/poll");
    const fetchImpl: FetchLike = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    const names = options.transports ?? ["websocket", "sse", "polling"];
    if (names.length === 0) throw new RangeError("at least one transport is required");
    this.wsUrl = names.includes("websocket") ? wsUrl : undefined;
    this.transports = names.map((name) => {
      switch (name) {
        case "websocket":
          return { name, open: websocketTransport(wsUrl, websocketImplementation(options.WebSocket), options.encoding ?? "json") };
        case "sse":
          return { name, open: sseTransport(withDevice(sseUrl), `${sseUrl}/send`, fetchImpl) };
        case "polling":
          return { name, open: pollingTransport(withDevice(pollUrl), `${pollUrl}/send`, fetchImpl, options.pollTimeoutMs ?? 40_000) };
      }
    });
  }

  /** Where the client stands. */
  get state(): ClientState {
    return this._state;
  }

  /** The transport the client uses (or will use for its next attempt). */
  get transport(): TransportName {
    return this.transports[this.transportIndex]!.name;
  }

  /** The encoding of the current connection (`json` when not connected or on a fallback). */
  get encoding(): Encoding {
    return this.connection?.encoding ?? "json";
  }

  /** The live session's `welcome`, when connected. */
  get session(): WelcomeFrame | undefined {
    return this.welcome;
  }

  /** The rooms the client is in, with their player id and last delivered position. */
  roomsSnapshot(): { room: string; playerId: string; seq: number; epoch: string; live: boolean }[] {
    return [...this.rooms].map(([room, r]) => ({ room, playerId: r.playerId, seq: r.position.seq, epoch: r.position.epoch, live: r.live }));
  }

  /** Starts connecting (no effect when already started). */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.finished = false;
    this.attempts = 0;
    this.transportFailures = 0;
    this.emit("transport", { transport: this.transport, reason: "connect" });
    void this.open();
  }

  /** Stops for good: closes the connection and fails every pending request with `closed`. */
  close(): void {
    if (this.stopped) return;
    this.connection?.close(1000, "");
    this.finish(undefined, "closed by the application");
  }

  /**
   * Cuts the current connection as a network failure would, without a close handshake where
   * the transport allows it; the client then reconnects and resumes its rooms. Meant for demos
   * and tests of the resume path.
   */
  dropConnection(): void {
    const connection = this.connection;
    if (!connection) return;
    connection.drop();
    this.onClose(this.generation, { reason: "dropped by the application" });
  }

  /**
   * Joins `room`; resolves with the membership. `options.token` is a join token from the
   * application (for rooms the connection token's `rooms` claim does not cover); it is kept to
   * resume the room after a reconnect. A refusal rejects with a {@link ForbiddenError}.
   */
  join(room: string, options: { token?: string } = {}): Promise<Membership> {
    const token = options.token;
    return new Promise((resolve, reject) => this.request({ kind: "join", room, token, sent: false, resolve, reject }));
  }

  /** Leaves `room`. Leaving a room the gateway no longer has this client in succeeds. */
  leave(room: string): Promise<void> {
    return new Promise((resolve, reject) => this.request({ kind: "leave", room, sent: false, resolve, reject }));
  }

  /**
   * Publishes `data` to every member of `room`; resolves with the event's `seq`. A publish that
   * was not acknowledged before a drop is resent with the same id after the room is resumed,
   * and the gateway delivers it once.
   */
  publish(room: string, data: unknown): Promise<number> {
    return new Promise((resolve, reject) => this.request({ kind: "publish", room, data, sent: false, resolve, reject }));
  }

  /** Sends `data` directly to user `to`, on whichever node it is connected. */
  send(to: string, data: unknown): Promise<void> {
    return new Promise((resolve, reject) => this.request({ kind: "send", to, data, sent: false, resolve, reject }));
  }

  /** Claims the authority role of `room`. */
  claimAuthority(room: string): Promise<void> {
    return new Promise((resolve, reject) => this.request({ kind: "authority", room, claim: true, sent: false, resolve, reject }));
  }

  /** Gives up the authority role of `room`. */
  releaseAuthority(room: string): Promise<void> {
    return new Promise((resolve, reject) => this.request({ kind: "authority", room, claim: false, sent: false, resolve, reject }));
  }

  /**
   * Sets `room`'s state snapshot (`set_state`), which members receive on `joined` before the
   * events after it; resolves with its `seq` when the gateway reports one. Needs a gateway with
   * room state and the authority role where the room's namespace asks for it.
   */
  setState(room: string, state: unknown): Promise<number | undefined> {
    return new Promise((resolve, reject) => this.request({ kind: "state", room, state, sent: false, resolve, reject }));
  }

  /**
   * The object of room `name`, created on first use and the same one afterwards: its own
   * events, `join` (with `options.token`, a join token or a function that fetches one),
   * `publish`, authority and state. Events of the room reach both it and the client.
   */
  room(name: string, options: RoomOptions = {}): RoomChannel {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new RoomChannel(this, name, options);
      this.channels.set(name, channel);
    } else if (options.token !== undefined) {
      channel.options.token = options.token;
    }
    return channel;
  }

  /** The latest state snapshot of `room` the gateway reported, if any. */
  roomState(room: string): { state: unknown; seq: number } | undefined {
    return this.rooms.get(room)?.state;
  }

  /** Whether the client is a member of `room` (live or waiting to be resumed). */
  isMember(room: string): boolean {
    return this.rooms.has(room);
  }

  // Connection management.

  private setClientState(state: ClientState): void {
    if (this._state === state) return;
    this._state = state;
    this.emit("state", state);
  }

  private async resolveToken(): Promise<string> {
    const source = this.options.token;
    if (typeof source === "string") return source;
    return await source();
  }

  /** Opens a connection on the current transport. */
  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.setClientState("connecting");
    let token: string;
    try {
      token = await this.resolveToken();
    } catch (error) {
      if (generation !== this.generation || this.stopped) return;
      this.emit("disconnected", { reason: `the token source failed: ${String(error)}`, willReconnect: true });
      this.scheduleReconnect();
      return;
    }
    if (generation !== this.generation || this.stopped) return;
    const { open } = this.transports[this.transportIndex]!;
    this.welcome = undefined;
    try {
      this.connection = open({
        token,
        handlers: {
          onFrame: (frame) => {
            if (generation === this.generation) this.onFrame(frame);
          },
          onActivity: () => {
            if (generation === this.generation) this.lastActivity = Date.now();
          },
          onClose: (info) => this.onClose(generation, info),
        },
      });
    } catch (error) {
      // For example a WebSocket URL the browser refuses: an attempt that failed before opening.
      this.onClose(generation, { reason: `the ${this.transport} transport could not start: ${String(error)}` });
      return;
    }
    const timeout = this.options.connectTimeoutMs ?? 10_000;
    this.connectTimer = setTimeout(() => {
      if (generation !== this.generation || this.welcome) return;
      this.connection?.drop();
      this.onClose(generation, { reason: `no welcome within ${timeout} ms` });
    }, timeout);
  }

  /** The current connection ended (or was dropped or timed out). */
  private onClose(generation: number, info: CloseInfo): void {
    if (generation !== this.generation || this.stopped) return;
    this.generation += 1;
    const welcomed = this.welcome !== undefined;
    this.clearConnectionTimers();
    this.connection = undefined;
    if (welcomed) {
      if (Date.now() - this.welcomedAt >= this.idleWindow()) this.attempts = 0;
      this.onConnectionLost();
    }
    this.welcome = undefined;
    const terminal = this.isTerminal(info.code);
    this.emit("disconnected", { code: info.code, reason: info.reason, willReconnect: !terminal });
    if (terminal) {
      this.finish(info.code, info.reason);
      return;
    }
    if (welcomed && this.transportIndex !== 0) {
      // The network may allow WebSocket again: start over from the preferred transport.
      const from = this.transport;
      this.transportIndex = 0;
      this.transportFailures = 0;
      this.emit("transport", { transport: this.transport, reason: `the ${from} connection ended; trying ${this.transport} first again` });
    }
    if (!welcomed) {
      this.transportFailures += 1;
      if (this.transportFailures >= this.fallbackAfter && this.transports.length > 1) {
        const from = this.transport;
        this.transportIndex = (this.transportIndex + 1) % this.transports.length;
        this.transportFailures = 0;
        this.emit("transport", {
          transport: this.transport,
          reason: `${from} failed ${this.fallbackAfter} times in a row before a session started (last: ${info.reason})`,
        });
      }
    }
    this.setClientState("connecting");
    this.scheduleReconnect();
  }

  /** Whether a close with `code` ends the client. */
  private isTerminal(code: number | undefined): boolean {
    if (code === undefined) return false;
    // An expired token is curable when the application can supply a new one.
    if (code === CloseCode.TokenExpired) return typeof this.options.token === "string";
    return shouldReconnect(code) === false;
  }

  private scheduleReconnect(): void {
    let delay: number;
    if (this.shutdownHintMs !== undefined) {
      delay = this.backoff.jitterHint(this.shutdownHintMs);
      this.shutdownHintMs = undefined;
      this.attempts = 0;
    } else {
      delay = this.backoff.delay(this.attempts);
    }
    this.attempts += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.stopped) void this.open();
    }, delay);
  }

  /** How long the connection may stay silent before it is presumed dead. */
  private idleWindow(): number {
    const w = this.welcome;
    return w && w.ping_interval_ms > 0 ? w.ping_interval_ms + w.pong_timeout_ms : 10_000;
  }

  private clearConnectionTimers(): void {
    for (const timer of [this.connectTimer, this.deadTimer, this.refreshTimer, this.retransmitTimer]) clearTimeout(timer);
    clearInterval(this.pingTimer);
    clearInterval(this.probeTimer);
    this.connectTimer = this.deadTimer = this.refreshTimer = this.retransmitTimer = this.pingTimer = this.probeTimer = undefined;
  }

  /** Stops for good. */
  private finish(code: number | undefined, reason: string): void {
    this.stopped = true;
    this.finished = true;
    this.generation += 1;
    this.clearConnectionTimers();
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.connection = undefined;
    this.welcome = undefined;
    for (const room of this.rooms.values()) room.live = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) fail(p, new ClosedError(`the client closed: ${reason}`));
    this.setClientState("disconnected");
    this.emit("closed", { code, reason });
  }

  /** Arms the dead-connection timer for the silence window after the last inbound traffic. */
  private armDeadTimer(): void {
    const generation = this.generation;
    const idle = this.idleWindow();
    const wait = Math.max(0, this.lastActivity + idle - Date.now());
    this.deadTimer = setTimeout(() => {
      if (generation !== this.generation) return;
      if (Date.now() - this.lastActivity >= idle) {
        this.connection?.drop();
        this.onClose(generation, { reason: `no traffic from the gateway for ${idle} ms` });
      } else {
        this.armDeadTimer();
      }
    }, wait);
  }

  // Sending.

  private write(frame: ClientFrame): boolean {
    const connection = this.connection;
    if (!connection || !this.welcome) return false;
    this.emit("frame", { direction: "out", frame });
    connection.send(frame);
    return true;
  }

  private request(p: Pending): void {
    if (this.finished) {
      fail(p, new ClosedError("the client is closed"));
      return;
    }
    const id = `${this.idPrefix}${++this.nextOrder}`;
    this.pending.set(id, p);
    if (this.sendable(p)) this.sendPending(id, p);
  }

  /** Whether a pending request may go out now: room requests other than `leave` wait for their room to be live. */
  private sendable(p: Pending): boolean {
    if (!this.welcome || p.sent) return false;
    if (p.kind === "publish" || p.kind === "authority" || p.kind === "state") {
      const room = this.rooms.get(p.room);
      return room ? room.live : true;
    }
    return p.kind !== "resume" && p.kind !== "refresh";
  }

  private sendPending(id: string, p: Pending): void {
    let frame: ClientFrame;
    switch (p.kind) {
      case "join":
        frame = p.token === undefined ? { type: "join", room: p.room, id } : { type: "join", room: p.room, token: p.token, id };
        break;
      case "leave":
        frame = { type: "leave", room: p.room, id };
        break;
      case "publish":
        frame = { type: "publish", room: p.room, data: p.data, id };
        break;
      case "send":
        frame = { type: "send", to: p.to, data: p.data, id };
        break;
      case "authority":
        frame = p.claim ? { type: "claim_authority", room: p.room, id } : { type: "release_authority", room: p.room, id };
        break;
      case "state":
        // Not in this version's generated frame list: sent as the room state spec defines it.
        frame = { type: "set_state", room: p.room, state: p.state, id } as unknown as ClientFrame;
        break;
      default:
        return;
    }
    const max = this.welcome?.max_message_bytes ?? Infinity;
    const size = this.connection?.encoding === "msgpack" ? encodeMsgpack(frame).length : new TextEncoder().encode(JSON.stringify(frame)).length;
    if (size > max) {
      // The gateway would close the whole session with 1009 for this frame.
      this.pending.delete(id);
      fail(p, new MessageTooBigError(`the frame is ${size} bytes; the gateway accepts ${max}`));
      return;
    }
    p.sent = true;
    this.write(frame);
  }

  /** Sends, in order, every pending request that may go out now. */
  private flush(): void {
    for (const [id, p] of [...this.pending]) {
      if (this.pending.get(id) === p && this.sendable(p)) this.sendPending(id, p);
    }
  }

  /** Removes and returns the pending request a reply's `id` names. */
  private take(id: string | undefined): Pending | undefined {
    if (id === undefined) return undefined;
    const p = this.pending.get(id);
    if (p) this.pending.delete(id);
    return p;
  }

  /** Sorts the pending requests after the connection was lost. */
  private onConnectionLost(): void {
    for (const room of this.rooms.values()) room.live = false;
    for (const [id, p] of [...this.pending]) {
      switch (p.kind) {
        case "publish":
        case "leave":
          // Publishes are resent with the same id (the gateway dedupes them); a leave is idempotent.
          p.sent = false;
          break;
        case "join":
          if (p.rejoin) {
            // A rejoin is the client's own: it tries again on the next connection.
            p.sent = false;
            break;
          }
          if (p.sent) {
            this.pending.delete(id);
            p.reject(new ConnectionLostError("the connection dropped before the join was answered"));
          }
          break;
        case "resume":
        case "refresh":
          this.pending.delete(id);
          break;
        default:
          if (p.sent) {
            this.pending.delete(id);
            p.reject(new ConnectionLostError(`the connection dropped before the ${p.kind} was answered`));
          }
      }
    }
  }

  // Receiving.

  private onFrame(frame: ServerFrame): void {
    this.lastActivity = Date.now();
    this.emit("frame", { direction: "in", frame });
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "joined":
        this.onJoined(frame);
        break;
      case "left":
        this.onLeft(frame);
        break;
      case "event":
      case "authority_changed":
      case "state_set":
        this.judge(frame);
        break;
      case "presence":
        this.emit("presence", frame);
        this.channels.get(frame.room)?.dispatch("presence", frame);
        break;
      case "ack":
        this.onAck(frame);
        break;
      case "message":
        this.emit("message", frame);
        break;
      case "refreshed":
        this.take(frame.id);
        this.expiresAt = frame.expires_at;
        this.scheduleRefresh();
        break;
      case "reconnected":
        this.onReconnected(frame);
        break;
      case "reconnection_failed":
        this.onReconnectionFailed(frame);
        break;
      case "error":
        this.onError(frame);
        break;
      case "pong":
        break;
      case "server_shutdown":
        this.shutdownHintMs = frame.reconnect_after_ms;
        this.emit("server_shutdown", { reason: frame.reason, reconnectAfterMs: frame.reconnect_after_ms });
        break;
      default: {
        const unknown: never = frame;
        this.onOtherFrame(unknown);
      }
    }
  }

  private onWelcome(welcome: WelcomeFrame): void {
    if (this.welcome) {
      if (this.welcome.session_id === welcome.session_id) return;
      // The transport reattached to a fresh session (the old one expired): everything that
      // was on the old session is treated as lost, then resumed like after a reconnect.
      this.clearConnectionTimers();
      this.onConnectionLost();
      this.emit("disconnected", { reason: "the session expired while the transport reattached", willReconnect: true });
    }
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.welcome = welcome;
    this.welcomedAt = Date.now();
    this.transportFailures = 0;
    this.shutdownHintMs = undefined;
    this.expiresAt = welcome.expires_at;
    this.setClientState("connected");
    this.emit("connected", {
      userId: welcome.user_id,
      sessionId: welcome.session_id,
      nodeId: welcome.node_id,
      transport: this.connection?.transport ?? this.transport,
    });
    if (welcome.ping_interval_ms > 0) {
      const generation = this.generation;
      this.pingTimer = setInterval(() => {
        if (generation === this.generation) this.write({ type: "ping" });
      }, welcome.ping_interval_ms);
      this.lastActivity = Date.now();
      this.armDeadTimer();
    }
    this.scheduleRefresh();
    this.scheduleProbe();
    // Resume every room, in name order, then send what waited for a connection.
    for (const name of [...this.rooms.keys()].sort()) {
      const room = this.rooms.get(name)!;
      if (room.token === undefined) {
        // A rejoin waiting for this connection goes out with the flush below.
        if (![...this.pending.values()].some((p) => p.kind === "join" && p.rejoin && p.room === name)) {
          this.loseRoom(name, "reconnection_failed", "the gateway issued no reconnection token");
        }
        continue;
      }
      const id = `${this.idPrefix}${++this.nextOrder}`;
      this.pending.set(id, { kind: "resume", room: name, sent: true });
      const frame: ReconnectFrame = { type: "reconnect", room: name, player_id: room.playerId, token: room.token, last_sequence: room.position.seq, id };
      if (room.position.epoch) frame.epoch = room.position.epoch;
      if (room.joinToken !== undefined) frame.join_token = room.joinToken;
      this.write(frame);
    }
    this.flush();
  }

  /** Passes one room frame through its room's position and emits what the application should see. */
  private judge(frame: RoomFrame): void {
    const room = this.rooms.get(frame.room);
    if (room) {
      const verdict = room.position.observe(frame.seq, frame.epoch);
      if (verdict.kind === "duplicate") return;
      if (verdict.kind === "gap") this.emitGap({ room: frame.room, from: verdict.from, to: verdict.to, epoch: frame.epoch });
    }
    // A frame for a room this client does not track (it raced a leave) is still delivered.
    this.emitRoomFrame(frame);
  }

  private emitRoomFrame(frame: RoomFrame): void {
    const channel = this.channels.get(frame.room);
    switch (frame.type) {
      case "event":
        this.emit("event", frame);
        channel?.dispatch("event", frame);
        break;
      case "authority_changed":
        this.emit("authority_changed", frame);
        channel?.dispatch("authority_changed", frame);
        break;
    }
  }

  /**
   * A frame this version does not list. `state_set` (a room state snapshot, a room message
   * with its own seq) is taken in order like an event; any other type is ignored.
   */
  private onOtherFrame(frame: unknown): void {
    const f = frame as { type?: unknown; room?: unknown; seq?: unknown; epoch?: unknown; state?: unknown; id?: unknown };
    if (f.type !== "state_set" || typeof f.room !== "string" || typeof f.seq !== "number" || typeof f.epoch !== "string") return;
    const room = this.rooms.get(f.room);
    if (room) {
      const verdict = room.position.observe(f.seq, f.epoch);
      if (verdict.kind === "duplicate") return;
      if (verdict.kind === "gap") this.emitGap({ room: f.room, from: verdict.from, to: verdict.to, epoch: f.epoch });
      room.state = { state: f.state, seq: f.seq };
    }
    this.emitStateOf(f.room, f.state, f.seq);
  }

  private emitStateOf(room: string, state: unknown, seq: number): void {
    this.channels.get(room)?.dispatch("state", { room, state, seq });
  }

  private emitGap(gap: { room: string; from: number; to: number; epoch: string }): void {
    this.emit("gap", gap);
    this.channels.get(gap.room)?.dispatch("gap", gap);
  }

  private onJoined(joined: JoinedFrame): void {
    const p = this.take(joined.id);
    // A gateway with room state sends the latest snapshot and its seq (at or before `seq`).
    const snapshot = (joined as { state?: unknown; state_seq?: unknown }).state;
    const room: RoomState = {
      playerId: joined.player_id,
      token: joined.reconnection_token,
      joinToken: p?.kind === "join" ? p.token : undefined,
      position: new StreamPosition(joined.seq, joined.epoch),
      live: true,
    };
    if (snapshot !== undefined) {
      const stateSeq = (joined as { state_seq?: unknown }).state_seq;
      room.state = { state: snapshot, seq: typeof stateSeq === "number" ? stateSeq : joined.seq };
    }
    this.rooms.set(joined.room, room);
    const membership: Membership = {
      room: joined.room,
      playerId: joined.player_id,
      members: joined.members ?? [],
      memberCount: joined.member_count,
      authority: joined.authority,
      seq: joined.seq,
      epoch: joined.epoch,
    };
    if (room.state) this.emitStateOf(joined.room, room.state.state, room.state.seq);
    if (p?.kind === "join") {
      p.resolve(membership);
      if (p.rejoin) {
        this.emit("rejoined", membership);
        this.channels.get(joined.room)?.dispatch("rejoined", membership);
      }
    }
    this.flush();
  }

  private onLeft(left: LeftFrame): void {
    this.rooms.delete(left.room);
    const p = this.take(left.id);
    if (p?.kind === "leave") p.resolve();
  }

  private onAck(ack: AckFrame): void {
    const p = this.take(ack.id);
    if (!p) return;
    switch (p.kind) {
      case "publish":
        if (ack.seq === undefined) p.reject(new HoldfastError("protocol", "publish ack without seq"));
        else p.resolve(ack.seq);
        break;
      case "send":
      case "authority":
      case "leave":
        p.resolve();
        break;
      case "state":
        p.resolve(ack.seq);
        break;
      case "join":
        p.reject(new HoldfastError("protocol", "join answered by ack"));
        break;
      default:
        break;
    }
  }

  private onError(error: ErrorFrame): void {
    const limited = error.id !== undefined ? this.pending.get(error.id) : undefined;
    if (error.code === "rate_limited" && (limited?.kind === "publish" || limited?.kind === "leave")) {
      // The gateway dropped this frame for the rate limit: send it again after a pause, with
      // the same id, so it is delayed rather than lost.
      limited.sent = false;
      this.scheduleRetransmit();
      return;
    }
    const p = this.take(error.id);
    if (!p) {
      if (error.code === "rate_limited" && error.id === undefined) {
        // An older gateway names no frame when it drops one for the rate limit: resend every
        // unacknowledged publish after a pause; it dedupes the ones that did get through.
        for (const q of this.pending.values()) if (q.kind === "publish") q.sent = false;
        this.scheduleRetransmit();
      }
      this.emit("error", error);
      return;
    }
    const failure = errorFor(error.code, error.message);
    switch (p.kind) {
      case "leave":
        // Leaving a room the gateway no longer has this member in is a success.
        if (error.code === "not_in_room") {
          this.rooms.delete(p.room);
          p.resolve();
        } else {
          p.reject(failure);
        }
        break;
      case "resume":
        this.loseRoom(p.room, error.code, error.message);
        break;
      case "refresh":
        this.emit("error", error);
        break;
      case "join":
        if (p.rejoin) {
          // The room could not be joined again: it is lost after all.
          this.rooms.delete(p.room);
          this.loseRoom(p.room, error.code, error.message, false);
        }
        p.reject(failure);
        break;
      default:
        p.reject(failure);
    }
  }

  /** Sends the requests marked unsent again after a pause (see `RATE_LIMIT_RETRY_MS`). */
  private scheduleRetransmit(): void {
    if (this.retransmitTimer !== undefined) return;
    const generation = this.generation;
    this.retransmitTimer = setTimeout(() => {
      this.retransmitTimer = undefined;
      if (generation === this.generation) this.flush();
    }, RATE_LIMIT_RETRY_MS);
  }

  private onReconnected(resumed: ReconnectedFrame): void {
    this.take(resumed.id);
    const room = this.rooms.get(resumed.room);
    if (!room) return;
    room.playerId = resumed.player_id;
    room.token = resumed.reconnection_token;
    room.live = true;
    if (resumed.gap) {
      const lost = room.position.skipGap(resumed.gap.from, resumed.gap.to, resumed.gap.epoch);
      if (lost) this.emitGap({ room: resumed.room, from: lost.from, to: lost.to, epoch: resumed.gap.epoch });
    }
    for (const frame of resumed.events) if (isRoomFrame(frame)) this.judge(frame);
    // The resume's own messages (an authority_changed that gave authority back) are not sent
    // to the resuming member; its position continues after them.
    room.position.catchUp(resumed.seq, resumed.epoch);
    // Announced after the replay, so the snapshot of members and authority (which is current)
    // overrides what the replayed frames implied.
    const info = {
      room: resumed.room,
      recovered: resumed.recovered,
      members: resumed.members ?? [],
      memberCount: resumed.member_count,
      authority: resumed.authority,
      seq: resumed.seq,
      epoch: resumed.epoch,
    };
    this.emit("resumed", info);
    this.channels.get(resumed.room)?.dispatch("resumed", info);
    this.flush();
  }

  private onReconnectionFailed(failed: ReconnectionFailedFrame): void {
    this.take(failed.id);
    this.loseRoom(failed.room, failed.code, failed.message);
  }

  /**
   * A room could not be resumed: joins it again (with `autoRejoin`, unless the user may no
   * longer be in it), keeping its queued requests; otherwise forgets it and fails them.
   */
  private loseRoom(name: string, code: ErrorCode, message: string, mayRejoin = true): void {
    const room = this.rooms.get(name);
    if (!room && mayRejoin) return;
    const rejoining = mayRejoin && this.options.autoRejoin !== false && code !== "forbidden" && code !== "too_many_rooms";
    const info = { room: name, code, message, rejoining };
    if (rejoining && room) {
      // Kept (not live) so the room's requests wait for the new membership, then go out with
      // their ids.
      room.live = false;
      room.token = undefined;
      this.emit("resume_failed", info);
      this.channels.get(name)?.dispatch("resume_failed", info);
      const rejoin = (token: string | undefined) =>
        this.request({ kind: "join", room: name, token, rejoin: true, sent: false, resolve: () => {}, reject: () => {} });
      const channel = this.channels.get(name);
      if (channel) {
        // A fresh join token when the room object has a provider.
        channel.joinToken().then(
          (token) => rejoin(token ?? room.joinToken),
          () => rejoin(room.joinToken),
        );
      } else {
        rejoin(room.joinToken);
      }
      return;
    }
    this.rooms.delete(name);
    for (const [id, p] of [...this.pending]) {
      if ((p.kind === "publish" || p.kind === "authority" || p.kind === "state") && p.room === name) {
        this.pending.delete(id);
        p.reject(new RoomLostError(`room ${name} could not be resumed: ${message}`, code));
      }
    }
    this.emit("resume_failed", info);
    this.channels.get(name)?.dispatch("resume_failed", info);
  }

  // Moving back to WebSocket.

  /** While on a fallback transport, checks every `upgradeProbeMs` whether WebSocket works again. */
  private scheduleProbe(): void {
    const every = this.options.upgradeProbeMs ?? 30_000;
    const preferred = this.transports[0]!;
    if (every <= 0 || this.transportIndex === 0 || preferred.name !== "websocket" || this.wsUrl === undefined) return;
    const generation = this.generation;
    let probing = false;
    this.probeTimer = setInterval(() => {
      if (probing || generation !== this.generation) return;
      probing = true;
      void probeWebSocket(this.wsUrl!, websocketImplementation(this.options.WebSocket), this.options.connectTimeoutMs ?? 10_000).then((ok) => {
        probing = false;
        if (ok && generation === this.generation && !this.stopped) this.upgrade();
      });
    }, every);
  }

  /** Ends the fallback session and connects again over WebSocket; rooms are resumed as after a drop. */
  private upgrade(): void {
    const from = this.transport;
    this.connection?.close(1000, "");
    this.generation += 1;
    this.clearConnectionTimers();
    this.connection = undefined;
    this.onConnectionLost();
    this.welcome = undefined;
    this.transportIndex = 0;
    this.transportFailures = 0;
    this.attempts = 0;
    this.emit("transport", { transport: this.transport, reason: `${this.transport} works again; leaving ${from}` });
    this.emit("disconnected", { reason: `moving from ${from} to ${this.transport}`, willReconnect: true });
    void this.open();
  }

  // Token refresh.

  /** Renews the token a fifth of its remaining life before expiry (1 s to 60 s ahead), with a token function only. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    const source = this.options.token;
    if (typeof source === "string" || !this.expiresAt) return;
    const remaining = Math.max(0, this.expiresAt - Date.now() / 1000);
    const lead = Math.min(60, Math.max(1, remaining / 5));
    const generation = this.generation;
    this.refreshTimer = setTimeout(() => void this.refresh(generation), Math.max(0, remaining - lead) * 1000);
  }

  private async refresh(generation: number): Promise<void> {
    let token: string;
    try {
      token = await this.resolveToken();
    } catch {
      if (generation === this.generation) this.refreshTimer = setTimeout(() => void this.refresh(generation), REFRESH_RETRY_MS);
      return;
    }
    if (generation !== this.generation) return;
    const id = `${this.idPrefix}${++this.nextOrder}`;
    this.pending.set(id, { kind: "refresh", sent: true });
    this.write({ type: "refresh", token, id });
  }
}

/** Rejects a pending request with `error` (resumes and refreshes have nobody waiting). */
function fail(p: Pending, error: HoldfastError): void {
  if (p.kind !== "resume" && p.kind !== "refresh") p.reject(error);
}

/** The WebSocket implementation to use, with a clear error where there is none (Node.js 20). */
function websocketImplementation(given: WebSocketConstructor | undefined): WebSocketConstructor {
  const impl = given ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (impl) return impl;
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  throw new Error(
    node
      ? `Node.js ${node} has no global WebSocket: install the \`ws\` package and pass it, \`new HoldfastClient({ ..., WebSocket })\` with \`import WebSocket from "ws"\` (or use Node.js 22, or transports: ["sse", "polling"])`
      : "no WebSocket implementation: pass one as `WebSocket`",
  );
}

/** Whether a WebSocket to `url` opens within `timeoutMs` (it is closed at once, before any frame). */
function probeWebSocket(url: string, impl: WebSocketConstructor, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: ReturnType<typeof create>;
    const create = () => new impl(url);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.onopen = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, "");
      } catch {
        // Already closing.
      }
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    try {
      socket = create();
    } catch {
      clearTimeout(timer);
      resolve(false);
      return;
    }
    socket.onopen = () => done(true);
    socket.onclose = () => done(false);
    socket.onerror = () => {};
  });
}
