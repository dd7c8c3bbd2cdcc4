#!/usr/bin/env bash
# Benchmark: `lab up` against docker compose bringing up the same containers.
#
#   bench/up/run.sh                       # 5 rounds
#   ROUNDS=15 SETTLE=10 bench/up/run.sh
#
# (a) Time from the command's start to every container healthy, default
#     topology (lb-1, server-1..3, redis, db-1, db-2), images
#     already built. `lab up` waits for health itself; docker-compose 1.29 has
#     no `up --wait`, so after `docker-compose up -d` this script polls the
#     project's containers every 250 ms until all are healthy, which is what
#     `docker compose up --wait` (v2) does. `lab up` polls every 250 ms too,
#     and runs a starting container's health check itself instead of
#     waiting for Docker's next run; when it returns, this script checks
#     each container Docker still calls starting by running that check.
# (b) Memory at rest: the sum of `docker stats --no-stream` memory usage over
#     the stack's containers, SETTLE seconds after it became healthy (issue
#     #16: the default lab at rest <= 250 MB). The full preset has no compose
#     twin: bench/up/memory.sh measures it.
# Also, from `docker events` (a subscriber during each up), when each
# container started and became healthy: where the time goes; and the CPU
# seconds dockerd used during each up. The raw results are printed after the
# summary, so a saved stdout holds everything the summary was computed from.
#
# Other knobs: TIMEOUT (seconds one up may take), KEEP_TMP=1 (keep the
# generated compose file and logs), LAB_BIN (another lab binary),
# COMPOSE_DEPENDS_ON=0 (compose file without depends_on).
#
# The compose file is generated (compose_from_lab.py) from a lab this script
# starts first, so both stacks run the same images with the same environment,
# health checks, ports (127.0.0.1, ephemeral), volumes and network. Then one
# compose up, not counted, warms compose's side as that first lab up warmed
# the lab's, and compare.py checks, service by service, that the compose
# containers run what the lab's ran (the run stops if anything differs). Runs
# alternate: odd rounds lab then compose, even rounds compose then lab. Each
# run starts from nothing (fresh network and volumes, so PostgreSQL runs
# initdb and the replica db-2 its base backup every time) and is removed after.
#
# Needs: Docker, docker-compose (Debian: apt-get install docker-compose),
# python3, and the lab's binaries and images (make images).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SETTLE=${SETTLE:-10}      # seconds between healthy and `docker stats`
TIMEOUT=${TIMEOUT:-120}   # seconds one `up` may take before we give up
POLL=0.25

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/up/lib.sh
. "$HERE/lib.sh"
ROOT=$(cd "$HERE/../.." && pwd)
LAB_SRC=${LAB_BIN:-$ROOT/target/release/lab}
LAB_NAME=bench-up-$$
PROJECT=bench-up-compose-$$

die() { echo "error: $*" >&2; exit 1; }

# ---- what must be there ----------------------------------------------------
check_lab_ready "$LAB_SRC"
command -v docker-compose >/dev/null || die "docker-compose is not installed: run 'sudo apt-get install docker-compose'"

compose() { docker-compose -p "$PROJECT" -f "$COMPOSE" "$@"; }

cleanup() {
    trap - EXIT INT TERM
    echo "== cleaning up"
    # The events subscriber of a round cut short.
    if [ -n "${EVENTS_PID:-}" ]; then kill "$EVENTS_PID" 2>/dev/null || true; fi

    if [ -x "$LAB" ]; then
        "$LAB" --lab "$LAB_NAME" down >/dev/null 2>&1 || true
        # An `up` killed half-way may leave a create in flight in the daemon.
        if [ -n "$(docker ps -aq --filter "label=scaling-lab.lab=$LAB_NAME")" ]; then
            sleep 1; "$LAB" --lab "$LAB_NAME" down >/dev/null 2>&1 || true
        fi
    fi
    # Whatever the lab left (or if its binary never got here): only our lab.
    local l="label=scaling-lab.lab=$LAB_NAME"
    remove_labelled "$l"
    if [ -f "$COMPOSE" ]; then
        compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    fi
    # Whatever compose left (or if it never got a file): only our project.
    local f="label=com.docker.compose.project=$PROJECT"
    remove_labelled "$f"
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}

TMP=$(mktemp -d -t bench-up-XXXXXX)
LAB="$TMP/lab"
COMPOSE="$TMP/docker-compose.yml"
RESULTS="$TMP/results.tsv"
trap cleanup EXIT
trap 'echo; echo "interrupted"; exit 130' INT TERM
# The balancer (user nobody) reads balancer.toml from here.
chmod 755 "$TMP"
# One binary for the whole run, even if someone rebuilds target/ meanwhile.
cp "$LAB_SRC" "$LAB"
: >"$RESULTS"

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# CPU seconds the Docker daemon has used so far (user + system, from /proc):
# what a command costs the daemon, other Docker work on the machine included.
DOCKERD=$(pidof dockerd 2>/dev/null | cut -d' ' -f1 || true)
TICKS=$(getconf CLK_TCK)
dockerd_cpu() {
    if [ -n "$DOCKERD" ] && [ -r "/proc/$DOCKERD/stat" ]; then
        awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$DOCKERD/stat"
    else echo 0; fi
}

# "SERVICE STATUS" lines for a label filter and the label that names services.
statuses() {
    docker ps -a --filter "label=$1" --format "{{.Label \"$2\"}} {{.Status}}"
}

# Polls until N containers carry "(healthy)"; fails on an exited one or after TIMEOUT.
wait_healthy() {
    local filter=$1 key=$2 n=$3 deadline st healthy
    deadline=$(( ${EPOCHSECONDS} + TIMEOUT ))
    while :; do
        st=$(statuses "$filter" "$key")
        healthy=$(grep -c '(healthy)' <<<"$st" || true)
        [ "$healthy" -eq "$n" ] && return 0
        if grep -q 'Exited\|Dead' <<<"$st"; then
            echo "$st" >&2; return 1
        fi
        if [ "$EPOCHSECONDS" -ge "$deadline" ]; then
            echo "not healthy after ${TIMEOUT}s:" >&2; echo "$st" >&2; return 1
        fi
        sleep "$POLL"
    done
}

# Records "mem SYSTEM ROUND SERVICE USAGE" for every container of the stack.
memory() {
    local system=$1 round=$2 filter=$3 key=$4
    declare -A svc=()
    local name s usage
    while IFS=$'\t' read -r name s; do svc[$name]=$s; done \
        < <(docker ps --filter "label=$filter" --format "{{.Names}}\t{{.Label \"$key\"}}")
    while IFS=$'\t' read -r name usage; do
        printf 'mem\t%s\t%s\t%s\t%s\n' "$system" "$round" "${svc[$name]}" "${usage%% /*}" >>"$RESULTS"
    done < <(docker stats --no-stream --format '{{.Name}}\t{{.MemUsage}}' "${!svc[@]}")
}

# When Docker started each container and first reported it healthy, from
# `docker events`. The daemon keeps only its last 256 events for `--since`,
# and every health check is 3 events (exec_create, exec_start, exec_die): 7
# containers checked every second fill that in about 12 s, sooner with other
# Docker work on the machine, so replaying after the fact lost the first
# starts. A subscriber (one docker CLI process, on the host, reading a
# stream) therefore listens from just before the command to just after.
EVENTS_PID=
events_start() {
    local filter=$1 key=$2 t0=$3
    docker events --since "$t0" --filter "label=$filter" \
        --filter event=start --filter event=health_status \
        --format "{{.TimeNano}}	{{index .Actor.Attributes \"$key\"}}	{{.Action}}" >"$TMP/events.tsv" 2>/dev/null &
    EVENTS_PID=$!
}
events_stop() {
    [ -n "${EVENTS_PID:-}" ] || return 0
    kill "$EVENTS_PID" 2>/dev/null || true
    wait "$EVENTS_PID" 2>/dev/null || true
    EVENTS_PID=
}

# Records "start|healthy SYSTEM ROUND SERVICE SECONDS", in seconds since the
# command began, once the stream shows every service healthy (at most 3 s
# after the command said so: the last event may still be on its way).
timeline() {
    local system=$1 round=$2 t0=$3 i
    for i in $(seq 1 30); do
        [ "$(grep -c $'\thealth_status: healthy$' "$TMP/events.tsv" || true)" -ge "$SERVICES" ] && break
        sleep 0.1
    done
    events_stop
    awk -F'\t' -v sys="$system" -v r="$round" -v t0="$t0" '
        $3 == "start" && !(($2, "s") in seen) { seen[$2, "s"]; printf "start\t%s\t%s\t%s\t%.2f\n", sys, r, $2, $1 / 1e9 - t0 }
        $3 == "health_status: healthy" && !(($2, "h") in seen) { seen[$2, "h"]; printf "healthy\t%s\t%s\t%s\t%.2f\n", sys, r, $2, $1 / 1e9 - t0 }
    ' "$TMP/events.tsv" >>"$RESULTS"
}

record() { printf '%s\t%s\t%s\t-\t%s\n' "$@" >>"$RESULTS"; }

LAB_FILTER="scaling-lab.lab=$LAB_NAME"
LAB_KEY="scaling-lab.service"
COMPOSE_FILTER="com.docker.compose.project=$PROJECT"
COMPOSE_KEY="com.docker.compose.service"

run_lab() {
    local r=$1 t0 t1 l up c0 c1
    l=$(load1)
    c0=$(dockerd_cpu)
    t0=$(now)
    events_start "$LAB_FILTER" "$LAB_KEY" "$t0"
    if ! timeout --foreground $((TIMEOUT + 30)) "$LAB" --lab "$LAB_NAME" up --port 0 --timeout "${TIMEOUT}s" >"$TMP/lab-up.log" 2>&1; then
        tail -20 "$TMP/lab-up.log" >&2; die "lab up failed (round $r)"
    fi
    t1=$(now)
    c1=$(dockerd_cpu)
    # `lab up` returned: check independently that everything is healthy
    # indeed. Docker may not have run a container's check since it became
    # ready (lab up runs the same check itself, lab/src/readiness.rs): such
    # a container must pass that check when the script runs it now.
    local st; st=$(statuses "$LAB_FILTER" "$LAB_KEY")
    [ "$(wc -l <<<"$st")" -eq "$SERVICES" ] && lab_is_healthy "label=$LAB_FILTER" \
        || { echo "$st" >&2; die "lab up returned before every service was healthy"; }
    up=$(elapsed "$t0" "$t1")
    record up lab "$r" "$up"
    record load lab "$r" "$l"
    record dockerd lab "$r" "$(elapsed "$c0" "$c1")"
    timeline lab "$r" "$t0"
    sleep "$SETTLE"
    memory lab "$r" "$LAB_FILTER" "$LAB_KEY"
    t0=$(now)
    "$LAB" --lab "$LAB_NAME" down >/dev/null
    record down lab "$r" "$(elapsed "$t0" "$(now)")"
    printf '  round %d  lab      healthy after %6ss   (load before: %s)\n' "$r" "$up" "$l"
}

run_compose() {
    local r=$1 t0 t1 l up c0 c1
    l=$(load1)
    c0=$(dockerd_cpu)
    t0=$(now)
    events_start "$COMPOSE_FILTER" "$COMPOSE_KEY" "$t0"
    if ! timeout --foreground $((TIMEOUT + 30)) docker-compose -p "$PROJECT" -f "$COMPOSE" up -d >"$TMP/compose-up.log" 2>&1; then
        tail -20 "$TMP/compose-up.log" >&2; die "docker-compose up failed (round $r)"
    fi
    wait_healthy "$COMPOSE_FILTER" "$COMPOSE_KEY" "$SERVICES" || die "the compose stack did not become healthy (round $r)"
    t1=$(now)
    c1=$(dockerd_cpu)
    up=$(elapsed "$t0" "$t1")
    record up compose "$r" "$up"
    record load compose "$r" "$l"
    record dockerd compose "$r" "$(elapsed "$c0" "$c1")"
    timeline compose "$r" "$t0"
    sleep "$SETTLE"
    memory compose "$r" "$COMPOSE_FILTER" "$COMPOSE_KEY"
    t0=$(now)
    compose down -v -t 10 >/dev/null 2>&1 || die "docker-compose down failed (round $r)"
    record down compose "$r" "$(elapsed "$t0" "$(now)")"
    printf '  round %d  compose  healthy after %6ss   (load before: %s)\n' "$r" "$up" "$l"
}

# ---- the machine -----------------------------------------------------------
echo "== machine"
echo "  date      $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "  cpus      $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "  memory    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "  kernel    $(uname -r)"
echo "  docker    $(docker version --format '{{.Server.Version}}') (storage: $(docker info --format '{{.Driver}}'))"
echo "  compose   $(docker-compose version --short)"
echo "  lab       $VERSION ($LAB_SRC)"
echo "  load      $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, at the start)"
echo "  settings  ROUNDS=$ROUNDS SETTLE=$SETTLE TIMEOUT=$TIMEOUT COMPOSE_DEPENDS_ON=${COMPOSE_DEPENDS_ON:-1}"

# ---- the compose file, from a real lab -------------------------------------
echo "== generating docker-compose.yml from lab $LAB_NAME (this first up also warms the caches)"
"$LAB" --lab "$LAB_NAME" up --port 0 --timeout "${TIMEOUT}s" >"$TMP/lab-up.log" 2>&1 \
    || { tail -20 "$TMP/lab-up.log" >&2; die "lab up failed"; }
SERVICES=$(python3 "$HERE/compose_from_lab.py" "$LAB_NAME" "$TMP")
docker inspect $(docker ps -aq --filter "label=$LAB_FILTER") >"$TMP/lab-inspect.json"
echo "  services: $(docker ps -a --filter "label=$LAB_FILTER" --format '{{.Label "scaling-lab.service"}}' | sort -V | tr '\n' ' ')"
"$LAB" --lab "$LAB_NAME" down >/dev/null
compose config -q || die "docker-compose rejects the generated file $COMPOSE"
echo "  $SERVICES services; file: $COMPOSE${KEEP_TMP:+ (kept)}"

# ---- the twin, checked -----------------------------------------------------
echo "== checking the compose twin against that lab (this compose up also warms compose's side; not counted)"
timeout --foreground $((TIMEOUT + 30)) docker-compose -p "$PROJECT" -f "$COMPOSE" up -d >"$TMP/compose-up.log" 2>&1 \
    || { tail -20 "$TMP/compose-up.log" >&2; die "docker-compose up failed"; }
wait_healthy "$COMPOSE_FILTER" "$COMPOSE_KEY" "$SERVICES" || die "the compose stack did not become healthy"
python3 "$HERE/compare.py" "$TMP/lab-inspect.json" "$PROJECT" || die "the compose twin differs from the lab (above)"
compose down -v -t 10 >/dev/null 2>&1 || die "docker-compose down failed"

# ---- the rounds ------------------------------------------------------------
echo "== $ROUNDS rounds (odd: lab first; even: compose first)"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_lab "$r"; sleep 2; run_compose "$r"
    else run_compose "$r"; sleep 2; run_lab "$r"; fi
    sleep 2
done

echo "== done $(date -u '+%Y-%m-%d %H:%M UTC'); load $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min, at the end)"

python3 "$HERE/summarize.py" "$RESULTS" "$SETTLE"
echo
echo "== raw results: KIND SYSTEM ROUND SERVICE VALUE (what the summary above was computed from)"
cat "$RESULTS"
