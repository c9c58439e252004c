/** The client against a real gateway over WebSocket. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { makeClient, numbers } from "../helpers/clients.js";
import { sign } from "../helpers/token.js";
import { until } from "../helpers/wait.js";
import { HoldfastError } from "../../src/index.js";

describe("websocket against a real gateway", { timeout: 60_000 }, () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway({ HOLDFAST_RECONNECTION__EVENT_BUFFER_SIZE: "5" });
  });
  after(async () => {
    await gw.stop();
  });

  it("two clients chat in one room, and publish resolves with the event's seq", async () => {
    const a = makeClient(gw.url, "alice");
    const b = makeClient(gw.url, "bob");
    try {
      const ja = await a.client.join("chat");
      const jb = await b.client.join("chat");
      assert.equal(jb.members.length, 2);
      assert.equal(ja.authority, ja.playerId);
      const seq = await a.client.publish("chat", { n: 1 });
      const seq2 = await b.client.publish("chat", { n: 2 });
      assert.equal(seq2, seq + 1);
      await until(() => a.events.length === 2 && b.events.length === 2, "both events on both clients");
      assert.deepEqual(numbers(a), [1, 2]);
      assert.deepEqual(b.events.map((e) => e.seq), [seq, seq2]);
      assert.equal(a.client.transport, "websocket");
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("a dropped client resumes with every missed message exactly once, in order", async () => {
    // Carol's reconnection waits until dave has seen her away: a quick one would coalesce her
    // away and back into no presence change at all.
    let hold: Promise<void> = Promise.resolve();
    let release = () => {};
    const a = makeClient(gw.url, "carol", {
      token: async () => {
        await hold;
        return sign("carol");
      },
    });
    const b = makeClient(gw.url, "dave");
    try {
      await a.client.join("resume");
      await b.client.join("resume");
      await b.client.publish("resume", { n: 0 });
      await until(() => a.events.length === 1, "the first event");
      hold = new Promise((r) => (release = r));
      a.client.dropConnection();
      await until(() => b.log.some((l) => l.startsWith("presence carol away")), "carol shown away");
      release();
      for (let n = 1; n <= 4; n++) await b.client.publish("resume", { n });
      await until(() => a.events.length === 5, "the replayed events", 10_000);
      // Publishes made while disconnected are resent after the resume and delivered once.
      const own = a.client.publish("resume", { n: 5 });
      assert.equal(typeof (await own), "number");
      await until(() => b.events.length === 6 && a.events.length === 6, "carol's publish");
      assert.deepEqual(numbers(a), [0, 1, 2, 3, 4, 5]);
      assert.ok(a.log.includes("resumed resume recovered=true"), a.log.join("\n"));
      assert.ok(b.log.some((l) => l.startsWith("presence carol online")));
      const seqs = a.events.map((e) => e.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("publishes made while offline are sent once after the resume", async () => {
    const a = makeClient(gw.url, "erin");
    const b = makeClient(gw.url, "frank");
    try {
      await a.client.join("offline");
      await b.client.join("offline");
      a.client.dropConnection();
      const pending = [1, 2, 3].map((n) => a.client.publish("offline", { n }));
      const seqs = await Promise.all(pending);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
      await until(() => b.events.length === 3, "bob sees the three publishes");
      assert.deepEqual(numbers(b), [1, 2, 3]);
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("reports the exact gap when the replay buffer no longer holds what was missed", async () => {
    const a = makeClient(gw.url, "grace");
    const b = makeClient(gw.url, "heidi");
    try {
      await a.client.join("gappy");
      await b.client.join("gappy");
      // Keep grace away (no reconnect) while heidi publishes more than the buffer holds.
      a.client.close();
      const before = a.client.roomsSnapshot();
      assert.equal(before.length, 1);
      await until(() => b.log.some((l) => l.startsWith("presence grace away")), "grace shown away");
      for (let n = 1; n <= 8; n++) await b.client.publish("gappy", { n });
      const gaps: { from: number; to: number }[] = [];
      a.client.on("gap", (g) => gaps.push(g));
      a.client.connect();
      await until(() => a.log.some((l) => l.startsWith("resumed gappy")), "the resume");
      await until(() => a.events.length > 0, "the replayed tail");
      assert.equal(gaps.length, 1, a.log.join("\n"));
      assert.ok(a.log.includes("resumed gappy recovered=false"));
      // Whatever was not replayed is reported by the gap, and nothing is delivered twice.
      const first = a.events[0]!.seq;
      assert.equal(gaps[0]!.to, first - 1);
      assert.equal(gaps[0]!.from, before[0]!.seq + 1);
      assert.deepEqual(numbers(a), numbers(a).slice().sort((x, y) => x - y));
      assert.equal(numbers(a).at(-1), 8);
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("stops for good when a newer connection of the same user replaces it (4000)", async () => {
    const first = makeClient(gw.url, "ivan");
    await until(() => first.client.state === "connected", "the first connection");
    const second = makeClient(gw.url, "ivan");
    try {
      await until(() => first.closed, "the first client to stop");
      assert.equal(first.closed!.code, 4000);
      assert.equal(first.client.state, "disconnected");
      await assert.rejects(first.client.join("x"), (e: unknown) => e instanceof HoldfastError && e.code === "closed");
      await until(() => second.client.state === "connected", "the second connection");
    } finally {
      first.client.close();
      second.client.close();
    }
  });

  it("stops for good on a bad token (4006) and reports it", async () => {
    const bad = makeClient(gw.url, "judy", { token: "not-a-jwt", transports: ["websocket"] });
    try {
      await until(() => bad.closed, "the client to stop");
      assert.equal(bad.closed!.code, 4006);
    } finally {
      bad.client.close();
    }
  });

  it("a token function renews the token before it expires and the session carries on", async () => {
    const { sign } = await import("../helpers/token.js");
    let calls = 0;
    const rec = makeClient(gw.url, "ken", {
      token: () => {
        calls += 1;
        // The first token expires two seconds from now; later ones are long-lived.
        return sign("ken", calls === 1 ? 2 : 600);
      },
    });
    try {
      await rec.client.join("expiry");
      await until(() => calls >= 2, "a second token", 10_000);
      await until(() => rec.client.state === "connected", "connected again");
      assert.equal(rec.closed, undefined);
      await rec.client.publish("expiry", { n: 1 });
    } finally {
      rec.client.close();
    }
  });
});
