/**
 * A loopback front for the browser tests: serves the demo page and the client bundle from
 * crates/holdfast-gateway/assets (as the gateway's `/demo` routes do) and forwards every other
 * request, WebSocket upgrades included, to the gateway. Pages therefore talk to one origin.
 *
 * With `refuseWebSocket`, it answers every upgrade with 403 and never reaches the gateway, as a
 * proxy that blocks WebSockets would; SSE and long-polling still pass.
 *
 * `partition()` simulates a network failure between the page and the gateway: the gateway's
 * side of every open connection is cut (it sees the connection drop), the page's side is left
 * open but silent (as after a lost route, no close ever arrives), and new connections are
 * refused until `heal()`.
 */

import { readFileSync } from "node:fs";
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";

const ASSETS = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(resolve(dir, "package.json"))) dir = dirname(dir);
  return resolve(dir, "../../crates/holdfast-gateway/assets");
})();

/** A running front. */
export interface DemoProxy {
  url: string;
  /** Upgrades seen (refused or forwarded). */
  upgrades: number;
  /** Cuts every open connection without a close reaching the page, and refuses new ones. */
  partition(): void;
  /** Accepts connections again. */
  heal(): void;
  stop(): Promise<void>;
}

/** Starts a front for the gateway listening on `gatewayPort`. */
export async function startDemoProxy(gatewayPort: number, options: { refuseWebSocket?: boolean } = {}): Promise<DemoProxy> {
  const sockets = new Set<Socket>();
  /** The gateway-side sockets and requests of open connections, cut by `partition()`. */
  const upstreams = new Set<{ destroy(): unknown }>();
  /** The page-side sockets, silenced by `partition()`. */
  const downstreams = new Set<Socket>();
  let partitioned = false;
  const files: Record<string, [string, string]> = {
    "/demo": ["demo.html", "text/html; charset=utf-8"],
    "/demo/holdfast.js": ["holdfast-client.js", "application/javascript; charset=utf-8"],
  };
  const server: Server = createServer((req: IncomingMessage, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const file = files[path];
    if (file) {
      res.writeHead(200, { "content-type": file[1], "cache-control": "no-cache" });
      res.end(readFileSync(resolve(ASSETS, file[0])));
      return;
    }
    const upstream = request(
      { host: "127.0.0.1", port: gatewayPort, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        res.flushHeaders();
        up.pipe(res);
      },
    );
    upstreams.add(upstream);
    upstream.on("close", () => upstreams.delete(upstream));
    upstream.on("error", () => {
      if (!partitioned) res.destroy();
    });
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
  });
  const front: DemoProxy = {
    url: "",
    upgrades: 0,
    partition() {
      partitioned = true;
      for (const socket of downstreams) {
        // The page's side stays open and hears nothing more.
        socket.unpipe();
        socket.removeAllListeners("data");
        socket.pause();
      }
      for (const up of upstreams) up.destroy();
      upstreams.clear();
    },
    heal() {
      partitioned = false;
    },
    stop: async () => {},
  };
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    front.upgrades += 1;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    if (options.refuseWebSocket) {
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    const up = connect(gatewayPort, "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(lines.join("\r\n") + "\r\n\r\n");
      if (head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    sockets.add(up);
    upstreams.add(up);
    downstreams.add(socket);
    up.on("close", () => {
      sockets.delete(up);
      upstreams.delete(up);
      if (!partitioned) socket.destroy();
    });
    up.on("error", () => {
      if (!partitioned) socket.destroy();
    });
    socket.on("error", () => up.destroy());
    socket.on("close", () => up.destroy());
  });
  server.on("connection", (socket) => {
    if (partitioned) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  if (!address || typeof address !== "object") throw new Error("no address");
  front.url = `http://127.0.0.1:${address.port}`;
  front.stop = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return front;
}
