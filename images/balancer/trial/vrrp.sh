#!/bin/bash
# Trial of the balancer pair: two balancers (lb-1, lb-2) share a virtual
# address with keepalived (VRRP, unicast), an edge forwards the host's
# 127.0.0.1 port to that address, and the host sends a bounded load while
# the trial kills, pauses and stops the node that holds the address.
#
# It measures, per fault: the requests that failed and when (relative to the
# fault), and when the other node took the address (from keepalived's log,
# stamped by Docker). It compares with VRRP's theory: a backup declares the
# master dead after 3 x advert_int + skew, skew = (256 - priority)/256 x
# advert_int, counted from the master's last advert.
#
#   images/balancer/trial/vrrp.sh                 # full run, ~8 minutes
#   CRASHES=1 PAUSES=1 PROCKILLS=1 STOPS=1 STEADY_S=10 images/balancer/trial/vrrp.sh
#
# Needs: docker, python3 (the load driver, load.py), and the images scaling-lab/balancer:0.1.0 (the trial
# image adds keepalived and socat to it with apt-get, so Debian's mirror must
# be reachable) and, for BACKEND=app, scaling-lab/app:0.1.0.
# Everything it creates carries the label vrrptrial=<prefix> and is removed
# on exit, also after a failure or Ctrl-C. Raw results go to $OUT.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BAL_DIR=$(dirname "$HERE")
REPO=$(cd "$BAL_DIR/../.." && pwd)

BALANCER_IMAGE=${BALANCER_IMAGE:-scaling-lab/balancer:0.1.0}
APP_IMAGE=${APP_IMAGE:-scaling-lab/app:0.1.0}
# app: lab-app (GET / needs no database); balancer: lab-balancer instances
# whose admin API answers GET /healthz (a dummy upstream, no fork per
# request); socat: a bash responder forked per request (slow on a busy host).
# Default: app when its image exists, else balancer.
BACKEND=${BACKEND:-auto}
CRASHES=${CRASHES:-5}            # docker kill of the holder
PAUSES=${PAUSES:-5}              # docker pause of the holder, unpause PAUSE_S later
PAUSE_S=${PAUSE_S:-8}
PROCKILLS=${PROCKILLS:-3}        # kill -9 of the balancer process only
STOPS=${STOPS:-2}                # docker stop (graceful) of the holder
STEADY_S=${STEADY_S:-60}         # load with both nodes up, no fault
RATE=${RATE:-20}                 # requests per second, one connection each
MAX_TIME=${MAX_TIME:-1}          # a request without a full answer after this many seconds failed
ADVERT_INT=${ADVERT_INT:-1}
PREEMPT=${PREEMPT:-off}
PRIO_1=150 PRIO_2=100
LB_CAPS=${LB_CAPS:-default}      # default: Docker's set + NET_ADMIN, NET_RAW; minimal: only what is needed
KEEP_IMAGE=${KEEP_IMAGE:-0}     # 1: leave the trial image for the next run (pass it as TRIAL_IMAGE=...)
[[ -n ${TRIAL_IMAGE:-} ]] && KEEP_IMAGE=1
OUT=${OUT:-$REPO/bench/ha/results/$(date -u +%Y-%m-%dT%H%MZ)}

P=vrrptrial-$(date +%s)-$$
IMAGE=${TRIAL_IMAGE:-scaling-lab-trial/balancer-vrrp:$P}
NET=$P-net

say() { printf '[%s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  say "cleaning up $P"
  # Keep every container's log with the results, also after a failure.
  if [[ -d ${OUT:-} ]]; then
    for c in lb-1 lb-2 edge; do docker logs -t "$P-$c" > "$OUT/$c.log" 2>&1; done
  fi
  # Unpause first: a paused container cannot be removed.
  for c in $(docker ps -aq --filter "label=vrrptrial=$P" --filter status=paused); do
    docker unpause "$c" >/dev/null 2>&1
  done
  local ids
  ids=$(docker ps -aq --filter "label=vrrptrial=$P")
  [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1
  docker network rm "$NET" >/dev/null 2>&1
  [[ $KEEP_IMAGE == 1 ]] || docker rmi "$IMAGE" >/dev/null 2>&1
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v docker >/dev/null || die "docker is not installed"
command -v python3 >/dev/null || die "python3 is not installed: apt-get install python3 (the load driver)"
docker image inspect "$BALANCER_IMAGE" >/dev/null 2>&1 ||
  die "$BALANCER_IMAGE is missing: build the lab's images first (make images)"
if [[ $BACKEND == auto ]]; then
  if docker image inspect "$APP_IMAGE" >/dev/null 2>&1; then BACKEND=app; else BACKEND=balancer; fi
fi
case $BACKEND in
  app) docker image inspect "$APP_IMAGE" >/dev/null 2>&1 || die "$APP_IMAGE is missing: build it, or run with BACKEND=balancer"
       LOAD_PATH=/ ;;
  balancer) LOAD_PATH=/healthz ;;
  socat) LOAD_PATH=/ ;;
  *) die "BACKEND=$BACKEND: use app, balancer or socat" ;;
esac
mkdir -p "$OUT" || die "cannot create $OUT"
say "results in $OUT"

# ---------------------------------------------------------------- the machine
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kernel: $(uname -r)"
  echo "docker: $(docker version --format '{{.Server.Version}}')"
  echo "python3: $(python3 --version 2>&1)"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
  echo "balancer_image: $BALANCER_IMAGE $(docker image inspect -f '{{.Id}}' "$BALANCER_IMAGE" | cut -c8-19)"
  [[ -n ${BALANCER_IMAGE_NOTE:-} ]] && echo "balancer_image_note: $BALANCER_IMAGE_NOTE"
  echo "backend: $BACKEND (requests: GET $LOAD_PATH)"
  echo "settings: rate=${RATE}/s max_time=${MAX_TIME}s advert_int=$ADVERT_INT preempt=$PREEMPT prio lb-1=$PRIO_1 lb-2=$PRIO_2 lb_caps=$LB_CAPS pause_s=$PAUSE_S"
} > "$OUT/env.txt"

# ---------------------------------------------------------------- the image
if [[ -n ${TRIAL_IMAGE:-} ]] && docker image inspect "$TRIAL_IMAGE" >/dev/null 2>&1; then
  say "reusing the trial image $TRIAL_IMAGE"
else
  say "building the trial image (keepalived + socat on $BALANCER_IMAGE)"
  docker build -q --build-arg "BALANCER_IMAGE=$BALANCER_IMAGE" --label "vrrptrial=$P" \
    -t "$IMAGE" -f "$HERE/Dockerfile" "$BAL_DIR" > "$OUT/build.txt" 2>&1 ||
    { cat "$OUT/build.txt" >&2; die "docker build failed"; }
fi
echo "keepalived: $(docker run --rm --label "vrrptrial=$P" --entrypoint keepalived "$IMAGE" --version 2>&1 | head -1)" >> "$OUT/env.txt"

# ---------------------------------------------------------------- the network
# Let Docker choose a free subnet (it knows its other networks and the
# user's address pools), read it back, and create the network again with
# that subnet and an allocation range of its lower half only. The upper half is ours: the
# virtual address and the balancers' fixed addresses live there, where
# Docker never hands out an address.
say "creating the network"
docker network create --label "vrrptrial=$P" "$NET" >/dev/null || die "cannot create a network"
read -r SUBNET GATEWAY < <(docker network inspect -f '{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}' "$NET")
docker network rm "$NET" >/dev/null
[[ $SUBNET =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)/([0-9]+)$ ]] || die "unexpected subnet '$SUBNET'"
plen=${BASH_REMATCH[5]}
(( plen <= 28 )) || die "subnet $SUBNET is too small to split"
base=$(( (BASH_REMATCH[1] << 24) | (BASH_REMATCH[2] << 16) | (BASH_REMATCH[3] << 8) | BASH_REMATCH[4] ))
size=$(( 1 << (32 - plen) ))
ip4() { echo "$(( $1 >> 24 & 255 )).$(( $1 >> 16 & 255 )).$(( $1 >> 8 & 255 )).$(( $1 & 255 ))"; }
IP_RANGE="$(ip4 "$base")/$(( plen + 1 ))"
VIP=$(ip4 $(( base + size - 2 )))     # last usable address
LB1_IP=$(ip4 $(( base + size - 3 )))
LB2_IP=$(ip4 $(( base + size - 4 )))
docker network create --label "vrrptrial=$P" --driver bridge \
  --subnet "$SUBNET" --gateway "$GATEWAY" --ip-range "$IP_RANGE" "$NET" >/dev/null ||
  die "cannot create $NET with subnet $SUBNET (taken meanwhile? run again)"
{
  echo "docker chose: subnet $SUBNET gateway $GATEWAY"
  echo "recreated with: --subnet $SUBNET --gateway $GATEWAY --ip-range $IP_RANGE"
  echo "vip $VIP lb-1 $LB1_IP lb-2 $LB2_IP (outside the ip-range, inside the subnet)"
  docker network inspect -f '{{json .IPAM}}' "$NET"
} > "$OUT/network.txt"
say "network $NET: subnet $SUBNET, Docker allocates from $IP_RANGE; vip $VIP"

# ---------------------------------------------------------------- containers
# --init: the lab runs every container with Docker's init as PID 1 (lab/src/runtime/docker.rs).
common=(--label "vrrptrial=$P" --network "$NET" --log-driver json-file --init)

mkdir -p "$OUT/etc-backend"
cat > "$OUT/etc-backend/balancer.toml" <<EOF
# A dummy upstream: a balancer with no servers, whose admin API on port
# 8000 answers GET /healthz.
listen = "0.0.0.0:8001"
admin_listen = "0.0.0.0:8000"
workers = 1
EOF
for n in 1 2; do
  case $BACKEND in
    app)
      # lab-app serves GET / and /healthz without touching the database; the
      # database URL only has to parse.
      docker run -d --name "$P-server-$n" --network-alias "server-$n" "${common[@]}" --cap-drop ALL \
        -e SERVER_NAME="server-$n" -e PORT=8000 -e SESSION_STORE=memory -e CACHE=off \
        -e DATABASE_URL=postgres://lab:lab@db-1:5432/lab "$APP_IMAGE" >/dev/null ;;
    balancer)
      docker create --name "$P-server-$n" --network-alias "server-$n" "${common[@]}" \
        --cap-drop ALL --cap-add SETUID --cap-add SETGID --cap-add SETPCAP "$IMAGE" >/dev/null &&
        docker cp "$OUT/etc-backend" "$P-server-$n:/etc/lab" &&
        docker start "$P-server-$n" >/dev/null ;;
    socat)
      docker run -d --name "$P-server-$n" --network-alias "server-$n" "${common[@]}" --cap-drop ALL \
        --user nobody -e SERVER_NAME="server-$n" --entrypoint socat "$IMAGE" \
        TCP-LISTEN:8000,fork,reuseaddr,backlog=128 EXEC:/usr/local/lib/lab-vrrp-trial/backend >/dev/null ;;
  esac || die "cannot start server-$n"
done

mkdir -p "$OUT/etc-lab"
cat > "$OUT/etc-lab/balancer.toml" <<EOF
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9000"
strategy = "round-robin"
[[upstream]]
name = "server-1"
address = "server-1:8000"
[[upstream]]
name = "server-2"
address = "server-2:8000"
EOF

if [[ $LB_CAPS == minimal ]]; then
  # Everything else dropped: NET_ADMIN/NET_RAW for keepalived; SETUID,
  # SETGID, SETPCAP for setpriv; CHOWN for /run/lab; KILL so keepalived
  # (root) can stop a check script that runs as nobody.
  lbcaps=(--cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW --cap-add SETUID
          --cap-add SETGID --cap-add SETPCAP --cap-add CHOWN --cap-add KILL)
else
  lbcaps=(--cap-add NET_ADMIN --cap-add NET_RAW)
fi
PASSWORD=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
for n in 1 2; do
  if (( n == 1 )); then ip=$LB1_IP peer=$LB2_IP prio=$PRIO_1; else ip=$LB2_IP peer=$LB1_IP prio=$PRIO_2; fi
  docker create --name "$P-lb-$n" --hostname "lb-$n" "${common[@]}" --ip "$ip" "${lbcaps[@]}" \
    -e VRRP_VIP="$VIP" -e VRRP_PEERS="$peer" -e VRRP_PRIORITY="$prio" \
    -e VRRP_ADVERT_INT="$ADVERT_INT" -e VRRP_PREEMPT="$PREEMPT" -e VRRP_PASSWORD="${PASSWORD:0:8}" \
    "$IMAGE" >/dev/null || die "cannot create lb-$n"
  # The image has no /etc/lab: copy the directory (the lab uploads a tar).
  docker cp "$OUT/etc-lab" "$P-lb-$n:/etc/lab" || die "cannot copy the config into lb-$n"
done
# lb-1 first, as `lab up` would; lb-2 a second later.
docker start "$P-lb-1" >/dev/null && sleep 1 && docker start "$P-lb-2" >/dev/null || die "cannot start the balancers"

# The edge: the internet between the host and the site. No capability at all.
docker run -d --name "$P-edge" "${common[@]}" --cap-drop ALL --user nobody -p 127.0.0.1::8080 \
  --entrypoint socat "$IMAGE" TCP-LISTEN:8080,fork,reuseaddr,backlog=256 "TCP:$VIP:8080,connect-timeout=1" >/dev/null ||
  die "cannot start the edge"
EDGE_PORT=$(docker port "$P-edge" 8080/tcp | head -1 | sed 's/.*://')
[[ -n $EDGE_PORT ]] || die "the edge has no published port"
say "edge on 127.0.0.1:$EDGE_PORT -> $VIP:8080"

# ---------------------------------------------------------------- helpers
other() { [[ $1 == lb-1 ]] && echo lb-2 || echo lb-1; }
prio_of() { [[ $1 == lb-1 ]] && echo $PRIO_1 || echo $PRIO_2; }

# Which node has the address on its interface (the ground truth), if any.
# Read through the container's network namespace from the host (nsenter),
# which also works while a container is paused, when docker exec cannot.
# It reads the interface; it sends nothing to the container.
addr_of() { # NODE -> the node's addresses on eth0
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' "$P-$1" 2>/dev/null) || return 1
  (( pid > 0 )) || return 1
  if (( EUID == 0 )) && command -v nsenter >/dev/null; then
    nsenter -t "$pid" -n ip -4 -o addr show dev eth0 2>/dev/null
  else
    docker exec "$P-$1" ip -4 -o addr show dev eth0 2>/dev/null
  fi
}
holders() {
  local n out=""
  for n in lb-1 lb-2; do
    addr_of "$n" | grep -q " $VIP/" && out+="$n "
  done
  echo "${out% }"
}

# What keepalived on NODE believes (from its notify hook's file).
role() { docker exec "$P-$1" cat /run/lab/vrrp/state.json 2>/dev/null | sed -n 's/.*"state": "\([a-z]*\)".*/\1/p'; }

wait_role() { # NODE REGEX TIMEOUT_S
  local end=$(( ${EPOCHREALTIME%.*} + $3 )) r
  while (( ${EPOCHREALTIME%.*} < end )); do
    r=$(role "$1"); [[ $r =~ ^($2)$ ]] && return 0
    sleep 0.2
  done
  die "$1 did not reach state $2 within $3 s (last: ${r:-none}); see docker logs $P-$1"
}

# When NODE's notify hook last wrote master, relative to T ("-" if it is
# not master): a second clock for the takeover, from inside the container.
notify_since() { # NODE T
  docker exec "$P-$1" cat /run/lab/vrrp/state.json 2>/dev/null |
    awk -v t="$2" '/"state": "master"/ { match($0, /"since_unix_ms": [0-9]+/)
      v = substr($0, RSTART + 17, RLENGTH - 17); printf "%.3f", v / 1000 - t; found = 1 }
      END { if (!found) printf "-" }'
}

# When Docker did EVENT (kill, pause, unpause, start, die) to NODE since
# SINCE, from Docker's own event log: on a busy machine `docker kill` can take
# a second to return, and the fault happened somewhere inside that second.
event_time() { # NODE EVENT SINCE
  local ns
  ns=$(docker events --since "$3" --until "$(date +%s.%N)" --filter "container=$P-$1" \
       --filter "event=$2" --format '{{.TimeNano}}' 2>/dev/null)
  ns=${ns%%$'\n'*}
  [[ -n $ns ]] || return 1
  echo "${ns:0:10}.${ns:10:6}"
}

# Epoch time of the first keepalived log line of NODE after SINCE matching RE.
log_time() { # NODE SINCE RE
  local line
  # All matches, then the first: grep -m1 would close the pipe early, and
  # with pipefail docker's SIGPIPE would read as "no match".
  line=$(docker logs -t --since "$2" "$P-$1" 2>&1 | grep -E "$3")
  line=${line%%$'\n'*}
  [[ -n $line ]] || return 1
  date -u -d "${line%% *}" +%s.%N | cut -c1-17
}

# RATE requests a second for SECONDS, each on its own connection, on a fixed
# schedule (a slow request does not delay the next); bounded, it stops.
# One Python process (load.py): a loop of curl forks a process per request,
# whose start-up on a busy machine would count in every timing.
load() { # FILE SECONDS
  python3 "$HERE/load.py" --port "$EDGE_PORT" --path "$LOAD_PATH" --rate "$RATE" --seconds "$2" --timeout "$MAX_TIME" --out "$1"
}

# Summary of a load file around a fault at T, the other node's takeover at
# K and the victim's return (start, restart, unpause) at U (0: unknown).
# Each failed request is put in one bucket by its start time:
#   fault   from T - MAX_TIME (already in flight) to K + 2 x MAX_TIME
#           (or up to U when K is unknown)
#   return  from U - MAX_TIME to U + 5 s
#   stray   anywhere else: the machine's own hiccups (compare the steady run)
# driver_late counts requests that left over 100 ms late (the load driver
# itself was starved of CPU), failed_late the failed ones among them.
# The failure window is the first to the last start in the fault bucket;
# recovered_s is when the first request that started after the first fault
# failure came back successfully.
analyse() { # FILE T U K
  sort -n "$1" | awk -v t="$2" -v u="${3:-0}" -v k="${4:-0}" -v m="$MAX_TIME" '
    BEGIN { lo = t - m; hi = (k > 0) ? k + 2 * m : ((u > 0) ? u : 1e18) }
    { n++; ok = ($4 == "ok"); st[n] = $1; en[n] = $2; okv[n] = ok
      if ($6 > 100) late++
      if (ok) next
      f++
      if ($6 > 100) flate++
      if ($4 == "timeout") to++; else if ($4 == "http") he++; else ce++
      if ($1 >= lo && $1 <= hi) { ffault++; if (ff == "") ff = $1; lf = $1 }
      else if (u > 0 && $1 >= u - m && $1 <= u + 5) fret++
      else fstray++
    }
    END {
      rec = ""
      if (ff != "") for (i = 1; i <= n; i++) if (st[i] >= ff && okv[i] && (rec == "" || en[i] < rec)) rec = en[i]
      printf "requests=%d failed=%d timeouts=%d conn_errors=%d http_errors=%d failed_fault=%d failed_return=%d failed_stray=%d driver_late=%d failed_late=%d", n, f, to, ce, he, ffault, fret, fstray, late, flate
      if (ffault > 0) printf " first_fail_s=%.3f last_fail_s=%.3f window_s=%.3f", ff - t, lf - t, lf - ff
      else printf " first_fail_s=- last_fail_s=- window_s=0"
      if (rec != "") printf " recovered_s=%.3f", rec - t
      printf "\n"
    }'
}

theory() { # PRIORITY_OF_THE_TAKER -> "min max" seconds after the master died
  awk -v p="$1" -v a="$ADVERT_INT" 'BEGIN { skew = (256 - p) / 256 * a; down = 3 * a + skew
    printf "skew_s=%.3f master_down_s=%.3f expected_s=%.3f..%.3f", skew, down, down - a, down }'
}

# ---------------------------------------------------------------- start-up
say "waiting for the election"
wait_role lb-1 'master|backup' 30
wait_role lb-2 'master|backup' 30
for (( k = 0; k < 100; k++ )); do
  h=$(holders); [[ $h == lb-1 || $h == lb-2 ]] && break
  sleep 0.2
done
[[ $h == lb-1 || $h == lb-2 ]] || die "expected one holder of $VIP, got '${h:-none}'"
say "holder: $h"
{ echo "# initial election"; docker logs -t "$P-lb-1" 2>&1 | grep -E 'Entering|Startup complete|VRRP_Script'; } > "$OUT/startup.txt"

# Memory at rest: both balancers (balancer + keepalived), the edge, a server.
sleep 3
{
  docker stats --no-stream --format '{{.Name}} {{.MemUsage}} {{.CPUPerc}}' \
    "$P-lb-1" "$P-lb-2" "$P-edge" "$P-server-1" | sed "s/^$P-//"
  for n in lb-1 lb-2; do
    echo "# processes in $n (RSS KiB)"
    docker exec "$P-$n" ps -eo user,rss,comm --sort=-rss
  done
} > "$OUT/memory.txt"
cp "$OUT/memory.txt" /dev/stderr

# Configuration as rendered, for the record (the password is blanked).
docker exec "$P-lb-1" cat /run/keepalived/keepalived.conf | sed 's/auth_pass .*/auth_pass (blanked)/' > "$OUT/keepalived-lb-1.conf"

EVENTS=$OUT/events.txt
: > "$EVENTS"
record() { echo "$*" | tee -a "$EVENTS" >&2; }

# ---------------------------------------------------------------- steady state
if (( STEADY_S > 0 )); then
  say "steady state: ${STEADY_S}s at ${RATE}/s, no fault"
  load "$OUT/steady.load" "$STEADY_S"
  record "steady holder=$(holders) $(analyse "$OUT/steady.load" "$(head -1 "$OUT/steady.load" | cut -d' ' -f1)")"
fi

# ---------------------------------------------------------------- faults
# One round: load for 16 s; at 3 s the fault hits the holder; at 9 s the
# victim is brought back (docker start, or docker restart after a process
# kill) while the load goes on, so the record shows whether its return costs
# a second failover (it must not with preempt off).
fault_round() { # KIND I ACTION
  local kind=$1 i=$2 action=$3 h s t r f=$OUT/$1-$2.load
  h=$(holders); [[ $h == lb-1 || $h == lb-2 ]] || die "$kind $i: expected one holder, got '${h:-none}'"
  s=$(other "$h")
  load "$f" 16 &
  local lp=$!
  sleep 3
  t=$(now)
  case $action in
    kill) docker kill "$P-$h" >/dev/null ;;
    stop) docker stop -t 10 "$P-$h" >/dev/null ;;
    prockill) docker exec "$P-$h" sh -c 'kill -KILL "$(cat /run/lab/balancer.pid)"' ;;
  esac
  local cmd_s; cmd_s=$(awk -v a="$(now)" -v b="$t" 'BEGIN{printf "%.3f", a-b}')
  # The fault's instant: Docker's kill event (SIGKILL, or SIGTERM for a
  # stop); for a process kill, the moment docker exec was called.
  local te
  if [[ $action != prockill ]] && te=$(event_time "$h" kill "$t"); then t=$te; fi
  sleep "$(awk -v t="$t" -v n="$(now)" 'BEGIN { d = t + 6 - n; printf "%.3f", (d > 0 ? d : 0) }')"
  r=$(now)
  case $action in
    kill|stop) docker start "$P-$h" >/dev/null ;;
    prockill) docker restart -t 5 "$P-$h" >/dev/null ;;
  esac
  wait "$lp"
  local took
  took=$(log_time "$s" "$t" 'Entering MASTER STATE') || took=""
  local a; a=$(analyse "$f" "$t" "$r" "${took:-0}")
  local extra=""
  if [[ $action == prockill ]]; then
    local fault; fault=$(log_time "$h" "$t" 'Entering FAULT STATE') || fault=""
    [[ -n $fault ]] && extra=" fault_s=$(awk -v a="$fault" -v b="$t" 'BEGIN{printf "%.3f", a-b}')"
  fi
  local tk="-"; [[ -n $took ]] && tk=$(awk -v a="$took" -v b="$t" 'BEGIN{printf "%.3f", a-b}')
  # Did the victim take the address back after its return (preempt on)?
  local again vm="-"
  again=$(log_time "$h" "$r" 'Entering MASTER STATE') && vm=$(awk -v a="$again" -v b="$r" 'BEGIN{printf "%.3f", a-b}')
  extra+=" victim_master_again_after_return_s=$vm"
  record "$kind $i victim=$h taker=$s taker_prio=$(prio_of "$s") takeover_s=$tk notify_s=$(notify_since "$s" "$t")$extra cmd_s=$cmd_s $a $(theory "$(prio_of "$s")") return_at_s=$(awk -v a="$r" -v b="$t" 'BEGIN{printf "%.3f", a-b}') victim_role_after=$(role "$h") holder_after=$(holders | tr ' ' '+')"
  wait_role "$h" 'backup|master' 30
  sleep 2
}

for (( i = 1; i <= CRASHES; i++ )); do say "crash $i/$CRASHES"; fault_round crash "$i" kill; done

for (( i = 1; i <= PROCKILLS; i++ )); do say "balancer process kill $i/$PROCKILLS"; fault_round prockill "$i" prockill; done

for (( i = 1; i <= STOPS; i++ )); do say "graceful stop $i/$STOPS"; fault_round stop "$i" stop; done

# A pause freezes every process of the holder, keepalived included, but its
# kernel still holds the address and still answers ARP and TCP handshakes.
for (( i = 1; i <= PAUSES; i++ )); do
  say "pause $i/$PAUSES"
  # Odd rounds pause lb-1 (the higher priority), even rounds lb-2: the two
  # cases end differently. If the other node holds the address, hand it
  # over first with a graceful restart, outside the measured load. (Not with
  # preempt on: lb-1 would take the address back a few seconds later.)
  h=$(holders)
  want=$h
  [[ $PREEMPT == off ]] && want=lb-$(( 2 - i % 2 ))
  if [[ $h == "$(other "$want")" ]]; then
    docker restart -t 10 "$P-$h" >/dev/null
    wait_role "$h" 'backup|master' 30
    sleep 2
  fi
  h=$(holders); [[ $h == "$want" ]] || die "pause $i: expected $want to hold the address, got '${h:-none}'"
  s=$(other "$h")
  f=$OUT/pause-$i.load
  load "$f" $(( 3 + PAUSE_S + 9 )) &
  lp=$!
  sleep 3
  t=$(now); docker pause "$P-$h" >/dev/null
  cmd_s=$(awk -v a="$(now)" -v b="$t" 'BEGIN{printf "%.3f", a-b}')
  if te=$(event_time "$h" pause "$t"); then t=$te; fi
  sleep "$PAUSE_S"
  during=$(holders | tr ' ' '+')      # the paused node still has it: two holders
  u=$(now); uc=$u; docker unpause "$P-$h" >/dev/null
  if te=$(event_time "$h" unpause "$u"); then u=$te; fi
  # Logs are searched from the command (uc): Docker records the unpause
  # event after the thaw, and keepalived may already have acted by then.
  sleep 0.5; just_after=$(holders | tr ' ' '+')
  wait "$lp"
  took=$(log_time "$s" "$t" 'Entering MASTER STATE') || took=""
  tk="-"; [[ -n $took ]] && tk=$(awk -v a="$took" -v b="$t" 'BEGIN{printf "%.3f", a-b}')
  # Everything both keepalived said from the unpause on.
  {
    for n in "$h" "$s"; do
      docker logs -t --since "$uc" "$P-$n" 2>&1 | grep -vE 'gratuitous ARP|lab_balancer' | sed "s/^/$n /"
    done
  } | sort -k2 > "$OUT/pause-$i.after-unpause.log"
  back=$(log_time "$s" "$uc" 'Entering BACKUP STATE') || back=""
  bk="-"; [[ -n $back ]] && bk=$(awk -v a="$back" -v b="$u" 'BEGIN{printf "%.3f", a-b}')
  record "pause $i victim=$h taker=$s taker_prio=$(prio_of "$s") takeover_s=$tk cmd_s=$cmd_s holders_before_unpause=$during holder_0.5s_after_unpause=$just_after taker_back_to_backup_after_unpause_s=$bk $(analyse "$f" "$t" "$u" "${took:-0}") $(theory "$(prio_of "$s")") unpause_at_s=$(awk -v a="$u" -v b="$t" 'BEGIN{printf "%.3f", a-b}') holder_after=$(holders | tr ' ' '+')"
  sleep 3
done

# ---------------------------------------------------------------- the record
echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/env.txt"
say "done: $OUT"
