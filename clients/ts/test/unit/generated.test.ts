/** The generated protocol constants and the committed browser bundle. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import { CLOSE_CODES, CloseCode, ERROR_CODES, SERVER_FRAME_TYPES, shouldReconnect } from "../../src/index.js";

describe("generated protocol constants", () => {
  it("encode which close codes are terminal", () => {
    for (const code of [CloseCode.Replaced, CloseCode.AuthFailed, CloseCode.PolicyViolation, CloseCode.MessageTooBig, CloseCode.TokenExpired]) {
      assert.equal(shouldReconnect(code), false, String(code));
    }
    for (const code of [CloseCode.GoingAway, CloseCode.SlowConsumer, CloseCode.HeartbeatTimeout, CloseCode.RateLimited]) {
      assert.equal(shouldReconnect(code), true, String(code));
    }
    assert.equal(shouldReconnect(1006), undefined);
    assert.equal(CLOSE_CODES[4000].reason, "replaced");
  });

  it("list the error codes and server frames of the protocol", () => {
    assert.ok(ERROR_CODES.includes("reconnection_token_invalid"));
    assert.ok(SERVER_FRAME_TYPES.includes("reconnected"));
  });
});

describe("browser bundle", () => {
  it("crates/holdfast-gateway/assets/holdfast-client.js is built from the current sources", async () => {
    // The bundler script lives outside the compiled tree; it is plain ESM.
    const script = resolve(process.cwd(), "scripts/bundle.mjs");
    const { bundle, BUNDLE_PATH } = (await import(script)) as { bundle(): Promise<string>; BUNDLE_PATH: string };
    const committed = readFileSync(BUNDLE_PATH, "utf8");
    assert.ok(committed === (await bundle()), "the bundle is stale: run `npm run bundle` in clients/ts and commit it");
  });
});
