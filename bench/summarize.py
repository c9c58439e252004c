#!/usr/bin/env python3
"""Summarise holdfast-bench results: medians over runs, ratios to each peer, and an SVG plot.

Reads every ``<target>-<scenario>-<run>.json`` in a results directory (written by
``scripts/bench``), and writes:

* ``summary.json``: the median of every headline figure per (target, scenario);
* ``summary.md``: the Markdown tables used in docs/BENCHMARKS.md;
* an SVG bar chart (``--plot``, default ``bench/plots/benchmarks.svg``).

Standard library only, so it runs anywhere Python 3 does.
"""

import argparse
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

TARGETS = ["holdfast", "ws", "socketio", "tungstenite"]
NAMES = {
    "holdfast": "Holdfast",
    "ws": "Node ws",
    "socketio": "socket.io",
    "tungstenite": "tokio-tungstenite",
}
COLORS = {
    "holdfast": "#2b6cb0",
    "ws": "#dd6b20",
    "socketio": "#38a169",
    "tungstenite": "#805ad5",
}

# (scenario, key, label, unit, lower_is_better, extractor)
METRICS = [
    ("idle", "rss_per_conn", "server RSS per idle connection", "B", True,
     lambda r: r["server"]["rss_per_conn_bytes"]),
    ("idle", "anon_per_conn", "server anon RSS per idle connection", "B", True,
     lambda r: r["server"]["rss_anon_per_conn_bytes"]),
    ("idle", "idle_cpu", "idle CPU per connection", "us/s", True,
     lambda r: r["server"]["cpu_us_per_conn_s"]),
    ("idle", "connect_rate", "connect rate", "conn/s", False,
     lambda r: r["connect"]["per_s"]),
    ("idle", "setup_cpu", "server CPU per connection setup", "us", True,
     lambda r: r["server"]["setup_cpu_us_per_conn"]),
    ("fanout", "cpu_per_delivery", "server CPU per delivery", "us", True,
     lambda r: r["server"]["cpu_us_per_delivery"]),
    ("fanout", "deliveries_per_s", "deliveries per second", "/s", False,
     lambda r: r["traffic"]["deliveries_per_s"]),
    ("fanout", "delivered", "delivered / expected", "", False,
     lambda r: r["traffic"]["deliveries"] / max(1, r["traffic"]["expected_deliveries"])),
    ("fanout", "p50", "fan-out latency p50", "ms", True,
     lambda r: r["traffic"]["latency"]["p50_ms"]),
    ("fanout", "p99", "fan-out latency p99", "ms", True,
     lambda r: r["traffic"]["latency"]["p99_ms"]),
    ("fanout", "p999", "fan-out latency p99.9", "ms", True,
     lambda r: r["traffic"]["latency"]["p999_ms"]),
    ("echo", "rtt_per_s", "echo round trips per second", "/s", False,
     lambda r: r["traffic"]["deliveries_per_s"]),
    ("echo", "cpu_per_rtt", "server CPU per round trip", "us", True,
     lambda r: r["server"]["cpu_us_per_delivery"]),
    ("echo", "rtt_p50", "echo round trip p50", "ms", True,
     lambda r: r["traffic"]["latency"]["p50_ms"]),
    ("echo", "rtt_p99", "echo round trip p99", "ms", True,
     lambda r: r["traffic"]["latency"]["p99_ms"]),
    ("storm", "dropped", "connections dropped at once", "", False,
     lambda r: r["storm"]["dropped"]),
    ("storm", "resumed", "connections resumed", "", False,
     lambda r: r["storm"]["resumed"]),
    ("storm", "recovery_ms", "time to full recovery", "ms", True,
     lambda r: r["storm"]["recovery_ms"]),
    ("storm", "recovery_p50", "per-connection recovery p50", "ms", True,
     lambda r: r["storm"]["recovery"]["p50_ms"]),
    ("storm", "events", "room events in the window", "", False,
     lambda r: r["storm"]["events"]),
    ("storm", "lost", "member-events lost", "", True,
     lambda r: r["storm"]["lost"]),
    ("storm", "duplicated", "member-events duplicated", "", True,
     lambda r: r["storm"]["duplicated"]),
    ("storm", "gap_reported", "seqs reported lost in gaps", "", True,
     lambda r: r["storm"]["gap_reported"]),
]


def load(results_dir):
    """Results keyed by (target, case); the case comes from the file name
    ``<target>-<case>-<run>.json`` so that two fan-out loads stay apart."""
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        if name.startswith("summary") or name.count("-") < 2:
            continue
        target, rest = name.split("-", 1)
        case = rest.rsplit("-", 1)[0]
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(r, dict) or "scenario" not in r:
            continue
        runs[(target, case)].append(r)
    return runs


def medians(runs):
    out = {}
    for (target, case), rs in runs.items():
        scenario = rs[0]["scenario"]
        figures = {"scenario": scenario}
        for sc, key, _label, _unit, _lower, get in METRICS:
            if sc != scenario:
                continue
            values = []
            for r in rs:
                try:
                    values.append(float(get(r)))
                except (KeyError, TypeError):
                    pass
            if values:
                figures[key] = statistics.median(values)
        figures["runs"] = len(rs)
        p = rs[0]["params"]
        figures["params"] = p
        out[f"{target}/{case}"] = figures
    return out


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 1:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return f"{s} {unit}".strip()


def markdown(summary):
    lines = []
    cases = sorted({k.split("/", 1)[1] for k in summary},
                   key=lambda c: (["idle", "fanout", "echo"] + [c]).index(c))
    for case in cases:
        scenario = next(v["scenario"] for k, v in summary.items() if k.endswith("/" + case))
        rows = [m for m in METRICS if m[0] == scenario]
        present = [t for t in TARGETS if f"{t}/{case}" in summary]
        base = summary.get(f"holdfast/{case}", {})
        p = summary[f"{present[0]}/{case}"]["params"]
        runs = {t: summary[f"{t}/{case}"]["runs"] for t in present}
        lines.append(
            f"### {case} ({p['connections']} connections, {p['rooms']} rooms x "
            f"{p['members']}, {p['publish_rate']:g} pub/s of {p['size']} B, "
            f"{p['duration_s']:g} s window; runs: "
            + ", ".join(f"{NAMES[t]} {runs[t]}" for t in present) + ")")
        lines.append("")
        header = "| metric | " + " | ".join(NAMES[t] for t in present)
        peers = [t for t in present if t != "holdfast"]
        if peers and "holdfast" in present:
            header += " | " + " | ".join(f"{NAMES[t]} / Holdfast" for t in peers)
        lines.append(header + " |")
        ncols = 1 + len(present) + (len(peers) if peers and "holdfast" in present else 0)
        lines.append("|---" * ncols + "|")
        for _sc, key, label, unit, _lower, _get in rows:
            cells = [fmt(summary[f"{t}/{case}"].get(key), unit) for t in present]
            ratios = []
            for t in present:
                if t == "holdfast" or "holdfast" not in present:
                    continue
                mine = base.get(key)
                theirs = summary[f"{t}/{case}"].get(key)
                ratios.append(f"{theirs / mine:.2f}x" if mine and theirs is not None else "-")
            lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def svg(summary, path):
    """Grouped bars, one panel per headline metric, each normalised to its own maximum."""
    panels = [
        ("idle", "rss_per_conn", "RSS per idle connection (B)"),
        ("fanout", "cpu_per_delivery", "CPU per delivery (us)"),
        ("fanout", "p99", "fan-out p99 latency (ms)"),
        ("echo", "cpu_per_rtt", "CPU per echo round trip (us)"),
    ]
    present = [t for t in TARGETS if any(k.startswith(t + "/") for k in summary)]
    pw, ph, top, bottom, left = 250, 230, 50, 40, 20
    width = left + pw * len(panels) + 20
    height = top + ph + bottom + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
        "Holdfast and peers, medians (lower is better)</text>",
    ]
    for i, (scenario, key, title) in enumerate(panels):
        x0 = left + i * pw
        values = [(t, summary.get(f"{t}/{scenario}", {}).get(key)) for t in present]
        vmax = max([v for _, v in values if v] or [1])
        out.append(f'<text x="{x0 + pw / 2}" y="{top - 10}" text-anchor="middle">{title}</text>')
        out.append(f'<line x1="{x0 + 10}" y1="{top + ph}" x2="{x0 + pw - 10}" y2="{top + ph}" '
                   'stroke="#333"/>')
        bw = (pw - 40) / max(1, len(values))
        for j, (t, v) in enumerate(values):
            bx = x0 + 20 + j * bw
            if v is None:
                continue
            h = (v / vmax) * (ph - 20)
            out.append(f'<rect x="{bx + 4:.1f}" y="{top + ph - h:.1f}" width="{bw - 8:.1f}" '
                       f'height="{h:.1f}" fill="{COLORS[t]}"/>')
            out.append(f'<text x="{bx + bw / 2:.1f}" y="{top + ph - h - 4:.1f}" '
                       f'text-anchor="middle" font-size="10">{fmt(v)}</text>')
    lx = left
    for t in present:
        out.append(f'<rect x="{lx}" y="{top + ph + 18}" width="12" height="12" '
                   f'fill="{COLORS[t]}"/>')
        out.append(f'<text x="{lx + 16}" y="{top + ph + 28}">{NAMES[t]}</text>')
        lx += 140
    out.append("</svg>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="bench/results")
    ap.add_argument("--plot", default="bench/plots/benchmarks.svg")
    args = ap.parse_args()
    runs = load(args.results)
    if not runs:
        sys.exit(f"no results in {args.results}")
    summary = medians(runs)
    with open(os.path.join(args.results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    md = markdown(summary)
    with open(os.path.join(args.results, "summary.md"), "w") as f:
        f.write(md + "\n")
    svg(summary, args.plot)
    print(md)
    print(f"plot: {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
