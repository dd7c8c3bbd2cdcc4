# Shared by bench/up's scripts (sourced, not run).

# Removes every container, volume and network that carries the Docker label
# filter $1 (e.g. label=scaling-lab.lab=NAME): what a lab or a compose
# project may leave behind when a run is cut short. Only what the filter
# names is touched.
remove_labelled() {
    local ids
    ids=$(docker ps -aq --filter "$1"); [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker volume ls -q --filter "$1"); [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker network ls -q --filter "$1"); [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
}

# Stops the run (via the caller's `die`) unless Docker answers, python3 is
# there, and the lab binary $1 and its images for its version exist; sets
# VERSION to that version.
check_lab_ready() {
    command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io)"
    docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running? is this user in the docker group?)"
    command -v python3 >/dev/null || die "python3 is not installed: run 'sudo apt-get install python3'"
    [ -x "$1" ] || die "$1 does not exist: run 'make images' in $ROOT"
    VERSION=$("$1" --version | awk '{print $2}')
    local img
    for img in base app balancer redis postgres; do
        docker image inspect "scaling-lab/$img:$VERSION" >/dev/null 2>&1 \
            || die "image scaling-lab/$img:$VERSION is missing: run 'make images' in $ROOT"
    done
}

# Whether a container's own health check passes now: the command Docker
# would run, run by `docker exec`.
passes_own_check() {
    local cmd
    cmd=$(docker inspect --format '{{json .Config.Healthcheck.Test}}' "$1" | python3 -c '
import json, shlex, sys
t = json.load(sys.stdin) or []
if t[:1] == ["CMD"]: print(shlex.join(t[1:]))
elif t[:1] == ["CMD-SHELL"]: print(shlex.join(["/bin/sh", "-c", t[1]]))
')
    [ -n "$cmd" ] || return 1
    eval "docker exec $(printf %q "$1") $cmd" >/dev/null 2>&1
}

# Whether every container matching a docker ps filter (label=...) is
# healthy: by Docker's word or, for one Docker still calls starting, by
# passing its own check now (`lab up` runs that check itself rather than
# wait for Docker's next run: lab/src/readiness.rs).
lab_is_healthy() {
    local filter=$1 name status n=0
    while read -r name status; do
        [ -n "$name" ] || continue
        n=$((n + 1))
        case "$status" in
            *"(healthy)"*) ;;
            *"(health: starting)"*) passes_own_check "$name" || return 1 ;;
            *) return 1 ;;
        esac
    done < <(docker ps -a --filter "$filter" --format '{{.Names}} {{.Status}}')
    [ "$n" -gt 0 ]
}
