"""Real processes on 127.0.0.1: redis-server and `holdfast serve`, and the topologies that wire
them (each node reaches Redis through its own fault proxy).

A topology is chosen per scenario by name (`Topology.create`): `single` (one Redis, each node
through its own fault proxy), `sentinel` (a master, a replica and a sentinel; nodes find the
master through the sentinel) and `cluster` (a 3-master Redis Cluster; nodes follow the
cluster's redirections). With `sentinel` and `cluster` the nodes reach Redis directly (the
addresses come from Redis itself), so their faults are Redis's own: a failover, a shard
master restarted without its data.
"""

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import time

from .proxy import FaultProxy
from .wire import resp

SECRET = "chaos-secret-chaos-secret-chaos-secret"


def _die_with_parent() -> None:
    """Child processes get SIGKILL when the harness dies (Linux), so none outlives a killed run."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768 and up): a port the kernel handed out
    would be free now but could be taken by one of the many outgoing connections before the
    process that is to listen on it starts (or restarts, after a kill)."""
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


class Redis:
    """One redis-server on a fixed port; restartable (with or without its data)."""

    def __init__(self, workdir: str, name: str = "redis"):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.name = name

    def spawn(self) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--dbfilename", "dump.rdb", "--save", "",
                "--appendonly", "no", "--enable-debug-command", "local",
                "--protected-mode", "no",
            ],
            stdout=log, stderr=log, preexec_fn=_die_with_parent,
        )

    async def start(self) -> None:
        self.spawn()
        for _ in range(200):
            try:
                if await resp(self.port, "PING", timeout=0.5) == "PONG":
                    return
            except (OSError, RuntimeError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def save_snapshot(self, name: str = "old.rdb") -> str:
        """SAVE now; returns a copy of the RDB (the 'old snapshot')."""
        await resp(self.port, "SAVE")
        keep = os.path.join(self.dir, name)
        shutil.copyfile(os.path.join(self.dir, "dump.rdb"), keep)
        return keep

    async def restart(self, rdb=None) -> None:
        """kill -9, then start again empty, or from `rdb`."""
        self.kill()
        dump = os.path.join(self.dir, "dump.rdb")
        if os.path.exists(dump):
            os.remove(dump)
        if rdb:
            shutil.copyfile(rdb, dump)
        await self.start()


class Node:
    """One `holdfast serve` process reaching Redis through `proxy`."""

    def __init__(self, bin_path: str, workdir: str, index: int, broker_url: str,
                 fixed_id: bool = True):
        self.bin = bin_path
        self.index = index
        self.name = f"n{index}"
        self.port = free_port()
        self.broker_url = broker_url
        self.fixed_id = fixed_id
        self.proc = None
        self.log_path = os.path.join(workdir, f"{self.name}.log")
        self.starts = 0

    def env(self) -> dict:
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("HOLDFAST_")}
        env.update({
            "HOLDFAST_AUTH__HMAC_SECRET": SECRET,
            "HOLDFAST_ROOMS__JOIN": "open",
            "HOLDFAST_BROKER__URL": self.broker_url,
            "HOLDFAST_BROKER__CONNECT_TIMEOUT_SECS": "30",
            "HOLDFAST_API__LISTEN": "",
            "HOLDFAST_SERVER__SHUTDOWN_RECONNECT_AFTER_MS": "100",
            "HOLDFAST_SERVER__DRAIN_TIMEOUT_SECS": "5",
            "HOLDFAST_LIMITS__RATE_LIMIT_PER_SEC": "10000",
            "HOLDFAST_LIMITS__RATE_LIMIT_BURST": "10000",
            "HOLDFAST_LOG__LEVEL": os.environ.get("CHAOS_NODE_LOG", "info"),
        })
        if self.fixed_id:
            env["HOLDFAST_SERVER__NODE_ID"] = self.name
        return env

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, wait_ready: bool = True) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=self.env(), stdout=log, stderr=log, preexec_fn=_die_with_parent,
        )
        if wait_ready:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"node {self.name} exited: see {self.log_path}")
            if await http_status(self.port, "/readyz") == 200:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"node {self.name} not ready within {timeout}s")

    async def sigterm(self, timeout: float = 15.0) -> int:
        """SIGTERM (drain) and wait for the exit; returns the exit status."""
        if not self.alive():
            return -1
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            return -9
        return self.proc.returncode

    def kill9(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()


async def http_status(port: int, path: str) -> int:
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return 0
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(r.readline(), 2.0)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 else 0
    except (OSError, asyncio.TimeoutError, ValueError):
        return 0
    finally:
        w.close()


class Topology:
    """The Redis side of a cluster of nodes. `create(name)` picks the implementation."""

    name = "abstract"

    @staticmethod
    def create(name: str, workdir: str) -> "Topology":
        if name == "single":
            return SingleRedis(workdir)
        if name == "sentinel":
            return SentinelRedis(workdir)
        if name == "cluster":
            return ClusterRedis(workdir)
        raise ValueError(f"unknown topology {name!r}")

    async def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def proxy_target(self, node_index: int) -> int:
        """The Redis port node `node_index`'s proxy forwards to."""
        raise NotImplementedError

    def broker_url(self, proxy: FaultProxy) -> str:
        raise NotImplementedError

    def history_port(self):
        """A Redis port holding the rooms' keys (for the end-of-scenario history check), or
        None where rooms are spread over shards."""
        return None


class SingleRedis(Topology):
    name = "single"

    def __init__(self, workdir: str):
        self.redis = Redis(workdir)

    async def start(self) -> None:
        await self.redis.start()

    def stop(self) -> None:
        self.redis.kill()

    def proxy_target(self, node_index: int) -> int:
        return self.redis.port

    def broker_url(self, proxy: FaultProxy) -> str:
        return f"redis://127.0.0.1:{proxy.port}/"

    def history_port(self):
        return self.redis.port


class ClusterMember(Redis):
    """A Redis Cluster master: the same process with the cluster's settings and its own
    `nodes.conf`, so a restart keeps its identity and slots (and, without persistence, loses
    its data)."""

    def __init__(self, workdir: str, name: str):
        super().__init__(workdir, name)
        self.bus_port = free_port()

    def spawn(self) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--cluster-enabled", "yes",
                "--cluster-node-timeout", "2000", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", "nodes.conf",
            ],
            stdout=log, stderr=log, preexec_fn=_die_with_parent,
        )


class ClusterRedis(Topology):
    """Three masters, no replicas, created with `redis-cli --cluster create`."""

    name = "cluster"

    def __init__(self, workdir: str):
        self.members = [ClusterMember(workdir, f"shard{i}") for i in range(3)]

    async def start(self) -> None:
        await asyncio.gather(*(m.start() for m in self.members))
        out = subprocess.run(
            ["redis-cli", "--cluster", "create",
             *[f"127.0.0.1:{m.port}" for m in self.members],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {out.stdout}{out.stderr}")
        await self.wait_ok()

    async def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for m in self.members:
                try:
                    info = await resp(m.port, "CLUSTER", "INFO", timeout=1.0)
                except (OSError, RuntimeError, asyncio.TimeoutError):
                    info = ""
                ok = ok and "cluster_state:ok" in (info or "")
            if ok:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    async def shard_of(self, room: str) -> int:
        """The index of the master holding `room`'s keys: rooms are in 256 buckets by FNV-1a of
        the name, a bucket's keys under the hash tag `{bN}` (docs/OPERATIONS.md, key layout)."""
        h = 0x811C9DC5
        for b in room.encode():
            h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
        slot = await resp(self.members[0].port, "CLUSTER", "KEYSLOT", "{b%d}" % (h % 256))
        for i, m in enumerate(self.members):
            if await resp(m.port, "CLUSTER", "COUNTKEYSINSLOT", slot) > 0:
                return i
        raise RuntimeError(f"no shard holds keys of room {room!r} (slot {slot})")

    async def restart_shard(self, i: int) -> None:
        """kill -9 of master `i`, started again with its identity and slots and no data."""
        await self.members[i].restart()
        await self.wait_ok()

    def stop(self) -> None:
        for m in self.members:
            m.kill()

    def proxy_target(self, node_index: int) -> int:
        return self.members[0].port

    def broker_url(self, proxy: FaultProxy) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{m.port}" for m in self.members)


class SentinelRedis(Topology):
    """A master, its replica and one sentinel (quorum 1) watching `mymaster`."""

    name = "sentinel"

    def __init__(self, workdir: str):
        self.master = Redis(workdir, "master")
        self.replica = Redis(workdir, "replica")
        self.dir = os.path.join(workdir, "sentinel")
        os.makedirs(self.dir, exist_ok=True)
        self.sentinel_port = free_port()
        self.sentinel = None

    async def start(self) -> None:
        await self.master.start()
        await self.replica.start()
        await resp(self.replica.port, "REPLICAOF", "127.0.0.1", self.master.port)
        await self._until("the replica in sync", self._in_sync)
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {self.sentinel_port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"dir {self.dir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
                "sentinel down-after-milliseconds mymaster 2000\n"
                "sentinel failover-timeout mymaster 10000\n"
            )
        log = open(os.path.join(self.dir, "sentinel.log"), "ab")
        self.sentinel = subprocess.Popen(
            ["redis-server", conf, "--sentinel"],
            stdout=log, stderr=log, preexec_fn=_die_with_parent,
        )
        await self._until("the sentinel to know the replica", self._sentinel_sees_replica)

    async def _in_sync(self) -> bool:
        info = await resp(self.replica.port, "INFO", "replication")
        return "master_link_status:up" in (info or "")

    async def _sentinel_sees_replica(self) -> bool:
        replicas = await resp(self.sentinel_port, "SENTINEL", "REPLICAS", "mymaster")
        return bool(replicas)

    async def _until(self, what: str, check, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await check():
                    return
            except (OSError, RuntimeError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    async def master_port(self) -> int:
        addr = await resp(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        return int(addr[1]) if addr else 0

    async def failover(self) -> None:
        """`SENTINEL FAILOVER` (asked again while no replica is fit to promote yet), then waits
        until the sentinel names the other server and it is a master."""
        old = await self.master_port()
        new = self.replica.port if old == self.master.port else self.master.port

        async def asked() -> bool:
            return await resp(self.sentinel_port, "SENTINEL", "FAILOVER", "mymaster") == "OK"

        await self._until("the sentinel to accept the failover", asked)

        async def moved() -> bool:
            role = await resp(new, "ROLE")
            return await self.master_port() == new and bool(role) and role[0] == "master"

        await self._until("the failover", moved)

    def stop(self) -> None:
        if self.sentinel and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait()
        self.master.kill()
        self.replica.kill()

    def proxy_target(self, node_index: int) -> int:
        return self.master.port

    def broker_url(self, proxy: FaultProxy) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/mymaster"
