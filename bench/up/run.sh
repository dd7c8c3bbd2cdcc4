#!/usr/bin/env bash
# Benchmark: `lab up` against docker compose bringing up the same containers.
#
#   bench/up/run.sh                       # 5 rounds
#   ROUNDS=9 SETTLE=10 bench/up/run.sh
#
# (a) Time from the command's start to every container healthy, default
#     topology (lb-1, server-1..3, redis, db-1, db-2), images
#     already built. `lab up` waits for health itself; docker-compose 1.29 has
#     no `up --wait`, so after `docker-compose up -d` this script polls the
#     project's containers every 250 ms until all are healthy, which is what
#     `docker compose up --wait` (v2) does. `lab up` polls every 250 ms too.
# (b) Memory at rest: the sum of `docker stats --no-stream` memory usage over
#     the stack's containers, SETTLE seconds after it became healthy.
# Also, from `docker events`, when each container started and became healthy:
# where the time goes.
#
# Other knobs: TIMEOUT (seconds one up may take), KEEP_TMP=1 (keep the
# generated compose file and logs), LAB_BIN (another lab binary),
# COMPOSE_DEPENDS_ON=0 (compose file without depends_on).
#
# The compose file is generated (compose_from_lab.py) from a lab this script
# starts first, so both stacks run the same images with the same environment,
# health checks, ports (127.0.0.1, ephemeral), volumes and network. Runs
# alternate: odd rounds lab then compose, even rounds compose then lab. Each
# run starts from nothing (fresh network and volumes, so PostgreSQL runs
# initdb and the replica its base backup every time) and is removed after.
#
# Needs: Docker, docker-compose (Debian: apt-get install docker-compose),
# python3, and the lab's binaries and images (make images).
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SETTLE=${SETTLE:-10}      # seconds between healthy and `docker stats`
TIMEOUT=${TIMEOUT:-120}   # seconds one `up` may take before we give up
POLL=0.25

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB_SRC=${LAB_BIN:-$ROOT/target/release/lab}
LAB_NAME=bench-up-$$
PROJECT=bench-up-compose-$$

die() { echo "error: $*" >&2; exit 1; }

# ---- what must be there ----------------------------------------------------
command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running? is this user in the docker group?)"
command -v docker-compose >/dev/null || die "docker-compose is not installed: run 'sudo apt-get install docker-compose'"
command -v python3 >/dev/null || die "python3 is not installed: run 'sudo apt-get install python3'"
[ -x "$LAB_SRC" ] || die "$LAB_SRC does not exist: run 'make images' in $ROOT"
VERSION=$("$LAB_SRC" --version | awk '{print $2}')
for img in base app balancer redis postgres; do
    docker image inspect "scaling-lab/$img:$VERSION" >/dev/null 2>&1 \
        || die "image scaling-lab/$img:$VERSION is missing: run 'make images' in $ROOT"
done

compose() { docker-compose -p "$PROJECT" -f "$COMPOSE" "$@"; }

cleanup() {
    trap - EXIT INT TERM
    echo "== cleaning up"
    "$LAB" --lab "$LAB_NAME" down >/dev/null 2>&1 || true
    # An `up` killed half-way may leave a create in flight in the daemon.
    if [ -n "$(docker ps -aq --filter "label=scaling-lab.lab=$LAB_NAME")" ]; then
        sleep 1; "$LAB" --lab "$LAB_NAME" down >/dev/null 2>&1 || true
    fi
    if [ -f "$COMPOSE" ]; then
        compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    fi
    # Whatever compose left (or if it never got a file): only our project.
    local f="label=com.docker.compose.project=$PROJECT" ids
    ids=$(docker ps -aq --filter "$f"); [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker volume ls -q --filter "$f"); [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker network ls -q --filter "$f"); [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
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

# Records "start|healthy SYSTEM ROUND SERVICE SECONDS": when Docker started each
# container and first reported it healthy, in seconds since the command began
# (from `docker events`, replayed after the fact: nothing runs during the run).
timeline() {
    local system=$1 round=$2 filter=$3 key=$4 t0=$5
    docker events --since "$t0" --until "$(now)" --filter "label=$filter" \
        --filter event=start --filter event=health_status \
        --format "{{.TimeNano}}	{{index .Actor.Attributes \"$key\"}}	{{.Action}}" |
    awk -F'\t' -v sys="$system" -v r="$round" -v t0="$t0" '
        $3 == "start" && !(($2, "s") in seen) { seen[$2, "s"]; printf "start\t%s\t%s\t%s\t%.2f\n", sys, r, $2, $1 / 1e9 - t0 }
        $3 == "health_status: healthy" && !(($2, "h") in seen) { seen[$2, "h"]; printf "healthy\t%s\t%s\t%s\t%.2f\n", sys, r, $2, $1 / 1e9 - t0 }
    ' >>"$RESULTS"
}

record() { printf '%s\t%s\t%s\t-\t%s\n' "$@" >>"$RESULTS"; }

LAB_FILTER="scaling-lab.lab=$LAB_NAME"
LAB_KEY="scaling-lab.service"
COMPOSE_FILTER="com.docker.compose.project=$PROJECT"
COMPOSE_KEY="com.docker.compose.service"

run_lab() {
    local r=$1 t0 t1 l up
    l=$(load1)
    t0=$(now)
    if ! timeout --foreground $((TIMEOUT + 30)) "$LAB" --lab "$LAB_NAME" up --port 0 --timeout "${TIMEOUT}s" >"$TMP/lab-up.log" 2>&1; then
        tail -20 "$TMP/lab-up.log" >&2; die "lab up failed (round $r)"
    fi
    t1=$(now)
    # `lab up` returned: check with Docker that everything is healthy indeed.
    local st; st=$(statuses "$LAB_FILTER" "$LAB_KEY")
    [ "$(grep -c '(healthy)' <<<"$st" || true)" -eq "$SERVICES" ] || { echo "$st" >&2; die "lab up returned before every service was healthy"; }
    up=$(elapsed "$t0" "$t1")
    record up lab "$r" "$up"
    record load lab "$r" "$l"
    timeline lab "$r" "$LAB_FILTER" "$LAB_KEY" "$t0"
    sleep "$SETTLE"
    memory lab "$r" "$LAB_FILTER" "$LAB_KEY"
    t0=$(now)
    "$LAB" --lab "$LAB_NAME" down >/dev/null
    record down lab "$r" "$(elapsed "$t0" "$(now)")"
    printf '  round %d  lab      healthy after %6ss   (load before: %s)\n' "$r" "$up" "$l"
}

run_compose() {
    local r=$1 t0 t1 l up
    l=$(load1)
    t0=$(now)
    if ! timeout --foreground $((TIMEOUT + 30)) docker-compose -p "$PROJECT" -f "$COMPOSE" up -d >"$TMP/compose-up.log" 2>&1; then
        tail -20 "$TMP/compose-up.log" >&2; die "docker-compose up failed (round $r)"
    fi
    wait_healthy "$COMPOSE_FILTER" "$COMPOSE_KEY" "$SERVICES" || die "the compose stack did not become healthy (round $r)"
    t1=$(now)
    up=$(elapsed "$t0" "$t1")
    record up compose "$r" "$up"
    record load compose "$r" "$l"
    timeline compose "$r" "$COMPOSE_FILTER" "$COMPOSE_KEY" "$t0"
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

# ---- the compose file, from a real lab -------------------------------------
echo "== generating docker-compose.yml from lab $LAB_NAME (this first up also warms the caches)"
"$LAB" --lab "$LAB_NAME" up --port 0 --timeout "${TIMEOUT}s" >"$TMP/lab-up.log" 2>&1 \
    || { tail -20 "$TMP/lab-up.log" >&2; die "lab up failed"; }
SERVICES=$(python3 "$HERE/compose_from_lab.py" "$LAB_NAME" "$TMP")
"$LAB" --lab "$LAB_NAME" down >/dev/null
compose config -q || die "docker-compose rejects the generated file $COMPOSE"
echo "  $SERVICES services; file: $COMPOSE${KEEP_TMP:+ (kept)}"

# ---- the rounds ------------------------------------------------------------
echo "== $ROUNDS rounds (odd: lab first; even: compose first)"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then run_lab "$r"; sleep 2; run_compose "$r"
    else run_compose "$r"; sleep 2; run_lab "$r"; fi
    sleep 2
done

python3 "$HERE/summarize.py" "$RESULTS" "$SETTLE"
