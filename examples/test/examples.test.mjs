// The examples end to end in headless Chromium: the chat (presence, history after a reload,
// resume after a drop, a private room by join tokens, moderation through the server API) and
// the game (an authoritative loop, inputs as MessagePack, a player who drops and comes back sees
// the same world). Screenshots go to examples/test-output/.
//
// Needs the gateway binary (cargo build -p holdfast), the client build (npm run build in
// clients/ts, which also holds playwright-core) and Chromium (CHROMIUM_PATH, default
// /usr/bin/chromium). Run: node --test examples/test/

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO } from "../lib/dev.mjs";
import { startChat } from "../chat/server.mjs";
import { startGame } from "../game/server.mjs";

const require = createRequire(join(REPO, "clients/ts/package.json"));
const { chromium } = require("playwright-core");
const OUTPUT = join(REPO, "examples/test-output");

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  });
}

async function login(browser, url, user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] page error: ${e.message}`));
  await page.goto(url);
  await page.fill("#name", user);
  await page.click("#login button");
  return page;
}

const texts = (page) => page.$$eval("#messages li", (items) => items.map((li) => li.textContent));
const waitText = (page, text, timeout = 15_000) =>
  page.waitForFunction((t) => [...document.querySelectorAll("#messages li")].some((li) => li.textContent.includes(t)), text, { timeout });

describe("examples/chat in headless Chromium", { timeout: 120_000 }, () => {
  let chat;
  let browser;
  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    chat = await startChat({ moderateEveryMs: 100 });
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await chat?.stop();
  });

  it("chats with presence, history after a reload, resume after a drop, a private room and moderation", async () => {
    const alice = await login(browser, chat.url, "alice");
    let bob = await login(browser, chat.url, "bob");
    await alice.waitForSelector('#members li[data-user="bob"][data-status="online"]');
    await alice.fill("#text", "hello bob");
    await alice.click("#say");
    await waitText(bob, "alice: hello bob");

    // A reload is a new session: the page shows what was said before from the room's history.
    await bob.context().close();
    bob = await login(browser, chat.url, "bob");
    await waitText(bob, "alice: hello bob");
    assert.equal(await bob.getAttribute("#messages li", "class"), "history");

    // Bob's network fails; alice goes on; bob comes back and misses nothing.
    await bob.evaluate(() => window.chat.client.dropConnection());
    await bob.context().setOffline(true);
    // The gateway sees the drop from the close frame, or, when the emulated outage swallowed
    // it, from the missed pong (ping every 10 s, pong deadline 20 s): up to 30 s.
    await alice.waitForSelector('#members li[data-user="bob"][data-status="away"]', { timeout: 45_000 });
    for (const t of ["while you were away 1", "while you were away 2"]) {
      await alice.fill("#text", t);
      await alice.click("#say");
    }
    await bob.context().setOffline(false);
    await waitText(bob, "while you were away 2", 30_000);
    assert.deepEqual(await texts(bob), await texts(alice));

    // A private room: alice opens it, bob is invited through the server API and joins with his
    // own join token; carol may not have one.
    await alice.fill("#dm", "bob");
    await alice.click("#dm-form button");
    await bob.waitForSelector('#rooms button[data-room="dm:alice:bob"]', { timeout: 15_000 });
    await alice.fill("#text", "just between us");
    await alice.click("#say");
    await bob.waitForSelector('#rooms button[data-room="dm:alice:bob"][data-unread="true"]', { timeout: 15_000 });
    await bob.click('#rooms button[data-room="dm:alice:bob"]');
    await waitText(bob, "alice: just between us");
    const carol = await login(browser, chat.url, "carol");
    await carol.waitForSelector('#members li[data-user="carol"]');
    const refused = await carol.evaluate(async () => {
      const r = await fetch("/join-token", { method: "POST", headers: { authorization: `Bearer ${window.chat.token}` }, body: JSON.stringify({ room: "dm:alice:bob" }) });
      return r.status;
    });
    assert.equal(refused, 403);
    assert.doesNotMatch((await texts(carol)).join("\n"), /just between us/);
    await bob.screenshot({ path: join(OUTPUT, "chat-bob-private.png"), fullPage: true });

    // Moderation: the backend reads the lobby through the server API and removes a spammer.
    const mallory = await login(browser, chat.url, "mallory");
    await mallory.waitForSelector('#members li[data-user="mallory"]');
    await mallory.fill("#text", "buy spam now");
    await mallory.click("#say");
    await alice.click('#rooms button[data-room="lobby"]');
    await waitText(alice, "mallory was removed by the moderator");
    await mallory.waitForFunction(() => window.chat.closed === 4007, undefined, { timeout: 15_000 });
    assert.match(await mallory.textContent("#banner"), /removed by the moderator/);
    const again = await login(browser, chat.url, "mallory");
    await again.waitForFunction(() => document.querySelector("#banner").textContent.includes("Cannot enter"));
    await alice.screenshot({ path: join(OUTPUT, "chat-alice-lobby.png"), fullPage: true });
    await mallory.screenshot({ path: join(OUTPUT, "chat-mallory-removed.png"), fullPage: true });
  });
});

describe("examples/game in headless Chromium", { timeout: 120_000 }, () => {
  let game;
  let browser;
  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    game = await startGame();
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await game?.stop();
  });

  const world = (page) => page.evaluate(() => window.game.world);

  it("runs an authoritative loop; a player who drops and comes back sees the same world", async () => {
    const ann = await login(browser, game.url, "ann");
    await ann.waitForFunction(() => window.game.room?.isAuthority === true, undefined, { timeout: 15_000 });
    const ben = await login(browser, game.url, "ben");
    await ann.waitForFunction(() => window.game.world.players.ben !== undefined, undefined, { timeout: 15_000 });
    // Inputs travel as MessagePack bytes (base64 inside JSON when the gateway speaks JSON only).
    const start = (await world(ann)).players.ben;
    for (let i = 0; i < 3; i++) await ben.evaluate(() => window.game.move(1, 0));
    const x = Math.min(19, start.x + 3);
    await ben.waitForFunction((want) => window.game.world.players.ben?.x === want, x, { timeout: 15_000 });
    assert.equal(await ben.evaluate(() => window.game.room.isAuthority), false);

    // Ben drops; the world goes on without him.
    await ben.evaluate(() => window.game.client.dropConnection());
    await ben.context().setOffline(true);
    const awayTick = (await world(ann)).tick;
    for (let i = 0; i < 2; i++) await ann.evaluate(() => window.game.move(0, 1));
    await ann.waitForFunction((t) => window.game.world.tick >= t + 15, awayTick, { timeout: 15_000 });
    await ben.context().setOffline(false);
    // Back: the replayed snapshots bring him to the authority's world, tick for tick.
    const target = (await world(ann)).tick;
    await ben.waitForFunction((t) => window.game.client.state === "connected" && window.game.world.tick >= t, target, { timeout: 30_000 });
    const seen = await world(ben);
    const published = await ann.evaluate((t) => window.game.published[t], seen.tick);
    assert.deepEqual(seen, published);
    assert.equal(seen.players.ben.x, x);
    await ben.screenshot({ path: join(OUTPUT, "game-ben-back.png"), fullPage: true });
    await ann.screenshot({ path: join(OUTPUT, "game-ann-authority.png"), fullPage: true });
  });
});
