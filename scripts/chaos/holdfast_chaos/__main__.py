"""Entry point: `python3 -m holdfast_chaos [--duration S] [--only a,b] [--bin PATH]`.
Prints one table row per scenario and exits 1 when a scenario failed."""

import argparse
import asyncio
import json
import os
import sys
import time
import traceback

from .harness import Harness, failures
from .scenarios import SCENARIOS


def parse():
    ap = argparse.ArgumentParser(prog="scripts/chaos/run")
    ap.add_argument("--duration", type=float, default=4.0,
                    help="seconds per scenario (the short version: 4)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--bin", default=None, help="the holdfast binary (default: target/debug)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=None)
    ap.add_argument("--publishers", type=int, default=None)
    ap.add_argument("--rooms", type=int, default=3)
    ap.add_argument("--interval-ms", type=float, default=None,
                    help="pause between a publisher's ack and its next publish")
    ap.add_argument("--race-rounds", type=int, default=100)
    ap.add_argument("--workdir", default=None, help="logs and Redis files (default: target/chaos/<time>)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    ap.add_argument("--known-bugs", action="store_true",
                    help="also run the scenarios that fail today for a documented reason")
    ap.add_argument("--list", action="store_true")
    return ap.parse_args()


async def run_one(sc, args, root):
    workdir = os.path.join(root, sc.name)
    os.makedirs(workdir, exist_ok=True)
    h = Harness(args.bin, workdir, topology=sc.topology, nodes=args.nodes, fixed_ids=sc.fixed_ids)
    h.race_rounds = args.race_rounds
    started = time.monotonic()
    try:
        await h.start()
        long_run = args.duration >= 20
        subs = args.subscribers or (30 if long_run else 12)
        pubs = args.publishers or (6 if long_run else 3)
        interval = (args.interval_ms if args.interval_ms is not None else 20) / 1000
        h.workload(subs, pubs, rooms=args.rooms, interval=interval)
        await h.ready_clients()
        await sc.fn(h, args.duration)
        if not await h.settle():
            h.info.append("settle timed out")
            h.info.extend(f"waiting: {w}" for w in h.describe_waiting())
        await h.check_history()
        row = h.account(sc.name)
    except Exception as e:  # the scenario itself broke: report it as a failure
        traceback.print_exc()
        row = h.account(sc.name)
        row["notes"].append(f"harness error: {e!r}")
    finally:
        await h.stop()
    row["seconds"] = round(time.monotonic() - started, 1)
    row["workdir"] = workdir
    return row


def fmt_row(r):
    rec = r["recovery_s"]
    rec = "-" if rec is None else ("never" if rec == float("inf") else f"{rec:.2f}")
    return (f"| {r['scenario']} | {r['acked']} | {r['delivered']} | {r['silent']} | {r['dup']} "
            f"| {r['gaps_exact']}/{r['gaps_inexact']} | {r['reported']} | {r['rolled_back_acked']} "
            f"| {r['rejoins']} | {r['wrongful_4000']} | {rec} | "
            f"{'ok' if not failures(r) else 'FAIL'} |")


HEADER = ("| scenario | acked | delivered | silent losses | duplicates | gaps exact/inexact "
          "| in gaps (told) | acked then rolled back | rejoins | wrongful 4000 | recovery s | result |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def main():
    args = parse()
    if args.list:
        for sc in SCENARIOS:
            print(sc.name + (f"  (known bug: {sc.known_bug})" if sc.known_bug else ""))
        return 0
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(repo, "target"))
    args.bin = args.bin or os.path.join(target, "debug", "holdfast")
    if not os.path.exists(args.bin):
        print(f"chaos: no binary at {args.bin} (cargo build -p holdfast)", file=sys.stderr)
        return 2
    root = args.workdir or os.path.join(target, "chaos", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(root, exist_ok=True)
    only = [s for s in args.only.split(",") if s]
    chosen = [sc for sc in SCENARIOS if sc.name in only or (
        not only and (args.known_bugs or not sc.known_bug))]
    for sc in SCENARIOS:
        if sc.known_bug and sc not in chosen and not only:
            print(f"chaos: skipping {sc.name} (known bug: {sc.known_bug}; --known-bugs runs it)")
    unknown = set(only) - {sc.name for sc in SCENARIOS}
    if unknown:
        print(f"chaos: unknown scenarios {sorted(unknown)}", file=sys.stderr)
        return 2
    rows = []
    print(f"chaos: {len(chosen)} scenarios, {args.duration:g} s each, logs in {root}", flush=True)
    for sc in chosen:
        row = asyncio.run(run_one(sc, args, root))
        rows.append(row)
        print(fmt_row(row), flush=True)
        bad = failures(row)
        extra = {k: row[k] for k in ("published", "ooo", "jump", "epoch_live", "terminal",
                                      "rolled_back", "resume_epoch", "ack_before_copy",
                                      "closes", "errors", "seconds") if row[k]}
        print(f"    {extra} {row['info']}", flush=True)
        for b in bad:
            print(f"    FAIL {sc.name}: {b}", flush=True)
        for loss in row["losses"][:5]:
            print(f"    loss: {loss}", flush=True)
        for g in row["gap_notes"][:5]:
            print(f"    inexact gap: {g}", flush=True)
    print()
    print(HEADER)
    for r in rows:
        print(fmt_row(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    failed = [r["scenario"] for r in rows if failures(r)]
    if failed:
        print(f"chaos: FAILED {', '.join(failed)} (logs in {root})")
        return 1
    print("chaos: all scenarios passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
