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
