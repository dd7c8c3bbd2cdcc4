#!/bin/bash
# Checks of images/balancer/entrypoint.sh in real containers:
#   - each bad setting stops the container with one line that names the fix;
#   - alone, the balancer runs as nobody; in a pair, keepalived runs as root
#     and the balancer as nobody with no capability at all;
#   - the rendered keepalived.conf passes keepalived's own config test;
#   - the state file is readable and says where the node stands.
#
#   images/balancer/trial/entrypoint-test.sh                 # builds the trial image
#   TRIAL_IMAGE=<tag> images/balancer/trial/entrypoint-test.sh  # reuses one
#
# Needs docker and scaling-lab/balancer:0.1.0 (or BALANCER_IMAGE). Every
# container and network it makes carries the label vrrptest=<prefix> and is
# removed on exit.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BAL_DIR=$(dirname "$HERE")
BALANCER_IMAGE=${BALANCER_IMAGE:-scaling-lab/balancer:0.1.0}
P=vrrptest-$(date +%s)-$$
IMAGE=${TRIAL_IMAGE:-scaling-lab-trial/balancer-vrrp:$P}
NET=$P-net
fails=0 passes=0

cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=vrrptest=$P")
  [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1
  docker network rm "$NET" >/dev/null 2>&1
  [[ -n ${TRIAL_IMAGE:-} ]] || docker rmi "$IMAGE" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() { passes=$((passes + 1)); printf 'ok   %s\n' "$1"; }
bad() { fails=$((fails + 1)); printf 'FAIL %s\n     %s\n' "$1" "$2"; }

if [[ -z ${TRIAL_IMAGE:-} ]]; then
  build_log=$(docker build -q --build-arg "BALANCER_IMAGE=$BALANCER_IMAGE" --label "vrrptest=$P" \
    -t "$IMAGE" -f "$HERE/Dockerfile" "$BAL_DIR" 2>&1) || { echo "$build_log"; echo "error: docker build failed"; exit 1; }
fi
docker network create --label "vrrptest=$P" --subnet 10.253.0.0/24 --ip-range 10.253.0.0/25 "$NET" >/dev/null ||
  { echo "error: cannot create the test network (10.253.0.0/24 taken?)"; exit 1; }
mkdir -p "${TMPDIR:-/tmp}/$P/lab"
printf 'listen = "0.0.0.0:8080"\nadmin_listen = "0.0.0.0:9000"\n' > "${TMPDIR:-/tmp}/$P/lab/balancer.toml"

# Runs the entrypoint with the given docker options; prints its output.
run() {
  local name=$P-$RANDOM
  docker create --name "$name" --label "vrrptest=$P" --network "$NET" "$@" "$IMAGE" >/dev/null || return
  docker cp "${TMPDIR:-/tmp}/$P/lab" "$name:/etc/lab" || return
  docker start "$name" >/dev/null
  timeout 20 docker wait "$name" >/dev/null
  docker logs "$name" 2>&1
  docker rm -f "$name" >/dev/null
}

# expect_error DESCRIPTION EXPECTED_TEXT DOCKER_OPTIONS...
expect_error() {
  local what=$1 want=$2; shift 2
  local out; out=$(run "$@")
  if grep -qF -- "$want" <<<"$out" && grep -q 'error:' <<<"$out"; then ok "$what"
  else bad "$what" "expected '$want' in: $(tail -3 <<<"$out")"; fi
}

caps=(--cap-add NET_ADMIN --cap-add NET_RAW)
pair=(-e VRRP_VIP=10.253.0.254 -e VRRP_PEERS=10.253.0.252)

expect_error "no NET_ADMIN: the fix is named" "--cap-add NET_ADMIN --cap-add NET_RAW" "${pair[@]}"
expect_error "not root: says keepalived needs root" "keepalived needs root" --user nobody "${caps[@]}" "${pair[@]}"
expect_error "bad VIP" "VRRP_VIP=10.253.0.999 is not an IPv4 address" "${caps[@]}" -e VRRP_VIP=10.253.0.999 -e VRRP_PEERS=10.253.0.252
expect_error "no peers" "VRRP_PEERS is empty" "${caps[@]}" -e VRRP_VIP=10.253.0.254
expect_error "peer given by name" "keepalived takes addresses, not names" "${caps[@]}" -e VRRP_VIP=10.253.0.254 -e VRRP_PEERS=lb-2
expect_error "priority 255" "VRRP_PRIORITY=255: use 1-254" "${caps[@]}" "${pair[@]}" -e VRRP_PRIORITY=255
expect_error "fractional advert_int" "VRRP_ADVERT_INT=0.5: use a whole number" "${caps[@]}" "${pair[@]}" -e VRRP_ADVERT_INT=0.5
expect_error "password too long" "VRRP_PASSWORD: use 1-8 characters" "${caps[@]}" "${pair[@]}" -e VRRP_PASSWORD=123456789
expect_error "preempt typo" "VRRP_PREEMPT=maybe: use on or off" "${caps[@]}" "${pair[@]}" -e VRRP_PREEMPT=maybe

# Alone: the balancer runs, as nobody.
name=$P-alone
docker create --name "$name" --label "vrrptest=$P" --network "$NET" "$IMAGE" >/dev/null &&
  docker cp "${TMPDIR:-/tmp}/$P/lab" "$name:/etc/lab" && docker start "$name" >/dev/null
sleep 2
users=$(docker exec "$name" ps -eo user=,comm= 2>&1)
if grep -q '^nobody *lab-balancer' <<<"$users" && ! grep -q keepalived <<<"$users"; then ok "alone: lab-balancer runs as nobody, no keepalived"
else bad "alone: lab-balancer runs as nobody, no keepalived" "$users"; fi

# In a pair (one node is enough to be elected): roles, capabilities, config.
name=$P-pair
docker create --name "$name" --label "vrrptest=$P" --network "$NET" --ip 10.253.0.253 "${caps[@]}" \
  -e VRRP_VIP=10.253.0.254 -e VRRP_PEERS=10.253.0.252,10.253.0.251 \
  -e VRRP_PRIORITY=150 -e VRRP_PASSWORD=secret1 "$IMAGE" >/dev/null &&
  docker cp "${TMPDIR:-/tmp}/$P/lab" "$name:/etc/lab" && docker start "$name" >/dev/null
sleep 6
users=$(docker exec "$name" ps -eo user=,comm= 2>&1)
if grep -q '^nobody *lab-balancer' <<<"$users" && grep -q '^root *keepalived' <<<"$users"; then ok "pair: balancer as nobody, keepalived as root"
else bad "pair: balancer as nobody, keepalived as root" "$users"; fi
capeff=$(docker exec "$name" sh -c 'grep ^CapEff /proc/$(cat /run/lab/balancer.pid)/status; grep ^CapBnd /proc/$(cat /run/lab/balancer.pid)/status' 2>&1)
if [[ $(awk '{print $2}' <<<"$capeff" | sort -u) == 0000000000000000 ]]; then ok "pair: the balancer has no capability, none in its bounding set"
else bad "pair: the balancer has no capability, none in its bounding set" "$capeff"; fi
test_out=$(docker exec "$name" keepalived --config-test -f /run/keepalived/keepalived.conf 2>&1); code=$?
if (( code == 0 )); then ok "pair: the rendered keepalived.conf passes keepalived --config-test"
else bad "pair: the rendered keepalived.conf passes keepalived --config-test" "exit $code: $(tail -3 <<<"$test_out")"; fi
conf=$(docker exec "$name" cat /run/keepalived/keepalived.conf 2>&1)
if grep -q '^ *10.253.0.252$' <<<"$conf" && grep -q '^ *10.253.0.251$' <<<"$conf" && grep -q 'auth_pass secret1' <<<"$conf" && grep -q '^ *nopreempt' <<<"$conf"; then
  ok "pair: comma-separated peers, the password and nopreempt are in keepalived.conf"
else bad "pair: comma-separated peers, the password and nopreempt are in keepalived.conf" "$(grep -A3 unicast_peer <<<"$conf")"; fi
state=$(docker exec -u nobody "$name" cat /run/lab/vrrp/state.json 2>&1)
if grep -q '"state": "master"' <<<"$state"; then ok "pair: alone on the network, it is elected master and says so in state.json"
else bad "pair: alone on the network, it is elected master and says so in state.json" "$state"; fi
if docker exec "$name" ip -4 -o addr show dev eth0 | grep -q ' 10.253.0.254/32'; then ok "pair: the master has the VIP on eth0"
else bad "pair: the master has the VIP on eth0" "$(docker exec "$name" ip -4 -o addr show dev eth0 2>&1)"; fi
# Kill the balancer: the node must give the address up (FAULT).
docker exec "$name" sh -c 'kill -KILL "$(cat /run/lab/balancer.pid)"'
sleep 4
state=$(docker exec "$name" cat /run/lab/vrrp/state.json 2>&1)
if grep -q '"state": "fault"' <<<"$state" && ! docker exec "$name" ip -4 -o addr show dev eth0 | grep -q ' 10.253.0.254/'; then
  ok "pair: a killed balancer puts the node in FAULT and the VIP is gone"
else bad "pair: a killed balancer puts the node in FAULT and the VIP is gone" "$state"; fi
# A graceful stop must not wait for docker's 10 s SIGKILL.
t0=$EPOCHREALTIME; docker stop -t 10 "$name" >/dev/null; t1=$EPOCHREALTIME
if awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 8) }'; then ok "pair: docker stop ends in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s (signals reach both programs)"
else bad "pair: docker stop ends before the 10 s SIGKILL" "took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"; fi

rm -rf "${TMPDIR:-/tmp}/$P"
echo "$passes passed, $fails failed"
(( fails == 0 ))
