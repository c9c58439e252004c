#!/usr/bin/env python3
"""Summarises scripts/bench-core results (standard library only).

    bench/core_summary.py [LABEL=]DIR ... [--plot FILE.svg] [--plot-skip SERIES,...]

Each DIR holds ``<target>-<case>-<run>.json`` files; with several DIRs (for example the
results before and after a change) the series are named ``LABEL/target``. Prints one markdown
table (medians over runs) and, with --plot, draws server RSS per connection and server CPU per
connection setup for every case and series as grouped bars.
"""

import glob
import json
import os
import statistics
import sys
from collections import defaultdict

CASE_ORDER = ["idle10", "idle150", "room2001", "join100", "join1000", "join10000"]
FIGURES = [
    ("RSS/conn (B)", lambda r: r["server"]["rss_per_conn_bytes"], "{:,.0f}"),
    ("setup CPU/conn (us)", lambda r: r["server"].get("setup_cpu_us_per_conn", 0.0), "{:,.0f}"),
    ("connect rate (/s)", lambda r: r["connect"]["per_s"], "{:,.0f}"),
    ("idle CPU (us/conn/s)", lambda r: r["server"]["cpu_us_per_conn_s"], "{:.2f}"),
]
COLORS = ["#90cdf4", "#2b6cb0", "#fbd38d", "#c05621", "#dd6b20", "#805ad5", "#38a169", "#718096"]


def load(specs):
    runs = defaultdict(list)
    for spec in specs:
        label, _, d = spec.rpartition("=")
        for p in sorted(glob.glob(os.path.join(d, "*.json"))):
            name = os.path.basename(p)[: -len(".json")]
            try:
                target, case, _run = name.rsplit("-", 2)
                with open(p) as f:
                    r = json.load(f)
            except (ValueError, OSError) as e:
                print(f"skipping {p}: {e}", file=sys.stderr)
                continue
            series = f"{label}/{target}" if label else target
            runs[(case, series)].append(r)
    return runs


def medians(runs):
    out = {}
    for key, rs in runs.items():
        vals = []
        for _name, get, _fmt in FIGURES:
            v = []
            for r in rs:
                try:
                    v.append(float(get(r)))
                except (KeyError, TypeError):
                    pass
            vals.append(statistics.median(v) if v else float("nan"))
        out[key] = vals
    return out


def case_key(c):
    return (CASE_ORDER.index(c) if c in CASE_ORDER else len(CASE_ORDER), c)


def markdown(meds):
    head = "| case | series | " + " | ".join(n for n, _g, _f in FIGURES) + " |"
    lines = [head, "|" + "---|" * (len(FIGURES) + 2)]
    for case, series in sorted(meds, key=lambda k: (case_key(k[0]), k[1])):
        vals = meds[(case, series)]
        cells = " | ".join(f.format(v) for (_n, _g, f), v in zip(FIGURES, vals))
        lines.append(f"| {case} | {series} | {cells} |")
    return "\n".join(lines)


def svg(meds, path, skip=()):
    cases = sorted({c for c, _s in meds}, key=case_key)
    series = sorted({s for _c, s in meds if s not in skip})
    panels = [(0, "server RSS per idle connection (B)"), (1, "server CPU per connection setup (us)")]
    w, ph, left, top = 960, 300, 70, 40
    h = top + len(panels) * (ph + 60) + 20 * len(series)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for k, (idx, title) in enumerate(panels):
        y0 = top + k * (ph + 60)
        vals = [meds[(c, s)][idx] for c in cases for s in series
                if (c, s) in meds and meds[(c, s)][idx] == meds[(c, s)][idx]]
        # An outlier would flatten every other bar: bars above 4x the median are clipped and
        # labelled with their value.
        vmax = min(max(vals + [1.0]), 4 * max(statistics.median(vals) if vals else 1.0, 1.0))
        out.append(f'<text x="{left}" y="{y0 - 10}" font-size="13">{title}</text>')
        out.append(f'<line x1="{left}" y1="{y0 + ph}" x2="{w - 10}" y2="{y0 + ph}" stroke="#333"/>')
        gw = (w - left - 20) / max(1, len(cases))
        bw = gw * 0.8 / max(1, len(series))
        for i, c in enumerate(cases):
            gx = left + i * gw
            out.append(f'<text x="{gx + gw * 0.4:.0f}" y="{y0 + ph + 14}" '
                       f'text-anchor="middle">{c}</text>')
            for j, s in enumerate(series):
                v = meds.get((c, s), [float("nan")] * len(FIGURES))[idx]
                if v != v:
                    continue
                bh = ph * min(v, vmax) / vmax
                x = gx + j * bw
                if v > vmax:
                    out.append(f'<text x="{x:.1f}" y="{y0 - 2:.1f}" font-size="9">{v:,.0f}</text>')
                out.append(f'<rect x="{x:.1f}" y="{y0 + ph - bh:.1f}" width="{bw * 0.9:.1f}" '
                           f'height="{bh:.1f}" fill="{COLORS[j % len(COLORS)]}">'
                           f'<title>{s} {c}: {v:,.0f}</title></rect>')
        out.append(f'<text x="{left - 5}" y="{y0 + 4}" text-anchor="end">{vmax:,.0f}</text>')
        out.append(f'<text x="{left - 5}" y="{y0 + ph}" text-anchor="end">0</text>')
    ly = top + len(panels) * (ph + 60) - 20
    for j, s in enumerate(series):
        out.append(f'<rect x="{left}" y="{ly + 20 * j}" width="12" height="12" '
                   f'fill="{COLORS[j % len(COLORS)]}"/>')
        out.append(f'<text x="{left + 18}" y="{ly + 20 * j + 10}">{s}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    args = sys.argv[1:]
    plot, skip = None, ()
    if "--plot-skip" in args:
        i = args.index("--plot-skip")
        skip = tuple(args[i + 1].split(","))
        del args[i:i + 2]
    if "--plot" in args:
        i = args.index("--plot")
        plot = args[i + 1]
        del args[i:i + 2]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    meds = medians(load(args))
    print(markdown(meds))
    if plot:
        svg(meds, plot, skip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
