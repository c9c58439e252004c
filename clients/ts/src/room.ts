/**
 * Per-room objects: `client.room("lobby")` gives the room's own events, requests, members,
 * authority and state, so an application with several rooms does not filter every client
 * event by name.
 *
 * A room object is a view over the client: the membership, its resume and its stream
 * position live in the client, and the room's events reach both the room object and the
 * client's own listeners.
 */

import type { HoldfastClient, Membership } from "./client.js";
import { Emitter } from "./emitter.js";
import type { ErrorCode } from "./generated.js";
import type { AuthorityChangedFrame, EventFrame, Member, PresenceFrame } from "./protocol.js";

/** A join token, or a function that fetches a fresh one for every join (and rejoin). */
export type JoinTokenSource = string | (() => string | Promise<string>);

/** Settings of one room object. */
export interface RoomOptions {
  /** The join token for rooms the connection token's `rooms` claim does not cover. */
  token?: JoinTokenSource;
}

/** Where a room object stands. */
export type RoomStatus = "idle" | "joining" | "joined" | "resuming" | "left";

/** The events of a {@link RoomChannel}, by name. */
export interface RoomEvents {
  /** The room object's status changed. */
  status: RoomStatus;
  /** A room event, once and in order. */
  event: EventFrame;
  /** Membership changes (see `ClientEvents.presence`); `members` is updated before this fires. */
  presence: PresenceFrame;
  authority_changed: AuthorityChangedFrame;
  /** Room frames `from..=to` of `epoch` are lost. */
  gap: { room: string; from: number; to: number; epoch: string };
  /** The room was resumed after a reconnect. */
  resumed: { room: string; recovered: boolean; members: Member[]; memberCount: number; authority: string | null; seq: number; epoch: string };
  /** The room could not be resumed; with `rejoining` the client joins it again. */
  resume_failed: { room: string; code: ErrorCode; message: string; rejoining: boolean };
  /** The room was joined again after a failed resume. */
  rejoined: Membership;
  /** The room's state snapshot, from `joined` or a `state_set`. */
  state: { room: string; state: unknown; seq: number };
}

/** One room, as seen through a {@link HoldfastClient}. */
export class RoomChannel extends Emitter<RoomEvents> {
  private _status: RoomStatus = "idle";
  private _membership: Membership | undefined;
  /** Members by player id, kept from `joined`, presence changes and resumes. */
  private readonly _members = new Map<string, Member>();
  private _memberCount = 0;
  private _authority: string | null = null;

  constructor(
    private readonly client: HoldfastClient,
    /** The room's name. */
    readonly name: string,
    /** The room's settings; `token` may be replaced later through `client.room(name, options)`. */
    readonly options: RoomOptions,
  ) {
    super();
  }

  /** Where the room object stands. */
  get status(): RoomStatus {
    return this._status;
  }

  /** The current membership (player id, seq, epoch), once joined. */
  get membership(): Membership | undefined {
    return this._membership;
  }

  /** The members known to this client (complete when the room's presence mode is `full`). */
  get members(): Member[] {
    return [...this._members.values()];
  }

  /** Members, connected or away, this one included, as the gateway last counted them. */
  get memberCount(): number {
    return this._memberCount;
  }

  /** The player id holding authority, or null. */
  get authority(): string | null {
    return this._authority;
  }

  /** Whether this client's member holds the room's authority. */
  get isAuthority(): boolean {
    return this._membership !== undefined && this._authority === this._membership.playerId;
  }

  /** The latest state snapshot the gateway reported, if any. */
  get state(): unknown {
    return this.client.roomState(this.name)?.state;
  }

  /** Joins the room (with the join token of `options.token`, fetched anew each time). */
  async join(): Promise<Membership> {
    this.setStatus("joining");
    try {
      const token = await this.joinToken();
      const membership = await this.client.join(this.name, token === undefined ? {} : { token });
      this.adopt(membership);
      return membership;
    } catch (error) {
      this.setStatus(this.client.isMember(this.name) ? "joined" : "idle");
      throw error;
    }
  }

  /** Leaves the room. */
  async leave(): Promise<void> {
    await this.client.leave(this.name);
    this._membership = undefined;
    this._members.clear();
    this.setStatus("left");
  }

  /** Publishes `data` to the room; resolves with the event's `seq`. */
  publish(data: unknown): Promise<number> {
    return this.client.publish(this.name, data);
  }

  /** Claims the authority role. */
  claimAuthority(): Promise<void> {
    return this.client.claimAuthority(this.name);
  }

  /** Gives up the authority role. */
  releaseAuthority(): Promise<void> {
    return this.client.releaseAuthority(this.name);
  }

  /** Sets the room's state snapshot (see `HoldfastClient.setState`). */
  setState(state: unknown): Promise<number | undefined> {
    return this.client.setState(this.name, state);
  }

  /** The join token to present, if any. */
  async joinToken(): Promise<string | undefined> {
    const source = this.options.token;
    if (source === undefined || typeof source === "string") return source;
    return await source();
  }

  /**
   * Hands an event of this room to its listeners after updating what the room object keeps.
   * Called by the client; not meant for applications.
   * @internal
   */
  dispatch<K extends keyof RoomEvents>(event: K, payload: RoomEvents[K]): void {
    switch (event) {
      case "presence": {
        const p = payload as PresenceFrame;
        for (const c of p.changes ?? []) {
          if (c.status === "left") this._members.delete(c.player_id);
          else this._members.set(c.player_id, { player_id: c.player_id, user_id: c.user_id, status: c.status });
        }
        this._memberCount = p.count;
        break;
      }
      case "authority_changed":
        this._authority = (payload as AuthorityChangedFrame).authority;
        break;
      case "resumed": {
        const r = payload as RoomEvents["resumed"];
        if (r.members.length > 0 || r.memberCount === 0) this.replaceMembers(r.members);
        this._memberCount = r.memberCount;
        this._authority = r.authority;
        this.setStatus("joined");
        break;
      }
      case "resume_failed":
        this.setStatus((payload as RoomEvents["resume_failed"]).rejoining ? "resuming" : "left");
        break;
      case "rejoined":
        this.adopt(payload as Membership);
        break;
    }
    this.emit(event, payload);
  }

  private adopt(membership: Membership): void {
    this._membership = membership;
    this.replaceMembers(membership.members);
    this._memberCount = membership.memberCount;
    this._authority = membership.authority;
    this.setStatus("joined");
  }

  private replaceMembers(members: Member[]): void {
    this._members.clear();
    for (const m of members) this._members.set(m.player_id, m);
  }

  private setStatus(status: RoomStatus): void {
    if (this._status === status) return;
    this._status = status;
    this.emit("status", status);
  }
}
