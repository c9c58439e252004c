"""Compares an Autobahn|Testsuite report (reports/servers/index.json) with expected.json.

Usage: compare.py INDEX_JSON EXPECTED_JSON [--write]

Per case, the behavior (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED), the closing
behavior and the close code the server sent (null: none, for cases where the client closed
without a code) must equal the expected ones; a case missing on either side, or any FAILED,
is a difference, and so is a case where the server closed without a close code (dropped
the connection) but 7.3.1, where the client's close had none. Exits 1 on any difference. --write replaces EXPECTED_JSON with the report
(review the diff before committing it). Runs on Python 2.7 and 3.
"""
from __future__ import print_function

import json
import sys
from collections import Counter


# The only cases where the server's close carries no code: the client's own close had none.
NO_CODE = {"7.3.1"}


def show(r):
    return json.dumps(r, sort_keys=True)


def case_key(case):
    return [int(p) for p in case.split(".")]


def load_report(path):
    with open(path) as f:
        index = json.load(f)
    if len(index) != 1:
        raise SystemExit("expected one agent in %s, found %s" % (path, sorted(index)))
    cases = list(index.values())[0]
    return dict(
        (case, {
            "behavior": r["behavior"],
            "close": r["behaviorClose"],
            "code": r["remoteCloseCode"],
        })
        for case, r in cases.items()
    )


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    got = load_report(argv[1])
    counts = Counter(r["behavior"] for r in got.values())
    print("autobahn: %d cases: %s" % (
        len(got), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
    if "--write" in argv[3:]:
        with open(argv[2], "w") as f:
            f.write("{\n")
            rows = sorted(got.items(), key=lambda kv: case_key(kv[0]))
            for i, (case, r) in enumerate(rows):
                f.write('  "%s": {"behavior": %s, "close": %s, "code": %s}%s\n' % (
                    case, json.dumps(r["behavior"]), json.dumps(r["close"]),
                    json.dumps(r["code"]), "," if i + 1 < len(rows) else ""))
            f.write("}\n")
        print("autobahn: wrote %s" % argv[2])
    with open(argv[2]) as f:
        want = json.load(f)
    diffs = []
    for case in sorted(set(got) | set(want), key=case_key):
        g, w = got.get(case), want.get(case)
        if g is None:
            diffs.append("%s: expected %s, not run" % (case, show(w)))
            continue
        if g["code"] is None and case not in NO_CODE:
            diffs.append("%s: the server sent no close code (connection dropped?)" % case)
        if w is None:
            diffs.append("%s: not expected, got %s" % (case, show(g)))
        elif g != w:
            diffs.append("%s: expected %s, got %s" % (case, show(w), show(g)))
        elif g["behavior"] == "FAILED" or g["close"] == "FAILED":
            diffs.append("%s: FAILED (and expected so: fix expected.json)" % case)
    for d in diffs:
        print("autobahn: DIFFERENCE " + d)
    if diffs:
        print("autobahn: %d difference(s) from %s" % (len(diffs), argv[2]))
        return 1
    print("autobahn: report matches %s" % argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
