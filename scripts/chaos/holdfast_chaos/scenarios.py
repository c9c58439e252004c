"""The scenarios. Each is `async fn(h, d)`: the workload runs meanwhile; `d` is the scenario's
duration in seconds; the fault ends with `h.heal()` (recovery is measured from there).

To add one (Sentinel failover, a Redis Cluster shard restart): write the function, and
register it in SCENARIOS with the topology it needs (`Scenario(name, fn, topology="cluster")`);
the topology (procs.Topology) starts the Redis side and tells each node's proxy where to go.
"""

import asyncio
import random
import time

from .proxy import BLACKHOLE, DELAY, PASS, RESET
from .wire import Closed, WebSocket, resp, token
from .procs import SECRET


class Scenario:
    """`known_bug`: a scenario that fails today for a known, documented reason; the default
    run lists it as skipped, `--only NAME` or `--known-bugs` runs it."""

    def __init__(self, name, fn, topology="single", fixed_ids=True, known_bug=None):
        self.name = name
        self.fn = fn
        self.topology = topology
        self.fixed_ids = fixed_ids
        self.known_bug = known_bug


def redis_port(h):
    return h.topology.redis.port


async def baseline(h, d):
    h.heal()
    await asyncio.sleep(d)


async def rolling_sigterm(h, d):
    await asyncio.sleep(d * 0.2)
    for i, n in enumerate(h.nodes):
        status = await n.sigterm()
        if status != 0:
            h.notes.append(f"{n.name} exited {status} after SIGTERM")
        if i == len(h.nodes) - 1:
            h.heal()  # recovery: from the last node's exit
        await n.start()
        await asyncio.sleep(max(0.5, d * 0.15))
    await asyncio.sleep(d * 0.3)


async def kill9(h, d):
    await asyncio.sleep(d * 0.3)
    victim = h.nodes[random.randrange(len(h.nodes))]
    h.info.append(f"killed {victim.name}")
    victim.kill9()
    h.heal()  # recovery: from the kill (its clients move to the other nodes)
    await asyncio.sleep(0.5)
    await victim.start()
    await asyncio.sleep(d * 0.6)


async def redis_restart(h, d):
    await asyncio.sleep(d * 0.3)
    await h.topology.redis.restart()
    h.heal()
    await asyncio.sleep(d * 0.6)


async def redis_old_snapshot(h, d):
    await asyncio.sleep(d * 0.25)
    rdb = await h.topology.redis.save_snapshot()
    await asyncio.sleep(d * 0.25)
    await h.topology.redis.restart(rdb)
    h.heal()
    await asyncio.sleep(d * 0.5)


async def redis_two_old_snapshots(h, d):
    """Snapshots S1 then S2; Redis comes back from S1 (a new epoch), the room moves on, then
    Redis comes back from S2, a copy of the stream the first rollback had replaced."""
    r = h.topology.redis
    await asyncio.sleep(d * 0.15)
    s1 = await r.save_snapshot("s1.rdb")
    await asyncio.sleep(d * 0.15)
    s2 = await r.save_snapshot("s2.rdb")
    await asyncio.sleep(d * 0.1)
    await r.restart(s1)
    await asyncio.sleep(max(d * 0.3, 2.5))
    await r.restart(s2)
    h.heal()
    # Long enough after the fault for every client to resume or rejoin and see new events,
    # however short the run.
    await asyncio.sleep(max(d * 0.3, 2.5))


async def redis_old_snapshot_after_reconnect(h, d):
    """The snapshot predates some users' current sessions: after it is saved, node 1 is
    killed (its clients reconnect elsewhere, with new sessions), then Redis comes back from
    the snapshot, whose ownership records name the users' older sessions."""
    r = h.topology.redis
    await asyncio.sleep(d * 0.2)
    rdb = await r.save_snapshot()
    h.nodes[1].kill9()
    await asyncio.sleep(max(d * 0.3, 2.0))
    await h.nodes[1].start()
    await r.restart(rdb)
    h.heal()
    await asyncio.sleep(max(d * 0.4, 2.5))


async def redis_client_pause(h, d):
    await asyncio.sleep(d * 0.3)
    await resp(redis_port(h), "CLIENT", "PAUSE", 3000, "ALL")
    probe = asyncio.ensure_future(late_claim_probe(h, slow=0, other=1, user="late-pause",
                                                   heal_after=3.0))
    await asyncio.sleep(3.0)
    h.heal()
    await asyncio.sleep(d * 0.6)
    await probe


async def redis_debug_sleep(h, d):
    await asyncio.sleep(d * 0.3)
    try:
        await resp(redis_port(h), "DEBUG", "SLEEP", 3, timeout=10)
    except RuntimeError as e:
        h.notes.append(f"DEBUG SLEEP refused: {e}")
    h.heal()
    await asyncio.sleep(d * 0.6)


async def partition(h, d):
    """Node 1 cut off from Redis (blackhole): 10 s in runs of 30 s or more, else d/2 (≥ 3 s)."""
    secs = 10.0 if d >= 30 else max(3.0, d * 0.5)
    await asyncio.sleep(d * 0.2)
    h.proxies[1].set(BLACKHOLE)
    probe = asyncio.ensure_future(late_claim_probe(h, slow=1, other=0, user="late-part",
                                                   heal_after=secs))
    await asyncio.sleep(secs)
    h.proxies[1].set(PASS)
    h.heal()
    await asyncio.sleep(max(d * 0.4, 3))
    await probe


async def partition_past_lease(h, d):
    """Node 1 cut off from Redis for 18 s, past its 15 s liveness lease: the other nodes
    turn its members away; when it reaches Redis again it closes its room sessions with 1011
    and they resume."""
    await asyncio.sleep(min(d * 0.2, 5))
    h.proxies[1].set(BLACKHOLE)
    probe = asyncio.ensure_future(late_claim_probe(h, slow=1, other=0, user="late-lease",
                                                   heal_after=18.0))
    await asyncio.sleep(18.0)
    h.proxies[1].set(PASS)
    h.heal()
    await asyncio.sleep(max(d * 0.4, 4))
    await probe


async def proxy_reset(h, d):
    await asyncio.sleep(d * 0.3)
    h.proxies[1].set(RESET)
    await asyncio.sleep(1.0)
    h.proxies[1].set(PASS)
    h.heal()
    await asyncio.sleep(d * 0.6)


async def proxy_delay(h, d):
    await asyncio.sleep(d * 0.2)
    for p in h.proxies:
        p.set(DELAY, 300)
    await asyncio.sleep(max(2.0, d * 0.4))
    for p in h.proxies:
        p.set(PASS)
    h.heal()
    await asyncio.sleep(d * 0.4)


async def late_claim(h, d):
    """Issue case 2: node 0's Redis connection delays every write by 3 s, past the claim's
    2 s deadline; the user gives up on node 0 and moves to node 1; after the heal the late
    claim reaches Redis and must not close the newer session."""
    await asyncio.sleep(d * 0.2)
    h.proxies[0].set(DELAY, 3000)
    probe = asyncio.ensure_future(late_claim_probe(h, slow=0, other=1, user="late-delay",
                                                   heal_after=3.5))
    await asyncio.sleep(3.5)
    h.proxies[0].set(PASS)
    h.heal()
    await asyncio.sleep(max(d * 0.5, 4))
    await probe


# ---- probes of one user's sessions ----------------------------------------------------------
class Session:
    """One raw session of a user, its close code and time recorded by a reader task."""

    def __init__(self, h, node, user):
        self.h, self.node, self.user = h, node, user
        self.ws = None
        self.welcomed_at = None
        self.started_at = None
        self.closed = None  # (code, t)
        self.task = None

    async def open(self, timeout=5.0):
        port = self.h.node_port(self.node)
        self.started_at = time.monotonic()
        self.ws = await WebSocket.connect("127.0.0.1", port,
                                          f"/ws?token={token(SECRET, self.user)}")
        try:
            w = await asyncio.wait_for(self.ws.recv(), timeout)
        except Closed as c:
            # Replaced before its welcome went out (a concurrent newer session won).
            self.welcomed_at = time.monotonic()
            self.closed = (c.code, self.welcomed_at)
            return self
        if w.get("type") != "welcome":
            raise ConnectionError(str(w))
        self.welcomed_at = time.monotonic()
        self.task = asyncio.ensure_future(self.read())
        return self

    async def read(self):
        try:
            while True:
                await self.ws.recv()
        except Closed as c:
            self.closed = (c.code, time.monotonic())
        except (OSError, ValueError):
            self.closed = (1006, time.monotonic())

    async def wait_closed(self, timeout):
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.closed

    async def close(self):
        if self.ws is not None and self.closed is None:
            await self.ws.close(1000)
        if self.task:
            await asyncio.wait([self.task], timeout=2)
            self.task.cancel()
            return
        if self.task:
            self.task.cancel()


async def late_claim_probe(h, slow, other, user, heal_after):
    """During a fault of node `slow`'s Redis link: a session on it (its claim stalls), then
    the same user on node `other`. The newer session must survive the heal."""
    first = Session(h, slow, user)
    opened = asyncio.ensure_future(first.open(timeout=heal_after + 10))
    await asyncio.sleep(2.5)
    newer = Session(h, other, user)
    try:
        await newer.open()
    except (OSError, ConnectionError, asyncio.TimeoutError, Closed) as e:
        h.notes.append(f"late-claim probe: the newer session on n{other} did not open: {e!r}")
        opened.cancel()
        return
    await asyncio.sleep(heal_after - 2.5 + 4.0)
    if newer.closed is not None:
        h.notes.append(f"late-claim probe: the newer session on n{other} was closed with "
                       f"{newer.closed[0]} {newer.closed[1] - newer.welcomed_at:.2f}s after "
                       f"its welcome")
    if opened.done() and not opened.cancelled() and opened.exception() is None:
        h.info.append(f"late session closed {first.closed[0] if first.closed else 'not'}")
    else:
        opened.cancel()
        h.info.append("late session never welcomed")
    await newer.close()
    await first.close()


async def user_race(h, d):
    """One user onto two nodes, `iterations` times: even rounds open one new session on the
    next node (it is the newest: the previous one must get 4000, it must not); odd rounds
    open two at once on two nodes (exactly one survives; the other gets 4000). A round whose
    sessions were all closed before a newer connection of the user was even started lost its
    newest session: a wrongful 4000 (a stale claim won)."""
    h.heal()
    iterations = h.race_rounds
    sessions = []
    n = len(h.nodes)
    wrongful = 0
    both_alive = 0
    for i in range(iterations):
        if i % 2 == 0:
            s = Session(h, i % n, "racer")
            await s.open()
            sessions.append([s])
        else:
            pair = [Session(h, i % n, "racer"), Session(h, (i + 1) % n, "racer")]
            await asyncio.gather(*(s.open() for s in pair))
            sessions.append(pair)
        # Wait for the previous round's sessions, and all but one of this round's, to close.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            prev_open = len(sessions) > 1 and any(s.closed is None for s in sessions[-2])
            this_open = sum(1 for s in sessions[-1] if s.closed is None)
            if not prev_open and this_open <= 1:
                break
            await asyncio.sleep(0.005)
        if sum(1 for s in sessions[-1] if s.closed is None) > 1:
            both_alive += 1
        # Give a stale claim time to show itself before the next round replaces the winner.
        await asyncio.sleep(0.03)
    await asyncio.sleep(1.0)
    # Judge: a session closed before a newer session of the user was welcomed was wrongly
    # closed (the closes of a concurrent pair count against the pair).
    for r, group in enumerate(sessions):
        later = [s.started_at for g in sessions[r + 1:] for s in g]
        successor = min(later) if later else None
        survivors = [s for s in group if s.closed is None or
                     (successor is not None and s.closed[1] >= successor)]
        if not survivors:
            wrongful += 1
            if wrongful <= 3:
                t0 = group[0].started_at
                h.notes.append(f"race round {r}: " + ", ".join(
                    f"n{s.node % n} opened {s.started_at - t0:+.3f}s closed "
                    f"{s.closed[0]} at {s.closed[1] - t0:+.3f}s" for s in group)
                    + (f"; successor opened {successor - t0:+.3f}s" if successor else ""))
        for s in group:
            if s.closed is not None and s.closed[0] != 4000:
                h.notes.append(f"race round {r}: a session closed with {s.closed[0]}")
    last_alive = [s for s in sessions[-1] if s.closed is None]
    if not last_alive:
        h.notes.append("race: the newest session did not survive")
    if wrongful:
        h.notes.append(f"race: {wrongful} of {iterations} rounds lost their newest session")
    if both_alive:
        h.notes.append(f"race: {both_alive} rounds left two sessions of the user open")
    h.info.append(f"race rounds {iterations}")
    for g in sessions:
        for s in g:
            await s.close()
    await asyncio.sleep(max(0.0, d - 1))


async def sentinel_failover(h, d):
    """The sentinel promotes the replica; the nodes follow it (asynchronous replication: what
    the replica had not received comes back as an exact `rolled_back`)."""
    await asyncio.sleep(d * 0.3)
    await h.topology.failover()
    h.heal()  # recovery: from the failover's end
    await asyncio.sleep(d * 0.6)


async def cluster_shard_restart(h, d):
    """One of three shard masters is killed and comes back without its data (same identity
    and slots): rooms on it lose their stream, rooms on the other shards carry on."""
    await asyncio.sleep(d * 0.3)
    # The shard of one of the workload's rooms, so that a room does lose its stream.
    room = sorted({rs.room for c in h.clients for rs in c.rooms.values()})[0]
    shard = await h.topology.shard_of(room)
    h.info.append(f"restarted shard {shard} (room {room})")
    await h.topology.restart_shard(shard)
    h.heal()
    await asyncio.sleep(d * 0.6)


SCENARIOS = [
    Scenario("baseline", baseline),
    Scenario("rolling-sigterm", rolling_sigterm),
    Scenario("kill9-fixed-id", kill9),
    Scenario("kill9-random-id", kill9, fixed_ids=False),
    Scenario("redis-restart-empty", redis_restart),
    Scenario("redis-old-snapshot", redis_old_snapshot),
    Scenario("redis-old-snapshot-after-reconnect", redis_old_snapshot_after_reconnect),
    Scenario("redis-two-old-snapshots", redis_two_old_snapshots),
    Scenario("redis-client-pause", redis_client_pause),
    Scenario("redis-debug-sleep", redis_debug_sleep),
    Scenario("partition-blackhole", partition),
    Scenario("partition-past-lease", partition_past_lease),
    Scenario("proxy-reset", proxy_reset),
    Scenario("proxy-delay", proxy_delay),
    Scenario("late-claim", late_claim),
    Scenario("user-race", user_race),
    Scenario("sentinel-failover", sentinel_failover, topology="sentinel"),
    Scenario("cluster-shard-restart", cluster_shard_restart, topology="cluster"),
]
