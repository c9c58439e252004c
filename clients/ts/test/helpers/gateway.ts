/**
 * Runs a real `holdfast serve` for a test: on a free loopback port, with the test secret and
 * any extra settings, waiting for `/healthz` before returning and killed by `stop()`.
 *
 * The binary is `$HOLDFAST_BIN`, or `../../target/debug/holdfast` relative to clients/ts (the
 * test script builds it first).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SECRET } from "./token.js";

/** clients/ts, whether this runs from `test/` or from the compiled `build/test/`. */
const PACKAGE_DIR = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(resolve(dir, "package.json"))) dir = dirname(dir);
  return dir;
})();

/** The gateway binary under test. */
export const HOLDFAST_BIN = process.env.HOLDFAST_BIN
  ? resolve(process.env.HOLDFAST_BIN)
  : resolve(PACKAGE_DIR, "../../target/debug/holdfast");

/** A running gateway. */
export interface Gateway {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  port: number;
  /** Everything the process wrote to stderr so far, for failure messages. */
  logs(): string;
  /** Stops the process (SIGTERM, then SIGKILL after a grace period) and waits for it. */
  stop(): Promise<void>;
}

/** A port nobody listens on at the moment. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * Starts a gateway with `env` added to its environment (for example
 * `HOLDFAST_HEARTBEAT__PING_INTERVAL_MS`), on `fixedPort` when given (to restart a node in place).
 */
export async function startGateway(env: Record<string, string> = {}, fixedPort?: number): Promise<Gateway> {
  if (!existsSync(HOLDFAST_BIN)) {
    throw new Error(`gateway binary not found at ${HOLDFAST_BIN}; build it with \`cargo build -p holdfast\` or set HOLDFAST_BIN`);
  }
  const port = fixedPort ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(HOLDFAST_BIN, ["serve", "--listen", `127.0.0.1:${port}`], {
    env: {
      PATH: process.env.PATH ?? "",
      HOLDFAST_AUTH__HMAC_SECRET: SECRET,
      HOLDFAST_ROOMS__JOIN: "open",
      HOLDFAST_SERVER__DRAIN_TIMEOUT_SECS: "2",
      // Several gateways run at once: none takes the default internal port.
      HOLDFAST_API__LISTEN: "",
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the gateway exited with ${child.exitCode}:\n${stderr}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the gateway did not answer /healthz within 15 s:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url, port, logs: () => stderr, stop };
}
