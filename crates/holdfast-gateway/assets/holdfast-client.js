// Holdfast browser client, bundled from clients/ts by `npm run bundle`. Do not edit by hand.

// src/backoff.ts
var Backoff = class _Backoff {
  static DEFAULT_MIN_MS = 250;
  static DEFAULT_MAX_MS = 3e4;
  static DEFAULT_JITTER = 1;
  /** The cap of the first attempt. */
  minMs;
  /** The largest cap. */
  maxMs;
  /** The randomised fraction of the cap. */
  jitter;
  /** The source of randomness in `[0, 1)`; replaceable so tests are deterministic. */
  random;
  /** Checks that `min > 0`, `max >= min` and `jitter` is in `[0, 1]`, and throws otherwise. */
  constructor(options = {}, random = Math.random) {
    const minMs = options.minMs ?? _Backoff.DEFAULT_MIN_MS;
    const maxMs = options.maxMs ?? _Backoff.DEFAULT_MAX_MS;
    const jitter = options.jitter ?? _Backoff.DEFAULT_JITTER;
    if (!(minMs > 0)) throw new RangeError(`backoff minimum must be greater than zero, got ${minMs}`);
    if (!(maxMs >= minMs)) throw new RangeError(`backoff maximum ${maxMs} is below the minimum ${minMs}`);
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`backoff jitter ${jitter} is outside [0, 1]`);
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.random = random;
  }
  /** The cap of attempt `attempt` (counting from zero), before jitter. */
  cap(attempt) {
    return Math.min(this.maxMs, this.minMs * 2 ** Math.min(attempt, 40));
  }
  /** The delay before attempt `attempt`, in milliseconds. */
  delay(attempt) {
    const cap = this.cap(attempt);
    return cap * (1 - this.jitter) + cap * this.jitter * this.random();
  }
  /**
   * The delay after a server's hint (`server_shutdown.reconnect_after_ms`): the hint plus a
   * random spread of up to `hint * jitter` (or `min * jitter` for a zero hint), so a drained
   * node's clients do not all arrive at the next node at once.
   */
  jitterHint(hintMs) {
    const spread = (hintMs > 0 ? hintMs : this.minMs) * this.jitter;
    return hintMs + spread * this.random();
  }
};

// src/emitter.ts
var Emitter = class {
  /** Listeners by event name; a `Set` so a listener added twice runs once. */
  listeners = /* @__PURE__ */ new Map();
  /** Adds `listener` for `event` and returns a function that removes it. */
  on(event, listener) {
    let set = this.listeners.get(event);
    if (!set) {
      set = /* @__PURE__ */ new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Adds `listener` for the next `event` only. */
  once(event, listener) {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }
  /** Removes `listener` from `event`. */
  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }
  /**
   * Calls every listener of `event` with `payload`. A listener that throws does not stop the
   * others or the client; the exception is reported asynchronously so it still shows up.
   */
  emit(event, payload) {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
};

// src/errors.ts
var HoldfastError = class extends Error {
  constructor(code, message, resumeCode) {
    super(message);
    this.code = code;
    this.resumeCode = resumeCode;
  }
  code;
  resumeCode;
  name = "HoldfastError";
  /**
   * Whether the gateway refused the operation as not permitted: `forbidden` (join, publish,
   * send), or a room that could not be resumed because the user may no longer join it.
   */
  get forbidden() {
    return this.code === "forbidden" || this.resumeCode === "forbidden";
  }
};
var ForbiddenError = class extends HoldfastError {
  constructor(message) {
    super("forbidden", message);
  }
};
var ConnectionLostError = class extends HoldfastError {
  constructor(message) {
    super("connection_lost", message);
  }
};
var ClosedError = class extends HoldfastError {
  constructor(message) {
    super("closed", message);
  }
};
var RoomLostError = class extends HoldfastError {
  constructor(message, resumeCode) {
    super("room_lost", message, resumeCode);
  }
};
var MessageTooBigError = class extends HoldfastError {
  constructor(message) {
    super("message_too_big", message);
  }
};
function errorFor(code, message) {
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

// src/msgpack.ts
var MAX_DEPTH = 128;
var utf8Encoder = new TextEncoder();
var utf8Decoder = new TextDecoder("utf-8", { fatal: true });
function encodeMsgpack(value) {
  const out = new Writer();
  write(out, value, 0);
  return out.finish();
}
function decodeMsgpack(bytes) {
  const reader = new Reader(bytes);
  const value = reader.read(0);
  if (reader.pos !== bytes.length) throw new RangeError("trailing bytes after the MessagePack value");
  return value;
}
var Writer = class {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  len = 0;
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }
  u16(n) {
    this.reserve(2);
    this.view.setUint16(this.len, n);
    this.len += 2;
  }
  u32(n) {
    this.reserve(4);
    this.view.setUint32(this.len, n);
    this.len += 4;
  }
  u64(n) {
    this.reserve(8);
    this.view.setBigUint64(this.len, n);
    this.len += 8;
  }
  i64(n) {
    this.reserve(8);
    this.view.setBigInt64(this.len, n);
    this.len += 8;
  }
  f64(n) {
    this.reserve(8);
    this.view.setFloat64(this.len, n);
    this.len += 8;
  }
  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  finish() {
    return this.buf.slice(0, this.len);
  }
};
function header(out, len, fix, fixMax, c8, c16, c32) {
  if (len < fixMax) out.u8(fix | len);
  else if (c8 !== void 0 && len < 256) {
    out.u8(c8);
    out.u8(len);
  } else if (len < 65536) {
    out.u8(c16);
    out.u16(len);
  } else {
    out.u8(c32);
    out.u32(len);
  }
}
function write(out, value, depth) {
  if (depth > MAX_DEPTH) throw new RangeError("value nested too deeply for MessagePack");
  if (value === null || value === void 0) {
    out.u8(192);
  } else if (typeof value === "boolean") {
    out.u8(value ? 195 : 194);
  } else if (typeof value === "number") {
    writeNumber(out, value);
  } else if (typeof value === "bigint") {
    if (value >= 0n) {
      out.u8(207);
      out.u64(value);
    } else {
      out.u8(211);
      out.i64(value);
    }
  } else if (typeof value === "string") {
    const b = utf8Encoder.encode(value);
    header(out, b.length, 160, 32, 217, 218, 219);
    out.bytes(b);
  } else if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    const b = value instanceof ArrayBuffer ? new Uint8Array(value) : value;
    header(out, b.length, 0, 0, 196, 197, 198);
    out.bytes(b);
  } else if (Array.isArray(value)) {
    header(out, value.length, 144, 16, void 0, 220, 221);
    for (const item of value) write(out, item, depth + 1);
  } else if (value instanceof Date) {
    writeNumber(out, value.getTime());
  } else if (typeof value === "object") {
    const withToJson = value;
    if (typeof withToJson.toJSON === "function") {
      write(out, withToJson.toJSON(), depth + 1);
      return;
    }
    const entries = Object.entries(value).filter(([, v]) => v !== void 0 && typeof v !== "function");
    header(out, entries.length, 128, 16, void 0, 222, 223);
    for (const [k, v] of entries) {
      write(out, k, depth + 1);
      write(out, v, depth + 1);
    }
  } else {
    out.u8(192);
  }
}
function writeNumber(out, n) {
  if (!Number.isInteger(n) || Object.is(n, -0)) {
    out.u8(203);
    out.f64(n);
  } else if (n >= 0) {
    if (n < 128) out.u8(n);
    else if (n < 256) {
      out.u8(204);
      out.u8(n);
    } else if (n < 65536) {
      out.u8(205);
      out.u16(n);
    } else if (n < 4294967296) {
      out.u8(206);
      out.u32(n);
    } else if (Number.isSafeInteger(n)) {
      out.u8(207);
      out.u64(BigInt(n));
    } else {
      out.u8(203);
      out.f64(n);
    }
  } else if (n >= -32) {
    out.u8(n & 255);
  } else if (n >= -128) {
    out.u8(208);
    out.u8(n & 255);
  } else if (n >= -32768) {
    out.u8(209);
    out.u16(n & 65535);
  } else if (n >= -2147483648) {
    out.u8(210);
    out.u32(n >>> 0);
  } else if (Number.isSafeInteger(n)) {
    out.u8(211);
    out.i64(BigInt(n));
  } else {
    out.u8(203);
    out.f64(n);
  }
}
var Reader = class {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  bytes;
  pos = 0;
  view;
  need(n) {
    const at = this.pos;
    if (at + n > this.bytes.length) throw new RangeError("truncated MessagePack value");
    this.pos += n;
    return at;
  }
  u8() {
    return this.view.getUint8(this.need(1));
  }
  u16() {
    return this.view.getUint16(this.need(2));
  }
  u32() {
    return this.view.getUint32(this.need(4));
  }
  take(n) {
    const at = this.need(n);
    return this.bytes.slice(at, at + n);
  }
  str(n) {
    const at = this.need(n);
    return utf8Decoder.decode(this.bytes.subarray(at, at + n));
  }
  /** A 64-bit integer as a number when it is safe, as a bigint otherwise. */
  int64(signed) {
    const at = this.need(8);
    const big = signed ? this.view.getBigInt64(at) : this.view.getBigUint64(at);
    return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }
  array(n, depth) {
    const items = [];
    for (let i = 0; i < n; i++) items.push(this.read(depth + 1));
    return items;
  }
  map(n, depth) {
    const obj = {};
    for (let i = 0; i < n; i++) {
      const key = this.read(depth + 1);
      const value = this.read(depth + 1);
      Object.defineProperty(obj, String(key), { value, enumerable: true, writable: true, configurable: true });
    }
    return obj;
  }
  ext(n) {
    const type = this.view.getInt8(this.need(1));
    const data = this.take(n);
    if (type === -1) {
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      if (n === 4) return new Date(v.getUint32(0) * 1e3);
      if (n === 8) {
        const hi = v.getUint32(0);
        const lo = v.getUint32(4);
        const nanos = hi >>> 2;
        const secs = (hi & 3) * 4294967296 + lo;
        return new Date(secs * 1e3 + nanos / 1e6);
      }
      if (n === 12) return new Date(Number(v.getBigInt64(4)) * 1e3 + v.getUint32(0) / 1e6);
    }
    return { type, data };
  }
  read(depth) {
    if (depth > MAX_DEPTH) throw new RangeError("MessagePack value nested too deeply");
    const b = this.u8();
    if (b < 128) return b;
    if (b < 144) return this.map(b & 15, depth);
    if (b < 160) return this.array(b & 15, depth);
    if (b < 192) return this.str(b & 31);
    if (b >= 224) return b - 256;
    switch (b) {
      case 192:
        return null;
      case 194:
        return false;
      case 195:
        return true;
      case 196:
        return this.take(this.u8());
      case 197:
        return this.take(this.u16());
      case 198:
        return this.take(this.u32());
      case 199:
        return this.ext(this.u8());
      case 200:
        return this.ext(this.u16());
      case 201:
        return this.ext(this.u32());
      case 202:
        return this.view.getFloat32(this.need(4));
      case 203:
        return this.view.getFloat64(this.need(8));
      case 204:
        return this.u8();
      case 205:
        return this.u16();
      case 206:
        return this.u32();
      case 207:
        return this.int64(false);
      case 208:
        return this.view.getInt8(this.need(1));
      case 209:
        return this.view.getInt16(this.need(2));
      case 210:
        return this.view.getInt32(this.need(4));
      case 211:
        return this.int64(true);
      case 212:
        return this.ext(1);
      case 213:
        return this.ext(2);
      case 214:
        return this.ext(4);
      case 215:
        return this.ext(8);
      case 216:
        return this.ext(16);
      case 217:
        return this.str(this.u8());
      case 218:
        return this.str(this.u16());
      case 219:
        return this.str(this.u32());
      case 220:
        return this.array(this.u16(), depth);
      case 221:
        return this.array(this.u32(), depth);
      case 222:
        return this.map(this.u16(), depth);
      case 223:
        return this.map(this.u32(), depth);
      default:
        throw new RangeError(`0x${b.toString(16)} is not a MessagePack type`);
    }
  }
};

// src/room.ts
var RoomChannel = class extends Emitter {
  constructor(client, name, options) {
    super();
    this.client = client;
    this.name = name;
    this.options = options;
  }
  client;
  name;
  options;
  _status = "idle";
  _membership;
  /** Members by player id, kept from `joined`, presence changes and resumes. */
  _members = /* @__PURE__ */ new Map();
  _memberCount = 0;
  _authority = null;
  /** Where the room object stands. */
  get status() {
    return this._status;
  }
  /** The current membership (player id, seq, epoch), once joined. */
  get membership() {
    return this._membership;
  }
  /** The members known to this client (complete when the room's presence mode is `full`). */
  get members() {
    return [...this._members.values()];
  }
  /** Members, connected or away, this one included, as the gateway last counted them. */
  get memberCount() {
    return this._memberCount;
  }
  /** The player id holding authority, or null. */
  get authority() {
    return this._authority;
  }
  /** Whether this client's member holds the room's authority. */
  get isAuthority() {
    return this._membership !== void 0 && this._authority === this._membership.playerId;
  }
  /** The latest state snapshot the gateway reported, if any. */
  get state() {
    return this.client.roomState(this.name)?.state;
  }
  /** Joins the room (with the join token of `options.token`, fetched anew each time). */
  async join() {
    this.setStatus("joining");
    try {
      const token = await this.joinToken();
      const membership = await this.client.join(this.name, token === void 0 ? {} : { token });
      this.adopt(membership);
      return membership;
    } catch (error) {
      this.setStatus(this.client.isMember(this.name) ? "joined" : "idle");
      throw error;
    }
  }
  /** Leaves the room. */
  async leave() {
    await this.client.leave(this.name);
    this._membership = void 0;
    this._members.clear();
    this.setStatus("left");
  }
  /** Publishes `data` to the room; resolves with the event's `seq`. */
  publish(data) {
    return this.client.publish(this.name, data);
  }
  /** Claims the authority role. */
  claimAuthority() {
    return this.client.claimAuthority(this.name);
  }
  /** Gives up the authority role. */
  releaseAuthority() {
    return this.client.releaseAuthority(this.name);
  }
  /** Sets the room's state snapshot (see `HoldfastClient.setState`). */
  setState(state) {
    return this.client.setState(this.name, state);
  }
  /** The join token to present, if any. */
  async joinToken() {
    const source = this.options.token;
    if (source === void 0 || typeof source === "string") return source;
    return await source();
  }
  /**
   * Hands an event of this room to its listeners after updating what the room object keeps.
   * Called by the client; not meant for applications.
   * @internal
   */
  dispatch(event, payload) {
    switch (event) {
      case "presence": {
        const p = payload;
        for (const c of p.changes ?? []) {
          if (c.status === "left") this._members.delete(c.player_id);
          else this._members.set(c.player_id, { player_id: c.player_id, user_id: c.user_id, status: c.status });
        }
        this._memberCount = p.count;
        break;
      }
      case "authority_changed":
        this._authority = payload.authority;
        break;
      case "resumed": {
        const r = payload;
        if (r.members.length > 0 || r.memberCount === 0) this.replaceMembers(r.members);
        this._memberCount = r.memberCount;
        this._authority = r.authority;
        this.setStatus("joined");
        break;
      }
      case "resume_failed":
        this.setStatus(payload.rejoining ? "resuming" : "left");
        break;
      case "rejoined":
        this.adopt(payload);
        break;
    }
    this.emit(event, payload);
  }
  adopt(membership) {
    this._membership = membership;
    this.replaceMembers(membership.members);
    this._memberCount = membership.memberCount;
    this._authority = membership.authority;
    this.setStatus("joined");
  }
  replaceMembers(members) {
    this._members.clear();
    for (const m of members) this._members.set(m.player_id, m);
  }
  setStatus(status) {
    if (this._status === status) return;
    this._status = status;
    this.emit("status", status);
  }
};

// src/generated.ts
var PROTOCOL_VERSION = 1;
var MAX_ID_LEN = 64;
var MAX_ROOM_LEN = 128;
var MAX_TOKEN_LEN = 8192;
var MAX_USER_LEN = 256;
var SUBPROTOCOL_JSON = "holdfast.v1.json";
var SUBPROTOCOL_MSGPACK = "holdfast.v1.msgpack";
var BASE64_KEY = "$base64";
var ERROR_CODES = [
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
  "forbidden"
];
var CloseCode = {
  Normal: 1e3,
  GoingAway: 1001,
  ProtocolError: 1002,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  Replaced: 4e3,
  SlowConsumer: 4001,
  TokenExpired: 4002,
  RateLimited: 4003,
  AuthTimeout: 4004,
  HeartbeatTimeout: 4005,
  AuthFailed: 4006,
  DisconnectedByServer: 4007
};
var CLOSE_CODES = {
  1e3: { reason: "normal", reconnect: false },
  1001: { reason: "going_away", reconnect: true },
  1002: { reason: "protocol_error", reconnect: false },
  1007: { reason: "invalid_payload", reconnect: false },
  1008: { reason: "policy_violation", reconnect: false },
  1009: { reason: "message_too_big", reconnect: false },
  1011: { reason: "internal_error", reconnect: true },
  4e3: { reason: "replaced", reconnect: false },
  4001: { reason: "slow_consumer", reconnect: true },
  4002: { reason: "token_expired", reconnect: false },
  4003: { reason: "rate_limited", reconnect: true },
  4004: { reason: "auth_timeout", reconnect: true },
  4005: { reason: "heartbeat_timeout", reconnect: true },
  4006: { reason: "auth_failed", reconnect: false },
  4007: { reason: "disconnected_by_server", reconnect: false }
};
function shouldReconnect(code) {
  return CLOSE_CODES[code]?.reconnect;
}
var CLIENT_FRAME_TYPES = [
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
  "set_state"
];
var SERVER_FRAME_TYPES = [
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
  "state_set"
];
var CLIENT_FRAME_FIELDS = {
  auth: ["token"],
  join: ["id", "room", "token"],
  leave: ["id", "room"],
  publish: ["data", "id", "room", "traceparent"],
  send: ["data", "id", "to"],
  claim_authority: ["id", "room"],
  release_authority: ["id", "room"],
  reconnect: ["epoch", "id", "join_token", "last_sequence", "player_id", "room", "token"],
  refresh: ["id", "token"],
  ping: ["id"],
  set_state: ["id", "room", "state"]
};
var SERVER_FRAME_FIELDS = {
  welcome: ["expires_at", "max_message_bytes", "node_id", "ping_interval_ms", "pong_timeout_ms", "protocol", "session_id", "user_id"],
  joined: ["authority", "epoch", "events", "gap", "id", "member_count", "members", "player_id", "reconnection_token", "room", "seq", "state", "state_seq"],
  left: ["epoch", "id", "room", "seq"],
  event: ["data", "epoch", "from", "id", "room", "seq", "traceparent", "ts", "user_id"],
  presence: ["changes", "count", "room"],
  authority_changed: ["authority", "epoch", "room", "seq"],
  ack: ["id", "room", "seq"],
  message: ["data", "from", "ts"],
  refreshed: ["expires_at", "id"],
  reconnected: ["authority", "epoch", "events", "gap", "id", "member_count", "members", "player_id", "reconnection_token", "recovered", "recovered_from", "rolled_back", "room", "seq"],
  reconnection_failed: ["code", "id", "message", "room"],
  error: ["code", "id", "message"],
  pong: ["id"],
  server_shutdown: ["reason", "reconnect_after_ms"],
  state_set: ["epoch", "room", "seq", "state"]
};

// src/position.ts
var StreamPosition = class {
  /** The highest sequence number delivered (or skipped over by a reported gap). */
  seq;
  /** The epoch `seq` belongs to; numbers from another epoch are not comparable. */
  epoch;
  /** Starts at `seq` (as reported by `joined` or `reconnected`) in `epoch`. */
  constructor(seq, epoch) {
    this.seq = seq;
    this.epoch = epoch;
  }
  /** Judges a frame at `seq` in `epoch` and advances the position unless it is a duplicate. */
  observe(seq, epoch) {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = seq;
      return { kind: "new_epoch" };
    }
    if (seq <= this.seq) return { kind: "duplicate" };
    const verdict = seq === this.seq + 1 ? { kind: "deliver" } : { kind: "gap", from: this.seq + 1, to: seq - 1 };
    this.seq = seq;
    return verdict;
  }
  /**
   * Moves past the gap `from..=to` the server reported, so the frames after it are not
   * reported again. Returns the part the application has not seen, or `undefined`.
   */
  skipGap(from, to, epoch) {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = to;
      return { from, to };
    }
    if (to <= this.seq) return void 0;
    const start = Math.max(from, this.seq + 1);
    this.seq = to;
    return { from: start, to };
  }
  /**
   * Moves forward to `seq` without delivering anything, as after `reconnected` reports the
   * room's position past the resume's own frames (which the resuming member does not receive).
   */
  catchUp(seq, epoch) {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = seq;
      return;
    }
    if (seq > this.seq) this.seq = seq;
  }
};

// src/protocol.ts
function isRoomFrame(frame) {
  switch (frame.type) {
    case "event":
    case "authority_changed":
    case "state_set":
      return true;
    default:
      return false;
  }
}

// src/transports/transport.ts
function parseFrame(text) {
  try {
    const value = JSON.parse(text);
    if (value !== null && typeof value === "object" && typeof value.type === "string") {
      return value;
    }
  } catch {
  }
  return void 0;
}
async function refusal(response) {
  let body = "";
  try {
    body = (await response.text()).trim();
  } catch {
  }
  const reason = `HTTP ${response.status}${body ? `: ${body.slice(0, 200)}` : ""}`;
  if (response.status === 401) {
    return { code: body.includes("token_expired") ? 4002 : 4006, reason };
  }
  if (response.status === 413) return { code: 1009, reason };
  return { reason };
}

// src/transports/sender.ts
var SEND_RETRIES = 3;
var SEND_RETRY_MS = 250;
var FrameSender = class {
  constructor(url, token, fetchImpl, onFatal) {
    this.url = url;
    this.token = token;
    this.fetchImpl = fetchImpl;
    this.onFatal = onFatal;
  }
  url;
  token;
  fetchImpl;
  onFatal;
  /** Frames waiting for the session id or for the request in flight. */
  queue = [];
  /** The session the frames belong to, known after `welcome`. */
  session;
  /** Whether a request is in flight. */
  busy = false;
  /** Set when the connection ended; nothing is sent after. */
  stopped = false;
  /** Aborts the request in flight when the connection ends. */
  abort = new AbortController();
  /** Starts sending, to `session`, what was queued. */
  start(session) {
    this.session = session;
    void this.pump();
  }
  /** Queues a frame. */
  send(frame) {
    if (this.stopped) return;
    this.queue.push(frame);
    void this.pump();
  }
  /** Stops for good and aborts the request in flight. */
  stop() {
    this.stopped = true;
    this.queue = [];
    this.abort.abort();
  }
  async pump() {
    if (this.busy || this.stopped || this.session === void 0 || this.queue.length === 0) return;
    this.busy = true;
    const batch = this.queue;
    this.queue = [];
    const target = `${this.url}${this.url.includes("?") ? "&" : "?"}session=${encodeURIComponent(this.session)}`;
    let failures = 0;
    for (; ; ) {
      if (this.stopped) return;
      let response;
      try {
        response = await this.fetchImpl(target, {
          method: "POST",
          headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
          body: JSON.stringify(batch),
          signal: this.abort.signal
        });
      } catch (error) {
        if (this.stopped) return;
        failures += 1;
        if (failures > SEND_RETRIES) {
          this.fail({ reason: `sending frames failed: ${String(error)}` });
          return;
        }
        await sleep(SEND_RETRY_MS * 2 ** (failures - 1));
        continue;
      }
      if (this.stopped) return;
      if (response.ok) break;
      if (response.status === 429) {
        await sleep(SEND_RETRY_MS);
        continue;
      }
      const info = response.status === 404 ? { reason: "the session is gone (HTTP 404 on send)" } : await refusal(response);
      this.fail(info);
      return;
    }
    this.busy = false;
    void this.pump();
  }
  fail(info) {
    if (this.stopped) return;
    this.stop();
    this.onFatal(info);
  }
};
function endSession(url, session, token, fetchImpl) {
  const target = `${url}${url.includes("?") ? "&" : "?"}session=${encodeURIComponent(session)}`;
  try {
    fetchImpl(target, { method: "DELETE", headers: { authorization: `Bearer ${token}` }, keepalive: true }).then(
      (response) => void response.body?.cancel().catch(() => {
      }),
      () => {
      }
    );
  } catch {
  }
}
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// src/transports/polling.ts
var POLL_RETRIES = 3;
var POLL_RETRY_MS = 250;
function pollingTransport(url, sendUrl, fetchImpl, pollTimeoutMs) {
  return ({ token, handlers }) => {
    let done = false;
    let abort = new AbortController();
    let session;
    const finish = (info) => {
      if (done) return;
      done = true;
      sender.stop();
      abort.abort();
      handlers.onClose(info);
    };
    const sender = new FrameSender(sendUrl, token, fetchImpl, finish);
    const run = async () => {
      let after = 0;
      let failures = 0;
      while (!done) {
        const query = session === void 0 ? "" : `session=${encodeURIComponent(session)}&after=${after}`;
        const target = query ? `${url}${url.includes("?") ? "&" : "?"}${query}` : url;
        abort = new AbortController();
        const timer = setTimeout(() => abort.abort(), pollTimeoutMs);
        let body;
        let failure;
        try {
          const response = await fetchImpl(target, {
            headers: { authorization: `Bearer ${token}`, accept: "application/json" },
            signal: abort.signal,
            cache: "no-store"
          });
          if (done) return;
          if (response.status === 404 && session !== void 0) {
            finish({ reason: "the session is gone (HTTP 404 on poll)" });
            return;
          }
          if (!response.ok) {
            finish(await refusal(response));
            return;
          }
          body = await response.json();
        } catch (error) {
          failure = { reason: `polling failed: ${String(error)}` };
        } finally {
          clearTimeout(timer);
        }
        if (done) return;
        if (!body) {
          failures += 1;
          if (session === void 0 || failures > POLL_RETRIES) {
            finish(failure ?? { reason: "polling failed" });
            return;
          }
          await sleep(POLL_RETRY_MS * 2 ** (failures - 1));
          continue;
        }
        failures = 0;
        handlers.onActivity();
        if (session === void 0) {
          session = body.session_id;
          sender.start(session);
        }
        for (const { id, frame } of body.frames ?? []) {
          if (id <= after) continue;
          after = id;
          handlers.onFrame(frame);
          if (done) return;
        }
        if (body.closed) {
          finish({ code: body.closed.code, reason: body.closed.reason });
          return;
        }
      }
    };
    void run();
    const connection = {
      transport: "polling",
      send(frame) {
        sender.send(frame);
      },
      close() {
        const open = !done;
        done = true;
        sender.stop();
        abort.abort();
        if (open && session !== void 0) endSession(url, session, token, fetchImpl);
      },
      drop() {
        done = true;
        sender.stop();
        abort.abort();
      }
    };
    return connection;
  };
}

// src/transports/sse.ts
var REATTACH_ATTEMPTS = 3;
var REATTACH_DELAY_MS = 250;
function sseTransport(url, sendUrl, fetchImpl) {
  return ({ token, handlers }) => {
    let done = false;
    let lastEventId;
    let session;
    let abort = new AbortController();
    const finish = (info) => {
      if (done) return;
      done = true;
      sender.stop();
      abort.abort();
      handlers.onClose(info);
    };
    const sender = new FrameSender(sendUrl, token, fetchImpl, finish);
    const dispatch = (event, data, id) => {
      if (id !== void 0) lastEventId = id;
      if (event === "close") {
        let info = { reason: "the server closed the stream" };
        try {
          const parsed = JSON.parse(data);
          info = { code: parsed.code, reason: parsed.reason ?? info.reason };
        } catch {
        }
        finish(info);
        return true;
      }
      const frame = parseFrame(data);
      if (!frame) return false;
      if (frame.type === "welcome") {
        session = frame.session_id;
        sender.start(session);
      }
      handlers.onFrame(frame);
      return false;
    };
    const read = async (body) => {
      const reader = body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let event = "";
      let data = [];
      let id;
      for (; ; ) {
        const { value, done: ended } = await reader.read();
        if (ended || done) return done;
        handlers.onActivity();
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          const width = buffer.startsWith("\r\n", newline) ? 2 : 1;
          buffer = buffer.slice(newline + width);
          if (line === "") {
            if (data.length > 0 && dispatch(event || "message", data.join("\n"), id)) return true;
            event = "";
            data = [];
            id = void 0;
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") data.push(val);
          else if (field === "event") event = val;
          else if (field === "id") id = val;
        }
      }
    };
    const run = async () => {
      let attempts = 0;
      for (; ; ) {
        const headers = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
        if (lastEventId !== void 0) headers["last-event-id"] = lastEventId;
        let response;
        let failure;
        try {
          response = await fetchImpl(url, { headers, signal: abort.signal, cache: "no-store" });
        } catch (error) {
          failure = { reason: `the event stream failed: ${String(error)}` };
        }
        if (done) return;
        if (response && !response.ok) {
          finish(await refusal(response));
          return;
        }
        if (response?.body) {
          attempts = 0;
          try {
            if (await read(response.body)) return;
            failure = { reason: "the event stream ended" };
          } catch (error) {
            failure = { reason: `the event stream broke: ${String(error)}` };
          }
        }
        if (done) return;
        if (lastEventId === void 0 || attempts >= REATTACH_ATTEMPTS) {
          finish(failure ?? { reason: "the event stream had no body" });
          return;
        }
        await sleep(REATTACH_DELAY_MS * 2 ** attempts);
        attempts += 1;
        if (done) return;
        abort = new AbortController();
      }
    };
    void run();
    const connection = {
      transport: "sse",
      send(frame) {
        sender.send(frame);
      },
      close() {
        const open = !done;
        done = true;
        sender.stop();
        abort.abort();
        if (open && session !== void 0) endSession(url, session, token, fetchImpl);
      },
      drop() {
        done = true;
        sender.stop();
        abort.abort();
      }
    };
    return connection;
  };
}

// src/transports/websocket.ts
var SUBPROTOCOLS = {
  json: "holdfast.v1.json",
  msgpack: "holdfast.v1.msgpack"
};
function websocketTransport(url, WebSocketImpl, encoding = "json") {
  let offerNext = encoding === "msgpack";
  let jsonOnly = false;
  return ({ token, handlers }) => {
    const offered = offerNext && !jsonOnly;
    const socket = offered ? new WebSocketImpl(url, [SUBPROTOCOLS.msgpack, SUBPROTOCOLS.json]) : new WebSocketImpl(url);
    socket.binaryType = "arraybuffer";
    let opened = false;
    let binary = false;
    let done = false;
    const silence = () => {
      done = true;
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    };
    const write2 = (frame) => socket.send(binary ? encodeMsgpack(frame) : JSON.stringify(frame));
    socket.onopen = () => {
      if (done) return;
      opened = true;
      binary = socket.protocol === SUBPROTOCOLS.msgpack;
      if (!offered && encoding === "msgpack") jsonOnly = true;
      write2({ type: "auth", token });
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
      if (!opened && encoding === "msgpack") offerNext = !offered;
      const code = ev.code === 1005 || ev.code === 1006 ? void 0 : ev.code;
      handlers.onClose({ code, reason: ev.reason || (code ? `closed with ${code}` : "the WebSocket connection was lost") });
    };
    socket.onerror = () => {
    };
    const connection = {
      transport: "websocket",
      get encoding() {
        return binary ? "msgpack" : "json";
      },
      send(frame) {
        if (!done && socket.readyState === 1) write2(frame);
      },
      close(code = 1e3, reason = "") {
        silence();
        try {
          socket.close(code, reason);
        } catch {
        }
      },
      drop() {
        connection.close(1e3, "dropped");
      }
    };
    return connection;
  };
}
function decodeBinary(data) {
  let bytes;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (data instanceof Uint8Array) bytes = data;
  else return void 0;
  try {
    const value = decodeMsgpack(bytes);
    if (value !== null && typeof value === "object" && typeof value.type === "string") {
      return value;
    }
  } catch {
  }
  return void 0;
}

// src/client.ts
var RATE_LIMIT_RETRY_MS = 1e3;
var REFRESH_RETRY_MS = 1e3;
var HoldfastClient = class extends Emitter {
  options;
  backoff;
  transports;
  fallbackAfter;
  random;
  /** Random per-client prefix of request ids, so ids stay unique across clients of one user. */
  idPrefix;
  nextOrder = 0;
  _state = "disconnected";
  /** The index of the transport in use in `transports`. */
  transportIndex = 0;
  /** Attempts in a row on the current transport that did not reach `welcome`. */
  transportFailures = 0;
  /** Reconnection attempts since the last connection that stayed up; drives the backoff. */
  attempts = 0;
  /** The live connection, if any. */
  connection;
  /** The `welcome` of the live connection, once received. */
  welcome;
  /** When the live connection was welcomed, to tell a stable connection from a flapping one. */
  welcomedAt = 0;
  /** The current token's expiry (Unix seconds) from `welcome` or `refreshed`. */
  expiresAt = 0;
  /** The reconnect delay hinted by `server_shutdown` on the current connection. */
  shutdownHintMs;
  /** Set until `connect()` and again by `close()` or a terminal close code: no reconnects. */
  stopped = true;
  /** Set when the client stopped after running; new requests fail until `connect()`. */
  finished = false;
  /** Bumped on every new attempt, so callbacks of an abandoned attempt are ignored. */
  generation = 0;
  rooms = /* @__PURE__ */ new Map();
  /** The room objects handed out by `room()`, by name. */
  channels = /* @__PURE__ */ new Map();
  /** The WebSocket endpoint, also used to probe whether WebSocket works again. */
  wsUrl;
  probeTimer;
  /** Requests awaiting replies, by id, in the order they were made. */
  pending = /* @__PURE__ */ new Map();
  connectTimer;
  reconnectTimer;
  pingTimer;
  deadTimer;
  refreshTimer;
  retransmitTimer;
  /** When the last inbound traffic arrived (`Date.now()`). */
  lastActivity = 0;
  constructor(options) {
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
    const under = (u, path) => `${u.origin}${u.pathname.replace(/\/$/, "")}${path}`;
    const withDevice = (u) => options.device === void 0 ? u : `${u}${u.includes("?") ? "&" : "?"}device=${encodeURIComponent(options.device)}`;
    const wsUrl = withDevice(options.websocketUrl ?? under(ws, "/ws"));
    const sseUrl = options.sseUrl ?? under(http, "/sse");
    const pollUrl = options.pollUrl ?? under(http, "/poll");
    const fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    const names = options.transports ?? ["websocket", "sse", "polling"];
    if (names.length === 0) throw new RangeError("at least one transport is required");
    this.wsUrl = names.includes("websocket") ? wsUrl : void 0;
    this.transports = names.map((name) => {
      switch (name) {
        case "websocket":
          return { name, open: websocketTransport(wsUrl, websocketImplementation(options.WebSocket), options.encoding ?? "json") };
        case "sse":
          return { name, open: sseTransport(withDevice(sseUrl), `${sseUrl}/send`, fetchImpl) };
        case "polling":
          return { name, open: pollingTransport(withDevice(pollUrl), `${pollUrl}/send`, fetchImpl, options.pollTimeoutMs ?? 4e4) };
      }
    });
  }
  /** Where the client stands. */
  get state() {
    return this._state;
  }
  /** The transport the client uses (or will use for its next attempt). */
  get transport() {
    return this.transports[this.transportIndex].name;
  }
  /** The encoding of the current connection (`json` when not connected or on a fallback). */
  get encoding() {
    return this.connection?.encoding ?? "json";
  }
  /** The live session's `welcome`, when connected. */
  get session() {
    return this.welcome;
  }
  /** The rooms the client is in, with their player id and last delivered position. */
  roomsSnapshot() {
    return [...this.rooms].map(([room, r]) => ({ room, playerId: r.playerId, seq: r.position.seq, epoch: r.position.epoch, live: r.live }));
  }
  /** Starts connecting (no effect when already started). */
  connect() {
    if (!this.stopped) return;
    this.stopped = false;
    this.finished = false;
    this.attempts = 0;
    this.transportFailures = 0;
    this.emit("transport", { transport: this.transport, reason: "connect" });
    void this.open();
  }
  /** Stops for good: closes the connection and fails every pending request with `closed`. */
  close() {
    if (this.stopped) return;
    this.connection?.close(1e3, "");
    this.finish(void 0, "closed by the application");
  }
  /**
   * Cuts the current connection as a network failure would, without a close handshake where
   * the transport allows it; the client then reconnects and resumes its rooms. Meant for demos
   * and tests of the resume path.
   */
  dropConnection() {
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
  join(room, options = {}) {
    const token = options.token;
    return new Promise((resolve, reject) => this.request({ kind: "join", room, token, sent: false, resolve, reject }));
  }
  /** Leaves `room`. Leaving a room the gateway no longer has this client in succeeds. */
  leave(room) {
    return new Promise((resolve, reject) => this.request({ kind: "leave", room, sent: false, resolve, reject }));
  }
  /**
   * Publishes `data` to every member of `room`; resolves with the event's `seq`. A publish that
   * was not acknowledged before a drop is resent with the same id after the room is resumed,
   * and the gateway delivers it once.
   */
  publish(room, data) {
    return new Promise((resolve, reject) => this.request({ kind: "publish", room, data, sent: false, resolve, reject }));
  }
  /** Sends `data` directly to user `to`, on whichever node it is connected. */
  send(to, data) {
    return new Promise((resolve, reject) => this.request({ kind: "send", to, data, sent: false, resolve, reject }));
  }
  /** Claims the authority role of `room`. */
  claimAuthority(room) {
    return new Promise((resolve, reject) => this.request({ kind: "authority", room, claim: true, sent: false, resolve, reject }));
  }
  /** Gives up the authority role of `room`. */
  releaseAuthority(room) {
    return new Promise((resolve, reject) => this.request({ kind: "authority", room, claim: false, sent: false, resolve, reject }));
  }
  /**
   * Sets `room`'s state snapshot (`set_state`), which members receive on `joined` before the
   * events after it; resolves with its `seq` when the gateway reports one. Needs a gateway with
   * room state and the authority role where the room's namespace asks for it.
   */
  setState(room, state) {
    return new Promise((resolve, reject) => this.request({ kind: "state", room, state, sent: false, resolve, reject }));
  }
  /**
   * The object of room `name`, created on first use and the same one afterwards: its own
   * events, `join` (with `options.token`, a join token or a function that fetches one),
   * `publish`, authority and state. Events of the room reach both it and the client.
   */
  room(name, options = {}) {
    let channel = this.channels.get(name);
    if (!channel) {
      channel = new RoomChannel(this, name, options);
      this.channels.set(name, channel);
    } else if (options.token !== void 0) {
      channel.options.token = options.token;
    }
    return channel;
  }
  /** The latest state snapshot of `room` the gateway reported, if any. */
  roomState(room) {
    return this.rooms.get(room)?.state;
  }
  /** Whether the client is a member of `room` (live or waiting to be resumed). */
  isMember(room) {
    return this.rooms.has(room);
  }
  // Connection management.
  setClientState(state) {
    if (this._state === state) return;
    this._state = state;
    this.emit("state", state);
  }
  async resolveToken() {
    const source = this.options.token;
    if (typeof source === "string") return source;
    return await source();
  }
  /** Opens a connection on the current transport. */
  async open() {
    const generation = ++this.generation;
    this.setClientState("connecting");
    let token;
    try {
      token = await this.resolveToken();
    } catch (error) {
      if (generation !== this.generation || this.stopped) return;
      this.emit("disconnected", { reason: `the token source failed: ${String(error)}`, willReconnect: true });
      this.scheduleReconnect();
      return;
    }
    if (generation !== this.generation || this.stopped) return;
    const { open } = this.transports[this.transportIndex];
    this.welcome = void 0;
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
          onClose: (info) => this.onClose(generation, info)
        }
      });
    } catch (error) {
      this.onClose(generation, { reason: `the ${this.transport} transport could not start: ${String(error)}` });
      return;
    }
    const timeout = this.options.connectTimeoutMs ?? 1e4;
    this.connectTimer = setTimeout(() => {
      if (generation !== this.generation || this.welcome) return;
      this.connection?.drop();
      this.onClose(generation, { reason: `no welcome within ${timeout} ms` });
    }, timeout);
  }
  /** The current connection ended (or was dropped or timed out). */
  onClose(generation, info) {
    if (generation !== this.generation || this.stopped) return;
    this.generation += 1;
    const welcomed = this.welcome !== void 0;
    this.clearConnectionTimers();
    this.connection = void 0;
    if (welcomed) {
      if (Date.now() - this.welcomedAt >= this.idleWindow()) this.attempts = 0;
      this.onConnectionLost();
    }
    this.welcome = void 0;
    const terminal = this.isTerminal(info.code);
    this.emit("disconnected", { code: info.code, reason: info.reason, willReconnect: !terminal });
    if (terminal) {
      this.finish(info.code, info.reason);
      return;
    }
    if (welcomed && this.transportIndex !== 0) {
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
          reason: `${from} failed ${this.fallbackAfter} times in a row before a session started (last: ${info.reason})`
        });
      }
    }
    this.setClientState("connecting");
    this.scheduleReconnect();
  }
  /** Whether a close with `code` ends the client. */
  isTerminal(code) {
    if (code === void 0) return false;
    if (code === CloseCode.TokenExpired) return typeof this.options.token === "string";
    return shouldReconnect(code) === false;
  }
  scheduleReconnect() {
    let delay;
    if (this.shutdownHintMs !== void 0) {
      delay = this.backoff.jitterHint(this.shutdownHintMs);
      this.shutdownHintMs = void 0;
      this.attempts = 0;
    } else {
      delay = this.backoff.delay(this.attempts);
    }
    this.attempts += 1;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = void 0;
      if (!this.stopped) void this.open();
    }, delay);
  }
  /** How long the connection may stay silent before it is presumed dead. */
  idleWindow() {
    const w = this.welcome;
    return w && w.ping_interval_ms > 0 ? w.ping_interval_ms + w.pong_timeout_ms : 1e4;
  }
  clearConnectionTimers() {
    for (const timer of [this.connectTimer, this.deadTimer, this.refreshTimer, this.retransmitTimer]) clearTimeout(timer);
    clearInterval(this.pingTimer);
    clearInterval(this.probeTimer);
    this.connectTimer = this.deadTimer = this.refreshTimer = this.retransmitTimer = this.pingTimer = this.probeTimer = void 0;
  }
  /** Stops for good. */
  finish(code, reason) {
    this.stopped = true;
    this.finished = true;
    this.generation += 1;
    this.clearConnectionTimers();
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = void 0;
    this.connection = void 0;
    this.welcome = void 0;
    for (const room of this.rooms.values()) room.live = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) fail(p, new ClosedError(`the client closed: ${reason}`));
    this.setClientState("disconnected");
    this.emit("closed", { code, reason });
  }
  /** Arms the dead-connection timer for the silence window after the last inbound traffic. */
  armDeadTimer() {
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
  write(frame) {
    const connection = this.connection;
    if (!connection || !this.welcome) return false;
    this.emit("frame", { direction: "out", frame });
    connection.send(frame);
    return true;
  }
  request(p) {
    if (this.finished) {
      fail(p, new ClosedError("the client is closed"));
      return;
    }
    const id = `${this.idPrefix}${++this.nextOrder}`;
    this.pending.set(id, p);
    if (this.sendable(p)) this.sendPending(id, p);
  }
  /** Whether a pending request may go out now: room requests other than `leave` wait for their room to be live. */
  sendable(p) {
    if (!this.welcome || p.sent) return false;
    if (p.kind === "publish" || p.kind === "authority" || p.kind === "state") {
      const room = this.rooms.get(p.room);
      return room ? room.live : true;
    }
    return p.kind !== "resume" && p.kind !== "refresh";
  }
  sendPending(id, p) {
    let frame;
    switch (p.kind) {
      case "join":
        frame = p.token === void 0 ? { type: "join", room: p.room, id } : { type: "join", room: p.room, token: p.token, id };
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
        frame = { type: "set_state", room: p.room, state: p.state, id };
        break;
      default:
        return;
    }
    const max = this.welcome?.max_message_bytes ?? Infinity;
    const size = this.connection?.encoding === "msgpack" ? encodeMsgpack(frame).length : new TextEncoder().encode(JSON.stringify(frame)).length;
    if (size > max) {
      this.pending.delete(id);
      fail(p, new MessageTooBigError(`the frame is ${size} bytes; the gateway accepts ${max}`));
      return;
    }
    p.sent = true;
    this.write(frame);
  }
  /** Sends, in order, every pending request that may go out now. */
  flush() {
    for (const [id, p] of [...this.pending]) {
      if (this.pending.get(id) === p && this.sendable(p)) this.sendPending(id, p);
    }
  }
  /** Removes and returns the pending request a reply's `id` names. */
  take(id) {
    if (id === void 0) return void 0;
    const p = this.pending.get(id);
    if (p) this.pending.delete(id);
    return p;
  }
  /** Sorts the pending requests after the connection was lost. */
  onConnectionLost() {
    for (const room of this.rooms.values()) room.live = false;
    for (const [id, p] of [...this.pending]) {
      switch (p.kind) {
        case "publish":
        case "leave":
          p.sent = false;
          break;
        case "join":
          if (p.rejoin) {
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
  onFrame(frame) {
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
        const unknown = frame;
        this.onOtherFrame(unknown);
      }
    }
  }
  onWelcome(welcome) {
    if (this.welcome) {
      if (this.welcome.session_id === welcome.session_id) return;
      this.clearConnectionTimers();
      this.onConnectionLost();
      this.emit("disconnected", { reason: "the session expired while the transport reattached", willReconnect: true });
    }
    clearTimeout(this.connectTimer);
    this.connectTimer = void 0;
    this.welcome = welcome;
    this.welcomedAt = Date.now();
    this.transportFailures = 0;
    this.shutdownHintMs = void 0;
    this.expiresAt = welcome.expires_at;
    this.setClientState("connected");
    this.emit("connected", {
      userId: welcome.user_id,
      sessionId: welcome.session_id,
      nodeId: welcome.node_id,
      transport: this.connection?.transport ?? this.transport
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
    for (const name of [...this.rooms.keys()].sort()) {
      const room = this.rooms.get(name);
      if (room.token === void 0) {
        if (![...this.pending.values()].some((p) => p.kind === "join" && p.rejoin && p.room === name)) {
          this.loseRoom(name, "reconnection_failed", "the gateway issued no reconnection token");
        }
        continue;
      }
      const id = `${this.idPrefix}${++this.nextOrder}`;
      this.pending.set(id, { kind: "resume", room: name, sent: true });
      const frame = { type: "reconnect", room: name, player_id: room.playerId, token: room.token, last_sequence: room.position.seq, id };
      if (room.position.epoch) frame.epoch = room.position.epoch;
      if (room.joinToken !== void 0) frame.join_token = room.joinToken;
      this.write(frame);
    }
    this.flush();
  }
  /** Passes one room frame through its room's position and emits what the application should see. */
  judge(frame) {
    const room = this.rooms.get(frame.room);
    if (room) {
      const verdict = room.position.observe(frame.seq, frame.epoch);
      if (verdict.kind === "duplicate") return;
      if (verdict.kind === "gap") this.emitGap({ room: frame.room, from: verdict.from, to: verdict.to, epoch: frame.epoch });
    }
    this.emitRoomFrame(frame);
  }
  emitRoomFrame(frame) {
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
  onOtherFrame(frame) {
    const f = frame;
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
  emitStateOf(room, state, seq) {
    this.channels.get(room)?.dispatch("state", { room, state, seq });
  }
  emitGap(gap) {
    this.emit("gap", gap);
    this.channels.get(gap.room)?.dispatch("gap", gap);
  }
  onJoined(joined) {
    const p = this.take(joined.id);
    const snapshot = joined.state;
    const room = {
      playerId: joined.player_id,
      token: joined.reconnection_token,
      joinToken: p?.kind === "join" ? p.token : void 0,
      position: new StreamPosition(joined.seq, joined.epoch),
      live: true
    };
    if (snapshot !== void 0) {
      const stateSeq = joined.state_seq;
      room.state = { state: snapshot, seq: typeof stateSeq === "number" ? stateSeq : joined.seq };
    }
    this.rooms.set(joined.room, room);
    const membership = {
      room: joined.room,
      playerId: joined.player_id,
      members: joined.members ?? [],
      memberCount: joined.member_count,
      authority: joined.authority,
      seq: joined.seq,
      epoch: joined.epoch
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
  onLeft(left) {
    this.rooms.delete(left.room);
    const p = this.take(left.id);
    if (p?.kind === "leave") p.resolve();
  }
  onAck(ack) {
    const p = this.take(ack.id);
    if (!p) return;
    switch (p.kind) {
      case "publish":
        if (ack.seq === void 0) p.reject(new HoldfastError("protocol", "publish ack without seq"));
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
  onError(error) {
    const limited = error.id !== void 0 ? this.pending.get(error.id) : void 0;
    if (error.code === "rate_limited" && (limited?.kind === "publish" || limited?.kind === "leave")) {
      limited.sent = false;
      this.scheduleRetransmit();
      return;
    }
    const p = this.take(error.id);
    if (!p) {
      if (error.code === "rate_limited" && error.id === void 0) {
        for (const q of this.pending.values()) if (q.kind === "publish") q.sent = false;
        this.scheduleRetransmit();
      }
      this.emit("error", error);
      return;
    }
    const failure = errorFor(error.code, error.message);
    switch (p.kind) {
      case "leave":
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
  scheduleRetransmit() {
    if (this.retransmitTimer !== void 0) return;
    const generation = this.generation;
    this.retransmitTimer = setTimeout(() => {
      this.retransmitTimer = void 0;
      if (generation === this.generation) this.flush();
    }, RATE_LIMIT_RETRY_MS);
  }
  onReconnected(resumed) {
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
    room.position.catchUp(resumed.seq, resumed.epoch);
    const info = {
      room: resumed.room,
      recovered: resumed.recovered,
      members: resumed.members ?? [],
      memberCount: resumed.member_count,
      authority: resumed.authority,
      seq: resumed.seq,
      epoch: resumed.epoch
    };
    this.emit("resumed", info);
    this.channels.get(resumed.room)?.dispatch("resumed", info);
    this.flush();
  }
  onReconnectionFailed(failed) {
    this.take(failed.id);
    this.loseRoom(failed.room, failed.code, failed.message);
  }
  /**
   * A room could not be resumed: joins it again (with `autoRejoin`, unless the user may no
   * longer be in it), keeping its queued requests; otherwise forgets it and fails them.
   */
  loseRoom(name, code, message, mayRejoin = true) {
    const room = this.rooms.get(name);
    if (!room && mayRejoin) return;
    const rejoining = mayRejoin && this.options.autoRejoin !== false && code !== "forbidden" && code !== "too_many_rooms";
    const info = { room: name, code, message, rejoining };
    if (rejoining && room) {
      room.live = false;
      room.token = void 0;
      this.emit("resume_failed", info);
      this.channels.get(name)?.dispatch("resume_failed", info);
      const rejoin = (token) => this.request({ kind: "join", room: name, token, rejoin: true, sent: false, resolve: () => {
      }, reject: () => {
      } });
      const channel = this.channels.get(name);
      if (channel) {
        channel.joinToken().then(
          (token) => rejoin(token ?? room.joinToken),
          () => rejoin(room.joinToken)
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
  scheduleProbe() {
    const every = this.options.upgradeProbeMs ?? 3e4;
    const preferred = this.transports[0];
    if (every <= 0 || this.transportIndex === 0 || preferred.name !== "websocket" || this.wsUrl === void 0) return;
    const generation = this.generation;
    let probing = false;
    this.probeTimer = setInterval(() => {
      if (probing || generation !== this.generation) return;
      probing = true;
      void probeWebSocket(this.wsUrl, websocketImplementation(this.options.WebSocket), this.options.connectTimeoutMs ?? 1e4).then((ok) => {
        probing = false;
        if (ok && generation === this.generation && !this.stopped) this.upgrade();
      });
    }, every);
  }
  /** Ends the fallback session and connects again over WebSocket; rooms are resumed as after a drop. */
  upgrade() {
    const from = this.transport;
    this.connection?.close(1e3, "");
    this.generation += 1;
    this.clearConnectionTimers();
    this.connection = void 0;
    this.onConnectionLost();
    this.welcome = void 0;
    this.transportIndex = 0;
    this.transportFailures = 0;
    this.attempts = 0;
    this.emit("transport", { transport: this.transport, reason: `${this.transport} works again; leaving ${from}` });
    this.emit("disconnected", { reason: `moving from ${from} to ${this.transport}`, willReconnect: true });
    void this.open();
  }
  // Token refresh.
  /** Renews the token a fifth of its remaining life before expiry (1 s to 60 s ahead), with a token function only. */
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = void 0;
    const source = this.options.token;
    if (typeof source === "string" || !this.expiresAt) return;
    const remaining = Math.max(0, this.expiresAt - Date.now() / 1e3);
    const lead = Math.min(60, Math.max(1, remaining / 5));
    const generation = this.generation;
    this.refreshTimer = setTimeout(() => void this.refresh(generation), Math.max(0, remaining - lead) * 1e3);
  }
  async refresh(generation) {
    let token;
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
};
function fail(p, error) {
  if (p.kind !== "resume" && p.kind !== "refresh") p.reject(error);
}
function websocketImplementation(given) {
  const impl = given ?? globalThis.WebSocket;
  if (impl) return impl;
  const node = globalThis.process?.versions?.node;
  throw new Error(
    node ? `Node.js ${node} has no global WebSocket: install the \`ws\` package and pass it, \`new HoldfastClient({ ..., WebSocket })\` with \`import WebSocket from "ws"\` (or use Node.js 22, or transports: ["sse", "polling"])` : "no WebSocket implementation: pass one as `WebSocket`"
  );
}
function probeWebSocket(url, impl, timeoutMs) {
  return new Promise((resolve) => {
    let socket;
    const create = () => new impl(url);
    const done = (ok) => {
      clearTimeout(timer);
      socket.onopen = socket.onclose = socket.onerror = null;
      try {
        socket.close(1e3, "");
      } catch {
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
    socket.onerror = () => {
    };
  });
}
export {
  BASE64_KEY,
  Backoff,
  CLIENT_FRAME_FIELDS,
  CLIENT_FRAME_TYPES,
  CLOSE_CODES,
  CloseCode,
  ClosedError,
  ConnectionLostError,
  ERROR_CODES,
  Emitter,
  ForbiddenError,
  HoldfastClient,
  HoldfastError,
  MAX_ID_LEN,
  MAX_ROOM_LEN,
  MAX_TOKEN_LEN,
  MAX_USER_LEN,
  MessageTooBigError,
  PROTOCOL_VERSION,
  RoomChannel,
  RoomLostError,
  SERVER_FRAME_FIELDS,
  SERVER_FRAME_TYPES,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_MSGPACK,
  StreamPosition,
  decodeMsgpack,
  encodeMsgpack,
  errorFor,
  isRoomFrame,
  shouldReconnect
};
