/** Join tokens and `forbidden` against a real gateway whose rooms need a token. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { makeClient } from "../helpers/clients.js";
import { signClaims } from "../helpers/token.js";
import { until } from "../helpers/wait.js";
import { ForbiddenError, HoldfastError } from "../../src/index.js";

describe("room permissions against a real gateway", { timeout: 60_000 }, () => {
  let gw: Gateway;
  before(async () => {
    gw = await startGateway({ HOLDFAST_ROOMS__JOIN: "token" });
  });
  after(async () => {
    await gw.stop();
  });

  it("a join without permission rejects with ForbiddenError and the client stays connected", async () => {
    const a = makeClient(gw.url, "erin");
    try {
      await assert.rejects(a.client.join("private"), (e: unknown) => {
        assert.ok(e instanceof ForbiddenError, String(e));
        assert.ok(e instanceof HoldfastError);
        assert.equal(e.code, "forbidden");
        assert.ok(e.forbidden);
        return true;
      });
      await assert.rejects(a.client.send("frank", { hi: 1 }), ForbiddenError);
      assert.equal(a.client.state, "connected");
    } finally {
      a.client.close();
    }
  });

  it("a join token admits, and is presented again when the room is resumed", async () => {
    const token = signClaims({ sub: "gina", room: "dm-gina" });
    const a = makeClient(gw.url, "gina");
    const b = makeClient(gw.url, "hal", { token: signClaims({ sub: "hal", rooms: ["dm-*"] }) });
    try {
      const m = await a.client.join("dm-gina", { token });
      assert.equal(m.room, "dm-gina");
      await b.client.join("dm-gina");
      a.client.dropConnection();
      await until(() => a.log.some((l) => l.startsWith("resumed dm-gina")), "the room resumed");
      assert.equal(typeof (await a.client.publish("dm-gina", { n: 1 })), "number");
    } finally {
      a.client.close();
      b.client.close();
    }
  });
});
