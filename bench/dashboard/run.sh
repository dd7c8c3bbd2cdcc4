#!/usr/bin/env bash
# What does an open dashboard cost the lab? Throughput of the same lab
# under the same bounded load (`lab load`, closed model, scenario `ping`
# through the balancer), in alternating rounds: without a page open, then
# with a headless Chromium holding the dashboard's page open (its event
# stream, a snapshot a second, the diagram and charts redrawn). The
# dashboard process runs throughout (with no page it reads nothing); its
# peak resident memory (VmHWM, /proc/PID/status) is read at the end.
#
# Usage (from anywhere in the checkout, after `cargo build --release -p lab`):
#   flock /tmp/lab-bench.lock bench/dashboard/run.sh
#   ROUNDS=3 DURATION=20 USERS=16 bench/dashboard/run.sh
#
# Needs Docker with the lab's images and Debian's chromium. The lab is
# its own (dash-bench-PID, free ports) and removed on exit, as are the
# dashboard and the browser (a trap, by PID). Output: one line per round
# and a summary, to stdout; keep it under bench/dashboard/results/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB_BIN="${LAB_BIN:-${ROOT}/target/release/lab}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-20}"
USERS="${USERS:-16}"
LAB="dash-bench-$$"
SCRATCH="$(mktemp -d)"
DASH_PID=""
CHROME_PID=""

die() { echo "error: $*" >&2; exit 1; }
[ -x "$LAB_BIN" ] || die "no $LAB_BIN: cargo build --release -p lab"
command -v chromium >/dev/null || die "chromium is missing: apt-get install chromium"

cleanup() {
    [ -n "$CHROME_PID" ] && kill "$CHROME_PID" 2>/dev/null && wait "$CHROME_PID" 2>/dev/null || true
    [ -n "$DASH_PID" ] && kill "$DASH_PID" 2>/dev/null && wait "$DASH_PID" 2>/dev/null || true
    "$LAB_BIN" --lab "$LAB" down >/dev/null 2>&1 || true
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "# bench/dashboard/run.sh $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
echo "# $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# lab load --scenario ping --users $USERS --duration ${DURATION}s, $ROUNDS rounds each way, alternating"
"$LAB_BIN" --lab "$LAB" up --servers 2 --replicas 0 --port 0 >/dev/null

: >"$SCRATCH/dash.out"
"$LAB_BIN" --lab "$LAB" dashboard --port 0 >"$SCRATCH/dash.out" 2>&1 &
DASH_PID=$!
for _ in $(seq 50); do grep -q 'http://127.0.0.1' "$SCRATCH/dash.out" && break; sleep 0.2; done
URL="$(grep -o 'http://127.0.0.1:[0-9]*/#token=[0-9a-f]*' "$SCRATCH/dash.out" | head -1)"
[ -n "$URL" ] || die "the dashboard printed no URL: $(cat "$SCRATCH/dash.out")"
PORT="$(echo "$URL" | sed 's|http://127.0.0.1:\([0-9]*\)/.*|\1|')"

open_page() {
    chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --window-size=1400,1000 --user-data-dir="$SCRATCH/profile" \
        --remote-debugging-port=0 "$URL" >/dev/null 2>&1 &
    CHROME_PID=$!
    # The page holds the event stream open: wait until it is connected.
    for _ in $(seq 100); do
        [ "$(ss -Htn state established "( sport = :$PORT )" | wc -l)" -gt 0 ] && return 0
        sleep 0.2
    done
    die "the page did not connect to the dashboard"
}

close_page() {
    kill "$CHROME_PID" 2>/dev/null || true
    wait "$CHROME_PID" 2>/dev/null || true
    CHROME_PID=""
}

# CPU seconds (user + system) used so far by the processes whose command
# line matches $1 (the dashboard; the page's Chromium, all its processes;
# dockerd and containerd, which run the dashboard's reads), to tell where
# a cost goes.
cpu_of() {
    local pat="$1" total=0 pid
    for pid in $(pgrep -f -- "$pat" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
cpu_all() {
    echo "$(cpu_of "dashboard --port 0") $(cpu_of "user-data-dir=$SCRATCH/profile") $(cpu_of "^/usr/s?bin/dockerd|containerd")"
}
cpu_line() {
    local hz; hz="$(getconf CLK_TCK)"
    read -r d0 c0 k0 <<<"$1"
    read -r d1 c1 k1 <<<"$2"
    python3 -c "print('cpu-seconds dashboard=%.2f chromium=%.2f docker=%.2f' % (($d1-$d0)/$hz, ($c1-$c0)/$hz, ($k1-$k0)/$hz))"
}

one_round() {
    "$LAB_BIN" --lab "$LAB" load --scenario ping --users "$USERS" --duration "${DURATION}s" --json 2>/dev/null \
        | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.1f %d %d' % (r['rps'], r['requests'], r['requests']-r['ok']))"
}

# One round of warm-up, not counted: the first requests open connections.
"$LAB_BIN" --lab "$LAB" load --scenario ping --users "$USERS" --duration 5s --quiet >/dev/null 2>&1 || true

declare -a WITHOUT WITH
for i in $(seq "$ROUNDS"); do
    before="$(cpu_all)"
    read -r rps req err < <(one_round)
    WITHOUT+=("$rps")
    echo "round $i without-page rps=$rps requests=$req errors=$err $(cpu_line "$before" "$(cpu_all)")"
    open_page
    sleep 3
    before="$(cpu_all)"
    read -r rps req err < <(one_round)
    WITH+=("$rps")
    conns="$(ss -Htn state established "( sport = :$PORT )" | wc -l)"
    echo "round $i with-page    rps=$rps requests=$req errors=$err page-connections=$conns $(cpu_line "$before" "$(cpu_all)")"
    close_page
done

HWM="$(awk '/VmHWM/ {print $2, $3}' /proc/$DASH_PID/status)"
RSS="$(awk '/VmRSS/ {print $2, $3}' /proc/$DASH_PID/status)"
python3 - "${WITHOUT[*]}" "${WITH[*]}" <<'EOF'
import statistics, sys
without = [float(x) for x in sys.argv[1].split()]
with_ = [float(x) for x in sys.argv[2].split()]
m0, m1 = statistics.median(without), statistics.median(with_)
print(f"median without-page rps={m0:.1f} with-page rps={m1:.1f} ratio={m1/m0:.4f} (drop {100*(1-m1/m0):.2f}%)")
print(f"mean   without-page rps={statistics.mean(without):.1f} with-page rps={statistics.mean(with_):.1f} ratio={statistics.mean(with_)/statistics.mean(without):.4f}")
EOF
echo "dashboard VmHWM=$HWM VmRSS=$RSS (pid $DASH_PID)"
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
