#!/usr/bin/env bash
# Benchmark: what lab-faultproxy costs when no fault is set (its fast path).
# The same HTTP path is driven with and without the proxy in the same run,
# in alternating rounds: wrk -> nginx (direct), wrk -> lab-faultproxy ->
# nginx (one hop). nginx-light answers a fixed 200 from a config of ours.
# A third target goes through the proxy with a fault that changes nothing
# (a bandwidth limit of 10 GB/s): the delay line's cost, for comparison.
# Everything listens on 127.0.0.1; every run is bounded by DURATION.
#
#   bench/faultproxy/run.sh                         # 15 rounds x 2 s per target and load (~3.5 min)
#   ROUNDS=5 DURATION=5s bench/faultproxy/run.sh
#   SAVE=0 bench/faultproxy/run.sh                  # do not write results/
#
# Two loads per round: one connection (latency: what a hop adds to one
# request, nothing queued) and CONNECTIONS connections (throughput).
# Needs: cargo, nginx (apt-get install nginx-light), wrk (apt-get install wrk).
set -euo pipefail

ROUNDS=${ROUNDS:-15}
DURATION=${DURATION:-2s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PROXY_WORKERS=${PROXY_WORKERS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-1}
SAVE=${SAVE:-1}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=("nginx (apt-get install nginx-light)")
command -v wrk >/dev/null 2>&1 || missing+=("wrk (apt-get install wrk)")
command -v cargo >/dev/null 2>&1 || missing+=("cargo (https://rustup.rs)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}" >&2
    exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$SAVE" = 1 ]; then
    mkdir -p "$ROOT/bench/faultproxy/results"
    OUT="$ROOT/bench/faultproxy/results/$(date -u +%Y-%m-%dT%H%MZ).txt"
    exec > >(tee "$OUT") 2>&1
fi

echo "== building (release)"
(cd "$ROOT" && cargo build --release -q -p lab-faultproxy --bin lab-faultproxy)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
PROXY_BIN="$TARGET_DIR/release/lab-faultproxy"

TMP=$(mktemp -d -t lab-bench-fp-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# Five free ports in a row on 127.0.0.1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE_PORT=
for base in $(seq 31000 10 31990); do
    if ! port_busy "$base" && ! port_busy $((base + 1)) && ! port_busy $((base + 2)) && ! port_busy $((base + 3)) && ! port_busy $((base + 4)); then
        BASE_PORT=$base
        break
    fi
done
if [ -z "$BASE_PORT" ]; then
    echo "no five free ports in 31000..31999 on 127.0.0.1" >&2
    exit 1
fi
NGINX_PORT=$BASE_PORT
PROXY_PORT=$((BASE_PORT + 1))
SLOW_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
SOCAT_PORT=$((BASE_PORT + 4))

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<NGINX
worker_processes $NGINX_WORKERS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
NGINX
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
PIDS+=($!)
NGINX_PID=$!

RUST_LOG=warn "$PROXY_BIN" \
    --link "fast=127.0.0.1:$PROXY_PORT->127.0.0.1:$NGINX_PORT" \
    --link "slow=127.0.0.1:$SLOW_PORT->127.0.0.1:$NGINX_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --workers "$PROXY_WORKERS" &
PIDS+=($!)
PROXY_PID=$!

wait_port() {
    for _ in $(seq 1 100); do
        if port_busy "$1"; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}
# socat, the plain TCP relay a user would reach for, as a reference: it
# forks a process per connection, then copies with poll/read/write.
WAIT_PORTS="$NGINX_PORT $PROXY_PORT $SLOW_PORT $ADMIN_PORT"
SOCAT_PID=
if command -v socat >/dev/null 2>&1; then
    socat "TCP-LISTEN:$SOCAT_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay" "TCP:127.0.0.1:$NGINX_PORT,nodelay" &
    PIDS+=($!)
    SOCAT_PID=$!
    WAIT_PORTS="$WAIT_PORTS $SOCAT_PORT"
else
    echo "== (socat not installed: no reference relay; apt-get install socat)"
fi
for p in $WAIT_PORTS; do wait_port "$p"; done
curl -fsS -X PUT "http://127.0.0.1:$ADMIN_PORT/links/slow/fault" -d '{"bandwidth_bps": 10000000000}' >/dev/null
curl -fsS "http://127.0.0.1:$PROXY_PORT/" >/dev/null

# wrk prints "50%  412.00us"; this turns it into microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "ms") n = n * 1000; else if (u == "s") n = n * 1e6; else if (u == "m") n = n * 6e7;
        printf "%.1f", n }'
}
# CPU time (user + system, clock ticks) so far of a process's threads, of
# its live children's (nginx's worker, socat's one process per connection)
# and of its children that have exited (socat's, when wrk closes).
cpu_ticks() {
    local p pids
    pids="$1 $(pgrep -P "$1" | tr '\n' ' ' || true)"
    {
        for p in $pids; do cat /proc/"$p"/task/*/stat 2>/dev/null; done | awk '{print $14 + $15}'
        awk '{print $16 + $17}' /proc/"$1"/stat 2>/dev/null
    } | awk '{t += $1} END {print t + 0}'
}
HZ=$(getconf CLK_TCK)

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run() { # load target url connections threads
    local out c0 c1 g0 g1 rps n p50 p99 errs cpu ncpu wcpu
    local relay=$PROXY_PID
    if [ "$2" = socat ]; then relay=$SOCAT_PID; fi
    c0=$(cpu_ticks "$relay")
    g0=$(cpu_ticks "$NGINX_PID")
    # `times` in the subshell prints wrk's CPU time as its last line.
    out=$( { wrk -t"$5" -c"$4" -d"$DURATION" --latency "$3"; times; } )
    c1=$(cpu_ticks "$relay")
    g1=$(cpu_ticks "$NGINX_PID")
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx/ {print "non-2xx=" $NF} /Socket errors/ {print "socket-errors"}' | paste -sd, -)
    cpu=$(awk -v t=$((c1 - c0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    ncpu=$(awk -v t=$((g1 - g0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    wcpu=$(echo "$out" | tail -n1 | awk -v n="$n" '{
        t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%.1f", t * 1e6 / n }')
    if [ "$2" = direct ]; then cpu=0; fi
    printf "%-10s %-8s rps=%9s p50=%8sus p99=%8sus cpu/req: relay=%5sus nginx=%5sus wrk=%5sus %s\n" "$1" "$2" "$rps" "$p50" "$p99" "$cpu" "$ncpu" "$wcpu" "${errs:+errors: $errs}"
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$2" "$rps" "$p50" "$p99" "$cpu" "$ncpu" "$wcpu" >>"$RESULTS"
}

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- services/faultproxy || echo '+changes')"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $("$NGINX" -v 2>&1), $NGINX_WORKERS worker; lab-faultproxy --workers $PROXY_WORKERS; $ROUNDS rounds, $DURATION per run"
echo "== latency load: wrk -t1 -c1; throughput load: wrk -t$THREADS -c$CONNECTIONS"
for r in $(seq 1 "$ROUNDS"); do
    echo "-- round $r"
    run latency direct "http://127.0.0.1:$NGINX_PORT/" 1 1
    run latency proxy "http://127.0.0.1:$PROXY_PORT/" 1 1
    run latency slowpath "http://127.0.0.1:$SLOW_PORT/" 1 1
    if [ -n "$SOCAT_PID" ]; then run latency socat "http://127.0.0.1:$SOCAT_PORT/" 1 1; fi
    run throughput direct "http://127.0.0.1:$NGINX_PORT/" "$CONNECTIONS" "$THREADS"
    run throughput proxy "http://127.0.0.1:$PROXY_PORT/" "$CONNECTIONS" "$THREADS"
    run throughput slowpath "http://127.0.0.1:$SLOW_PORT/" "$CONNECTIONS" "$THREADS"
    if [ -n "$SOCAT_PID" ]; then run throughput socat "http://127.0.0.1:$SOCAT_PORT/" "$CONNECTIONS" "$THREADS"; fi
done
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

# System calls the proxy makes per request on its fast path (strace slows
# it down, so only the counts mean something here, not the times).
if command -v strace >/dev/null 2>&1; then
    strace -c -f -o "$TMP/strace.txt" -p "$PROXY_PID" 2>/dev/null &
    STRACE_PID=$!
    sleep 0.5
    n=$(wrk -t1 -c1 -d2s "http://127.0.0.1:$PROXY_PORT/" | awk '/requests in/ {print $1}')
    kill -INT "$STRACE_PID" 2>/dev/null || true
    wait "$STRACE_PID" 2>/dev/null || true
    echo "== proxy system calls per request, fast path, 1 connection ($n requests under strace -c):"
    # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall
    awk -v n="$n" '$1 ~ /^[0-9.]+$/ && $NF != "total" && $4 / n >= 0.01 { printf "   %-14s %6.2f\n", $NF, $4 / n }' "$TMP/strace.txt"
else
    echo "== (strace not installed: no system call count)"
fi

echo "== summary over $ROUNDS rounds: medians of each figure; then, per round, the proxy run against"
echo "   the direct run just before it (the machine's load changes from second to second, a pair"
echo "   of neighbouring runs sees nearly the same): median [25th..75th percentile] of the pairs"
awk -F'\t' '
    { k = $1 SUBSEP $2; n[k]++; rps[k, n[k]] = $3; p50[k, n[k]] = $4; p99[k, n[k]] = $5; cpu[k, n[k]] = $6; ncpu[k, n[k]] = $7; wcpu[k, n[k]] = $8 }
    function sorted(arr, k, cnt, v,   i, j, t) {
        for (i = 1; i <= cnt; i++) v[i] = arr[k, i]
        for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
    }
    function q(arr, k, cnt, f,   v, pos, lo) {
        sorted(arr, k, cnt, v)
        pos = 1 + (cnt - 1) * f; lo = int(pos)
        return (lo >= cnt) ? v[cnt] : v[lo] + (pos - lo) * (v[lo + 1] - v[lo])
    }
    END {
        split("latency throughput", loads, " "); nt = split("direct proxy slowpath socat", targets, " ")
        for (a = 1; a <= 2; a++) for (b = 1; b <= nt; b++) {
            k = loads[a] SUBSEP targets[b]; if (!(k in n)) continue
            printf "%-10s %-8s rps=%9.0f p50=%8.1fus p99=%8.1fus cpu/req: relay=%5.1fus nginx=%5.1fus wrk=%5.1fus\n", loads[a], targets[b], q(rps, k, n[k], .5), q(p50, k, n[k], .5), q(p99, k, n[k], .5), q(cpu, k, n[k], .5), q(ncpu, k, n[k], .5), q(wcpu, k, n[k], .5)
        }
        for (a = 1; a <= 2; a++) for (b = 2; b <= nt; b++) {
            d = loads[a] SUBSEP "direct"; k = loads[a] SUBSEP targets[b]; m = n[k]; if (!(k in n)) continue
            for (r = 1; r <= m; r++) {
                add[k, r] = p50[k, r] - p50[d, r]; ratio[k, r] = rps[k, r] / rps[d, r]
                # all three programs share the cores: requests per CPU-second
                cratio[k, r] = (ncpu[d, r] + wcpu[d, r]) / (cpu[k, r] + ncpu[k, r] + wcpu[k, r])
            }
            printf "%-10s %-8s vs direct: p50 added %6.1f us [%6.1f..%6.1f], throughput ratio %.3f [%.3f..%.3f], requests per CPU-second ratio %.3f [%.3f..%.3f]\n", loads[a], targets[b], q(add, k, m, .5), q(add, k, m, .25), q(add, k, m, .75), q(ratio, k, m, .5), q(ratio, k, m, .25), q(ratio, k, m, .75), q(cratio, k, m, .5), q(cratio, k, m, .25), q(cratio, k, m, .75)
        }
    }' "$RESULTS"
if [ "$SAVE" = 1 ]; then echo "== saved to ${OUT#"$ROOT"/}"; fi
