#!/usr/bin/env python3
"""Summary of bench/up/run.sh's results.

    summarize.py RESULTS.tsv [SETTLE_SECONDS]

RESULTS.tsv lines: KIND SYSTEM ROUND SERVICE VALUE, tab-separated, where KIND
is up (seconds to all healthy), down (seconds), load (1-min load average
before the run), dockerd (CPU seconds the Docker daemon used during the up,
other Docker work on the machine included), start / healthy (seconds from
the command's start, per service, from docker events) or mem (`docker stats` usage such as 5.4MiB). Prints every run,
the medians, the ratio lab/compose, memory per service and in total, and
whether the targets are met. Standard library only.
"""

import os
import re
import statistics
import sys
from collections import defaultdict

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
         "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
SYSTEMS = ("lab", "compose")
ORDER = ["lb-1", "server-1", "server-2", "server-3", "redis", "db-1", "db-2"]
MEM_TARGET_MB = 250  # the default lab at rest, in MB (10^6 bytes): issue #16


def mib(s):
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]+)", s.strip())
    if not m or m.group(2) not in UNITS:
        sys.exit(f"error: cannot read memory usage {s!r}")
    return float(m.group(1)) * UNITS[m.group(2)] / 1024**2


def main():
    path = sys.argv[1]
    settle = sys.argv[2] if len(sys.argv) > 2 else "?"
    runs = defaultdict(dict)      # (kind, system) -> round -> value
    mem = defaultdict(dict)       # (system, round) -> service -> MiB
    events = defaultdict(dict)    # (start|healthy, system, service) -> round -> seconds
    for line in open(path):
        kind, system, rnd, svc, value = line.rstrip("\n").split("\t")
        rnd = int(rnd)
        if kind == "mem":
            mem[(system, rnd)][svc] = mib(value)
        elif kind in ("start", "healthy"):
            events[(kind, system, svc)][rnd] = float(value)
        else:
            runs[(kind, system)][rnd] = float(value)
    rounds = sorted(runs[("up", "lab")])
    if not rounds:
        sys.exit("error: no results")
    med = {s: statistics.median(runs[("up", s)].values()) for s in SYSTEMS}

    print("\n== (a) time from the command's start to every service healthy (seconds)")
    print(f"  {'round':>5}  {'lab up':>8}  {'compose':>8}  {'lab/compose':>11}   load before (lab, compose)"
          "   dockerd CPU s (lab, compose)   down (lab, compose)")
    for r in rounds:
        lab, comp = runs[("up", "lab")][r], runs[("up", "compose")].get(r)
        ratio = f"{lab / comp:.2f}" if comp else "-"
        print(f"  {r:>5}  {lab:>8.2f}  {comp if comp is not None else float('nan'):>8.2f}  {ratio:>11}"
              f"   {runs[('load', 'lab')].get(r, 0):>5.2f}, {runs[('load', 'compose')].get(r, 0):<5.2f}"
              f"                {runs[('dockerd', 'lab')].get(r, float('nan')):>5.2f}, "
              f"{runs[('dockerd', 'compose')].get(r, float('nan')):<5.2f}"
              f"                    {runs[('down', 'lab')].get(r, 0):>5.2f}, {runs[('down', 'compose')].get(r, 0):.2f}")
    for s in SYSTEMS:
        v = list(runs[("up", s)].values())
        print(f"  {s:>7}: median {med[s]:.2f} s   min {min(v):.2f}   max {max(v):.2f}   ({len(v)} runs)")
    for s in SYSTEMS:
        d = list(runs[("dockerd", s)].values())
        if d:
            print(f"  {s:>7}: dockerd CPU during the up: median {statistics.median(d):.2f} s")
    loads = [v for s in SYSTEMS for v in runs[("load", s)].values()]
    cpus = os.cpu_count() or 1
    if loads and statistics.median(loads) > cpus:
        print(f"  WARNING: the machine was busy (median 1-min load {statistics.median(loads):.1f} on {cpus} CPUs):"
              " other work shares the CPUs, so these times are noisy; run again on a quiet machine")
    ratio = med["lab"] / med["compose"]
    paired = [runs[("up", "lab")][r] / runs[("up", "compose")][r] for r in rounds if runs[("up", "compose")].get(r)]
    if paired:
        print(f"  median of the per-round ratios lab/compose: {statistics.median(paired):.2f}"
              f"  (lab faster in {sum(p < 1 for p in paired)} of {len(paired)} rounds)")
    print(f"  ratio of medians lab/compose: {ratio:.2f}  "
          f"({'lab up is faster' if ratio < 1 else 'lab up is SLOWER'}: target <= 1.00 {'met' if ratio <= 1 else 'NOT met'})")

    names = sorted({k[2] for k in events}, key=lambda x: (ORDER.index(x) if x in ORDER else 99, x))
    if names:
        print("\n   where the time goes: seconds from the command's start until Docker started each"
              "\n   container / first reported it healthy (docker events; median over rounds)")
        print(f"  {'service':<14} {'lab start':>9} {'healthy':>8}   {'compose start':>13} {'healthy':>8}")
        for n in names:
            cell = [statistics.median(events[(k, s, n)].values()) if events[(k, s, n)] else float("nan")
                    for s in SYSTEMS for k in ("start", "healthy")]
            print(f"  {n:<14} {cell[0]:>9.2f} {cell[1]:>8.2f}   {cell[2]:>13.2f} {cell[3]:>8.2f}")
        for s in SYSTEMS:
            last = defaultdict(int)
            for r in rounds:
                h = {n: events[("healthy", s, n)][r] for n in names if r in events[("healthy", s, n)]}
                if h:
                    last[max(h, key=h.get)] += 1
            print(f"  {s:>7}: last service to become healthy: "
                  + ", ".join(f"{n} ({c} rounds)" for n, c in sorted(last.items(), key=lambda x: -x[1])))

    print(f"\n== (b) memory at rest, {settle} s after healthy (docker stats --no-stream, MiB; median over rounds)")
    services = sorted({svc for (_, _), d in mem.items() for svc in d},
                      key=lambda x: (ORDER.index(x) if x in ORDER else 99, x))
    per = {s: {svc: statistics.median([mem[(s, r)][svc] for r in rounds if svc in mem.get((s, r), {})] or [0])
               for svc in services} for s in SYSTEMS}
    print(f"  {'service':<14} {'lab':>8} {'compose':>8}")
    for svc in services:
        print(f"  {svc:<14} {per['lab'][svc]:>8.1f} {per['compose'][svc]:>8.1f}")
    totals = {s: [sum(mem[(s, r)].values()) for r in rounds if (s, r) in mem] for s in SYSTEMS}
    tmed = {s: statistics.median(totals[s]) if totals[s] else 0 for s in SYSTEMS}
    print(f"  {'total':<14} {tmed['lab']:>8.1f} {tmed['compose']:>8.1f}   (median of per-round totals)")
    for s in SYSTEMS:
        print(f"  {s:>7} totals per round: {', '.join(f'{t:.1f}' for t in totals[s])} MiB")
    lab_mb = tmed["lab"] * 1024**2 / 1e6
    print(f"  lab total {tmed['lab']:.1f} MiB = {lab_mb:.1f} MB: target <= {MEM_TARGET_MB} MB "
          f"{'met' if lab_mb <= MEM_TARGET_MB else 'NOT met'}"
          f" (largest round {max(totals['lab']) * 1024**2 / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
