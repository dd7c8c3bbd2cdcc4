#!/usr/bin/env bash
# Benchmark: what the fault proxy costs inside a real lab, on the hop from
# the balancer to a server, when no fault is set.
#
#   wrk -> 127.0.0.1 -> lb-1 -> server-1:8000 (fault proxy's link)          (proxy, as a lab runs)
#   wrk -> 127.0.0.1 -> lb-1 -> server-1:18000 (the app itself)              (direct)
#
# Since the app runs the proxy's links in its own process (the link of
# :8000 hands its connections to the app, services/faultproxy/src/local.rs),
# the proxy's CPU is part of the app's; with an image whose server runs a
# separate lab-faultproxy process (before that change), its CPU is also
# shown on its own.
#
# One lab (`lab up --servers 1 --replicas 0 --cache off`), one balancer and
# one server container: the two arms differ only in the address the balancer
# is given for the server, switched between rounds through the balancer's
# admin API (`PUT /servers`, on its loopback port). The app listens on
# 0.0.0.0:18000 inside its container, so the balancer can reach it past the
# proxy; nothing on the host talks to a container's address. Rounds
# alternate which arm goes first, so a machine that gets busier part-way
# hurts both alike.
#
# Unlike app-path.sh (the same binaries on the host's loopback), this is the
# path a lab user's request takes: Docker's port publishing, the balancer
# and the server in containers with their CPU limits (the proxy shares the
# server container's), the database behind its own proxy in both arms.
# Three requests, each in its own rounds:
#
#   GET /             the app's cheapest answer: the proxy's largest share;
#   GET /products/1   a product page read from PostgreSQL (cache off);
#   GET /work?ms=1    one millisecond of the app's CPU, no database.
#
# Each round runs wrk twice per arm: one connection (-t1 -c1: what the hop
# adds to a request when nothing queues) and CONNECTIONS (throughput).
#
#   bench/faultproxy/lab-path.sh                 # 8 rounds x 3 s (~8 min); writes results/lab-path-DATE.txt
#   ROUNDS=4 DURATION=5s bench/faultproxy/lab-path.sh
#   REQUESTS=/ bench/faultproxy/lab-path.sh
#   SAVE=0 bench/faultproxy/lab-path.sh          # print only
#   LAB_BIN=/path/to/lab bench/faultproxy/lab-path.sh
#   NOTE="old app image" bench/faultproxy/lab-path.sh   # a line in the header
#
# Needs: the images (`make images`), a release `lab` (make builds it), wrk,
# curl, python3. A trap runs `lab down` on exit, failure or Ctrl-C.
set -euo pipefail

ROUNDS=${ROUNDS:-8}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
REQUESTS=${REQUESTS:-/ /products/1 /work?ms=1}
SAVE=${SAVE:-1}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB_BIN=${LAB_BIN:-$ROOT/target/release/lab}
for tool in wrk curl python3 docker; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (wrk: apt-get install wrk)" >&2; exit 1; }
done
[ -x "$LAB_BIN" ] || { echo "no $LAB_BIN: run make images (it builds the release binaries)" >&2; exit 1; }

if [ "$SAVE" = 1 ]; then
    mkdir -p "$ROOT/bench/faultproxy/results"
    OUT="$ROOT/bench/faultproxy/results/lab-path-$(date -u +%Y-%m-%dT%H%MZ).txt"
    exec > >(tee "$OUT") 2>&1
fi

LAB=bench-lab-path-$$
TMP=$(mktemp -d -t lab-bench-labpath-XXXXXX)
cleanup() {
    "$LAB_BIN" --lab "$LAB" down >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- services lab || echo '+changes')"
[ -z "${NOTE:-}" ] || echo "== note: $NOTE"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== lab up --servers 1 --replicas 0 --cache off --port 0 (lab $LAB)"
"$LAB_BIN" --lab "$LAB" up --servers 1 --replicas 0 --cache off --port 0 >/dev/null

container() { docker ps -q --filter "label=scaling-lab.lab=$LAB" --filter "label=scaling-lab.service=$1"; }
published() { docker port "$1" "$2" | grep -m1 '^127\.0\.0\.1:' | cut -d: -f2; }
LB=$(container lb-1)
SERVER=$(container server-1)
HTTP=$(published "$LB" 8080/tcp)
ADMIN=$(published "$LB" 9000/tcp)
[ -n "$HTTP" ] && [ -n "$ADMIN" ] || { echo "lb-1 publishes no loopback port" >&2; exit 1; }
echo "== server-1 limits: $(docker inspect -f 'cpus={{.HostConfig.NanoCpus}} memory={{.HostConfig.Memory}}' "$SERVER")"

# The server container's CPU (cgroup v1 or v2) and the proxy's own (its
# process, seen from the host's /proc).
CG=$(docker inspect -f '{{.Id}}' "$SERVER")
cg_file=
for f in /sys/fs/cgroup/cpu,cpuacct/docker/$CG/cpuacct.usage /sys/fs/cgroup/cpuacct/docker/$CG/cpuacct.usage \
    /sys/fs/cgroup/system.slice/docker-$CG.scope/cpu.stat /sys/fs/cgroup/docker/$CG/cpu.stat; do
    [ -r "$f" ] && { cg_file=$f; break; }
done
container_ns() {
    case "$cg_file" in
        "") echo 0 ;;
        *cpu.stat) awk '$1 == "usage_usec" {print $2 * 1000}' "$cg_file" ;;
        *) cat "$cg_file" ;;
    esac
}
PROXY_PID=$(docker top "$SERVER" -eo pid,comm | awk '$2 == "lab-faultproxy" {print $1; exit}')
if [ -n "$PROXY_PID" ]; then
    echo "== server-1 runs the proxy as its own process (pid $PROXY_PID)"
else
    echo "== server-1 runs the proxy's links inside lab-app: the proxy's CPU is part of the app's (shown as 0)"
fi
HZ=$(getconf CLK_TCK)
proxy_ticks() {
    [ -n "$PROXY_PID" ] || { echo 0; return; }
    cat /proc/"$PROXY_PID"/task/*/stat 2>/dev/null | awk '{t += $14 + $15} END {print t + 0}'
}

use_upstream() { # name address
    curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' \
        --data "{\"servers\":[{\"name\":\"$1\",\"address\":\"$2\"}]}" "http://127.0.0.1:$ADMIN/servers"
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$ADMIN/servers" | python3 -c '
import json, sys
s = json.load(sys.stdin)["servers"]
sys.exit(0 if len(s) == 1 and s[0]["state"] == "up" else 1)'; then
            # A few requests so both ends hold warm connections.
            for _ in 1 2 3 4 5; do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP/"; done
            return 0
        fi
        sleep 0.1
    done
    echo "the balancer never saw $2 up" >&2
    exit 1
}

to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "ms") n = n * 1000; else if (u == "s") n = n * 1e6; else if (u == "m") n = n * 6e7;
        printf "%.1f", n }'
}

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run() { # arm request connections threads
    local out c0 c1 p0 p1 rps n p50 errs server_cpu proxy_cpu
    c0=$(container_ns); p0=$(proxy_ticks)
    out=$(wrk -t"$4" -c"$3" -d"$DURATION" --latency "http://127.0.0.1:$HTTP$2")
    c1=$(container_ns); p1=$(proxy_ticks)
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx/ {print "non-2xx=" $NF} /Socket errors/ {print "socket-errors"}' | paste -sd, -)
    server_cpu=$(awk -v t=$((c1 - c0)) -v n="$n" 'BEGIN {printf "%.1f", t / 1000 / n}')
    proxy_cpu=$(awk -v t=$((p1 - p0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    printf "  %-6s c=%-3s rps=%9s p50=%9sus cpu/req: server container=%6sus proxy=%5sus %s\n" \
        "$1" "$3" "$rps" "$p50" "$server_cpu" "$proxy_cpu" "${errs:+errors: $errs}"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$3" "$rps" "$p50" "$server_cpu" "$proxy_cpu" "$2" >>"$RESULTS"
}
arm() { # arm request
    case "$1" in
        direct) use_upstream server-1-direct "server-1:18000" ;;
        proxy) use_upstream server-1 "server-1:8000" ;;
    esac
    run "$1" "$2" 1 1
    run "$1" "$2" "$CONNECTIONS" "$THREADS"
}

echo "== wrk --latency -d$DURATION, 1 connection then -t$THREADS -c$CONNECTIONS; $ROUNDS rounds per request; server container CPU from ${cg_file:-nowhere (no cgroup file found)}"
for req in $REQUESTS; do
    curl -fsS -o /dev/null "http://127.0.0.1:$HTTP$req" || { echo "GET $req fails through the lab" >&2; exit 1; }
    echo "== GET $req"
    for r in $(seq 1 "$ROUNDS"); do
        echo "-- round $r (load $(cut -d' ' -f1 /proc/loadavg))"
        if [ $((r % 2)) = 1 ]; then arm direct "$req"; arm proxy "$req"; else arm proxy "$req"; arm direct "$req"; fi
    done
done
use_upstream server-1 "server-1:8000"
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

# Per request: medians over the rounds, and the median of the per-round
# ratios (each proxy run against the direct run of the same round).
python3 - "$RESULTS" "$CONNECTIONS" <<'PY'
import statistics, sys
from collections import defaultdict
path, conns = sys.argv[1], sys.argv[2]
rows = defaultdict(list)  # (request, arm, conns) -> rows
for line in open(path):
    arm, c, rps, p50, scpu, pcpu, req = line.rstrip("\n").split("\t")
    rows[(req, arm, c)].append((float(rps), float(p50), float(scpu), float(pcpu)))
med = statistics.median
for req in dict.fromkeys(k[0] for k in rows):
    d1, p1 = rows[(req, "direct", "1")], rows[(req, "proxy", "1")]
    dn, pn = rows[(req, "direct", conns)], rows[(req, "proxy", conns)]
    added = [p[1] - d[1] for d, p in zip(d1, p1)]
    ratio = [p[0] / d[0] for d, p in zip(dn, pn)]
    print(f"== GET {req}: medians over {len(d1)} rounds")
    print(f"1 connection: p50 direct {med(x[1] for x in d1):.1f} us, proxy {med(x[1] for x in p1):.1f} us; "
          f"added per hop {med(added):+.1f} us (target <= 50 us)")
    print(f"{conns} connections: rps direct {med(x[0] for x in dn):.0f}, proxy {med(x[0] for x in pn):.0f}; "
          f"throughput with the proxy x{med(ratio):.3f} of direct (per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratio)}; target >= x0.9)")
    print(f"{conns} connections, CPU per request: server container {med(x[2] for x in dn):.1f} us direct, "
          f"{med(x[2] for x in pn):.1f} us with the proxy, of which the proxy {med(x[3] for x in pn):.1f} us")
PY
