/** The client against a real gateway over SSE and long-polling, and the fallback between transports. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { freePort, startGateway, type Gateway } from "../helpers/gateway.js";
import { makeClient, numbers } from "../helpers/clients.js";
import { until } from "../helpers/wait.js";

describe("fallback transports against a real gateway", { timeout: 90_000 }, () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway({ HOLDFAST_HEARTBEAT__PING_INTERVAL_MS: "1000", HOLDFAST_HEARTBEAT__PONG_TIMEOUT_MS: "2000" });
  });
  after(async () => {
    await gw.stop();
  });

  for (const transport of ["sse", "polling"] as const) {
    it(`${transport}: chats with a WebSocket client and resumes after a drop`, async () => {
      const a = makeClient(gw.url, `${transport}-a`, { transports: [transport] });
      const b = makeClient(gw.url, `${transport}-b`);
      const room = `room-${transport}`;
      try {
        await a.client.join(room);
        await b.client.join(room);
        assert.equal(a.client.session?.user_id, `${transport}-a`);
        await a.client.publish(room, { n: 1 });
        await b.client.publish(room, { n: 2 });
        await until(() => a.events.length === 2 && b.events.length === 2, "both events on both clients");
        a.client.dropConnection();
        for (let n = 3; n <= 5; n++) await b.client.publish(room, { n });
        await a.client.publish(room, { n: 6 });
        await until(() => a.events.length === 6 && b.events.length === 6, "every event after the resume", 15_000);
        assert.deepEqual(numbers(a), [1, 2, 3, 4, 5, 6]);
        assert.deepEqual(numbers(b), [1, 2, 3, 4, 5, 6]);
        assert.deepEqual(a.transports, [transport]);
        // Application pings keep an idle fallback session alive past several ping intervals.
        const session = a.client.session?.session_id;
        await new Promise((r) => setTimeout(r, 3500));
        assert.equal(a.client.state, "connected");
        assert.equal(a.client.session?.session_id, session);
      } finally {
        a.client.close();
        b.client.close();
      }
    });
  }

  it("falls back to SSE when WebSocket connections are refused, then chats", async () => {
    const refused = await freePort();
    const a = makeClient(gw.url, "fb-a", { websocketUrl: `ws://127.0.0.1:${refused}/ws` });
    const b = makeClient(gw.url, "fb-b");
    try {
      await a.client.join("fb");
      await b.client.join("fb");
      assert.deepEqual(a.transports, ["websocket", "sse"]);
      assert.equal(a.client.transport, "sse");
      await b.client.publish("fb", { n: 1 });
      await a.client.publish("fb", { n: 2 });
      await until(() => a.events.length === 2 && b.events.length === 2, "both events");
      assert.deepEqual(numbers(a), [1, 2]);
    } finally {
      a.client.close();
      b.client.close();
    }
  });

  it("falls back to long-polling when SSE fails too", async () => {
    const refused = await freePort();
    const a = makeClient(gw.url, "fb-c", {
      websocketUrl: `ws://127.0.0.1:${refused}/ws`,
      sseUrl: `http://127.0.0.1:${refused}/sse`,
    });
    try {
      await a.client.join("fb2");
      assert.deepEqual(a.transports, ["websocket", "sse", "polling"]);
      await a.client.publish("fb2", { n: 1 });
      await until(() => a.events.length === 1, "the event");
    } finally {
      a.client.close();
    }
  });

  it("an SSE client with a bad token stops with 4006 instead of retrying", async () => {
    const bad = makeClient(gw.url, "x", { token: "nope", transports: ["sse"] });
    try {
      await until(() => bad.closed, "the client to stop");
      assert.equal(bad.closed!.code, 4006);
    } finally {
      bad.client.close();
    }
  });
});
