/** Builds Node clients of a test gateway and records what they deliver. */

import WebSocket from "ws";
import { HoldfastClient, type ClientOptions, type EventFrame, type WebSocketConstructor } from "../../src/index.js";
import { sign } from "./token.js";

/** What a client delivered to the application, in order. */
export interface Recorder {
  client: HoldfastClient;
  events: EventFrame[];
  /** Every application event name with a short description, in order. */
  log: string[];
  transports: string[];
  closed: { code?: number; reason: string } | undefined;
}

/** A started client for `user` with a recorder attached. */
export function makeClient(url: string, user: string, options: Partial<ClientOptions> = {}): Recorder {
  const client = new HoldfastClient({
    url,
    token: sign(user),
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    backoff: { minMs: 50, maxMs: 500 },
    ...options,
  });
  const rec: Recorder = { client, events: [], log: [], transports: [], closed: undefined };
  client.on("event", (e) => {
    rec.events.push(e);
    rec.log.push(`event ${e.room}#${e.seq}`);
  });
  client.on("presence", (p) => {
    for (const c of p.changes ?? []) rec.log.push(`presence ${c.user_id} ${c.status}`);
  });
  client.on("gap", (g) => rec.log.push(`gap ${g.room} ${g.from}-${g.to}`));
  client.on("resumed", (r) => rec.log.push(`resumed ${r.room} recovered=${r.recovered}`));
  client.on("transport", (t) => rec.transports.push(t.transport));
  client.on("closed", (c) => (rec.closed = c));
  client.connect();
  return rec;
}

/** The `data.n` of every recorded event, in delivery order. */
export const numbers = (rec: Recorder) => rec.events.map((e) => (e.data as { n: number }).n);
