/**
 * The client behaviours an application relies on, against real gateways: `close()` on SSE ends
 * the session at once, a restarted node's rooms are joined again with the queued publish sent
 * once, the client moves back to WebSocket once it works again, and MessagePack is refused
 * gracefully by a gateway that does not offer it.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { makeClient } from "../helpers/clients.js";
import { freePort, startGateway } from "../helpers/gateway.js";
import { until } from "../helpers/wait.js";

const FAST = { HOLDFAST_HEARTBEAT__PING_INTERVAL_MS: "1000", HOLDFAST_HEARTBEAT__PONG_TIMEOUT_MS: "2000" };

describe("SDK behaviours against a real gateway", { timeout: 120_000 }, () => {
  it("close() over SSE ends the session at once: the others see the member away within a second", async () => {
    const gw = await startGateway(FAST);
    const watcher = makeClient(gw.url, "watcher");
    const leaver = makeClient(gw.url, "leaver", { transports: ["sse"] });
    try {
      await watcher.client.join("closing");
      await leaver.client.join("closing");
      await until(() => watcher.log.includes("presence leaver online"), "leaver online");
      const closedAt = Date.now();
      leaver.client.close();
      await until(() => watcher.log.includes("presence leaver away"), "leaver away", 5_000);
      assert.ok(Date.now() - closedAt < 3_000, "well before the 30 s fallback session timeout");
      const metrics = await (await fetch(`${gw.url}/metrics`)).text();
      assert.match(metrics, /holdfast_close_total\{code="1000",transport="sse"\} 1/);
      assert.doesNotMatch(metrics, /holdfast_close_total\{code="4005",transport="sse"\}/);
    } finally {
      watcher.client.close();
      await gw.stop();
    }
  });

  it("after a single node restarts, rooms are joined again and a queued publish is delivered once", async () => {
    const port = await freePort();
    let gw = await startGateway(FAST, port);
    const a = makeClient(gw.url, "restart-a");
    const rejoined: string[] = [];
    a.client.on("rejoined", (m) => rejoined.push(m.room));
    try {
      const lobby = a.client.room("restart");
      await lobby.join();
      await lobby.publish({ n: 1 });
      await gw.stop();
      await until(() => a.client.state !== "connected", "the drop");
      const queued = lobby.publish({ n: 2 });
      gw = await startGateway(FAST, port);
      const seq = await queued;
      assert.deepEqual(rejoined, ["restart"]);
      assert.equal(lobby.status, "joined");
      const b = makeClient(gw.url, "restart-b");
      await b.client.join("restart");
      await b.client.publish("restart", { n: 3 });
      await until(() => a.events.some((e) => (e.data as { n: number }).n === 3), "the event after the restart");
      const after = a.events.map((e) => (e.data as { n: number }).n);
      assert.deepEqual(after, [1, 2, 3], "each once");
      assert.ok(seq >= 1);
      b.client.close();
    } finally {
      a.client.close();
      await gw.stop();
    }
  });

  it("moves back to WebSocket after an outage that pushed it down to long-polling", async () => {
    const port = await freePort();
    let gw = await startGateway(FAST, port);
    // WebSocket preferred, refused during an outage (so polling), back when the node is.
    const d = makeClient(gw.url, "mover2", { fallbackAfter: 1, upgradeProbeMs: 300 });
    try {
      await d.client.join("moving");
      await gw.stop();
      await until(() => d.transports.includes("polling"), "fallen back to polling", 30_000);
      gw = await startGateway(FAST, port);
      await until(() => d.client.state === "connected" && d.client.transport === "websocket", "back on WebSocket", 30_000);
      await d.client.publish("moving", { n: 1 });
      await until(() => d.events.length === 1, "the event over WebSocket");
    } finally {
      d.client.close();
      await gw.stop();
    }
  });

  it("with encoding msgpack, a gateway without MessagePack is spoken to in JSON", async () => {
    const gw = await startGateway(FAST);
    const c = makeClient(gw.url, "packer", { encoding: "msgpack" });
    try {
      await c.client.join("mp");
      await c.client.publish("mp", { n: 1, bytes: [1, 2] });
      await until(() => c.events.length === 1, "the event");
      assert.deepEqual(c.events[0]!.data, { n: 1, bytes: [1, 2] });
    } finally {
      c.client.close();
      await gw.stop();
    }
  });
});
