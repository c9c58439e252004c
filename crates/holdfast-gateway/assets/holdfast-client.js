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

// src/generated.ts
var PROTOCOL_VERSION = 1;
var MAX_ID_LEN = 64;
var MAX_ROOM_LEN = 128;
var MAX_TOKEN_LEN = 8192;
var MAX_USER_LEN = 256;
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
  "ping"
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
  "server_shutdown"
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
  ping: ["id"]
};
var SERVER_FRAME_FIELDS = {
  welcome: ["expires_at", "max_message_bytes", "node_id", "ping_interval_ms", "pong_timeout_ms", "protocol", "session_id", "user_id"],
  joined: ["authority", "epoch", "id", "member_count", "members", "player_id", "reconnection_token", "room", "seq"],
  left: ["epoch", "id", "room", "seq"],
  event: ["data", "epoch", "from", "id", "room", "seq", "traceparent", "ts", "user_id"],
  presence: ["changes", "count", "room"],
  authority_changed: ["authority", "epoch", "room", "seq"],
  ack: ["id", "room", "seq"],
  message: ["data", "from", "ts"],
  refreshed: ["expires_at", "id"],
  reconnected: ["authority", "epoch", "events", "gap", "id", "member_count", "members", "player_id", "reconnection_token", "recovered", "rolled_back", "room", "seq"],
  reconnection_failed: ["code", "id", "message", "room"],
  error: ["code", "id", "message"],
  pong: ["id"],
  server_shutdown: ["reason", "reconnect_after_ms"]
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
    const finish = (info) => {
      if (done) return;
      done = true;
      sender.stop();
      abort.abort();
      handlers.onClose(info);
    };
    const sender = new FrameSender(sendUrl, token, fetchImpl, finish);
    const run = async () => {
      let session;
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
        done = true;
        sender.stop();
        abort.abort();
      },
      drop() {
        connection.close();
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
      if (frame.type === "welcome") sender.start(frame.session_id);
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
        done = true;
        sender.stop();
        abort.abort();
      },
      drop() {
        connection.close();
      }
    };
    return connection;
  };
}

// src/transports/websocket.ts
function websocketTransport(url, WebSocketImpl) {
  return ({ token, handlers }) => {
    const socket = new WebSocketImpl(url);
    let done = false;
    const silence = () => {
      done = true;
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
    };
    socket.onopen = () => {
      if (!done) socket.send(JSON.stringify({ type: "auth", token }));
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
      const code = ev.code === 1005 || ev.code === 1006 ? void 0 : ev.code;
      handlers.onClose({ code, reason: ev.reason || (code ? `closed with ${code}` : "the WebSocket connection was lost") });
    };
    socket.onerror = () => {
    };
    const connection = {
      transport: "websocket",
      send(frame) {
        if (!done && socket.readyState === 1) socket.send(JSON.stringify(frame));
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
    const wsUrl = options.websocketUrl ?? under(ws, "/ws");
    const sseUrl = options.sseUrl ?? under(http, "/sse");
    const pollUrl = options.pollUrl ?? under(http, "/poll");
    const fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    const names = options.transports ?? ["websocket", "sse", "polling"];
    if (names.length === 0) throw new RangeError("at least one transport is required");
    this.transports = names.map((name) => {
      switch (name) {
        case "websocket": {
          const impl = options.WebSocket ?? globalThis.WebSocket;
          if (!impl) throw new Error("no WebSocket implementation: pass one as `WebSocket`");
          return { name, open: websocketTransport(wsUrl, impl) };
        }
        case "sse":
          return { name, open: sseTransport(sseUrl, `${sseUrl}/send`, fetchImpl) };
        case "polling":
          return { name, open: pollingTransport(pollUrl, `${pollUrl}/send`, fetchImpl, options.pollTimeoutMs ?? 4e4) };
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
  // Connection management.
  setState(state) {
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
    this.setState("connecting");
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
    this.setState("connecting");
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
    this.connectTimer = this.deadTimer = this.refreshTimer = this.retransmitTimer = this.pingTimer = void 0;
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
    for (const p of pending) fail(p, new HoldfastError("closed", `the client closed: ${reason}`));
    this.setState("disconnected");
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
      fail(p, new HoldfastError("closed", "the client is closed"));
      return;
    }
    const id = `${this.idPrefix}${++this.nextOrder}`;
    this.pending.set(id, p);
    if (this.sendable(p)) this.sendPending(id, p);
  }
  /** Whether a pending request may go out now: room requests other than `leave` wait for their room to be live. */
  sendable(p) {
    if (!this.welcome || p.sent) return false;
    if (p.kind === "publish" || p.kind === "authority") {
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
      default:
        return;
    }
    const max = this.welcome?.max_message_bytes ?? Infinity;
    const size = new TextEncoder().encode(JSON.stringify(frame)).length;
    if (size > max) {
      this.pending.delete(id);
      fail(p, new HoldfastError("message_too_big", `the frame is ${size} bytes; the gateway accepts ${max}`));
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
        case "resume":
        case "refresh":
          this.pending.delete(id);
          break;
        default:
          if (p.sent) {
            this.pending.delete(id);
            p.reject(new HoldfastError("connection_lost", `the connection dropped before the ${p.kind} was answered`));
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
        this.judge(frame);
        break;
      case "presence":
        this.emit("presence", frame);
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
        void unknown;
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
    this.setState("connected");
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
    for (const name of [...this.rooms.keys()].sort()) {
      const room = this.rooms.get(name);
      if (room.token === void 0) {
        this.loseRoom(name, "reconnection_failed", "the gateway issued no reconnection token");
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
      if (verdict.kind === "gap") this.emit("gap", { room: frame.room, from: verdict.from, to: verdict.to, epoch: frame.epoch });
    }
    this.emitRoomFrame(frame);
  }
  emitRoomFrame(frame) {
    switch (frame.type) {
      case "event":
        this.emit("event", frame);
        break;
      case "authority_changed":
        this.emit("authority_changed", frame);
        break;
    }
  }
  onJoined(joined) {
    const p = this.take(joined.id);
    this.rooms.set(joined.room, {
      playerId: joined.player_id,
      token: joined.reconnection_token,
      joinToken: p?.kind === "join" ? p.token : void 0,
      position: new StreamPosition(joined.seq, joined.epoch),
      live: true
    });
    if (p?.kind === "join") {
      p.resolve({
        room: joined.room,
        playerId: joined.player_id,
        members: joined.members ?? [],
        memberCount: joined.member_count,
        authority: joined.authority,
        seq: joined.seq,
        epoch: joined.epoch
      });
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
    const failure = error.code === "forbidden" ? new ForbiddenError(error.message) : new HoldfastError(error.code, error.message);
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
      if (lost) this.emit("gap", { room: resumed.room, from: lost.from, to: lost.to, epoch: resumed.gap.epoch });
    }
    for (const frame of resumed.events) if (isRoomFrame(frame)) this.judge(frame);
    room.position.catchUp(resumed.seq, resumed.epoch);
    this.emit("resumed", {
      room: resumed.room,
      recovered: resumed.recovered,
      members: resumed.members ?? [],
      memberCount: resumed.member_count,
      authority: resumed.authority,
      seq: resumed.seq,
      epoch: resumed.epoch
    });
    this.flush();
  }
  onReconnectionFailed(failed) {
    this.take(failed.id);
    this.loseRoom(failed.room, failed.code, failed.message);
  }
  /** Forgets a room that could not be resumed and fails the requests that waited for it. */
  loseRoom(name, code, message) {
    if (!this.rooms.delete(name)) return;
    for (const [id, p] of [...this.pending]) {
      if ((p.kind === "publish" || p.kind === "authority") && p.room === name) {
        this.pending.delete(id);
        p.reject(new HoldfastError("room_lost", `room ${name} could not be resumed: ${message}`, code));
      }
    }
    this.emit("resume_failed", { room: name, code, message });
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
export {
  Backoff,
  CLIENT_FRAME_FIELDS,
  CLIENT_FRAME_TYPES,
  CLOSE_CODES,
  CloseCode,
  ERROR_CODES,
  Emitter,
  ForbiddenError,
  HoldfastClient,
  HoldfastError,
  MAX_ID_LEN,
  MAX_ROOM_LEN,
  MAX_TOKEN_LEN,
  MAX_USER_LEN,
  PROTOCOL_VERSION,
  SERVER_FRAME_FIELDS,
  SERVER_FRAME_TYPES,
  StreamPosition,
  isRoomFrame,
  shouldReconnect
};
