// What both examples need around their page: a Holdfast gateway process, tokens signed the way
// an application's backend signs them, the server API, and a small static file server that
// also serves the client package's ES module build under /lib/holdfast/.
//
// Nothing here is needed by Holdfast itself; an application does the same with its own stack.

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createNetServer } from "node:net";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
/** The client package's ES module build (`npm run build` in clients/ts). */
export const CLIENT_DIST = join(REPO, "clients/ts/dist");

/** A port on 127.0.0.1 nobody listens on at the moment. */
export function freePort() {
  return new Promise((done, fail) => {
    const s = createNetServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => done(port));
    });
  });
}

const b64url = (v) => Buffer.from(v).toString("base64url");

/** An HS256 JWT with `claims` (`exp` one hour ahead unless given). */
export function signToken(secret, claims) {
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const head = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(body))}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/**
 * Starts `holdfast serve` (`$HOLDFAST_BIN`, default target/debug/holdfast) with a fresh secret
 * and API key; resolves once it answers /healthz. `env` adds settings.
 */
export async function startGateway(env = {}) {
  const bin = process.env.HOLDFAST_BIN ?? join(REPO, "target/debug/holdfast");
  if (!existsSync(bin)) throw new Error(`no gateway binary at ${bin}: run \`cargo build -p holdfast\``);
  const [port, apiPort] = [await freePort(), await freePort()];
  const secret = randomBytes(24).toString("hex");
  const apiKey = randomBytes(24).toString("hex");
  const child = spawn(bin, ["serve", "--listen", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH ?? "",
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      HOLDFAST_AUTH__HMAC_SECRET: secret,
      HOLDFAST_API__LISTEN: `127.0.0.1:${apiPort}`,
      HOLDFAST_API__KEYS: JSON.stringify([apiKey]),
      HOLDFAST_SERVER__DRAIN_TIMEOUT_SECS: "1",
      ...env,
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  const api = `http://127.0.0.1:${apiPort}`;
  const stop = () =>
    new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) return done();
      child.once("exit", () => done());
      child.kill("SIGTERM");
    });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`the gateway exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // Not listening yet.
    }
    if (i > 300) {
      await stop();
      throw new Error("the gateway did not start within 15 s");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  /** Calls the server API: `call("POST", "/api/v1/publish", {...})` → the JSON answer. */
  const call = async (method, path, body) => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };
  return { url, api, secret, call, stop, sign: (claims) => signToken(secret, claims) };
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".map": "application/json" };

/** Reads a JSON request body (up to 64 KiB). */
export function readJson(req) {
  return new Promise((done, fail) => {
    let text = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => {
      text += chunk;
      if (text.length > 65536) req.destroy(new Error("body too large"));
    });
    req.on("end", () => {
      try {
        done(text ? JSON.parse(text) : {});
      } catch (e) {
        fail(e);
      }
    });
    req.on("error", fail);
  });
}

/** Answers with JSON. */
export function sendJson(res, status, value) {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));
}

/**
 * An HTTP server on `port` (0 for any) serving `pageDir`'s files at /, the client build at
 * /lib/holdfast/, and `routes` (`"POST /login": async (req, res, url) => ...`) first.
 */
export async function startSite({ port = 0, pageDir, routes = {} }) {
  const server = createHttpServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const route = routes[`${req.method} ${url.pathname}`];
    try {
      if (route) return await route(req, res, url);
      if (req.method !== "GET") return sendJson(res, 405, { error: "method not allowed" });
      let root = pageDir;
      let path = url.pathname === "/" ? "/index.html" : url.pathname;
      if (path.startsWith("/lib/holdfast/")) {
        root = CLIENT_DIST;
        path = path.slice("/lib/holdfast".length);
      }
      const file = normalize(join(root, path));
      if (!file.startsWith(root) || !existsSync(file)) return sendJson(res, 404, { error: "not found" });
      res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" }).end(readFileSync(file));
    } catch (e) {
      sendJson(res, 500, { error: String(e) });
    }
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, stop: () => new Promise((r) => server.close(() => r())) };
}
