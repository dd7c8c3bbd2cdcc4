#!/usr/bin/env bash
# Benchmark: lab-balancer vs nginx, in front of the same 3 backends, plus a
# direct run against one backend (the ceiling). Everything on 127.0.0.1.
#
#   bench/balancer/run.sh            # 3 rounds x 10 s per target
#   ROUNDS=5 DURATION=20s CONNECTIONS=128 bench/balancer/run.sh
#   COMPARE_BIN=/path/to/older/lab-balancer bench/balancer/run.sh   # adds "lab-cmp"
#
# Needs: cargo, nginx (Debian: apt-get install nginx-light), wrk (apt-get install wrk).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
BASE_PORT=${BASE_PORT:-}
WORKERS=${WORKERS:-$(nproc)}

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

echo "== building (release)"
(cd "$ROOT" && cargo build --release -q -p lab-balancer --bin lab-balancer --example bench_backend)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
LB_BIN="$TARGET_DIR/release/lab-balancer"
BACKEND_BIN="$TARGET_DIR/release/examples/bench_backend"

TMP=$(mktemp -d -t lab-bench-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

COMPARE_BIN=${COMPARE_BIN:-}
if [ -n "$COMPARE_BIN" ] && [ ! -x "$COMPARE_BIN" ]; then
    echo "COMPARE_BIN=$COMPARE_BIN is not an executable" >&2
    exit 1
fi

# Find 8 free ports (another program may hold some): base+0..+4,+11..+13.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_free() {
    for off in 0 1 2 3 4 11 12 13; do
        if port_busy $(($1 + off)); then return 1; fi
    done
}
if [ -z "$BASE_PORT" ]; then
    for base in $(seq 21000 100 29900); do
        if ports_free "$base"; then BASE_PORT=$base; break; fi
    done
fi
if [ -z "$BASE_PORT" ] || ! ports_free "$BASE_PORT"; then
    echo "no free ports around ${BASE_PORT:-21000..29900} on 127.0.0.1; set BASE_PORT" >&2
    exit 1
fi
LB_PORT=$BASE_PORT
LB_ADMIN=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
CMP_PORT=$((BASE_PORT + 3))
CMP_ADMIN=$((BASE_PORT + 4))
B1=$((BASE_PORT + 11)); B2=$((BASE_PORT + 12)); B3=$((BASE_PORT + 13))

for i in 1 2 3; do
    port=$((BASE_PORT + 10 + i))
    "$BACKEND_BIN" "127.0.0.1:$port" "server-$i" &
    PIDS+=($!)
done

cat >"$TMP/lb.toml" <<TOML
listen = "127.0.0.1:$LB_PORT"
admin_listen = "127.0.0.1:$LB_ADMIN"
workers = $WORKERS
strategy = "round-robin"
retries = true
[[upstream]]
name = "server-1"
address = "127.0.0.1:$B1"
[[upstream]]
name = "server-2"
address = "127.0.0.1:$B2"
[[upstream]]
name = "server-3"
address = "127.0.0.1:$B3"
TOML
RUST_LOG=warn "$LB_BIN" --config "$TMP/lb.toml" &
PIDS+=($!)
LB_PID=$!
WAIT_PORTS="$B1 $B2 $B3 $LB_PORT $LB_ADMIN $NGINX_PORT"
if [ -n "$COMPARE_BIN" ]; then
    sed -e "s/^listen = .*/listen = \"127.0.0.1:$CMP_PORT\"/" \
        -e "s/^admin_listen = .*/admin_listen = \"127.0.0.1:$CMP_ADMIN\"/" "$TMP/lb.toml" >"$TMP/lb-cmp.toml"
    RUST_LOG=warn "$COMPARE_BIN" --config "$TMP/lb-cmp.toml" &
    PIDS+=($!)
    CMP_PID=$!
    WAIT_PORTS="$WAIT_PORTS $CMP_PORT $CMP_ADMIN"
fi

# nginx: same upstreams, round-robin, keep-alive to the upstreams, the same
# headers added (X-Forwarded-For, X-Request-Id), access log off.
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<NGINX
worker_processes $WORKERS;
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
    keepalive_requests 100000;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        server 127.0.0.1:$B3;
        keepalive 128;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            proxy_connect_timeout 200ms;
            proxy_read_timeout 10s;
        }
    }
}
NGINX
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
PIDS+=($!)
NGINX_PID=$!

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}
for p in $WAIT_PORTS; do wait_port "$p"; done
for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "a benchmark process ($pid) exited at start; see the messages above" >&2
        exit 1
    fi
done
sleep 1 # let the balancer's first health checks pass

# wrk's latency lines look like "50%  412.00us"; print milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n = n / 1000; else if (u == "s") n = n * 1000; else if (u == "m") n = n * 60000;
        printf "%.3f", n }'
}

# CPU time (user and system, in clock ticks) of a process and its children
# so far: nginx's workers are its children. Requests per second swing with
# whatever else the machine does; CPU time per request is much steadier, and
# on a machine where every core is busy it is what decides throughput.
cpu_ticks() { # pid -> "user sys"
    local pids
    pids="$1 $(pgrep -P "$1" | tr '\n' ' ' || true)"
    for p in $pids; do
        for t in /proc/"$p"/task/*/stat; do cut -d' ' -f14,15 "$t" 2>/dev/null; done
    done | awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
HZ=$(getconf CLK_TCK)

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
run() { # name url [proxy pid]
    local out u0=0 s0=0 u1=0 s1=0
    if [ -n "${3:-}" ]; then read -r u0 s0 < <(cpu_ticks "$3"); fi
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
    if [ -n "${3:-}" ]; then read -r u1 s1 < <(cpu_ticks "$3"); fi
    local rps p50 p99 errs n usr sys
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    p50=$(to_ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
    p99=$(to_ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
    errs=$(echo "$out" | awk '/Non-2xx/ {print $NF} /Socket errors/ {print "socket-errors"}' | paste -sd, -)
    # microseconds of the proxy's CPU per request (0 for direct: no proxy)
    usr=$(awk -v t=$((u1 - u0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    sys=$(awk -v t=$((s1 - s0)) -v n="$n" -v hz="$HZ" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    local cpu=""
    if [ -n "${3:-}" ]; then cpu=$(printf "cpu/req: user=%5sus sys=%5sus" "$usr" "$sys"); fi
    printf "%-8s rps=%10s p50=%8sms p99=%8sms %s %s\n" "$1" "$rps" "$p50" "$p99" "$cpu" "${errs:+errors: $errs}"
    printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$rps" "$p50" "$p99" "$usr" "$sys" >>"$RESULTS"
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, $WORKERS workers for lab-balancer and nginx"
for r in $(seq 1 "$ROUNDS"); do
    echo "-- round $r"
    run direct "http://127.0.0.1:$B1/"
    run lab "http://127.0.0.1:$LB_PORT/" "$LB_PID"
    run nginx "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"
    if [ -n "$COMPARE_BIN" ]; then run lab-cmp "http://127.0.0.1:$CMP_PORT/" "$CMP_PID"; fi
done

echo "== summary (mean rps and proxy CPU per request, median p50/p99 over $ROUNDS rounds)"
awk -F'\t' '
    { n[$1]++; rps[$1] += $2; p50[$1, n[$1]] = $3; p99[$1, n[$1]] = $4; usr[$1] += $5; sys[$1] += $6 }
    function median(arr, name, cnt,   i, j, t, v) {
        for (i = 1; i <= cnt; i++) v[i] = arr[name, i]
        for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
    }
    END {
        cnt = split("direct lab nginx lab-cmp", names, " ")
        for (k = 1; k <= cnt; k++) {
            m = names[k]; if (!(m in n)) continue; mr[m] = rps[m] / n[m]; m50[m] = median(p50, m, n[m]); m99[m] = median(p99, m, n[m])
            mu[m] = usr[m] / n[m]; ms[m] = sys[m] / n[m]
            printf "%-8s rps=%10.0f p50=%7.3fms p99=%7.3fms", m, mr[m], m50[m], m99[m]
            if (m != "direct") printf " cpu/req: user=%5.1fus sys=%5.1fus", mu[m], ms[m]
            printf "\n"
        }
        printf "lab/nginx: throughput x%.2f, p50 x%.2f, p99 x%.2f, cpu/req user x%.2f sys x%.2f\n", mr["lab"] / mr["nginx"], m50["lab"] / m50["nginx"], m99["lab"] / m99["nginx"], mu["lab"] / mu["nginx"], ms["lab"] / ms["nginx"]
        if ("lab-cmp" in n) printf "lab-cmp/nginx: throughput x%.2f, p50 x%.2f, p99 x%.2f, cpu/req user x%.2f sys x%.2f\n", mr["lab-cmp"] / mr["nginx"], m50["lab-cmp"] / m50["nginx"], m99["lab-cmp"] / m99["nginx"], mu["lab-cmp"] / mu["nginx"], ms["lab-cmp"] / ms["nginx"]
    }' "$RESULTS"
