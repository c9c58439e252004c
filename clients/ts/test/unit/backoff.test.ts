/** Backoff: validated construction, the Rust client's defaults, full jitter and the drain hint. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Backoff } from "../../src/index.js";

describe("Backoff", () => {
  it("uses the Rust client's defaults: 250 ms doubling to 30 s, full jitter", () => {
    const b = new Backoff();
    assert.equal(b.minMs, 250);
    assert.equal(b.maxMs, 30_000);
    assert.equal(b.jitter, 1);
    assert.deepEqual([0, 1, 2, 3, 10, 1000].map((n) => b.cap(n)), [250, 500, 1000, 2000, 30_000, 30_000]);
  });

  it("draws full-jitter delays uniformly from [0, cap]", () => {
    assert.equal(new Backoff({}, () => 0).delay(3), 0);
    assert.equal(new Backoff({}, () => 0.5).delay(3), 1000);
    assert.ok(new Backoff({}, () => 0.999999).delay(3) <= 2000);
    const partial = new Backoff({ jitter: 0.5 }, () => 0);
    assert.equal(partial.delay(2), 500);
    assert.equal(new Backoff({ jitter: 0 }).delay(1), 500);
  });

  it("spreads the drain hint over up to one more hint", () => {
    assert.equal(new Backoff({}, () => 0).jitterHint(1000), 1000);
    assert.equal(new Backoff({}, () => 0.5).jitterHint(1000), 1500);
    assert.equal(new Backoff({}, () => 0.5).jitterHint(0), 125);
  });

  it("refuses invalid settings", () => {
    assert.throws(() => new Backoff({ minMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ minMs: 500, maxMs: 100 }), RangeError);
    assert.throws(() => new Backoff({ jitter: 1.5 }), RangeError);
    assert.throws(() => new Backoff({ jitter: Number.NaN }), RangeError);
  });
});
