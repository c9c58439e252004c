/**
 * The long-polling transport: `GET /poll` creates a session and returns its first frames; each
 * `GET /poll?session=<id>&after=<n>` waits (about 25 s at most) for the frames after `n`.
 * Client frames go to `POST /poll/send`.
 *
 * A poll that fails on the network is retried a few times while the session is alive (it
 * outlives a missing poll for `fallback.session_timeout_ms`); a 404 means the session is gone.
 */

import type { ServerFrame } from "../protocol.js";
import { endSession, FrameSender, sleep } from "./sender.js";
import { refusal, type CloseInfo, type Connection, type FetchLike, type Transport } from "./transport.js";

/** Failed polls tolerated in a row before the connection is reported lost. */
const POLL_RETRIES = 3;
/** The pause before retrying a failed poll, in milliseconds (doubled on each retry). */
const POLL_RETRY_MS = 250;

/** One poll's answer. */
interface PollResponse {
  session_id: string;
  frames: { id: number; frame: ServerFrame }[];
  closed: { code: number; reason: string } | null;
}

/** Opens long-polling connections to `url`, client frames to `sendUrl`. */
export function pollingTransport(url: string, sendUrl: string, fetchImpl: FetchLike, pollTimeoutMs: number): Transport {
  return ({ token, handlers }) => {
    let done = false;
    let abort = new AbortController();
    /** The session id, to end the session on `close()`. */
    let session: string | undefined;
    const finish = (info: CloseInfo) => {
      if (done) return;
      done = true;
      sender.stop();
      abort.abort();
      handlers.onClose(info);
    };
    const sender = new FrameSender(sendUrl, token, fetchImpl, finish);

    const run = async () => {
      let after = 0;
      let failures = 0;
      while (!done) {
        const query = session === undefined ? "" : `session=${encodeURIComponent(session)}&after=${after}`;
        const target = query ? `${url}${url.includes("?") ? "&" : "?"}${query}` : url;
        abort = new AbortController();
        // A poll the server holds longer than it promised is presumed lost.
        const timer = setTimeout(() => abort.abort(), pollTimeoutMs);
        let body: PollResponse | undefined;
        let failure: CloseInfo | undefined;
        try {
          const response = await fetchImpl(target, {
            headers: { authorization: `Bearer ${token}`, accept: "application/json" },
            signal: abort.signal,
            cache: "no-store",
          });
          if (done) return;
          if (response.status === 404 && session !== undefined) {
            finish({ reason: "the session is gone (HTTP 404 on poll)" });
            return;
          }
          if (!response.ok) {
            finish(await refusal(response));
            return;
          }
          body = (await response.json()) as PollResponse;
        } catch (error) {
          failure = { reason: `polling failed: ${String(error)}` };
        } finally {
          clearTimeout(timer);
        }
        if (done) return;
        if (!body) {
          failures += 1;
          if (session === undefined || failures > POLL_RETRIES) {
            finish(failure ?? { reason: "polling failed" });
            return;
          }
          await sleep(POLL_RETRY_MS * 2 ** (failures - 1));
          continue;
        }
        failures = 0;
        handlers.onActivity();
        if (session === undefined) {
          session = body.session_id;
          sender.start(session);
        }
        for (const { id, frame } of body.frames ?? []) {
          // A frame at or below `after` was already handed over by an earlier poll.
          if (id <= after) continue;
          after = id;
          handlers.onFrame(frame);
          if (done) return;
        }
        if (body.closed) {
          finish({ code: body.closed.code, reason: body.closed.reason });
          return;
        }
      }
    };
    void run();

    const connection: Connection = {
      transport: "polling",
      send(frame) {
        sender.send(frame);
      },
      close() {
        const open = !done;
        done = true;
        sender.stop();
        abort.abort();
        if (open && session !== undefined) endSession(url, session, token, fetchImpl);
      },
      drop() {
        // The session stays on the gateway, as after a network failure.
        done = true;
        sender.stop();
        abort.abort();
      },
    };
    return connection;
  };
}
