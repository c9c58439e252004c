// The game example's backend: it only hands out tokens (any name may play in the `game-*`
// rooms) and serves the page. The game itself runs in the browsers: the member holding the
// room's authority simulates the world, players send their inputs as MessagePack bytes, and the
// authority publishes a snapshot of the world every few ticks.
//
// Run it with `examples/run game`, then open http://127.0.0.1:3000 in two browsers.

import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { readJson, sendJson, startGateway, startSite } from "../lib/dev.mjs";

/** Starts the gateway and the page; `port` 0 picks a free one. */
export async function startGame({ port = 0 } = {}) {
  const gw = await startGateway({ HOLDFAST_RECONNECTION__WINDOW_SECS: "60" });
  const site = await startSite({
    port,
    pageDir: dirname(fileURLToPath(import.meta.url)),
    routes: {
      "GET /config": (_req, res) => sendJson(res, 200, { gateway: gw.url }),
      "POST /login": async (req, res) => {
        const { user } = await readJson(req);
        if (typeof user !== "string" || !/^[a-z0-9_-]{1,32}$/i.test(user)) return sendJson(res, 400, { error: "pick a name of letters and digits" });
        sendJson(res, 200, { token: gw.sign({ sub: user, rooms: ["game-*"] }) });
      },
    },
  });
  return {
    url: site.url,
    gateway: gw,
    async stop() {
      await site.stop();
      await gw.stop();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const game = await startGame({ port: Number(process.env.PORT ?? 3000) });
  console.log(`game: open ${game.url} in two browser windows (gateway ${game.gateway.url}); Ctrl-C stops`);
  const stop = () => game.stop().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
