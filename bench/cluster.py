#!/usr/bin/env python3
"""Two-node fan-out on the Redis broker against one node on the in-memory broker.

Starts its own redis-server and holdfast nodes on loopback, runs `holdfast-bench fanout`
against each setup (the Redis run spreads each room's members over both nodes with
--also-url), and reports deliveries/s, server CPU per delivery (all node processes plus
redis-server, from /proc, over the whole run including the ramp), and Redis commands per
published event (from INFO commandstats). Standard library only. Usage:

    bench/cluster.py [--rooms 20] [--members 100] [--rate 200] [--duration 10] [--runs 3]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
HOLDFAST = os.path.join(TARGET, "release", "holdfast")
BENCH = os.path.join(TARGET, "release", "holdfast-bench")
SECRET = "holdfast-bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_us(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // TICK


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout


def commandstats(port):
    stats = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line.split(":", 1)
            calls = int(rest.split("calls=")[1].split(",")[0])
            stats[name[len("cmdstat_"):]] = calls
    return stats


def node(port, env_extra, name):
    env = dict(os.environ)
    env.update({
        "HOLDFAST_AUTH__HMAC_SECRET": SECRET,
        "HOLDFAST_ROOMS__JOIN": "open",
        "HOLDFAST_LIMITS__MAX_CONNECTIONS_PER_IP": "200000",
        "HOLDFAST_LIMITS__RATE_LIMIT_PER_SEC": "100000",
        "HOLDFAST_LIMITS__RATE_LIMIT_BURST": "100000",
        "HOLDFAST_LIMITS__SEND_RATE_PER_SEC": "1000000",
        "HOLDFAST_LIMITS__SEND_RATE_BURST": "1000000",
        "HOLDFAST_LOG__LEVEL": "warn",
        "HOLDFAST_SERVER__NODE_ID": name,
        "HOLDFAST_API__LISTEN": "",
    })
    env.update(env_extra)
    p = subprocess.Popen([HOLDFAST, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def run_bench(urls, args, pid):
    out = tempfile.mktemp(suffix=".json")
    cmd = [BENCH, "fanout", "--url", urls[0], "--rooms", str(args.rooms), "--members", str(args.members),
           "--rate", str(args.rate), "--size", "64", "--duration", str(args.duration),
           "--server-pid", str(pid), "--json", out, "--quiet"]
    for u in urls[1:]:
        cmd += ["--also-url", u]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HOLDFAST_AUTH__HMAC_SECRET": SECRET})
    with open(out) as f:
        return json.load(f)


def one(setup, args):
    procs = []
    redis = None
    try:
        if setup == "redis":
            rport = free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(rport)
            env = {"HOLDFAST_BROKER__URL": f"redis://127.0.0.1:{rport}/"}
            ports = [free_port(), free_port()]
            procs = [node(ports[0], env, "a"), node(ports[1], env, "b")]
            time.sleep(0.5)
        else:
            ports = [free_port()]
            procs = [node(ports[0], {}, "solo")]
        pids = [p.pid for p in procs] + ([redis.pid] if redis else [])
        before_cpu = {pid: cpu_us(pid) for pid in pids}
        before_cmd = commandstats(rport) if redis else {}
        result = run_bench([f"ws://127.0.0.1:{p}/ws" for p in ports], args, procs[0].pid)
        cpu = {pid: cpu_us(pid) - before_cpu[pid] for pid in pids}
        after_cmd = commandstats(rport) if redis else {}
        t = result["traffic"]
        connections = args.rooms * args.members
        calls = {k: after_cmd.get(k, 0) - before_cmd.get(k, 0) for k in after_cmd}
        scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
        # Each connection runs two scripts at setup (claim the user, join the room) and one
        # when it drops at the end (turning away, which does one ZADD inside the script).
        setup_and_teardown = 2 * connections + calls.get("zadd", 0)
        per_publish = (scripts - setup_and_teardown) / t["publishes"] if redis and t["publishes"] else None
        other = {k: v for k, v in calls.items() if k not in ("evalsha", "eval", "info", "script|load", "subscribe", "unsubscribe", "zrangebyscore", "expire")}
        return {
            "setup": setup,
            "deliveries_per_s": t["deliveries_per_s"],
            "delivered_ratio": t["deliveries"] / max(1, t["expected_deliveries"]),
            "p50_ms": t["latency"]["p50_ms"],
            "p99_ms": t["latency"]["p99_ms"],
            "nodes_cpu_us_per_delivery": sum(cpu[p.pid] for p in procs) / max(1, t["deliveries"]),
            "redis_cpu_us_per_delivery": (cpu[redis.pid] / max(1, t["deliveries"])) if redis else 0.0,
            "redis_scripts_per_publish": per_publish,
            "redis_other_commands": other,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        if redis:
            redis.kill()
            redis.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {"memory": [], "redis": []}
    for i in range(args.runs):
        for setup in ("memory", "redis"):
            r = one(setup, args)
            results[setup].append(r)
            print(json.dumps(r), file=sys.stderr)
    med = {}
    for setup, runs in results.items():
        med[setup] = {k: statistics.median([r[k] for r in runs]) for k in runs[0]
                      if isinstance(runs[0][k], (int, float)) and runs[0][k] is not None}
    keys = ["deliveries_per_s", "delivered_ratio", "p50_ms", "p99_ms", "nodes_cpu_us_per_delivery",
            "redis_cpu_us_per_delivery", "redis_scripts_per_publish"]
    print(f"fanout {args.rooms} rooms x {args.members} members, {args.rate:g} pub/s, {args.duration:g} s, medians of {args.runs}")
    print(f"| metric | 1 node, in-memory | 2 nodes, Redis | Redis / in-memory |")
    print(f"|---|---|---|---|")
    for k in keys:
        a = med["memory"].get(k)
        b = med["redis"].get(k)
        ratio = f"{b / a:.2f}x" if a and b else ""
        fa = "" if a is None else f"{a:,.3g}" if isinstance(a, float) else str(a)
        fb = "" if b is None else f"{b:,.3g}" if isinstance(b, float) else str(b)
        print(f"| {k} | {fa} | {fb} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"medians": med, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
