// The chat example's backend: it logs users in (a connection token for the lobby), opens
// private rooms (join tokens for exactly the two people in them, and an invitation sent to the
// other one through the server API), serves a room's history to a page that (re)loads, and
// moderates: it reads every room's new messages through the server API and removes a user who
// writes a banned word (a notice in the room, then `disconnect`, close 4007, and no new token).
//
// Run it with `examples/run chat`, then open http://127.0.0.1:3000 in two browsers.

import { createHmac, timingSafeEqual } from "node:crypto";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { readJson, sendJson, startGateway, startSite } from "../lib/dev.mjs";

/** Words that get their writer removed. */
export const BANNED = ["spam"];
const LOBBY = "lobby";

/** Starts the gateway, the backend and the page; `port` 0 picks a free one. */
export async function startChat({ port = 0, moderateEveryMs = 200 } = {}) {
  const gw = await startGateway({ HOLDFAST_RECONNECTION__WINDOW_SECS: "60" });
  /** Users removed by the moderator: they get no new token. */
  const banned = new Set();
  /** Rooms the moderator reads, with the last seq it has seen. */
  const watched = new Map([[LOBBY, 0]]);

  /** The user a request's bearer token names (a connection token this backend issued). */
  const userOf = (req) => {
    const token = (req.headers.authorization ?? "").replace(/^Bearer /, "");
    const [head, body, sig] = token.split(".");
    if (!head || !body || !sig) return undefined;
    const want = createHmac("sha256", gw.secret).update(`${head}.${body}`).digest();
    const got = Buffer.from(sig, "base64url");
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    const claims = JSON.parse(Buffer.from(body, "base64url").toString());
    return claims.exp > Date.now() / 1000 && typeof claims.sub === "string" && !banned.has(claims.sub) ? claims.sub : undefined;
  };
  /** The private room of two users, named the same whoever opens it. */
  const dmRoom = (a, b) => `dm:${[a, b].sort().join(":")}`;
  const mayRead = (user, room) => room === LOBBY || (room.startsWith("dm:") && room.split(":").slice(1).includes(user));

  const site = await startSite({
    port,
    pageDir: dirname(fileURLToPath(import.meta.url)),
    routes: {
      "GET /config": (_req, res) => sendJson(res, 200, { gateway: gw.url }),
      "POST /login": async (req, res) => {
        const { user } = await readJson(req);
        if (typeof user !== "string" || !/^[a-z0-9_-]{1,32}$/i.test(user)) return sendJson(res, 400, { error: "pick a name of letters and digits" });
        if (banned.has(user)) return sendJson(res, 403, { error: "removed by the moderator" });
        // The lobby only: private rooms need a join token each.
        sendJson(res, 200, { token: gw.sign({ sub: user, rooms: [LOBBY] }) });
      },
      "POST /dm": async (req, res) => {
        const user = userOf(req);
        const { with: other } = await readJson(req);
        if (!user) return sendJson(res, 401, { error: "log in first" });
        if (typeof other !== "string" || other === user) return sendJson(res, 400, { error: "name someone else" });
        const room = dmRoom(user, other);
        watched.set(room, watched.get(room) ?? 0);
        // The other one learns of it from a direct message, and asks for its own join token.
        const invite = await gw.call("POST", "/api/v1/send", { user: other, data: { invite: room, from: user } });
        sendJson(res, 200, { room, token: gw.sign({ sub: user, room }), delivered: invite.body?.delivered ?? false });
      },
      "POST /join-token": async (req, res) => {
        const user = userOf(req);
        const { room } = await readJson(req);
        if (!user || typeof room !== "string" || !room.startsWith("dm:") || !mayRead(user, room)) return sendJson(res, 403, { error: "not your room" });
        sendJson(res, 200, { token: gw.sign({ sub: user, room }) });
      },
      "GET /history": async (req, res, url) => {
        const user = userOf(req);
        const room = url.searchParams.get("room") ?? "";
        const to = Number(url.searchParams.get("to"));
        if (!user || !mayRead(user, room) || !Number.isInteger(to) || to < 1) return sendJson(res, 403, { error: "not your room" });
        const answer = await gw.call("GET", `/api/v1/rooms/${encodeURIComponent(room)}/history?from=${Math.max(1, to - 99)}&to=${to}&limit=100`);
        sendJson(res, 200, { events: (answer.body?.events ?? []).filter((f) => f.type === "event") });
      },
    },
  });

  /** Reads each watched room's new messages and removes whoever wrote a banned word. */
  const moderate = async () => {
    for (const [room, last] of watched) {
      const answer = await gw.call("GET", `/api/v1/rooms/${encodeURIComponent(room)}/history?from=${last + 1}&limit=100`);
      for (const frame of answer.body?.events ?? []) {
        watched.set(room, Math.max(watched.get(room) ?? 0, frame.seq));
        const text = typeof frame.data?.text === "string" ? frame.data.text.toLowerCase() : "";
        if (frame.type !== "event" || !frame.user_id || banned.has(frame.user_id)) continue;
        if (BANNED.some((w) => text.includes(w))) {
          banned.add(frame.user_id);
          await gw.call("POST", "/api/v1/publish", { room, data: { notice: `${frame.user_id} was removed by the moderator` }, id: `ban-${frame.user_id}` });
          await gw.call("POST", "/api/v1/disconnect", { user: frame.user_id, reason: "banned word" });
        }
      }
    }
  };
  let running = true;
  const loop = (async () => {
    while (running) {
      await moderate().catch(() => {});
      await new Promise((r) => setTimeout(r, moderateEveryMs));
    }
  })();

  return {
    url: site.url,
    gateway: gw,
    async stop() {
      running = false;
      await loop;
      await site.stop();
      await gw.stop();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const chat = await startChat({ port: Number(process.env.PORT ?? 3000) });
  console.log(`chat: open ${chat.url} in two browser windows (gateway ${chat.gateway.url}); Ctrl-C stops`);
  const stop = () => chat.stop().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
