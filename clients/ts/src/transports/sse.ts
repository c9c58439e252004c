/**
 * The server-sent events transport: `GET /sse` streams server frames, `POST /sse/send` carries
 * client frames.
 *
 * The stream is read with `fetch` rather than `EventSource`, so the token travels in an
 * `Authorization` header instead of the URL and a refusal's HTTP status (401, 404, 503) is
 * visible. Each message is `id: <session_id>.<n>` plus `data: <frame>`; when the stream breaks
 * while the session is alive, the transport reattaches with `Last-Event-ID` and the server
 * replays what came after, as `EventSource` would. An `event: close` message ends the session
 * with the code it carries.
 */

import type { ClientFrame, WelcomeFrame } from "../protocol.js";
import { endSession, FrameSender, sleep } from "./sender.js";
import { parseFrame, refusal, type CloseInfo, type Connection, type FetchLike, type Transport } from "./transport.js";

/** Reattach attempts after the stream breaks, before the connection is reported lost. */
const REATTACH_ATTEMPTS = 3;
/** The pause before the first reattach, in milliseconds (doubled on each further attempt). */
const REATTACH_DELAY_MS = 250;

/** Opens SSE connections: the stream at `url`, client frames to `sendUrl`. */
export function sseTransport(url: string, sendUrl: string, fetchImpl: FetchLike): Transport {
  return ({ token, handlers }) => {
    let done = false;
    /** The id of the last message received, sent as `Last-Event-ID` when reattaching. */
    let lastEventId: string | undefined;
    /** The session id from `welcome`, to end the session on `close()`. */
    let session: string | undefined;
    let abort = new AbortController();
    const finish = (info: CloseInfo) => {
      if (done) return;
      done = true;
      sender.stop();
      abort.abort();
      handlers.onClose(info);
    };
    const sender = new FrameSender(sendUrl, token, fetchImpl, finish);

    /** Handles one complete SSE message; returns true when it ended the session. */
    const dispatch = (event: string, data: string, id: string | undefined): boolean => {
      if (id !== undefined) lastEventId = id;
      if (event === "close") {
        let info: CloseInfo = { reason: "the server closed the stream" };
        try {
          const parsed = JSON.parse(data) as { code?: number; reason?: string };
          info = { code: parsed.code, reason: parsed.reason ?? info.reason };
        } catch {
          // A close without a readable body still ends the session.
        }
        finish(info);
        return true;
      }
      const frame = parseFrame(data);
      if (!frame) return false;
      if (frame.type === "welcome") {
        session = (frame as WelcomeFrame).session_id;
        sender.start(session);
      }
      handlers.onFrame(frame);
      return false;
    };

    /** Reads one response's stream to its end; returns whether the session ended on purpose. */
    const read = async (body: ReadableStream<Uint8Array>): Promise<boolean> => {
      const reader = body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let event = "";
      let data: string[] = [];
      let id: string | undefined;
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended || done) return done;
        handlers.onActivity();
        buffer += decoder.decode(value, { stream: true });
        let newline: number;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          const width = buffer.startsWith("\r\n", newline) ? 2 : 1;
          buffer = buffer.slice(newline + width);
          if (line === "") {
            if (data.length > 0 && dispatch(event || "message", data.join("\n"), id)) return true;
            event = "";
            data = [];
            id = undefined;
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") data.push(val);
          else if (field === "event") event = val;
          else if (field === "id") id = val;
        }
      }
    };

    const run = async () => {
      let attempts = 0;
      for (;;) {
        const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
        if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
        let response: Response | undefined;
        let failure: CloseInfo | undefined;
        try {
          response = await fetchImpl(url, { headers, signal: abort.signal, cache: "no-store" });
        } catch (error) {
          failure = { reason: `the event stream failed: ${String(error)}` };
        }
        if (done) return;
        if (response && !response.ok) {
          finish(await refusal(response));
          return;
        }
        if (response?.body) {
          attempts = 0;
          try {
            if (await read(response.body)) return;
            failure = { reason: "the event stream ended" };
          } catch (error) {
            failure = { reason: `the event stream broke: ${String(error)}` };
          }
        }
        if (done) return;
        // Without a session there is nothing to reattach to: the client decides what is next.
        if (lastEventId === undefined || attempts >= REATTACH_ATTEMPTS) {
          finish(failure ?? { reason: "the event stream had no body" });
          return;
        }
        await sleep(REATTACH_DELAY_MS * 2 ** attempts);
        attempts += 1;
        if (done) return;
        abort = new AbortController();
      }
    };
    void run();

    const connection: Connection = {
      transport: "sse",
      send(frame: ClientFrame) {
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
