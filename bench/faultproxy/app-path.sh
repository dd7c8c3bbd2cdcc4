#!/usr/bin/env bash
# Benchmark: what lab-faultproxy costs on the path a lab request really takes,
# balancer -> server, when no fault is set.
#
#   wrk -> lab-balancer -> lab-app                    (direct)
#   wrk -> lab-balancer -> lab-faultproxy -> lab-app  (proxy: as in a lab)
#
# The same lab-app process serves both; two balancers with the same settings
# differ only in the upstream address. Rounds alternate between the two, so
# a machine that gets busier part-way hurts both alike. Two requests, each
# measured in its own rounds:
#
#   GET /            the app's cheapest answer (no database, no Redis): the
#                    path where the proxy's share of the work is largest, so
#                    its ratio is the worst a lab request sees;
#   GET /work?ms=1   one millisecond of the app's CPU and no database: a
#                    stand-in for a request that does real work (a product
#                    read in the lab costs the app more than that).
#
# Everything listens on 127.0.0.1; every run is bounded.
#
#   bench/faultproxy/app-path.sh                  # 10 rounds x 3 s per target and request (~2.5 min)
#   ROUNDS=5 DURATION=5s bench/faultproxy/app-path.sh
#   REQUESTS=/ bench/faultproxy/app-path.sh       # only GET /
#   SAVE=0 bench/faultproxy/app-path.sh           # do not write results/
#   PROXY_BIN=/tmp/lab-faultproxy-old bench/faultproxy/app-path.sh
#                                                 # another proxy build (a before/after)
#
# Needs: cargo, wrk (apt-get install wrk).
set -euo pipefail

ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-1}
PROXY_WORKERS=${PROXY_WORKERS:-1}
REQUESTS=${REQUESTS:-/ /work?ms=1}
SAVE=${SAVE:-1}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
for tool in wrk cargo curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool (wrk: apt-get install wrk)" >&2; exit 1; }
done

if [ "$SAVE" = 1 ]; then
    mkdir -p "$ROOT/bench/faultproxy/results"
    OUT="$ROOT/bench/faultproxy/results/app-path-$(date -u +%Y-%m-%dT%H%MZ).txt"
    exec > >(tee "$OUT") 2>&1
fi

echo "== building (release, as make does: the binaries the images carry)"
(cd "$ROOT" && cargo build --release -q --workspace --bins)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="$TARGET_DIR/release"
PROXY_BIN=${PROXY_BIN:-$BIN/lab-faultproxy}

TMP=$(mktemp -d -t lab-bench-app-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE_PORT=
for base in $(seq 32000 10 32990); do
    free=1
    for i in 0 1 2 3 4 5 6; do port_busy $((base + i)) && free=0; done
    if [ "$free" = 1 ]; then BASE_PORT=$base; break; fi
done
[ -n "$BASE_PORT" ] || { echo "no seven free ports in 32000..32999 on 127.0.0.1" >&2; exit 1; }
APP_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
PROXY_ADMIN=$((BASE_PORT + 2))
LB_DIRECT=$((BASE_PORT + 3))
LB_DIRECT_ADMIN=$((BASE_PORT + 4))
LB_PROXY=$((BASE_PORT + 5))
LB_PROXY_ADMIN=$((BASE_PORT + 6))

# The app never reaches this database: `GET /` does not query, and the pool
# connects lazily.
SERVER_NAME=server-1 BIND=127.0.0.1 PORT=$APP_PORT SESSION_STORE=memory \
    DATABASE_URL=postgres://lab@127.0.0.1:1/lab RUST_LOG=error "$BIN/lab-app" &
PIDS+=($!)
APP_PID=$!

RUST_LOG=warn "$PROXY_BIN" --link "service=127.0.0.1:$PROXY_PORT->127.0.0.1:$APP_PORT" \
    --admin "127.0.0.1:$PROXY_ADMIN" --workers "$PROXY_WORKERS" &
PIDS+=($!)
PROXY_PID=$!

balancer() { # listen admin upstream
    cat >"$TMP/lb-$1.toml" <<TOML
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
workers = $WORKERS
strategy = "round-robin"
retries = true
[[upstream]]
name = "server-1"
address = "127.0.0.1:$3"
TOML
    RUST_LOG=warn "$BIN/lab-balancer" --config "$TMP/lb-$1.toml" &
    PIDS+=($!)
}
balancer "$LB_DIRECT" "$LB_DIRECT_ADMIN" "$APP_PORT"
DIRECT_PID=$!
balancer "$LB_PROXY" "$LB_PROXY_ADMIN" "$PROXY_PORT"
VIA_PID=$!

for p in $APP_PORT $PROXY_PORT $PROXY_ADMIN $LB_DIRECT $LB_PROXY; do
    for _ in $(seq 1 100); do port_busy "$p" && break; sleep 0.1; done
    port_busy "$p" || { echo "nothing listens on 127.0.0.1:$p" >&2; exit 1; }
done
for p in $LB_DIRECT $LB_PROXY; do
    for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.2; done
    curl -fsS -o /dev/null "http://127.0.0.1:$p/"
done

# wrk prints "50%  412.00us"; this turns it into microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "ms") n = n * 1000; else if (u == "s") n = n * 1e6; else if (u == "m") n = n * 6e7;
        printf "%.1f", n }'
}
# CPU time (user + system, clock ticks) so far of a process's threads.
cpu_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{t += $14 + $15} END {print t + 0}'; }
HZ=$(getconf CLK_TCK)

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run() { # target url request
    local out a0 a1 p0 p1 rps n p50 p99 errs app_cpu proxy_cpu
    a0=$(cpu_ticks "$APP_PID"); p0=$(cpu_ticks "$PROXY_PID")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
    a1=$(cpu_ticks "$APP_PID"); p1=$(cpu_ticks "$PROXY_PID")
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx/ {print "non-2xx=" $NF} /Socket errors/ {print "socket-errors"}' | paste -sd, -)
    app_cpu=$(awk -v t=$((a1 - a0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    proxy_cpu=$(awk -v t=$((p1 - p0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    printf "%-7s rps=%9s p50=%8sus p99=%8sus cpu/req: app=%5sus proxy=%5sus %s\n" "$1" "$rps" "$p50" "$p99" "$app_cpu" "$proxy_cpu" "${errs:+errors: $errs}"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$rps" "$p50" "$p99" "$app_cpu" "$proxy_cpu" "$3" >>"$RESULTS"
}

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- services || echo '+changes')"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION; lab-balancer workers=$WORKERS; lab-faultproxy --workers $PROXY_WORKERS; $ROUNDS rounds per request"
echo "== proxy binary: $PROXY_BIN (sha256 $(sha256sum "$PROXY_BIN" | cut -c1-12))"
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -v t="$1" -v c="$2" -v q="$3" -F'\t' '$1 == t && $7 == q {print $c}' "$RESULTS" | median; }
for req in $REQUESTS; do
    echo "== GET $req"
    for r in $(seq 1 "$ROUNDS"); do
        echo "-- round $r"
        if [ $((r % 2)) = 1 ]; then
            run direct "http://127.0.0.1:$LB_DIRECT$req" "$req"; run proxy "http://127.0.0.1:$LB_PROXY$req" "$req"
        else
            run proxy "http://127.0.0.1:$LB_PROXY$req" "$req"; run direct "http://127.0.0.1:$LB_DIRECT$req" "$req"
        fi
    done
done
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

for req in $REQUESTS; do
    d_rps=$(col direct 2 "$req"); p_rps=$(col proxy 2 "$req")
    d_p50=$(col direct 3 "$req"); p_p50=$(col proxy 3 "$req")
    d_p99=$(col direct 4 "$req"); p_p99=$(col proxy 4 "$req")
    d_app=$(col direct 5 "$req"); p_app=$(col proxy 5 "$req"); p_cpu=$(col proxy 6 "$req")
    echo "== GET $req: medians over $ROUNDS rounds"
    echo "direct: rps=$d_rps p50=${d_p50}us p99=${d_p99}us cpu/req: app=${d_app}us"
    echo "proxy:  rps=$p_rps p50=${p_p50}us p99=${p_p99}us cpu/req: app=${p_app}us proxy=${p_cpu}us"
    awk -v d="$d_rps" -v p="$p_rps" -v d50="$d_p50" -v p50="$p_p50" 'BEGIN {
        printf "throughput with the proxy: x%.3f of direct (target >= x0.9)\n", p / d
        printf "p50 under this load: %+.1f us with the proxy (the one-connection figure is run.sh'"'"'s)\n", p50 - d50 }'
done
