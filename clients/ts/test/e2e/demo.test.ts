/**
 * The demo page in headless Chromium against a real gateway: two pages chat, one loses its
 * network and resumes with every message once and in order, and one falls back to SSE when
 * WebSocket upgrades are refused.
 */

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Browser, Page } from "playwright-core";
import { launchBrowser } from "../helpers/browser.js";
import { startDemoProxy, type DemoProxy } from "../helpers/demo-proxy.js";
import { startGateway, type Gateway } from "../helpers/gateway.js";
import { sign } from "../helpers/token.js";

const OUTPUT = resolve(process.cwd(), "test-output");

/** The messages a page shows: `seq` and text, in display order. */
async function messages(page: Page): Promise<{ seq: number; text: string }[]> {
  return page.$$eval("#messages li", (items) =>
    items.map((li) => ({ seq: Number((li as HTMLElement).dataset.seq), text: (li as HTMLElement).dataset.text ?? "" })),
  );
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill("#text", text);
  await page.click("#send");
}

async function waitForMessages(page: Page, count: number, timeout = 15_000): Promise<void> {
  await page.waitForFunction((n) => document.querySelectorAll("#messages li").length >= n, count, { timeout });
}

async function openDemo(browser: Browser, front: string, user: string, room: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error: ${e.message}`));
  await page.goto(`${front}/demo?token=${encodeURIComponent(sign(user))}&room=${encodeURIComponent(room)}`);
  await page.waitForFunction(() => document.querySelector("#state")?.textContent === "connected", undefined, { timeout: 15_000 });
  await page.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("joined"), undefined, { timeout: 15_000 });
  return page;
}

describe("demo page in headless Chromium", { timeout: 120_000 }, () => {
  let gw: Gateway;
  let front: DemoProxy;
  let blocked: DemoProxy;
  let browser: Browser;

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    gw = await startGateway({
      HOLDFAST_HEARTBEAT__PING_INTERVAL_MS: "1000",
      HOLDFAST_HEARTBEAT__PONG_TIMEOUT_MS: "2000",
      HOLDFAST_RECONNECTION__WINDOW_SECS: "60",
    });
    front = await startDemoProxy(gw.port);
    blocked = await startDemoProxy(gw.port, { refuseWebSocket: true });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await front?.stop();
    await blocked?.stop();
    await gw?.stop();
  });

  it("two pages chat; one loses its network and resumes with every message exactly once, in order", async () => {
    // Each page has its own front, so bob's network can fail while alice's stays up.
    const bobFront = await startDemoProxy(gw.port);
    try {
      const alice = await openDemo(browser, front.url, "alice", "e2e");
      const bob = await openDemo(browser, bobFront.url, "bob", "e2e");
      await alice.waitForSelector('#members li[data-user="bob"][data-status="online"]');
      assert.equal(await alice.textContent("#transport"), "websocket");

      await say(alice, "hello from alice");
      await say(bob, "hello from bob");
      await waitForMessages(alice, 2);
      await waitForMessages(bob, 2);

      // Bob's network fails: the browser goes offline and his open connection goes silent
      // without a close (Chromium's offline emulation alone leaves an open WebSocket working).
      // The gateway shows him away, not gone; alice keeps publishing meanwhile.
      await bob.context().setOffline(true);
      bobFront.partition();
      await alice.waitForSelector('#members li[data-user="bob"][data-status="away"]', { timeout: 20_000 });
      for (let i = 1; i <= 5; i++) await say(alice, `while bob was away ${i}`);
      await waitForMessages(alice, 7);
      // Bob's client notices the silence (ping interval + pong timeout) and retries meanwhile.
      await bob.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("no traffic from the gateway"), undefined, {
        timeout: 20_000,
      });
      bobFront.heal();
      await bob.context().setOffline(false);

      await waitForMessages(bob, 7, 30_000);
      await alice.waitForSelector('#members li[data-user="bob"][data-status="online"]', { timeout: 20_000 });
      await say(bob, "back again");
      await waitForMessages(alice, 8);
      await waitForMessages(bob, 8);

      const seen = await messages(bob);
      assert.deepEqual(seen, await messages(alice));
      assert.deepEqual(
        seen.map((m) => m.text),
        ["hello from alice", "hello from bob", ...[1, 2, 3, 4, 5].map((i) => `while bob was away ${i}`), "back again"],
      );
      const seqs = seen.map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in seq order");
      assert.equal(new Set(seqs).size, seqs.length, "no duplicates");
      assert.match((await bob.textContent("#log")) ?? "", /resumed e2e \(nothing lost\)/);
      await bob.screenshot({ path: resolve(OUTPUT, "resume-bob.png"), fullPage: true });
      await alice.screenshot({ path: resolve(OUTPUT, "resume-alice.png"), fullPage: true });
      await alice.context().close();
      await bob.context().close();
    } finally {
      await bobFront.stop();
    }
  });

  it("the drop button cuts the connection and the page resumes with the replayed messages", async () => {
    const carol = await openDemo(browser, front.url, "carol", "drop");
    const dave = await openDemo(browser, front.url, "dave", "drop");
    await say(dave, "before the drop");
    await waitForMessages(carol, 1);
    // Hold carol's reconnection back until dave has published, so the replay path is taken.
    await carol.evaluate(() => {
      const demo = (window as unknown as { holdfastDemo: { client: { dropConnection(): void } } }).holdfastDemo;
      demo.client.dropConnection();
    });
    await carol.context().setOffline(true);
    await dave.waitForSelector('#members li[data-user="carol"][data-status="away"]', { timeout: 20_000 });
    for (let i = 1; i <= 3; i++) await say(dave, `missed ${i}`);
    await carol.context().setOffline(false);
    await waitForMessages(carol, 4, 30_000);
    const shown = (await messages(carol)).map((m) => m.text);
    assert.deepEqual(shown, ["before the drop", "missed 1", "missed 2", "missed 3"]);
    await carol.click("#drop");
    await carol.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("dropping the connection"));
    await carol.waitForFunction(() => document.querySelector("#state")?.textContent === "connected", undefined, { timeout: 15_000 });
    await say(dave, "after the button");
    await waitForMessages(carol, 5);
    assert.deepEqual((await messages(carol)).map((m) => m.text).slice(-1), ["after the button"]);
    await carol.context().close();
    await dave.context().close();
  });

  it("falls back to SSE when WebSocket upgrades are refused, and still chats", async () => {
    const erin = await openDemo(browser, blocked.url, "erin", "fallback");
    const frank = await openDemo(browser, front.url, "frank", "fallback");
    assert.equal(await erin.textContent("#transport"), "sse");
    assert.ok(blocked.upgrades >= 2, `expected refused upgrades, saw ${blocked.upgrades}`);
    assert.equal(await frank.textContent("#transport"), "websocket");
    await say(erin, "over sse");
    await say(frank, "over websocket");
    await waitForMessages(erin, 2);
    await waitForMessages(frank, 2);
    assert.deepEqual(await messages(erin), await messages(frank));
    await erin.waitForSelector('#members li[data-user="frank"][data-status="online"]');
    await erin.screenshot({ path: resolve(OUTPUT, "sse-fallback-erin.png"), fullPage: true });
    await erin.context().close();
    await frank.context().close();
  });

  it("a tab replaced by a newer one of its user stops listing itself; the holder cannot claim again", async () => {
    const first = await openDemo(browser, front.url, "grace", "tabs");
    // The first member holds authority: its claim button is off, and the log names it "you".
    await first.waitForSelector('#members li[data-user="grace"]');
    assert.equal(await first.isDisabled("#claim"), true);
    const second = await openDemo(browser, front.url, "grace", "tabs");
    await first.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("closed 4000"), undefined, { timeout: 15_000 });
    await first.waitForSelector('#members li[data-user="grace"][data-status="offline"]');
    assert.equal(await first.$$eval('#members li[data-status="online"]', (l) => l.length), 0);
    assert.equal(await first.isDisabled("#claim"), true);
    // The event log runs oldest first, like the messages.
    const log = await first.$$eval("#log li", (items) => items.map((li) => li.textContent ?? ""));
    assert.match(log[0] ?? "", /transport websocket/);
    assert.match(log.at(-1) ?? "", /closed 4000/);
    await first.screenshot({ path: resolve(OUTPUT, "replaced-tab.png"), fullPage: true });
    await first.context().close();
    await second.context().close();
  });

  it("with single_socket = device, two tabs of one user both stay connected and chat", async () => {
    const devices = await startGateway({ HOLDFAST_SESSION__SINGLE_SOCKET: "device" });
    const devicesFront = await startDemoProxy(devices.port);
    try {
      const one = await openDemo(browser, devicesFront.url, "heidi", "two-tabs");
      const two = await openDemo(browser, devicesFront.url, "heidi", "two-tabs");
      assert.notEqual(await one.textContent("#device"), await two.textContent("#device"));
      await say(one, "from tab one");
      await say(two, "from tab two");
      await waitForMessages(one, 2);
      await waitForMessages(two, 2);
      assert.deepEqual(await messages(one), await messages(two));
      await one.waitForFunction(() => document.querySelectorAll('#members li[data-user="heidi"][data-status="online"]').length === 2);
      assert.equal(await one.textContent("#state"), "connected");
      assert.doesNotMatch((await one.textContent("#log")) ?? "", /closed 4000/);
      await one.screenshot({ path: resolve(OUTPUT, "two-tabs-one-user.png"), fullPage: true });
      await one.context().close();
      await two.context().close();
    } finally {
      await devicesFront.stop();
      await devices.stop();
    }
  });

  it("the gateway serves the committed demo assets once /demo is routed", async (t) => {
    const response = await fetch(`${gw.url}/demo`);
    if (response.status === 404) {
      t.skip("this gateway build does not route /demo yet");
      return;
    }
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /text\/html/);
    const assets = resolve(process.cwd(), "../../crates/holdfast-gateway/assets");
    assert.equal(await response.text(), readFileSync(resolve(assets, "demo.html"), "utf8"));
    const js = await fetch(`${gw.url}/demo/holdfast.js`);
    assert.match(js.headers.get("content-type") ?? "", /javascript/);
    assert.equal(await js.text(), readFileSync(resolve(assets, "holdfast-client.js"), "utf8"));
  });
});
