"""Clients that follow docs/PROTOCOL.md (join, publish with ids, ack, resume with the
reconnection token, last seq and epoch, gap and rolled_back reports, reconnect with backoff),
and the ledger that accounts for every acknowledged publish.

Accounting, per client and room: the client *covers* a range of the room's stream from its
`joined` position on (per epoch; a resume across an epoch change ends the old epoch's range at
the position it resumed from and opens the new epoch's after `min(last_sequence, base)`; a
`reconnection_failed` ends the range, and the rejoin opens another). Every acknowledged publish
at a covered position must be received (by content), or lie inside a `gap` or `rolled_back`
range the client was told, or be withdrawn (inside some client's `rolled_back`, so it never was
the room's for this client). Anything else is a **silent loss**.
"""

import asyncio
import os
import random
import time

from .procs import SECRET
from .wire import Closed, WebSocket, token

# Self-check of the accounting: CHAOS_SELFCHECK_DROP=N makes every client ignore every Nth
# event it receives; the suite must then report silent losses.
SELFCHECK_DROP = int(os.environ.get("CHAOS_SELFCHECK_DROP", "0"))

TERMINAL = {1000, 1002, 1007, 1008, 1009, 4000, 4006, 4007}
ROOM_MESSAGES = ("event", "authority_changed", "state_set")


class Ledger:
    """What was published and acknowledged, and what every client reported."""

    def __init__(self):
        self.published = {}  # key -> dict(room, sent_t, acked, ack_t, epoch, seq)
        self.withdrawn = []  # (room, epoch, from, to) from any client's rolled_back
        self.positions = {}  # (room, epoch, seq) -> content key, as first received
        self.forks = []  # positions seen with different contents
        self.heal_t = None

    def sent(self, key, room):
        if key not in self.published:
            self.published[key] = {"room": room, "sent_t": time.monotonic(), "acked": False,
                                   "ack_t": None, "epoch": None, "seq": None}

    def position(self, room, epoch, seq, key):
        pos = (room, epoch, seq)
        old = self.positions.setdefault(pos, key)
        if old != key:
            self.forks.append((pos, old, key))

    def is_withdrawn(self, room, epoch, seq):
        return any(r == room and e == epoch and a <= seq <= b for r, e, a, b in self.withdrawn)


class RoomState:
    def __init__(self, room):
        self.room = room
        self.in_room = False
        self.player_id = None
        self.token = None
        self.epoch = None
        self.last_seq = 0
        self.coverage = []  # [epoch, lo (exclusive), hi (inclusive) or None]
        self.told = []  # (epoch, from, to, kind)
        self.received = {}  # key -> [(epoch, seq, t)]
        # The client's view of the room's stream since its latest join: seq -> content, less
        # what a `rolled_back` withdrew. It must agree with the room's history at the end.
        self.view = {}
        self.op = None  # (id, kind, sent_epoch, sent_last) of the join/reconnect in flight

    def close_coverage(self, epoch, hi):
        for c in self.coverage:
            if c[0] == epoch and c[2] is None:
                c[2] = hi

    def close_all(self):
        for c in self.coverage:
            if c[2] is None and c[0] == self.epoch:
                c[2] = self.last_seq
            elif c[2] is None:
                c[2] = c[1]

    def covered(self, epoch, seq):
        return any(e == epoch and lo < seq and (hi is None or seq <= hi)
                   for e, lo, hi in self.coverage)

    def told_of(self, epoch, seq):
        return any(e == epoch and a <= seq <= b for e, a, b, _ in self.told)


class Client:
    def __init__(self, harness, user, rooms, publish_room=None, node=0, interval=0.05):
        self.h = harness
        self.ledger = harness.ledger
        self.user = user
        self.rooms = {r: RoomState(r) for r in rooms}
        self.publish_room = publish_room
        self.node = node
        self.interval = interval
        self.ws = None
        self.stopping = False
        self.publishing = publish_room is not None
        self.terminal = None
        self.closes = {}
        self.stats = {"dup": 0, "ooo": 0, "jump": 0, "gaps_exact": 0, "gaps_inexact": 0,
                      "rejoins": 0, "wrongful_4000": 0, "retries": 0, "gave_up": 0,
                      "epoch_live": 0, "rolled_back": 0, "resume_epoch": 0,
                      "ack_before_copy": 0, "errors": {}}
        self.gap_notes = []
        self.seen_events = 0
        self.n = 0
        self.pending = None  # dict(key, id, copy=(epoch, seq))
        self.acked_event = asyncio.Event()
        self.task = None
        self.connected_at = None
        self.reconnect_after = 0.1

    # ---- connection loop -------------------------------------------------------------
    def start(self):
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        backoff = 0.05
        while not self.stopping and self.terminal is None:
            port = self.h.node_port(self.node)
            try:
                ws = await WebSocket.connect("127.0.0.1", port, f"/ws?token={token_for(self.user)}")
                welcome = await asyncio.wait_for(ws.recv(), 5)
                if welcome.get("type") != "welcome":
                    ws.abort()
                    raise ConnectionError(str(welcome))
            except (OSError, ConnectionError, asyncio.TimeoutError, Closed, ValueError) as e:
                if isinstance(e, Closed) and e.code == 4000:
                    # Replaced before its welcome: no newer connection of this user exists.
                    self.stats["wrongful_4000"] += 1
                self.node += 1
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
                continue
            self.ws = ws
            self.connected_at = time.monotonic()
            pub = None
            try:
                for rs in self.rooms.values():
                    await self.enter(rs)
                if self.publish_room:
                    pub = asyncio.ensure_future(self.publish_loop())
                while True:
                    f = await ws.recv()
                    await self.handle(f)
            except Closed as c:
                code = c.code
            except (OSError, ConnectionError, ValueError) as e:
                code = 1006
                ws.abort()
                self.note_error(f"conn:{type(e).__name__}")
            finally:
                self.ws = None
                if pub:
                    pub.cancel()
                for rs in self.rooms.values():
                    rs.op = None
                    rs.in_room = False
            self.closes[code] = self.closes.get(code, 0) + 1
            if self.stopping:
                break
            if code in TERMINAL:
                self.terminal = code
                if code == 4000:
                    self.stats["wrongful_4000"] += 1
                for rs in self.rooms.values():
                    rs.close_all()
                break
            self.node += 1
            if time.monotonic() - self.connected_at > 2:
                backoff = 0.05
            if code == 1001:
                # The node drains: reconnect after its hint, plus jitter.
                await asyncio.sleep(self.reconnect_after * (1 + random.random()))
            else:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)

    async def send(self, frame):
        ws = self.ws
        if ws is None:
            return
        try:
            await ws.send(frame)
        except (OSError, ConnectionError):
            pass

    def next_id(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    async def enter(self, rs: RoomState):
        """Join the room, or resume it when the client holds a membership."""
        if rs.token is None:
            oid = self.next_id("j")
            rs.op = (oid, "join", None, None)
            await self.send({"type": "join", "room": rs.room, "id": oid})
        else:
            oid = self.next_id("r")
            rs.op = (oid, "reconnect", rs.epoch, rs.last_seq)
            await self.send({"type": "reconnect", "room": rs.room, "player_id": rs.player_id,
                             "token": rs.token, "last_sequence": rs.last_seq,
                             "epoch": rs.epoch, "id": oid})

    async def retry_enter(self, rs, delay=0.2):
        ws = self.ws
        await asyncio.sleep(delay)
        if self.ws is ws and ws is not None and not rs.in_room:
            await self.enter(rs)

    def note_error(self, code):
        e = self.stats["errors"]
        e[code] = e.get(code, 0) + 1

    # ---- publishing --------------------------------------------------------------------
    async def publish_loop(self):
        rs = self.rooms[self.publish_room]
        while True:
            if not rs.in_room or (self.pending is None and not self.publishing):
                await asyncio.sleep(0.02)
                continue
            if self.pending is None:
                self.n += 1
                key = f"{self.user}:{self.n}"
                self.pending = {"key": key, "id": key, "copy": None, "tries": 0}
                self.ledger.sent(key, rs.room)
            p = self.pending
            p["tries"] += 1
            if p["tries"] > 1:
                self.stats["retries"] += 1
            self.acked_event.clear()
            await self.send({"type": "publish", "room": rs.room, "data": {"k": p["key"]},
                             "id": p["id"]})
            try:
                await asyncio.wait_for(self.acked_event.wait(), 3)
            except asyncio.TimeoutError:
                pass
            if self.pending is p:
                if p["tries"] >= 30:
                    self.stats["gave_up"] += 1
                    self.pending = None
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(self.interval)

    # ---- frames ------------------------------------------------------------------------
    async def handle(self, f):
        t = f.get("type")
        if t in ROOM_MESSAGES:
            self.on_message(f)
        elif t == "ack":
            p = self.pending
            if p and f.get("id") == p["id"]:
                rec = self.ledger.published[p["key"]]
                rs = self.rooms[self.publish_room]
                if p["copy"] and p["copy"][1] == f.get("seq"):
                    epoch, seq = p["copy"]
                else:
                    epoch, seq = rs.epoch, f.get("seq")
                    if p["tries"] == 1:
                        # PROTOCOL.md: an ack follows the publisher's own copy of the event.
                        self.stats["ack_before_copy"] += 1
                rec.update(acked=True, ack_t=time.monotonic(), epoch=epoch, seq=seq)
                self.pending = None
                self.acked_event.set()
        elif t == "server_shutdown":
            self.reconnect_after = min(f.get("reconnect_after_ms", 100), 5000) / 1000
        elif t == "joined":
            self.on_joined(f)
        elif t == "reconnected":
            self.on_reconnected(f)
        elif t == "reconnection_failed":
            rs = self.room_of(f)
            if rs and rs.op and rs.op[0] == f.get("id"):
                self.note_error(f"reconnect:{f.get('code')}")
                # The membership is gone (told): close the covered range, join again.
                rs.close_coverage(rs.epoch, rs.last_seq)
                rs.token = None
                rs.in_room = False
                rs.view = {}
                self.stats["rejoins"] += 1
                await self.enter(rs)
        elif t == "error":
            self.note_error(f.get("code"))
            fid = f.get("id")
            for rs in self.rooms.values():
                if rs.op and rs.op[0] == fid:
                    rs.op = None
                    asyncio.ensure_future(self.retry_enter(rs))
            p = self.pending
            if p and fid == p["id"]:
                # Not applied or outcome unknown: the loop retries with the same id
                # (deduplicated by the room).
                self.acked_event.set()

    def room_of(self, f):
        return self.rooms.get(f.get("room"))

    def on_joined(self, f):
        rs = self.room_of(f)
        if rs is None or not rs.op or rs.op[0] != f.get("id"):
            return
        rs.op = None
        rs.in_room = True
        rs.player_id = f["player_id"]
        rs.token = f["reconnection_token"]
        rs.epoch = f["epoch"]
        rs.last_seq = f["seq"]
        rs.coverage.append([rs.epoch, rs.last_seq, None])

    def on_reconnected(self, f):
        rs = self.room_of(f)
        if rs is None or not rs.op or rs.op[0] != f.get("id"):
            return
        _, _, sent_epoch, sent_last = rs.op
        rs.op = None
        rb = f.get("rolled_back")
        if rb:
            self.stats["rolled_back"] += 1
            for q in range(rb["from"], rb["to"] + 1):
                rs.view.pop(q, None)
            rs.told.append((rb["epoch"], rb["from"], rb["to"], "rolled_back"))
            self.ledger.withdrawn.append((rs.room, rb["epoch"], rb["from"], rb["to"]))
        if f["epoch"] != sent_epoch:
            self.stats["resume_epoch"] += 1
            base = rb["from"] - 1 if rb else sent_last
            rs.close_coverage(sent_epoch, min(sent_last, base))
            rs.coverage.append([f["epoch"], min(sent_last, base), None])
            rs.epoch = f["epoch"]
            rs.last_seq = min(sent_last, base)
        events = f.get("events") or []
        gap = f.get("gap")
        if gap:
            first = events[0]["seq"] if events else None
            exact = (gap["epoch"] == rs.epoch and gap["from"] == rs.last_seq + 1
                     and (first == gap["to"] + 1 if first is not None else gap["to"] <= f["seq"]))
            self.stats["gaps_exact" if exact else "gaps_inexact"] += 1
            if not exact:
                self.gap_notes.append((rs.room, rs.epoch, rs.last_seq, gap, first, f["seq"]))
            rs.told.append((gap["epoch"], gap["from"], gap["to"], "gap"))
            rs.last_seq = max(rs.last_seq, gap["to"])
        for ev in events:
            self.on_message(ev)
        rs.last_seq = max(rs.last_seq, f["seq"])
        rs.token = f["reconnection_token"]
        rs.in_room = True

    def on_message(self, f):
        rs = self.room_of(f)
        if rs is None or rs.epoch is None:
            return
        e, s = f.get("epoch"), f.get("seq")
        if e != rs.epoch:
            # A live message of another epoch without a resume that said so.
            self.stats["epoch_live"] += 1
            rs.close_coverage(rs.epoch, rs.last_seq)
            rs.coverage.append([e, s - 1, None])
            rs.epoch, rs.last_seq = e, s - 1
        if s <= rs.last_seq:
            self.stats["ooo"] += 1
        elif s > rs.last_seq + 1:
            self.stats["jump"] += 1
        rs.last_seq = max(rs.last_seq, s)
        if f.get("type") == "event" and isinstance(f.get("data"), dict) and "k" in f["data"]:
            key = f["data"]["k"]
            self.seen_events += 1
            if SELFCHECK_DROP and self.seen_events % SELFCHECK_DROP == 0:
                return
            seen = rs.received.get(key)
            if seen and any(not rs.told_of(pe, ps) for pe, ps, _ in seen):
                self.stats["dup"] += 1
            rs.received.setdefault(key, []).append((e, s, time.monotonic()))
            p = self.pending
            if p and f.get("user_id") == self.user and f.get("id") == p["id"]:
                p["copy"] = (e, s)
        else:
            key = f"{f.get('type')}:{f.get('authority')}"
        rs.view[s] = key
        self.ledger.position(rs.room, e, s, key)

    async def stop(self):
        self.stopping = True
        ws = self.ws
        if ws is not None:
            await ws.close(1000)
        if self.task:
            try:
                await asyncio.wait_for(self.task, 3)
            except (asyncio.TimeoutError, Exception):
                self.task.cancel()


def token_for(user):
    return token(SECRET, user)
