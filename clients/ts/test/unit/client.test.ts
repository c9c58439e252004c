/**
 * The client's session logic against a scripted in-memory WebSocket: replay dedupe and gap
 * events, resend of unacknowledged publishes with the same id, dead-connection detection,
 * the drain hint, terminal close codes and transport fallback.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HoldfastClient, type ClientFrame, type ClientOptions, type ServerFrame, type WebSocketConstructor } from "../../src/index.js";
import { until } from "../helpers/wait.js";

/** One fake socket; the test plays the gateway. */
class FakeSocket {
  static all: FakeSocket[] = [];
  /** When set, new sockets fail before opening. */
  static refuse = false;
  readyState = 0;
  sent: ClientFrame[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closedByClient: number | undefined;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
    setTimeout(() => {
      if (FakeSocket.refuse) {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason: "" });
        return;
      }
      this.readyState = 1;
      this.onopen?.({});
    }, 1);
  }
  send(data: string) {
    this.sent.push(JSON.parse(data) as ClientFrame);
  }
  close(code = 1000) {
    this.closedByClient = code;
    this.readyState = 3;
  }
  /** Delivers a frame from the "gateway". */
  push(frame: ServerFrame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** Closes from the "gateway" side. */
  end(code: number, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  sentOf<T extends ClientFrame["type"]>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.sent.filter((f) => f.type === type) as Extract<ClientFrame, { type: T }>[];
  }
}

const welcome = (session: string, ping = 0): ServerFrame => ({
  type: "welcome",
  protocol: 1,
  user_id: "u",
  session_id: session,
  node_id: "n",
  ping_interval_ms: ping,
  pong_timeout_ms: ping,
  max_message_bytes: 65536,
  expires_at: Math.floor(Date.now() / 1000) + 600,
});

function newClient(options: Partial<ClientOptions> = {}) {
  FakeSocket.all = [];
  FakeSocket.refuse = false;
  const client = new HoldfastClient({
    url: "http://gateway.invalid",
    token: "t",
    WebSocket: FakeSocket as unknown as WebSocketConstructor,
    fetch: () => Promise.reject(new Error("no network in unit tests")),
    backoff: { minMs: 5, maxMs: 20 },
    ...options,
  });
  return client;
}

const last = (): FakeSocket | undefined => FakeSocket.all[FakeSocket.all.length - 1];

/** Connects, welcomes, joins room `r` at seq 3 and returns the socket. */
async function joined(client: HoldfastClient): Promise<FakeSocket> {
  client.connect();
  await until(() => last()?.readyState === 1 && (last()?.sent.length ?? 0) > 0, "auth");
  const ws = last()!;
  assert.deepEqual(ws.sent[0], { type: "auth", token: "t" });
  ws.push(welcome("s1"));
  const join = client.join("r");
  const frame = await until(() => ws.sentOf("join")[0], "join frame");
  ws.push({ type: "joined", room: "r", player_id: "p1", members: [], member_count: 1, authority: "p1", seq: 3, epoch: "e", reconnection_token: "T1", id: frame.id });
  await join;
  return ws;
}

describe("HoldfastClient session logic", () => {
  it("resumes with the latest token and position, drops replayed duplicates and resends publishes with the same id", async () => {
    const client = newClient();
    const seqs: number[] = [];
    const gaps: unknown[] = [];
    client.on("event", (e) => seqs.push(e.seq));
    client.on("gap", (g) => gaps.push(g));
    const ws = await joined(client);
    const ev = (seq: number): ServerFrame => ({ type: "event", room: "r", seq, epoch: "e", ts: 0, from: "p2", user_id: "v", data: seq });
    ws.push(ev(4));
    ws.push(ev(5));
    const published = client.publish("r", { x: 1 });
    const pub = await until(() => ws.sentOf("publish")[0], "publish frame");
    ws.end(4001, "slow_consumer");
    await until(() => FakeSocket.all.length === 2 && (last()?.sent.length ?? 0) > 0, "reconnection");
    const ws2 = last()!;
    ws2.push(welcome("s2"));
    const resume = ws2.sentOf("reconnect")[0]!;
    assert.deepEqual({ ...resume, id: undefined }, { type: "reconnect", room: "r", player_id: "p1", token: "T1", last_sequence: 5, epoch: "e", id: undefined });
    // The publish waits for the room to be live again.
    assert.equal(ws2.sentOf("publish").length, 0);
    ws2.push({
      type: "reconnected", room: "r", player_id: "p1", events: [ev(5) as never, ev(6) as never], recovered: true,
      members: [], member_count: 1, authority: "p1", seq: 7, epoch: "e", reconnection_token: "T2", id: resume.id,
    });
    const again = ws2.sentOf("publish")[0]!;
    assert.equal(again.id, pub.id, "same id, so the gateway dedupes");
    ws2.push({ type: "ack", id: again.id!, room: "r", seq: 8 });
    assert.equal(await published, 8);
    ws2.push(ev(7));
    ws2.push(ev(8));
    ws2.push(ev(10));
    assert.deepEqual(seqs, [4, 5, 6, 8, 10]);
    assert.deepEqual(gaps, [{ room: "r", from: 9, to: 9, epoch: "e" }]);
    client.close();
  });

  it("reports the server's gap once and continues after it", async () => {
    const client = newClient();
    const gaps: unknown[] = [];
    client.on("gap", (g) => gaps.push(g));
    const ws = await joined(client);
    ws.end(1011);
    await until(() => FakeSocket.all.length === 2 && (last()?.sent.length ?? 0) > 0, "reconnection");
    last()!.push(welcome("s2"));
    const resume = last()!.sentOf("reconnect")[0]!;
    last()!.push({
      type: "reconnected", room: "r", player_id: "p1",
      events: [{ type: "event", room: "r", seq: 9, epoch: "e", ts: 0, from: "p2", user_id: "v", data: null }],
      recovered: false, gap: { from: 4, to: 8, epoch: "e" }, members: [], member_count: 1, authority: null, seq: 10, epoch: "e",
      reconnection_token: "T2", id: resume.id,
    });
    assert.deepEqual(gaps, [{ room: "r", from: 4, to: 8, epoch: "e" }]);
    client.close();
  });

  it("presumes a silent connection dead after ping interval + pong timeout, pinging meanwhile", async () => {
    const client = newClient();
    const reasons: string[] = [];
    client.on("disconnected", (d) => reasons.push(d.reason));
    client.connect();
    await until(() => (last()?.sent.length ?? 0) > 0, "auth");
    const ws = last()!;
    ws.push(welcome("s1", 40));
    await until(() => ws.sentOf("ping").length >= 1, "an application ping");
    await until(() => reasons.length === 1, "the dead-connection verdict", 2000);
    assert.match(reasons[0]!, /no traffic from the gateway for 80 ms/);
    await until(() => FakeSocket.all.length === 2, "a new attempt");
    client.close();
  });

  it("waits for the drain hint, not the backoff, after server_shutdown", async () => {
    const client = newClient({ backoff: { minMs: 1, maxMs: 1, jitter: 0 } });
    client.connect();
    await until(() => (last()?.sent.length ?? 0) > 0, "auth");
    last()!.push(welcome("s1"));
    let shutdown = 0;
    client.on("server_shutdown", (s) => (shutdown = s.reconnectAfterMs));
    last()!.push({ type: "server_shutdown", reason: "node draining", reconnect_after_ms: 150 });
    const closedAt = Date.now();
    last()!.end(1001, "going_away");
    await until(() => FakeSocket.all.length === 2, "the reconnection");
    assert.equal(shutdown, 150);
    assert.ok(Date.now() - closedAt >= 140, `reconnected after ${Date.now() - closedAt} ms`);
    client.close();
  });

  it("stops on terminal close codes and fails pending requests", async () => {
    for (const code of [4000, 4006, 1008, 1009, 4002]) {
      const client = newClient();
      const ws = await joined(client);
      const closed = new Promise<{ code?: number }>((r) => client.once("closed", r));
      // A publish is kept across drops, so it fails only when the client stops; a direct send
      // that was on the wire fails at once, since it may or may not have been applied.
      const publish = client.publish("r", "kept");
      const send = client.send("someone", "hi");
      ws.end(code);
      assert.equal((await closed).code, code);
      await assert.rejects(publish, { code: "closed" });
      await assert.rejects(send, { code: "connection_lost" });
      assert.equal(client.state, "disconnected");
      assert.equal(FakeSocket.all.length, 1, `no reconnect after ${code}`);
    }
  });

  it("reconnects after 4002 when a token function can supply a new token", async () => {
    let calls = 0;
    const client = newClient({ token: () => `t${++calls}` });
    client.connect();
    await until(() => (last()?.sent.length ?? 0) > 0, "auth");
    last()!.push(welcome("s1"));
    last()!.end(4002, "token_expired");
    await until(() => FakeSocket.all.length === 2 && (last()?.sent.length ?? 0) > 0, "a new attempt");
    assert.deepEqual(last()!.sent[0], { type: "auth", token: "t2" });
    client.close();
  });

  it("moves to the next transport after repeated failures and reports each choice", async () => {
    const client = newClient({ fallbackAfter: 2 });
    const transports: string[] = [];
    // WebSocket attempts made before the client gave up on WebSocket (counted at that moment:
    // once every transport has failed, the client starts over with WebSocket).
    let socketsBeforeSse = -1;
    client.on("transport", (t) => {
      transports.push(t.transport);
      if (t.transport === "sse" && socketsBeforeSse < 0) socketsBeforeSse = FakeSocket.all.length;
    });
    FakeSocket.refuse = true;
    client.connect();
    await until(() => transports.length >= 3, "websocket, then sse, then polling");
    assert.deepEqual(transports.slice(0, 3), ["websocket", "sse", "polling"]);
    assert.equal(socketsBeforeSse, 2);
    client.close();
  });

  it("refuses a frame larger than the gateway accepts instead of losing the session", async () => {
    const client = newClient();
    const ws = await joined(client);
    await assert.rejects(client.publish("r", "x".repeat(70_000)), { code: "message_too_big" });
    assert.equal(ws.sentOf("publish").length, 0);
    client.close();
  });
});
