/**
 * Client frames over HTTP for the fallback transports: `POST <send url>?session=<id>` with a
 * JSON array of frames.
 *
 * One request is in flight at a time, so frames reach the server in the order they were sent;
 * frames queued meanwhile go together in the next request. A request that fails on the network
 * is retried a few times (the gateway dedupes publishes by id, so a retried publish is
 * delivered once), and so is one refused with 429 (too many frames waiting); 404 means the session is gone and 401/413 are refusals, and each of those
 * ends the connection.
 */

import type { ClientFrame } from "../protocol.js";
import { refusal, type CloseInfo, type FetchLike } from "./transport.js";

/** Network failures tolerated in a row before the connection is given up. */
const SEND_RETRIES = 3;
/** The pause before retrying a failed request, in milliseconds (doubled on each retry). */
const SEND_RETRY_MS = 250;

/** Posts client frames for one fallback session. */
export class FrameSender {
  /** Frames waiting for the session id or for the request in flight. */
  private queue: ClientFrame[] = [];
  /** The session the frames belong to, known after `welcome`. */
  private session: string | undefined;
  /** Whether a request is in flight. */
  private busy = false;
  /** Set when the connection ended; nothing is sent after. */
  private stopped = false;
  /** Aborts the request in flight when the connection ends. */
  private readonly abort = new AbortController();

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly fetchImpl: FetchLike,
    /** Called once when a send proves the connection is over. */
    private readonly onFatal: (info: CloseInfo) => void,
  ) {}

  /** Starts sending, to `session`, what was queued. */
  start(session: string): void {
    this.session = session;
    void this.pump();
  }

  /** Queues a frame. */
  send(frame: ClientFrame): void {
    if (this.stopped) return;
    this.queue.push(frame);
    void this.pump();
  }

  /** Stops for good and aborts the request in flight. */
  stop(): void {
    this.stopped = true;
    this.queue = [];
    this.abort.abort();
  }

  private async pump(): Promise<void> {
    if (this.busy || this.stopped || this.session === undefined || this.queue.length === 0) return;
    this.busy = true;
    const batch = this.queue;
    this.queue = [];
    const target = `${this.url}${this.url.includes("?") ? "&" : "?"}session=${encodeURIComponent(this.session)}`;
    let failures = 0;
    for (;;) {
      if (this.stopped) return;
      let response: Response;
      try {
        response = await this.fetchImpl(target, {
          method: "POST",
          headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
          body: JSON.stringify(batch),
          signal: this.abort.signal,
        });
      } catch (error) {
        if (this.stopped) return;
        failures += 1;
        if (failures > SEND_RETRIES) {
          this.fail({ reason: `sending frames failed: ${String(error)}` });
          return;
        }
        await sleep(SEND_RETRY_MS * 2 ** (failures - 1));
        continue;
      }
      if (this.stopped) return;
      if (response.ok) break;
      if (response.status === 429) {
        // Too many frames wait for the session task: try the same batch again shortly.
        await sleep(SEND_RETRY_MS);
        continue;
      }
      const info = response.status === 404 ? { reason: "the session is gone (HTTP 404 on send)" } : await refusal(response);
      this.fail(info);
      return;
    }
    this.busy = false;
    void this.pump();
  }

  private fail(info: CloseInfo): void {
    if (this.stopped) return;
    this.stop();
    this.onFatal(info);
  }
}

/**
 * Ends fallback session `session` at once with `DELETE <url>?session=<id>` (fire and forget,
 * with `keepalive` so it still goes out while a page unloads). Without it the gateway would keep
 * the session until `fallback.session_timeout_ms` and count it as a heartbeat timeout.
 */
export function endSession(url: string, session: string, token: string, fetchImpl: FetchLike): void {
  const target = `${url}${url.includes("?") ? "&" : "?"}session=${encodeURIComponent(session)}`;
  try {
    fetchImpl(target, { method: "DELETE", headers: { authorization: `Bearer ${token}` }, keepalive: true }).then(
      (response) => void response.body?.cancel().catch(() => {}),
      () => {},
    );
  } catch {
    // Nothing more can be done: the session then times out on the gateway.
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
