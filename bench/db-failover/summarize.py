#!/usr/bin/env python3
"""Print the figures of one failover trial run (images/postgres/trial/failover.sh)
as Markdown, read from its raw output directory, so no figure in the README is
typed by hand.

    bench/db-failover/summarize.py bench/db-failover/results/<run>
"""

import pathlib
import re
import statistics
import sys

UNITS = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}


def mib(text):
    m = re.match(r"([\d.]+)([KMG]?i?B)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def memory(path):
    """{label: [(node, MiB), ...]} from the docker stats lines of memory.txt."""
    out, label = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            label = re.sub(r" \(\d{4}-.*\)$", "", line[3:])
            out[label] = []
        elif label and re.match(r"^\S+ [\d.]+[KMG]?i?B / ", line):
            name, usage = line.split()[:2]
            out[label].append((name.split("-", 2)[-1], mib(usage)))
    return out


def programs(path):
    """{label: {program: kB summed over the nodes}} from the ps lines of memory.txt."""
    out, label = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("== "):
            label = re.sub(r" \(\d{4}-.*\)$", "", line[3:])
            out[label] = {}
        m = re.match(r"^(\d+) (postgres|patroni|etcd)$", line)
        if label and m:
            out[label][m.group(2)] = out[label].get(m.group(2), 0) + int(m.group(1))
    return out


def main(run):
    run = pathlib.Path(run)
    print(f"Run `{run.name}`\n")
    print("```")
    print((run / "machine.txt").read_text().strip())
    print("```\n")

    kills = run / "three-kills.txt"
    if kills.exists():
        rows = [line.split() for line in kills.read_text().splitlines()[1:]]
        times = [float(r[4]) for r in rows if r[4] != "none"]
        print("### Killing the primary of 3 nodes (`docker kill`)\n")
        print("| round | killed | writes again (s) | failed reads on a replica | old primary rejoined (s) | timeline | same history | same rows |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[4]} | {r[5]} | {r[6]} | {r[7]} → {r[8]} | {r[9]} | {r[10]} |")
        if times:
            print(f"\nTime to writes-again over {len(times)} kills: min {min(times):.2f} s, "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s "
                  f"({len(rows) - len(times)} kill(s) without writes again).\n")

    mem = run / "memory.txt"
    if mem.exists():
        print("### Memory at rest (`docker stats --no-stream`)\n")
        print("| cluster | per node (MiB) | total (MiB) |")
        print("|---|---|---|")
        for label, nodes in memory(mem).items():
            per = ", ".join(f"{n} {v:.1f}" for n, v in nodes)
            print(f"| {label} | {per} | {sum(v for _, v in nodes):.1f} |")
        print("\nResident memory by program, summed over the nodes (kB; every postgres process "
              "counts the shared buffers it touched, so postgres is over-counted):\n")
        print("| cluster | postgres | patroni | etcd |")
        print("|---|---|---|---|")
        for label, progs in programs(mem).items():
            print(f"| {label} | {progs.get('postgres', 0)} | {progs.get('patroni', '-')} | {progs.get('etcd', '-')} |")
        print()

    for name, title in [("three-ops.txt", "Planned operations on 3 nodes"),
                        ("two-ops.txt", "Two nodes (1 replica), failover on"),
                        ("twopaused-ops.txt", "Two nodes, failover off (paused)"),
                        ("twoone-ops.txt", "Two nodes, one etcd member on db-1"),
                        ("stop-ops.txt", "Graceful stop of the primary (docker stop)"),
                        ("limited-ops.txt", "Three nodes under a memory limit: one failover and rejoin"),
                        ("lost-summary.txt", "Lost writes when the primary crashes with its replicas cut off")]:
        f = run / name
        if f.exists():
            print(f"### {title} (`{name}`)\n")
            print("```")
            lines = [line for line in f.read_text().splitlines()
                     if not line.startswith(("+", "|", "{", "}", " ", "]", "["))]
            print("\n".join(lines))
            print("```\n")


if __name__ == "__main__":
    main(sys.argv[1])
