// Runs the compiled tests (unit, then against a real gateway, then in headless Chromium) with
// the Node test runner, one file at a time, and exits non-zero when any fails.
//
// Usage: node scripts/run-tests.mjs [unit|integration|e2e ...]

import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const suites = process.argv.slice(2).length ? process.argv.slice(2) : ["unit", "integration", "e2e"];
const files = [];
for (const suite of suites) {
  const dir = join("build", "test", suite);
  if (!existsSync(dir)) continue;
  for (const name of readdirSync(dir).sort()) if (name.endsWith(".test.js")) files.push(join(dir, name));
}
if (files.length === 0) {
  console.error("no compiled tests found; run `npm run build:test` first");
  process.exit(1);
}
const result = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=180000", ...files], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
