/**
 * The admin page (`/admin` on the internal listener) in headless Chromium against real
 * gateways: the key prompt, rooms found by prefix with their members, seq and epoch, a publish
 * that a client receives, a disconnect that closes the user's session with 4007, and the live
 * charts; then the same from the other node of a two-node cluster on Redis. Screenshots go to
 * test-output/.
 */

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Browser, Page } from "playwright-core";
import { launchBrowser } from "../helpers/browser.js";
import { makeClient, type Recorder } from "../helpers/clients.js";
import { freePort, startGateway, type Gateway } from "../helpers/gateway.js";
import { sleep, until } from "../helpers/wait.js";

const OUTPUT = resolve(process.cwd(), "test-output");
const KEY = "an-admin-key-for-the-browser-test";

interface Node {
  gw: Gateway;
  /** `http://127.0.0.1:<api port>`. */
  api: string;
}

async function startNode(env: Record<string, string> = {}): Promise<Node> {
  const apiPort = await freePort();
  const gw = await startGateway({
    HOLDFAST_API__LISTEN: `127.0.0.1:${apiPort}`,
    HOLDFAST_API__KEYS: JSON.stringify([KEY]),
    ...env,
  });
  return { gw, api: `http://127.0.0.1:${apiPort}` };
}

/** A redis-server of the test's own on a free port, without persistence. */
async function startRedis(): Promise<{ url: string; stop: () => void }> {
  const port = await freePort();
  const child: ChildProcess = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((done) => {
      const s = connect(port, "127.0.0.1", () => (s.destroy(), done(true)));
      s.once("error", () => done(false));
    });
    if (up) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("redis-server did not start (scripts/test installs it)");
    await sleep(20);
  }
  return { url: `redis://127.0.0.1:${port}/`, stop: () => child.kill("SIGKILL") };
}

async function joined(user: Recorder, room: string): Promise<void> {
  await user.client.join(room);
}

async function openAdmin(browser: Browser, api: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`admin page error: ${e.message}`));
  // Disconnecting asks for a confirmation.
  page.on("dialog", (d) => void d.accept());
  await page.goto(`${api}/admin`);
  await page.waitForSelector("#key", { state: "visible" });
  await page.fill("#key", KEY);
  await page.click("#key-save");
  await page.waitForSelector("#app", { state: "visible" });
  return page;
}

async function searchRooms(page: Page, prefix: string): Promise<string[]> {
  await page.fill("#room-prefix", prefix);
  await page.click("#room-search");
  await page.waitForSelector("#rooms li");
  return page.$$eval("#rooms li[data-room]", (items) => items.map((li) => (li as HTMLElement).dataset.room ?? ""));
}

async function publishFromPage(page: Page, room: string, data: unknown): Promise<void> {
  await page.fill("#publish-room", room);
  await page.fill("#publish-data", JSON.stringify(data));
  await page.evaluate(() => delete (document.getElementById("publish-result") as HTMLElement).dataset.delivered);
  await page.click("#publish-send");
  await page.waitForSelector('#publish-result[data-delivered="true"]');
}

async function disconnectFromPage(page: Page, user: string): Promise<void> {
  await page.fill("#user-id", user);
  await page.click("#user-lookup");
  await page.waitForFunction(() => document.getElementById("user-online")?.textContent === "yes");
  await page.click("#user-disconnect");
  await page.waitForSelector('#disconnect-result[data-disconnected="true"]');
}

/**
 * Waits for the page's open-connections figure to read `n`; on a timeout the error says what
 * the page showed, its status line and what the node's own gauge said, so a failure explains
 * itself.
 */
async function connectionsShown(page: Page, api: string, n: number): Promise<void> {
  try {
    await page.waitForFunction((want) => document.getElementById("m-connections")?.textContent === want, String(n), { timeout: 30_000 });
  } catch (err) {
    const shown = await page.textContent("#m-connections").catch(() => null);
    const line = await page.textContent("#status").catch(() => null);
    const scraped = await fetch(`${api}/metrics`)
      .then((r) => r.text())
      .then((t) => t.split("\n").filter((l) => l.startsWith("holdfast_connections_active")).join("; "))
      .catch((e: Error) => `scrape failed: ${e.message}`);
    throw new Error(`the page shows ${shown} connections, not ${n} (status: ${line}; node: ${scraped}): ${(err as Error).message}`);
  }
}

const hasEvent = (rec: Recorder, text: string) => rec.events.some((e) => (e.data as { text?: string } | null)?.text === text);

describe("admin page in headless Chromium", { timeout: 120_000 }, () => {
  let browser: Browser;

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  it("one node: key, rooms by prefix, publish, disconnect, live charts", async () => {
    const node = await startNode();
    const users: Recorder[] = [];
    try {
      // The page is on the internal listener only; the public one has no such route.
      assert.equal((await fetch(`${node.gw.url}/admin`)).status, 404);
      const served = await fetch(`${node.api}/admin`);
      assert.equal(served.status, 200);
      assert.match(served.headers.get("content-type") ?? "", /text\/html/);

      const alice = makeClient(node.gw.url, "alice");
      const bob = makeClient(node.gw.url, "bob");
      const carol = makeClient(node.gw.url, "carol");
      users.push(alice, bob, carol);
      await joined(alice, "ops-lobby");
      await joined(bob, "ops-lobby");
      await joined(carol, "support-1");

      // A wrong key is refused and the prompt stays.
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const wrong = await context.newPage();
      await wrong.goto(`${node.api}/admin`);
      await wrong.fill("#key", "not-the-right-key-at-all");
      await wrong.click("#key-save");
      await wrong.waitForFunction(() => document.getElementById("login-error")?.textContent?.includes("refused"));
      await wrong.screenshot({ path: resolve(OUTPUT, "admin-login-refused.png") });
      await context.close();

      const page = await openAdmin(browser, node.api);
      // The key is kept for the tab: a reload does not ask again.
      await page.reload();
      await page.waitForSelector("#app", { state: "visible" });
      assert.equal(await page.evaluate(() => sessionStorage.getItem("holdfast.admin.key")), KEY);

      await page.waitForSelector("#nodes tbody tr");
      assert.equal(await page.$$eval("#nodes tbody tr", (rows) => rows.length), 1);
      await connectionsShown(page, node.api, 3);

      assert.deepEqual(await searchRooms(page, "ops-"), ["ops-lobby"]);
      assert.deepEqual((await searchRooms(page, "")).sort(), ["ops-lobby", "support-1"]);
      await searchRooms(page, "ops-");
      await page.click('#rooms li[data-room="ops-lobby"]');
      await page.waitForSelector('#members tr[data-user="bob"]');
      assert.deepEqual((await page.$$eval("#members tbody tr", (rows) => rows.map((r) => (r as HTMLElement).dataset.user))).sort(), ["alice", "bob"]);
      assert.equal(await page.textContent("#room-count"), "2");
      const seqBefore = Number(await page.textContent("#room-seq"));
      assert.ok((await page.textContent("#room-epoch"))?.length);

      await publishFromPage(page, "ops-lobby", { text: "from the admin page" });
      await until(() => hasEvent(alice, "from the admin page") && hasEvent(bob, "from the admin page"), "both members to receive the event");
      await page.waitForFunction((s) => Number(document.getElementById("room-seq")?.textContent) > s, seqBefore);
      // The sent-messages rate shows the publish.
      await page.waitForFunction(() => Number((document.getElementById("c-sent") as HTMLElement | null)?.dataset.peak) > 0, undefined, {
        timeout: 10_000,
      });
      await page.screenshot({ path: resolve(OUTPUT, "admin-room.png"), fullPage: true });

      await disconnectFromPage(page, "bob");
      await until(() => bob.closed, "bob's session to close");
      assert.equal(bob.closed!.code, 4007);
      await page.waitForFunction(() => document.getElementById("user-online")?.textContent === "no");
      await connectionsShown(page, node.api, 2);
      await page.screenshot({ path: resolve(OUTPUT, "admin-disconnect.png"), fullPage: true });

      // Forgetting the key brings the prompt back.
      await page.click("#logout");
      await page.waitForSelector("#key", { state: "visible" });
      assert.equal(await page.evaluate(() => sessionStorage.getItem("holdfast.admin.key")), null);
      await page.context().close();
    } finally {
      for (const u of users) u.client.close();
      await node.gw.stop();
    }
  });

  it("two nodes on Redis: the page on one node sees and acts on the other's sessions", async () => {
    const redis = await startRedis();
    const nodes: Node[] = [];
    const users: Recorder[] = [];
    try {
      const env = { HOLDFAST_BROKER__URL: redis.url };
      const a = await startNode({ ...env, HOLDFAST_SERVER__NODE_ID: "node-a" });
      nodes.push(a);
      const b = await startNode({ ...env, HOLDFAST_SERVER__NODE_ID: "node-b" });
      nodes.push(b);
      const dave = makeClient(a.gw.url, "dave");
      const erin = makeClient(b.gw.url, "erin");
      users.push(dave, erin);
      await joined(dave, "cluster-room");
      await joined(erin, "cluster-room");

      // The page on node B.
      const page = await openAdmin(browser, b.api);
      await page.waitForFunction(() => document.querySelectorAll("#nodes tbody tr").length === 2, undefined, { timeout: 15_000 });
      assert.deepEqual(await page.$$eval("#nodes tbody tr", (rows) => rows.map((r) => (r as HTMLElement).dataset.node)), ["node-a", "node-b"]);

      assert.deepEqual(await searchRooms(page, "cluster-"), ["cluster-room"]);
      await page.click('#rooms li[data-room="cluster-room"]');
      await page.waitForSelector('#members tr[data-user="dave"]');
      await page.waitForSelector('#members tr[data-user="erin"]');

      await publishFromPage(page, "cluster-room", { text: "across the cluster" });
      await until(() => hasEvent(dave, "across the cluster") && hasEvent(erin, "across the cluster"), "both nodes' members to receive the event");

      // Dave's session is on node A; the page on node B closes it.
      await page.fill("#user-id", "dave");
      await page.click("#user-lookup");
      await page.waitForFunction(() => document.getElementById("user-node")?.textContent === "node-a");
      await disconnectFromPage(page, "dave");
      await until(() => dave.closed, "dave's session to close");
      assert.equal(dave.closed!.code, 4007);
      assert.equal(erin.closed, undefined);
      await page.screenshot({ path: resolve(OUTPUT, "admin-cluster.png"), fullPage: true });
      await page.context().close();
    } finally {
      for (const u of users) u.client.close();
      for (const n of nodes) await n.gw.stop();
      redis.stop();
    }
  });
});
