/** StreamPosition: duplicates dropped, gaps reported, epochs restart the count. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StreamPosition } from "../../src/index.js";

describe("StreamPosition", () => {
  it("delivers in-order frames and drops replays", () => {
    const p = new StreamPosition(3, "e1");
    assert.deepEqual(p.observe(4, "e1"), { kind: "deliver" });
    assert.deepEqual(p.observe(4, "e1"), { kind: "duplicate" });
    assert.deepEqual(p.observe(2, "e1"), { kind: "duplicate" });
    assert.equal(p.seq, 4);
  });

  it("reports jumps as gaps and continues after them", () => {
    const p = new StreamPosition(3, "e1");
    assert.deepEqual(p.observe(7, "e1"), { kind: "gap", from: 4, to: 6 });
    assert.deepEqual(p.observe(8, "e1"), { kind: "deliver" });
  });

  it("restarts on a new epoch", () => {
    const p = new StreamPosition(30, "e1");
    assert.deepEqual(p.observe(2, "e2"), { kind: "new_epoch" });
    assert.deepEqual(p.observe(3, "e2"), { kind: "deliver" });
  });

  it("skips a reported gap once, trimmed to what was not seen", () => {
    const p = new StreamPosition(5, "e1");
    assert.deepEqual(p.skipGap(3, 9, "e1"), { from: 6, to: 9 });
    assert.equal(p.skipGap(3, 9, "e1"), undefined);
    assert.deepEqual(p.observe(10, "e1"), { kind: "deliver" });
  });

  it("catches up past the resume's own frames without going back", () => {
    const p = new StreamPosition(5, "e1");
    p.catchUp(8, "e1");
    assert.equal(p.seq, 8);
    p.catchUp(6, "e1");
    assert.equal(p.seq, 8);
  });
});
