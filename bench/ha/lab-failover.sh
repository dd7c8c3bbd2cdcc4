#!/bin/bash
# The failover window of `lab up --balancers 2`, measured through the lab
# itself: real lab images, the `edge`, `lab load` from the host.
#
# For each round: `lab load --scenario ping --rate 20 --duration 14s`
# (bounded: 280 requests on 127.0.0.1), the balancer holding the floating
# address is crashed (or paused) 3 s in, started (or resumed) 9 s in. The
# window is the time from the first to the last failed request (by the time
# each was sent, from `lab load --history`). Then the pair's memory at rest.
#
#   LAB_IMAGE_TAG=... bench/ha/lab-failover.sh            # 5 crashes, 5 pauses
#   CRASHES=2 PAUSES=0 bench/ha/lab-failover.sh
# Writes bench/ha/results/<date>-lab/ (raw histories, summary.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB=${LAB:-bench-ha-$$}
LABBIN=${LABBIN:-target/release/lab}
CRASHES=${CRASHES:-5}
PAUSES=${PAUSES:-5}
OUT=${OUT:-bench/ha/results/$(date -u +%Y-%m-%dT%H%MZ)-lab}
mkdir -p "$OUT"
lab() { "$LABBIN" --lab "$LAB" "$@"; }
trap 'lab down >/dev/null 2>&1 || true' EXIT

{ echo "date: $(date -u +%FT%TZ)"; echo "nproc: $(nproc)"; echo "loadavg at start: $(cat /proc/loadavg)";
  echo "image tag: ${LAB_IMAGE_TAG:-default}"; } > "$OUT/machine.txt"
lab up --balancers 2 --servers 2 --replicas 0 --reads primary --port 0 > "$OUT/up.txt"

# At rest: 20 s after the pair settled, no load.
sleep 20
docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' \
  "$LAB-lb-1" "$LAB-lb-2" "$LAB-edge" > "$OUT/memory.txt"

holder() { lab status --json | jq -r '.services[] | select(.vip == "master") | .name' | head -1; }

round() { # kind index
  local kind=$1 i=$2 h
  h=$(holder)
  [[ -n $h ]] || { echo "no master before $kind $i" >&2; return 1; }
  lab load --scenario ping --rate 20 --duration 14s --history "$OUT/$kind-$i.jsonl" --json \
    > "$OUT/$kind-$i.json" &
  local load=$!
  sleep 3
  if [[ $kind == crash ]]; then lab crash "$h" >/dev/null; else lab pause "$h" >/dev/null; fi
  echo "$kind $i $h $(date -u +%T.%N)" >> "$OUT/faults.txt"
  sleep 6
  if [[ $kind == crash ]]; then lab start "$h" >/dev/null; else lab resume "$h" >/dev/null; fi
  wait "$load"
  # Let the pair settle (one master) before the next round.
  for _ in $(seq 1 60); do [[ -n $(holder) ]] && break; sleep 0.5; done
  sleep 3
}

for i in $(seq 1 "$CRASHES"); do round crash "$i"; done
for i in $(seq 1 "$PAUSES"); do round pause "$i"; done
echo "loadavg at end: $(cat /proc/loadavg)" >> "$OUT/machine.txt"

python3 - "$OUT" > "$OUT/summary.txt" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
print(open(f"{out}/machine.txt").read().strip())
print()
for kind in ("crash", "pause"):
    windows, failed = [], []
    for f in sorted(glob.glob(f"{out}/{kind}-*.jsonl")):
        sent = []
        for line in open(f):
            v = json.loads(line)
            if v["outcome"] != "ok":
                sent.append((v["t_ms"] - v["latency_ms"]) / 1000)
        # Failures of the fault itself: sent before the victim came back (9 s).
        sent = [t for t in sent if t < 9.0]
        failed.append(len(sent))
        windows.append(max(sent) - min(sent) if sent else 0.0)
        print(f"{f.split('/')[-1]}: {len(sent)} failed, window {windows[-1]:.2f} s")
    if windows:
        print(f"{kind}: {len(windows)} rounds, window median {statistics.median(windows):.2f} s, "
              f"min {min(windows):.2f} s, max {max(windows):.2f} s; failed requests median {statistics.median(failed)}")
    print()
print("memory at rest (docker stats):")
print(open(f"{out}/memory.txt").read().strip())
PY
cat "$OUT/summary.txt"
