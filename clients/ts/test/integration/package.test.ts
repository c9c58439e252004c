/**
 * The package as an application gets it: `npm pack`, installed from the tarball into a scratch
 * project, then used from Node.js as an ES module and as CommonJS (with the `ws` package, as
 * Node.js 20 needs), type-checked through the `exports` map, and loaded in headless Chromium.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { launchBrowser } from "../helpers/browser.js";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { sign } from "../helpers/token.js";

const PACKAGE_DIR = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      if (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).name === "@holdfast/client") return dir;
    } catch {
      // Not here: go up.
    }
    dir = dirname(dir);
  }
})();
const OUTPUT = resolve(PACKAGE_DIR, "test-output");

/** A script that joins a room, publishes, waits for its own event and prints what it saw. */
const APP = (importLine: string) => `${importLine}
const [url, token] = process.argv.slice(2);
const client = new HoldfastClient({ url, token, WebSocket });
const got = new Promise((resolve) => client.on("event", resolve));
client.connect();
(async () => {
  await client.room("pack").join();
  const seq = await client.publish("pack", { from: "scratch" });
  const e = await got;
  console.log(JSON.stringify({ transport: client.transport, seq, eventSeq: e.seq, data: e.data }));
  client.close();
})();
`;

describe("the npm package", { timeout: 180_000 }, () => {
  let gw: Gateway;
  let scratch: string;
  let files: string[] = [];

  before(async () => {
    gw = await startGateway();
    scratch = mkdtempSync(join(tmpdir(), "holdfast-pack-"));
    // `npm pack` runs the `prepack` build; the test suite has just built, so skip it here.
    const out = execFileSync("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", scratch], { cwd: PACKAGE_DIR, encoding: "utf8" });
    const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
    files = info!.files.map((f) => f.path);
    const app = join(scratch, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "scratch-app", version: "1.0.0", private: true }));
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--silent", join(scratch, info!.filename)], { cwd: app, stdio: "inherit" });
    // `ws` has no dependencies: copied in from the dev dependencies rather than downloaded.
    cpSync(join(PACKAGE_DIR, "node_modules/ws"), join(app, "node_modules/ws"), { recursive: true });
  });
  after(async () => {
    await gw?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it("holds the ESM and CommonJS builds with declarations and no tests", () => {
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "dist/cjs/package.json", "README.md", "package.json"]) {
      assert.ok(files.includes(f), `${f} is in the tarball`);
    }
    assert.deepEqual(
      files.filter((f) => /(^|\/)(test|build)\//.test(f) || /\.test\./.test(f)),
      [],
    );
  });

  it("works from a scratch Node.js project as an ES module and as CommonJS", () => {
    const app = join(scratch, "app");
    writeFileSync(join(app, "esm.mjs"), APP(`import { HoldfastClient } from "@holdfast/client";\nimport WebSocket from "ws";`));
    writeFileSync(join(app, "cjs.cjs"), APP(`const { HoldfastClient } = require("@holdfast/client");\nconst WebSocket = require("ws");`));
    for (const script of ["esm.mjs", "cjs.cjs"]) {
      const out = execFileSync(process.execPath, [script, gw.url, sign(`pack-${script}`)], { cwd: app, encoding: "utf8", timeout: 20_000 });
      const seen = JSON.parse(out.trim()) as { transport: string; seq: number; eventSeq: number; data: unknown };
      assert.deepEqual(seen.data, { from: "scratch" }, script);
      assert.equal(seen.seq, seen.eventSeq, script);
      assert.equal(seen.transport, "websocket", script);
    }
  });

  it("type-checks through the exports map", () => {
    const app = join(scratch, "app");
    writeFileSync(
      join(app, "typed.mts"),
      `import { HoldfastClient, ForbiddenError, type Membership } from "@holdfast/client";
const client = new HoldfastClient({ url: "http://127.0.0.1:1", token: "t", encoding: "msgpack" });
const joined: Promise<Membership> = client.room("r").join();
void joined.catch((e: unknown) => e instanceof ForbiddenError);
`,
    );
    const tsc = join(PACKAGE_DIR, "node_modules/typescript/bin/tsc");
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom", "typed.mts"], {
      cwd: app,
      stdio: "inherit",
    });
  });

  it("loads in headless Chromium from the installed package", async () => {
    const dist = join(scratch, "app/node_modules/@holdfast/client/dist");
    const token = sign("pack-browser");
    const page = `<!doctype html><script type="module">
      import { HoldfastClient } from "/lib/index.js";
      const client = new HoldfastClient({ url: ${JSON.stringify(gw.url)}, token: ${JSON.stringify(token)}, encoding: "msgpack" });
      client.on("event", (e) => { document.body.dataset.got = JSON.stringify(e.data); });
      client.connect();
      client.room("pack-browser").join().then(() => client.publish("pack-browser", { from: "chromium" }));
    </script>`;
    const server: Server = createServer((req, res) => {
      if (req.url === "/") {
        res.writeHead(200, { "content-type": "text/html" }).end(page);
        return;
      }
      try {
        const body = readFileSync(join(dist, (req.url ?? "").replace(/^\/lib\//, "").replace(/\.\./g, "")));
        res.writeHead(200, { "content-type": "text/javascript" }).end(body);
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const browser = await launchBrowser();
    try {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      const tab = await browser.newPage();
      await tab.goto(`http://127.0.0.1:${port}/`);
      await tab.waitForFunction(() => document.body.dataset.got !== undefined, undefined, { timeout: 15_000 });
      assert.deepEqual(JSON.parse((await tab.getAttribute("body", "data-got")) ?? "null"), { from: "chromium" });
      mkdirSync(OUTPUT, { recursive: true });
      await tab.screenshot({ path: join(OUTPUT, "package-in-chromium.png") });
    } finally {
      await browser.close();
      server.close();
    }
  });
});
