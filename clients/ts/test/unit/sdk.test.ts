/**
 * What an application relies on beyond the session logic, against scripted fakes: the
 * MessagePack codec and encoding, room objects, automatic rejoin after a room was lost, the
 * return to WebSocket after a fallback, and the explicit end of a fallback session.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeMsgpack,
  encodeMsgpack,
  HoldfastClient,
  RoomLostError,
  type ClientFrame,
  type ClientOptions,
  type FetchLike,
  type ServerFrame,
  type WebSocketConstructor,
} from "../../src/index.js";
import { until } from "../helpers/wait.js";

/** A fake socket that speaks JSON or, when offered and `acceptMsgpack` is set, MessagePack. */
class FakeSocket {
  static all: FakeSocket[] = [];
  static refuse = false;
  static acceptMsgpack = true;
  /** When set, the next socket fails before opening (then the flag clears). */
  static refuseNext = false;
  readyState = 0;
  protocol = "";
  binaryType = "blob";
  sent: ClientFrame[] = [];
  /** Whether each sent message was binary. */
  binary: boolean[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.all.push(this);
    setTimeout(() => {
      if (FakeSocket.refuse || FakeSocket.refuseNext) {
        FakeSocket.refuseNext = false;
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: "" });
        return;
      }
      const offered = typeof protocols === "string" ? [protocols] : (protocols ?? []);
      if (FakeSocket.acceptMsgpack && offered.includes("holdfast.v1.msgpack")) this.protocol = "holdfast.v1.msgpack";
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }
  send(data: string | Uint8Array) {
    this.binary.push(typeof data !== "string");
    this.sent.push((typeof data === "string" ? JSON.parse(data) : decodeMsgpack(data)) as ClientFrame);
  }
  close() {
    this.readyState = 3;
  }
  push(frame: ServerFrame | Record<string, unknown>) {
    const data = this.protocol === "holdfast.v1.msgpack" ? toArrayBuffer(encodeMsgpack(frame)) : JSON.stringify(frame);
    this.onmessage?.({ data });
  }
  end(code: number, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  sentOf(type: string): (ClientFrame & { id?: string })[] {
    return this.sent.filter((f) => f.type === type);
  }
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

const welcome = (session: string): ServerFrame => ({
  type: "welcome",
  protocol: 1,
  user_id: "u",
  session_id: session,
  node_id: "n",
  ping_interval_ms: 0,
  pong_timeout_ms: 0,
  max_message_bytes: 65536,
  expires_at: Math.floor(Date.now() / 1000) + 600,
});

const last = (): FakeSocket | undefined => FakeSocket.all[FakeSocket.all.length - 1];

function newClient(options: Partial<ClientOptions> = {}) {
  FakeSocket.all = [];
  FakeSocket.refuse = false;
  FakeSocket.acceptMsgpack = true;
  return new HoldfastClient({
    url: "http://gateway.invalid",
    token: "t",
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    fetch: () => Promise.reject(new Error("no network in unit tests")),
    backoff: { minMs: 5, maxMs: 20 },
    ...options,
  });
}

async function welcomed(client: HoldfastClient, session = "s1"): Promise<FakeSocket> {
  client.connect();
  await until(() => last()?.readyState === 1 && (last()?.sent.length ?? 0) > 0, "auth");
  const ws = last()!;
  ws.push(welcome(session));
  return ws;
}

describe("MessagePack codec", () => {
  it("round-trips every value a frame may hold", () => {
    const values: unknown[] = [
      null,
      true,
      false,
      0,
      1,
      127,
      128,
      255,
      256,
      65535,
      65536,
      2 ** 32 - 1,
      2 ** 32,
      Number.MAX_SAFE_INTEGER,
      -1,
      -32,
      -33,
      -128,
      -129,
      -32768,
      -32769,
      -(2 ** 31),
      -(2 ** 31) - 1,
      Number.MIN_SAFE_INTEGER,
      0.5,
      -1.25e300,
      "",
      "héllo ✓",
      "x".repeat(31),
      "x".repeat(32),
      "x".repeat(300),
      "x".repeat(70_000),
      new Uint8Array([0, 1, 2, 255]),
      new Uint8Array(70_000).fill(7),
      [],
      [1, [2, [3]], "a"],
      Array.from({ length: 20 }, (_, i) => i),
      {},
      { type: "event", room: "r", seq: 9, data: { pos: [1.5, -2], hp: 100, tag: new Uint8Array([9]) } },
      Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i])),
    ];
    for (const v of values) assert.deepEqual(decodeMsgpack(encodeMsgpack(v)), v);
  });

  it("leaves undefined fields out, as JSON does, and refuses malformed input", () => {
    assert.deepEqual(decodeMsgpack(encodeMsgpack({ a: 1, b: undefined })), { a: 1 });
    assert.throws(() => decodeMsgpack(new Uint8Array([0x92, 0x01])), RangeError);
    assert.throws(() => decodeMsgpack(new Uint8Array([0xc1])), RangeError);
    assert.throws(() => decodeMsgpack(new Uint8Array([0x01, 0x02])), RangeError);
    // A `__proto__` key stays an own property.
    const tricky = decodeMsgpack(new Uint8Array([0x81, 0xa9, ...new TextEncoder().encode("__proto__"), 0x01])) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(tricky), Object.prototype);
    assert.equal(Object.keys(tricky)[0], "__proto__");
  });

  it("reads the encoding of a reference implementation byte for byte", () => {
    // {"compact":true,"schema":0} from the MessagePack specification's front page.
    const spec = [0x82, 0xa7, 0x63, 0x6f, 0x6d, 0x70, 0x61, 0x63, 0x74, 0xc3, 0xa6, 0x73, 0x63, 0x68, 0x65, 0x6d, 0x61, 0x00];
    assert.deepEqual([...encodeMsgpack({ compact: true, schema: 0 })], spec);
    assert.deepEqual(decodeMsgpack(new Uint8Array(spec)), { compact: true, schema: 0 });
  });
});

describe("MessagePack encoding on the WebSocket", () => {
  it("offers the subprotocol, then sends and reads binary frames with binary data", async () => {
    const client = newClient({ encoding: "msgpack" });
    const ws = await welcomed(client);
    assert.deepEqual(ws.protocols, ["holdfast.v1.msgpack", "holdfast.v1.json"]);
    assert.deepEqual(ws.binary, [true]);
    assert.deepEqual(ws.sent[0], { type: "auth", token: "t" });
    const join = client.join("r");
    const frame = await until(() => ws.sentOf("join")[0], "join");
    ws.push({ type: "joined", room: "r", player_id: "p1", members: [], member_count: 1, authority: "p1", seq: 1, epoch: "e", reconnection_token: "T", id: frame.id });
    await join;
    const got: unknown[] = [];
    client.on("event", (e) => got.push(e.data));
    const published = client.publish("r", { input: new Uint8Array([1, 2, 3]) });
    const pub = await until(() => ws.sentOf("publish")[0], "publish");
    assert.deepEqual((pub as { data: unknown }).data, { input: new Uint8Array([1, 2, 3]) });
    ws.push({ type: "event", room: "r", seq: 2, epoch: "e", ts: 1, from: "p1", user_id: "u", data: { input: new Uint8Array([1, 2, 3]) }, id: pub.id });
    ws.push({ type: "ack", id: pub.id!, room: "r", seq: 2 });
    assert.equal(await published, 2);
    assert.deepEqual(got, [{ input: new Uint8Array([1, 2, 3]) }]);
    assert.ok(ws.binary.every((b) => b));
    client.close();
  });

  it("after a handshake refused for the subprotocols (as browsers do), connects without them and stays with JSON", async () => {
    const client = newClient({ encoding: "msgpack" });
    const Refusing = class extends FakeSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        if (protocols !== undefined) FakeSocket.refuseNext = true;
      }
    };
    const c2 = new HoldfastClient({ url: "http://gateway.invalid", token: "t", WebSocket: Refusing as unknown as WebSocketConstructor, backoff: { minMs: 5, maxMs: 20 } });
    c2.connect();
    await until(() => FakeSocket.all.some((s) => s.sent.length > 0), "a plain socket that opened");
    const plain = FakeSocket.all.find((s) => s.sent.length > 0)!;
    assert.equal(plain.protocols, undefined);
    assert.deepEqual(plain.binary, [false]);
    plain.push(welcome("s1"));
    plain.end(1011);
    await until(() => FakeSocket.all.filter((s) => s.sent.length > 0).length === 2, "the reconnection");
    assert.equal(FakeSocket.all.at(-1)!.protocols, undefined, "stays with JSON");
    c2.close();
    client.close();
  });

  it("speaks JSON when the gateway does not take the subprotocol", async () => {
    const client = newClient({ encoding: "msgpack" });
    FakeSocket.acceptMsgpack = false;
    client.connect();
    await until(() => last()?.sent.length, "auth");
    assert.deepEqual(last()!.binary, [false]);
    client.close();
  });
});

describe("room objects and automatic rejoin", () => {
  it("joins again when a room cannot be resumed and sends the queued publish with its id", async () => {
    const client = newClient();
    const ws = await welcomed(client);
    const lobby = client.room("lobby", { token: async () => "join-token" });
    const statuses: string[] = [];
    lobby.on("status", (s) => statuses.push(s));
    const joining = lobby.join();
    const j = await until(() => ws.sentOf("join")[0], "join");
    assert.equal((j as { token?: string }).token, "join-token");
    ws.push({ type: "joined", room: "lobby", player_id: "p1", members: [{ player_id: "p1", user_id: "u", status: "online" }], member_count: 1, authority: "p1", seq: 4, epoch: "e1", reconnection_token: "T1", id: j.id });
    await joining;
    assert.equal(lobby.isAuthority, true);
    assert.equal(lobby.members.length, 1);
    lobby.dispatch("presence", { type: "presence", room: "lobby", changes: [{ player_id: "p2", user_id: "v", status: "online" }], count: 2 });
    assert.equal(lobby.members.length, 2);

    // The node restarts: the room is gone.
    ws.end(1011);
    await until(() => FakeSocket.all.length === 2 && last()!.sent.length > 0, "reconnect");
    const ws2 = last()!;
    const published = lobby.publish({ text: "queued" });
    ws2.push(welcome("s2"));
    const resume = await until(() => ws2.sentOf("reconnect")[0], "reconnect frame");
    const failures: unknown[] = [];
    client.on("resume_failed", (f) => failures.push(f));
    const rejoined = new Promise((resolve) => lobby.once("rejoined", resolve));
    ws2.push({ type: "reconnection_failed", room: "lobby", code: "reconnection_failed", message: "no such room", id: resume.id });
    const again = await until(() => ws2.sentOf("join")[0], "the rejoin");
    assert.equal((again as { token?: string }).token, "join-token");
    assert.equal(ws2.sentOf("publish").length, 0, "the publish waits for the new membership");
    ws2.push({ type: "joined", room: "lobby", player_id: "p1", members: [], member_count: 1, authority: "p1", seq: 1, epoch: "e2", reconnection_token: "T2", id: again.id });
    await rejoined;
    const pub = await until(() => ws2.sentOf("publish")[0], "the queued publish");
    ws2.push({ type: "ack", id: pub.id!, room: "lobby", seq: 2 });
    assert.equal(await published, 2);
    assert.deepEqual(failures, [{ room: "lobby", code: "reconnection_failed", message: "no such room", rejoining: true }]);
    assert.deepEqual(statuses, ["joining", "joined", "resuming", "joined"]);
    assert.equal(lobby.membership?.epoch, "e2");
    client.close();
  });

  it("with autoRejoin off, fails the queued publish with a RoomLostError", async () => {
    const client = newClient({ autoRejoin: false });
    const ws = await welcomed(client);
    const join = client.join("r");
    const j = await until(() => ws.sentOf("join")[0], "join");
    ws.push({ type: "joined", room: "r", player_id: "p1", members: [], member_count: 1, authority: "p1", seq: 1, epoch: "e", reconnection_token: "T", id: j.id });
    await join;
    ws.end(1011);
    await until(() => FakeSocket.all.length === 2 && last()!.sent.length > 0, "reconnect");
    const published = client.publish("r", 1);
    const ws2 = last()!;
    ws2.push(welcome("s2"));
    const resume = await until(() => ws2.sentOf("reconnect")[0], "reconnect frame");
    ws2.push({ type: "reconnection_failed", room: "r", code: "reconnection_failed", message: "gone", id: resume.id });
    await assert.rejects(published, (e: unknown) => e instanceof RoomLostError && e.resumeCode === "reconnection_failed");
    assert.equal(ws2.sentOf("join").length, 0);
    client.close();
  });
});

/** A fetch that serves one SSE session per GET and records every request. */
function fakeSse() {
  const requests: { method: string; url: string }[] = [];
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  /** Set by `end()`: the session is gone, so a reattach gets 404. */
  let gone = false;
  const fetchImpl: FetchLike = async (input, init) => {
    const url = String(input);
    const method = init?.method ?? "GET";
    requests.push({ method, url });
    if (method !== "GET") return new Response(null, { status: method === "DELETE" ? 204 : 202 });
    if (gone) return new Response("unknown_session\n", { status: 404 });
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        c.enqueue(new TextEncoder().encode(`id: sse1.1\ndata: ${JSON.stringify(welcome("sse1"))}\n\n`));
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
  };
  const end = () => {
    gone = true;
    controller?.close();
  };
  return { fetchImpl, requests, end };
}

describe("moving back to WebSocket", () => {
  it("probes WebSocket while on SSE and moves back when it works, ending the SSE session", async () => {
    const sse = fakeSse();
    const client = newClient({ fetch: sse.fetchImpl, fallbackAfter: 1, upgradeProbeMs: 30, transports: ["websocket", "sse"] });
    const transports: string[] = [];
    const connected: string[] = [];
    client.on("transport", (t) => transports.push(t.transport));
    client.on("connected", (c) => connected.push(c.transport));
    FakeSocket.refuse = true;
    client.connect();
    await until(() => connected.includes("sse"), "a session over SSE");
    FakeSocket.refuse = false;
    // The probe opens a socket; the client then ends the SSE session and reconnects over WebSocket.
    await until(() => FakeSocket.all.some((s) => s.sent.length > 0), "an authenticated WebSocket");
    const ws = FakeSocket.all.find((s) => s.sent.length > 0)!;
    ws.push(welcome("s2"));
    await until(() => connected.at(-1) === "websocket", "a session over WebSocket");
    assert.deepEqual(transports, ["websocket", "sse", "websocket"]);
    const ended = sse.requests.find((r) => r.method === "DELETE");
    assert.ok(ended, "the SSE session was ended");
    assert.match(ended.url, /\/sse\?session=sse1$/);
    client.close();
  });

  it("tries WebSocket first again when a fallback connection ends", async () => {
    const sse = fakeSse();
    const client = newClient({ fetch: sse.fetchImpl, fallbackAfter: 1, upgradeProbeMs: 0, transports: ["websocket", "sse"] });
    const transports: string[] = [];
    client.on("transport", (t) => transports.push(t.transport));
    FakeSocket.refuse = true;
    client.connect();
    await until(() => client.state === "connected", "a session over SSE");
    FakeSocket.refuse = false;
    const before = FakeSocket.all.length;
    sse.end();
    await until(() => FakeSocket.all.length > before && transports.at(-1) === "websocket", "a WebSocket attempt");
    client.close();
  });

  it("close() ends a fallback session on the gateway", async () => {
    const sse = fakeSse();
    const client = newClient({ fetch: sse.fetchImpl, transports: ["sse"] });
    client.connect();
    await until(() => client.state === "connected", "a session over SSE");
    client.close();
    const ended = await until(() => sse.requests.find((r) => r.method === "DELETE"), "DELETE");
    assert.match(ended.url, /\/sse\?session=sse1$/);
  });

  it("names the missing WebSocket on Node.js without one", () => {
    const saved = (globalThis as { WebSocket?: unknown }).WebSocket;
    (globalThis as { WebSocket?: unknown }).WebSocket = undefined;
    try {
      assert.throws(() => new HoldfastClient({ url: "http://x.invalid", token: "t" }), /install the `ws` package/);
    } finally {
      (globalThis as { WebSocket?: unknown }).WebSocket = saved;
    }
  });
});
