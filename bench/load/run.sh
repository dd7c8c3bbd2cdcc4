#!/usr/bin/env bash
# How much does the load driver itself cost? Maximum requests per second of
# `lab load` (closed model, N users, scenario `ping` = GET /) against a trivial
# server, next to wrk and oha at the same connection count, alternating runs
# in one go so that machine noise hits all three alike.
#
# Usage: bench/load/run.sh            (from anywhere in the checkout)
#   CONNS=64 DURATION=10 ROUNDS=3 PORT=18080 bench/load/run.sh
#
# It builds (release) the `lab` binary and two examples: load_bench_server (an
# axum server answering "ok" on 127.0.0.1) and load_cli (`lab load` on its
# own, used when the `lab` binary has no `load` subcommand). oha is installed
# from crates.io into bench/load/.tools when missing (`cargo install oha
# --locked`); wrk comes from Debian (`apt-get install wrk`).
#
# On a machine with 2+ CPUs the server is pinned to CPU 0 and every client to
# the others (taskset), so a client never competes with the server for a core:
# the figure is the client's own limit. All traffic stays on 127.0.0.1, and
# every run is bounded by DURATION.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONNS="${CONNS:-64}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
PORT="${PORT:-18080}"
URL="http://127.0.0.1:${PORT}/"
TOOLS="${ROOT}/bench/load/.tools"
TARGET_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}"

die() { echo "error: $*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk is missing: apt-get install wrk"

echo "== building (release)"
(cd "$ROOT" && cargo build --release -p lab --bin lab --example load_bench_server --example load_cli) >&2

OHA="$(command -v oha || true)"
if [ -z "$OHA" ]; then
    OHA="${TOOLS}/bin/oha"
    if [ ! -x "$OHA" ]; then
        echo "== installing oha into ${TOOLS} (once; takes a few minutes)"
        cargo install oha --locked --root "$TOOLS" >&2 || die "cargo install oha failed"
    fi
fi

LAB=("${TARGET_DIR}/release/lab" load)
if ! "${LAB[@]}" --help >/dev/null 2>&1; then
    echo "note: this lab binary has no 'load' subcommand yet; using the load_cli example (same driver, same flags)"
    LAB=("${TARGET_DIR}/release/examples/load_cli")
fi

SERVER_PIN=() CLIENT_PIN=() WRK_THREADS=2
NPROC="$(nproc)"
if [ "$NPROC" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER_PIN=(taskset -c 0)
    CLIENT_PIN=(taskset -c "1-$((NPROC - 1))")
    WRK_THREADS=$((NPROC - 1))
fi

SERVER_PID=""
cleanup() { if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
    die "something already listens on 127.0.0.1:${PORT}; pick another with PORT=..."
fi
"${SERVER_PIN[@]}" "${TARGET_DIR}/release/examples/load_bench_server" "$PORT" 1 2>/dev/null &
SERVER_PID=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && break
    sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null || die "the bench server did not start on port ${PORT}"

run_lab() {
    "${CLIENT_PIN[@]}" "${LAB[@]}" --scenario ping --users "$CONNS" --duration "${DURATION}s" \
        --target "http://127.0.0.1:${PORT}" --json --quiet 2>/dev/null |
        grep -o '"rps": *[0-9.]*' | head -1 | sed 's/.*: *//'
}
run_wrk() {
    "${CLIENT_PIN[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" "$URL" |
        awk '/Requests\/sec/ {print $2}'
}
run_oha() {
    "${CLIENT_PIN[@]}" "$OHA" --no-tui -z "${DURATION}s" -c "$CONNS" "$URL" |
        awk '/Requests\/sec/ {print $2}'
}

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== ${CONNS} connections, ${DURATION}s per run, ${ROUNDS} rounds; server on CPU 0, clients on the rest"
printf '%-6s %12s %12s %12s %10s %10s\n' round lab wrk oha lab/wrk lab/oha
LABS=() WRKS=() OHAS=()
for r in $(seq "$ROUNDS"); do
    lab_rps="$(run_lab)"; sleep 1
    wrk_rps="$(run_wrk)"; sleep 1
    oha_rps="$(run_oha)"; sleep 1
    LABS+=("$lab_rps") WRKS+=("$wrk_rps") OHAS+=("$oha_rps")
    awk -v r="$r" -v l="$lab_rps" -v w="$wrk_rps" -v o="$oha_rps" \
        'BEGIN { printf "%-6s %12.0f %12.0f %12.0f %10.2f %10.2f\n", r, l, w, o, (w > 0 ? l / w : 0), (o > 0 ? l / o : 0) }'
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ml="$(median "${LABS[@]}")" mw="$(median "${WRKS[@]}")" mo="$(median "${OHAS[@]}")"
awk -v l="$ml" -v w="$mw" -v o="$mo" \
    'BEGIN { printf "%-6s %12.0f %12.0f %12.0f %10.2f %10.2f\n", "median", l, w, o, (w > 0 ? l / w : 0), (o > 0 ? l / o : 0) }'
awk -v l="$ml" -v w="$mw" 'BEGIN { if (w > 0 && l / w >= 0.8) print "target met: lab >= 0.8 x wrk"; else print "target missed: lab < 0.8 x wrk" }'
