#!/usr/bin/env bash
# Soak: the full lab under `lab chaos` for a long time (30 minutes by
# default), to find what a short test cannot: memory that keeps growing, a
# fault that does not heal, writes lost with synchronous replication, objects
# left behind by `lab down`. Not part of `make test`.
#
#   bench/soak/run.sh                       # 30 minutes, seed drawn at random
#   DURATION=10m SEED=7 bench/soak/run.sh   # shorter, a chosen schedule
#
# What it checks, each as PASS or FAIL in the summary:
#  - memory: every service's mean memory over the last third of the run is at
#    most 1.25 x its mean over the second sixth (after warm-up) + 16 MiB;
#  - every fault healed: each step healed its own fault, and `lab status`
#    shows no fault afterwards;
#  - 0 acknowledged writes lost (the bank audit; the lab runs --preset full,
#    which replicates synchronously);
#  - nothing left: no container, network or volume of the lab after `lab down`.
#
# Memory comes from `docker stats` (the Docker API, not the containers'
# addresses); the load goes through the balancer's loopback port. The raw
# output (chaos report, memory samples, each service's last log lines,
# summary) goes to bench/soak/results/.
#
# Needs: Docker, python3, the lab's binaries and images (make images).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB_BIN=${LAB_BIN:-$ROOT/target/release/lab}
DURATION=${DURATION:-30m}
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
SAMPLE=${SAMPLE:-15}
NAME=soak-$$
[ -x "$LAB_BIN" ] || { echo "error: $LAB_BIN is missing: run \`make images\` first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is missing (apt-get install python3)" >&2; exit 1; }

STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT="$ROOT/bench/soak/results/$STAMP"
mkdir -p "$OUT"
lab() { "$LAB_BIN" --lab "$NAME" "$@"; }
SAMPLER=
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

{
    echo "== soak $STAMP: lab chaos --duration $DURATION --seed $SEED on --preset full"
    echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== commit $(cd "$ROOT" && git rev-parse --short HEAD), $("$LAB_BIN" --version)"
} | tee "$OUT/summary.txt"

lab up --preset full --port 0 >/dev/null

# One line per container per sample: seconds since start, name, bytes.
start=$(date +%s)
(
    while true; do
        now=$(( $(date +%s) - start ))
        docker stats --no-stream --format '{{.Name}}\t{{.MemUsage}}' \
            $(docker ps -q --filter "label=scaling-lab.lab=$NAME") 2>/dev/null |
            awk -v t="$now" -F'\t' '{split($2, a, " / "); print t "\t" $1 "\t" a[1]}'
        sleep "$SAMPLE"
    done
) >"$OUT/memory.tsv" &
SAMPLER=$!

set +e
lab chaos --duration "$DURATION" --seed "$SEED" --scenario mixed --users 10 --json >"$OUT/chaos.json" 2>"$OUT/chaos.stderr"
chaos_rc=$?
set -e
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=
lab status --json >"$OUT/status-after.json"
# The last lines each service wrote, to find out why anything misbehaved.
mkdir -p "$OUT/logs"
for svc in $(python3 -c 'import json,sys; print(" ".join(s["name"] for s in json.load(open(sys.argv[1]))["services"]))' "$OUT/status-after.json"); do
    lab logs "$svc" 2>&1 | tail -n 300 >"$OUT/logs/$svc.txt" || true
done
lab down >/dev/null
left=$( { docker ps -aq --filter "label=scaling-lab.lab=$NAME"; docker network ls -q --filter "label=scaling-lab.lab=$NAME"; docker volume ls -q --filter "label=scaling-lab.lab=$NAME"; } | wc -l)

python3 - "$OUT" "$chaos_rc" "$left" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, collections
out, chaos_rc, left = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
units = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1e3, "MB": 1e6, "GB": 1e9}
def to_bytes(s):
    for u in sorted(units, key=len, reverse=True):
        if s.endswith(u):
            return float(s[: -len(u)]) * units[u]
    return float(s)
series = collections.defaultdict(list)
for line in open(f"{out}/memory.tsv"):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 3 and parts[2]:
        series[parts[1]].append((int(parts[0]), to_bytes(parts[2])))
ok = True
print(f"chaos exit code: {chaos_rc}")
try:
    report = json.load(open(f"{out}/chaos.json"))
except Exception as e:
    print(f"FAIL no chaos report ({e})")
    sys.exit(1)
end = max((t for s in series.values() for t, _ in s), default=0)
print(f"memory (MiB; warm-up = second sixth of the run, late = last third; bound late <= 1.25 x warm-up + 16):")
for name, pts in sorted(series.items()):
    warm = [b for t, b in pts if end / 6 <= t < end / 3]
    late = [b for t, b in pts if t >= 2 * end / 3]
    if not warm or not late:
        print(f"  {name}: too few samples")
        continue
    w, l = sum(warm) / len(warm) / 2**20, sum(late) / len(late) / 2**20
    peak = max(b for _, b in pts) / 2**20
    good = l <= 1.25 * w + 16
    ok &= good
    print(f"  {'PASS' if good else 'FAIL'} {name}: warm-up {w:.1f}, late {l:.1f}, peak {peak:.1f}")
steps = report["timeline"]
unhealed = [e for e in steps if e["result"] != "healed"]
faults_after = [s["name"] for s in json.load(open(f"{out}/status-after.json"))["services"] if s["faults"]]
good = not faults_after and all(e["result"] == "healed" for e in steps if e["result"] != "failed")
ok &= good
kinds = collections.Counter(e["fault"] for e in steps)
print(f"{'PASS' if good else 'FAIL'} faults: {len(steps)} steps ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
      f"not healed by their own step: {len(unhealed)}; faults in status afterwards: {faults_after or 'none'}")
load = report["load"]
lost = load.get("lost_writes", 0)
good = lost == 0
ok &= good
print(f"{'PASS' if good else 'FAIL'} lost writes: {lost} (requests {load['requests']}, ok {load['ok']}, "
      f"session losses {load.get('session_losses')}, stale reads {load.get('stale_reads')})")
good = left == 0
ok &= good
print(f"{'PASS' if good else 'FAIL'} left after lab down: {left} objects")
print("soak:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
