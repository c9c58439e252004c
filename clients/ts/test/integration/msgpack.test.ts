/** The client in MessagePack (`holdfast.v1.msgpack`) against a real gateway. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { makeClient, numbers } from "../helpers/clients.js";
import { until } from "../helpers/wait.js";

describe("msgpack against a real gateway", { timeout: 60_000 }, () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway({ HOLDFAST_RECONNECTION__EVENT_BUFFER_SIZE: "50" });
  });
  after(async () => {
    await gw.stop();
  });

  it("a msgpack client and a json client share a room", async () => {
    const a = makeClient(gw.url, "mp-alice", { encoding: "msgpack" });
    const b = makeClient(gw.url, "mp-bob");
    try {
      await a.client.join("mixed");
      await b.client.join("mixed");
      assert.equal(a.client.encoding, "msgpack");
      assert.equal(b.client.encoding, "json");
      const s1 = await a.client.publish("mixed", { n: 1, nested: { list: [1, 2, 3] } });
      const s2 = await b.client.publish("mixed", { n: 2 });
      assert.equal(s2, s1 + 1);
      await until(() => a.events.length === 2 && b.events.length === 2, "both events on both clients");
      assert.deepEqual(numbers(a), [1, 2]);
      assert.deepEqual(numbers(b), [1, 2]);
      assert.deepEqual((a.events[0]!.data as { nested: unknown }).nested, { list: [1, 2, 3] });
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("a msgpack client resumes with every missed message exactly once", async () => {
    const a = makeClient(gw.url, "mp-carol", {
      encoding: "msgpack",
      backoff: { minMs: 300, maxMs: 300, jitter: 0 },
    });
    const b = makeClient(gw.url, "mp-dave");
    try {
      await a.client.join("mp-resume");
      await b.client.join("mp-resume");
      await b.client.publish("mp-resume", { n: 0 });
      await until(() => a.events.length === 1, "the first event");
      a.client.dropConnection();
      for (let n = 1; n <= 4; n++) await b.client.publish("mp-resume", { n });
      await until(() => a.events.length === 5, "the replayed events", 10_000);
      assert.deepEqual(numbers(a), [0, 1, 2, 3, 4]);
      assert.ok(a.log.includes("resumed mp-resume recovered=true"), a.log.join("\n"));
      assert.equal(a.client.encoding, "msgpack");
    } finally {
      a.client.close();
      b.client.close();
    }
  });
});
