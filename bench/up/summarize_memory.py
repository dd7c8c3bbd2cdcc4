#!/usr/bin/env python3
"""Summary of bench/up/memory.sh's results.

    summarize_memory.py RESULTS.tsv SETTLE_SECONDS TARGET_MB

RESULTS.tsv lines: KIND PRESET ROUND SERVICE VALUE, tab-separated, where KIND
is up (seconds until `lab up` returned), down (seconds), load (1-min load
average before the round) or mem (`docker stats` usage such as 5.4MiB).
Prints every round, memory per service (median over rounds) and the median
of the per-round totals with and without the edge (not part of the site),
and whether the total with the edge is within TARGET_MB (10^6 bytes; 0: no
target). Standard library only.
"""

import os
import statistics
import sys
from collections import defaultdict

sys.dont_write_bytecode = True  # no __pycache__ in bench/up
from summarize import mib  # noqa: E402  # the same reading of docker's units as run.sh's summary

EDGE = "edge"  # lab/src/roles/mod.rs, names::EDGE
ORDER = ["edge", "lb-1", "lb-2", "server-1", "server-2", "server-3", "redis", "db-1", "db-2", "db-3", "db-4"]


def mb(m):
    return m * 1024**2 / 1e6


def main():
    path, settle, target = sys.argv[1], sys.argv[2], float(sys.argv[3])
    runs = defaultdict(dict)   # kind -> round -> value
    mem = defaultdict(dict)    # round -> service -> MiB
    preset = "?"
    for line in open(path):
        kind, preset, rnd, svc, value = line.rstrip("\n").split("\t")
        rnd = int(rnd)
        if kind == "mem":
            mem[rnd][svc] = mib(value)
        else:
            runs[kind][rnd] = float(value)
    rounds = sorted(mem)
    if not rounds:
        sys.exit("error: no results")
    services = sorted({s for d in mem.values() for s in d},
                      key=lambda x: (ORDER.index(x) if x in ORDER else 99, x))
    total = {r: sum(mem[r].values()) for r in rounds}
    site = {r: sum(v for s, v in mem[r].items() if s != EDGE) for r in rounds}

    print(f"\n== preset {preset}: memory at rest, {settle} s after healthy (docker stats --no-stream, MiB)")
    print(f"  {'round':>5}  {'lab up (s)':>10}  {'load before':>11}  {'total':>8}  {'without edge':>12}")
    for r in rounds:
        print(f"  {r:>5}  {runs['up'].get(r, float('nan')):>10.2f}  {runs['load'].get(r, float('nan')):>11.2f}"
              f"  {total[r]:>8.1f}  {site[r]:>12.1f}")
    ups = list(runs["up"].values())
    if ups:
        print(f"  lab up: median {statistics.median(ups):.2f} s   min {min(ups):.2f}   max {max(ups):.2f}"
              f"   ({len(ups)} runs, for information: the up time is compared with compose on the default lab by run.sh)")
    loads = list(runs["load"].values())
    cpus = os.cpu_count() or 1
    if loads and statistics.median(loads) > cpus:
        print(f"  note: the machine was busy (median 1-min load {statistics.median(loads):.1f} on {cpus} CPUs);"
              " memory at rest depends little on it, the up times do")

    print(f"\n  {'service':<14} {'median MiB':>10}   {'min':>6} {'max':>6}")
    for s in services:
        v = [mem[r][s] for r in rounds if s in mem[r]]
        print(f"  {s:<14} {statistics.median(v):>10.1f}   {min(v):>6.1f} {max(v):>6.1f}")
    t, w = statistics.median(total.values()), statistics.median(site.values())
    print(f"  {'total':<14} {t:>10.1f}   {min(total.values()):>6.1f} {max(total.values()):>6.1f}"
          f"   = {mb(t):.1f} MB (median of per-round totals)")
    print(f"  {'without edge':<14} {w:>10.1f}   {min(site.values()):>6.1f} {max(site.values()):>6.1f}"
          f"   = {mb(w):.1f} MB")
    if target:
        worst = mb(max(total.values()))
        print(f"  target <= {target:.0f} MB at rest: {'met' if mb(t) <= target else 'NOT met'}"
              f" with the edge ({mb(t):.1f} MB; largest round {worst:.1f} MB),"
              f" {'met' if mb(w) <= target else 'NOT met'} without it ({mb(w):.1f} MB)")


if __name__ == "__main__":
    main()
