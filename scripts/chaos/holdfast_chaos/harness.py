"""The harness: a topology, one fault proxy and one `holdfast serve` per node, a workload of
subscribers and publishers, and the per-scenario accounting."""

import asyncio
import json
import time

from .client import Client, Ledger
from .procs import Node, Topology
from .proxy import FaultProxy
from .wire import resp


class Harness:
    def __init__(self, bin_path, workdir, topology="single", nodes=3, fixed_ids=True):
        self.bin = bin_path
        self.workdir = workdir
        self.topology = Topology.create(topology, workdir)
        self.n_nodes = nodes
        self.fixed_ids = fixed_ids
        self.proxies = []
        self.nodes = []
        self.clients = []
        self.ledger = Ledger()
        self.notes = []  # findings of scenario-specific probes (each one fails the scenario)
        self.info = []  # scenario-specific figures that are not failures
        self.race_rounds = 100
        self.rewritten = 0
        self.history_checked = 0
        self.rewritten_notes = []

    async def start(self):
        await self.topology.start()
        for i in range(self.n_nodes):
            proxy = FaultProxy(self.topology.proxy_target(i), f"p{i}")
            await proxy.start()
            self.proxies.append(proxy)
            self.nodes.append(Node(self.bin, self.workdir, i, self.topology.broker_url(proxy),
                                   self.fixed_ids))
        await asyncio.gather(*(n.start() for n in self.nodes))

    def node_port(self, i):
        return self.nodes[i % len(self.nodes)].port

    def workload(self, subscribers, publishers, rooms=3, interval=0.05):
        names = [f"room-{r}" for r in range(rooms)]
        for j in range(publishers):
            c = Client(self, f"pub{j}", [names[j % rooms]], names[j % rooms], node=j,
                       interval=interval)
            self.clients.append(c)
        for i in range(subscribers):
            rs = [names[i % rooms], names[(i + 1) % rooms]] if rooms > 1 else names[:1]
            self.clients.append(Client(self, f"sub{i}", rs, node=i + publishers))
        for c in self.clients:
            c.start()

    async def ready_clients(self, timeout=15):
        """Waits until every client is in all its rooms."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(all(rs.in_room for rs in c.rooms.values()) for c in self.clients):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("clients did not join within the timeout")

    def heal(self):
        """Marks the end of the fault (recovery time is measured from here)."""
        self.ledger.heal_t = time.monotonic()

    async def settle(self, timeout=15):
        """Stops publishing, waits for the last acks and for every client to catch up."""
        pubs = [c for c in self.clients if c.publish_room]
        deadline = time.monotonic() + timeout
        for c in pubs:
            c.publishing = False
        # A publisher holding an unacknowledged publish keeps retrying it (same id).
        while time.monotonic() < deadline and any(
            c.pending is not None and c.terminal is None for c in pubs
        ):
            await asyncio.sleep(0.1)
        while time.monotonic() < deadline:
            if all(self.caught_up(c) for c in self.clients):
                return True
            await asyncio.sleep(0.1)
        return False

    def describe_waiting(self):
        """Who holds the settle up, and where each of them stands (for the report)."""
        out = []
        for c in self.clients:
            p = c.pending if c.publish_room and c.terminal is None else None
            if self.caught_up(c) and p is None:
                continue
            rooms = ", ".join(
                f"{rs.room}: in_room={rs.in_room} op={rs.op} epoch={rs.epoch} last={rs.last_seq}"
                for rs in c.rooms.values())
            out.append(f"{c.user} on node {c.node % len(self.nodes)} connected={c.ws is not None} "
                       f"pending={p and (p['key'], p['tries'])} [{rooms}] "
                       f"closes={c.closes} errors={c.stats['errors']}")
        return out

    def caught_up(self, c):
        if c.terminal is not None:
            return True
        for rs in c.rooms.values():
            if not rs.in_room:
                return False
            top = max((p["seq"] for p in self.ledger.published.values()
                       if p["acked"] and p["room"] == rs.room and p["epoch"] == rs.epoch),
                      default=0)
            if rs.last_seq < top:
                return False
        return True

    async def check_history(self):
        """Compares every client's view of each room with the room's history in Redis (the
        retained tail): a position the client holds with other contents than the room's was
        rewritten without the client being told (a rollback it never heard of)."""
        port = self.topology.history_port()
        if port is None:
            return
        rooms = {rs.room for c in self.clients for rs in c.rooms.values()}
        for room in sorted(rooms):
            try:
                raw = await resp(port, "HGET", f"holdfast:r:{{{room}}}:st", "s")
                entries = await resp(port, "XRANGE", f"holdfast:r:{{{room}}}:s", "-", "+")
            except (OSError, RuntimeError, asyncio.TimeoutError) as e:
                self.info.append(f"history of {room} unreadable: {e!r}")
                continue
            if not raw:
                continue
            epoch = json.loads(raw).get("epoch")
            history = {}
            for entry_id, fields in entries:
                f = json.loads(fields[1])
                seq = int(entry_id.split("-")[0])
                if f.get("type") == "event" and isinstance(f.get("data"), dict):
                    history[seq] = f["data"].get("k")
                else:
                    history[seq] = f"{f.get('type')}:{f.get('authority')}"
            for c in self.clients:
                rs = c.rooms.get(room)
                if rs is None or c.terminal is not None or rs.epoch != epoch:
                    continue
                for seq, key in history.items():
                    mine = rs.view.get(seq)
                    if mine is not None:
                        self.history_checked += 1
                    if mine is not None and mine != key:
                        self.rewritten += 1
                        if len(self.rewritten_notes) < 5:
                            self.rewritten_notes.append((c.user, room, epoch, seq, mine, key))

    async def stop(self):
        await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
        for n in self.nodes:
            n.kill9()
        for p in self.proxies:
            await p.stop()
        self.topology.stop()

    # ---- accounting ----------------------------------------------------------------------
    def account(self, name):
        led = self.ledger
        acked = {k: p for k, p in led.published.items() if p["acked"]}
        row = {"scenario": name, "published": len(led.published), "acked": len(acked),
               "delivered": 0, "expected": 0, "reported": 0, "withdrawn": 0, "silent": 0,
               "dup": 0, "ooo": 0, "jump": 0, "gaps_exact": 0, "gaps_inexact": 0,
               "rejoins": 0, "wrongful_4000": 0, "terminal": 0, "stuck": 0,
               "forks": len(led.forks), "epoch_live": 0, "rolled_back": 0,
               "resume_epoch": 0, "ack_before_copy": 0, "closes": {}, "errors": {},
               "recovery_s": None, "losses": [], "notes": list(self.notes),
               "info": list(self.info) + [f"history positions checked {self.history_checked}"],
               "gap_notes": [], "rewritten": self.rewritten}
        row["notes"].extend(f"rewritten without notice: {n}" for n in self.rewritten_notes)
        row["rolled_back_acked"] = sum(
            1 for p in acked.values() if led.is_withdrawn(p["room"], p["epoch"], p["seq"]))
        recovery = []
        for c in self.clients:
            for k in ("dup", "ooo", "jump", "gaps_exact", "gaps_inexact", "rejoins",
                      "wrongful_4000", "epoch_live", "rolled_back", "resume_epoch",
                      "ack_before_copy"):
                row[k] += c.stats[k]
            for code, n in c.closes.items():
                row["closes"][code] = row["closes"].get(code, 0) + n
            for code, n in c.stats["errors"].items():
                row["errors"][code] = row["errors"].get(code, 0) + n
            row["gap_notes"].extend(c.gap_notes[:3])
            if c.terminal is not None:
                row["terminal"] += 1
            elif not self.caught_up(c):
                row["stuck"] += 1
            first_after = None
            for rs in c.rooms.values():
                for key, p in acked.items():
                    if p["room"] != rs.room:
                        continue
                    got = rs.received.get(key)
                    if got:
                        row["delivered"] += 1
                        row["expected"] += 1
                        if led.heal_t is not None and p["sent_t"] >= led.heal_t:
                            t = min(x[2] for x in got)
                            first_after = t if first_after is None else min(first_after, t)
                        continue
                    e, s = p["epoch"], p["seq"]
                    if rs.told_of(e, s):
                        row["reported"] += 1
                        row["expected"] += 1
                    elif led.is_withdrawn(rs.room, e, s):
                        row["withdrawn"] += 1
                    elif rs.covered(e, s):
                        row["silent"] += 1
                        row["expected"] += 1
                        if len(row["losses"]) < 10:
                            row["losses"].append((c.user, rs.room, key, e, s, rs.coverage[-3:],
                                                  rs.told[-3:]))
            if led.heal_t is not None and c.terminal is None:
                if first_after is None:
                    recovery.append(float("inf"))
                    row["info"].append(f"nothing received after the fault: {c.user}")
                else:
                    recovery.append(first_after - led.heal_t)
        if recovery:
            row["recovery_s"] = max(recovery)
        return row


def failures(row):
    """The reasons a scenario fails (empty when it passes)."""
    out = []
    for k, what in (("silent", "silent losses"), ("dup", "duplicates"),
                    ("forks", "positions with two contents"),
                    ("wrongful_4000", "sessions closed with 4000 by no newer connection"),
                    ("stuck", "clients not caught up"), ("gaps_inexact", "inexact gaps"),
                    ("rewritten", "positions a client holds with other contents than the "
                                  "room's history")):
        if row[k]:
            out.append(f"{row[k]} {what}")
    if row["recovery_s"] == float("inf"):
        out.append("a client received nothing published after the fault ended")
    out.extend(row["notes"])
    return out
