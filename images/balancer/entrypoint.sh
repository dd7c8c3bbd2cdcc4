#!/bin/bash
# Entrypoint of the lab's balancer image.
#
# Alone (no VRRP_VIP), it runs lab-balancer as today, as user nobody.
#
# In a pair (VRRP_VIP set), it runs two programs side by side:
#   - lab-balancer, dropped to user nobody with no capability at all;
#   - keepalived, as root, which speaks VRRP with the other balancer and
#     puts the virtual address on this container's interface while this node
#     is the master. keepalived checks our balancer's /healthz every second,
#     so a balancer that dies in a living container gives the address up.
# keepalived needs NET_ADMIN (add and remove the address) and NET_RAW (send
# VRRP packets, IP protocol 112, and gratuitous ARP): the container gets
# exactly those two with --cap-add, never --privileged.
#
# Environment (pair mode):
#   VRRP_VIP            the virtual address, e.g. 172.18.255.254 (required)
#   VRRP_PEERS          the other balancer's address(es), comma or space
#                       separated, IPv4 only (required; give the balancers
#                       fixed addresses so a restart does not change them)
#   VRRP_PRIORITY       1-254, higher wins an election (default 100)
#   VRRP_ADVERT_INT     seconds between adverts, a whole number with
#                       VRRPv2 (default 1)
#   VRRP_PREEMPT        off (default): a node that comes back stays backup;
#                       on: the higher priority takes the address back
#   VRRP_PREEMPT_DELAY  with VRRP_PREEMPT=on, seconds to wait first (default 0)
#   VRRP_PASSWORD       optional, 1-8 characters (VRRPv2 simple password: it
#                       keeps a stray node out, it is not a secret on the wire)
#   VRRP_ROUTER_ID      virtual_router_id, 1-255 (default 51)
#   VRRP_INTERFACE      default eth0
#   VRRP_SRC_IP         this node's address (default: the interface's)
#   VRRP_VIP_PREFIX     prefix length put on the address (default 32)
#   VRRP_CHECK_FALL / VRRP_CHECK_RISE   failed / passed checks that change
#                       the node's health (default 2 / 2)
#   LAB_BALANCER_ADMIN  where the health check finds the admin API
#                       (default 127.0.0.1:9000)
# Arguments are lab-balancer's (the image's CMD: --config /etc/lab/balancer.toml);
# a first argument that is not an option is a command to run instead, as nobody.
set -euo pipefail

BALANCER=(/usr/local/bin/lab-balancer "$@")
LIB=/usr/local/lib/lab-vrrp
# Drop every privilege for the balancer: another uid, no groups, no
# capability it could regain, and no set-uid escalation.
DROP=(setpriv --reuid=nobody --regid=nogroup --clear-groups
      --inh-caps=-all --bounding-set=-all --no-new-privs --)

say() { printf 'lab-balancer-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A command instead of the balancer's options (the lab's `edge` runs
# `lab-faultproxy ...` from this image): run it as nobody, like the balancer.
if [[ $# -gt 0 && $1 != -* ]]; then
  if (( EUID == 0 )); then exec "${DROP[@]}" "$@"; fi
  exec "$@"
fi

if [[ -z ${VRRP_VIP:-} ]]; then
  if (( EUID == 0 )); then exec "${DROP[@]}" "${BALANCER[@]}"; fi
  exec "${BALANCER[@]}"
fi

# ---- pair mode: check what we were given, each error names the fix ----

(( EUID == 0 )) || die "VRRP_VIP is set but the entrypoint runs as uid $EUID: keepalived needs root; run the image as root (the balancer itself still drops to nobody)"

# The kernel's effective capability mask of this process: NET_ADMIN is bit 12,
# NET_RAW bit 13.
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
for cap in 12:NET_ADMIN 13:NET_RAW; do
  (( (16#$capeff >> ${cap%%:*}) & 1 )) ||
    die "the container lacks ${cap#*:}: create it with --cap-add NET_ADMIN --cap-add NET_RAW (keepalived moves the address and sends VRRP)"
done

ipv4='^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$'
int_in() { [[ $1 =~ ^[0-9]+$ ]] && (( 10#$1 >= $2 && 10#$1 <= $3 )); }

vip=$VRRP_VIP
[[ $vip =~ $ipv4 ]] || die "VRRP_VIP=$vip is not an IPv4 address (e.g. 172.18.255.254)"
iface=${VRRP_INTERFACE:-eth0}
ip link show dev "$iface" >/dev/null 2>&1 || die "VRRP_INTERFACE=$iface: no such interface in this container (see \`ip link\`)"
src=${VRRP_SRC_IP:-$(ip -4 -o addr show dev "$iface" scope global | awk 'NR == 1 {sub(/\/.*/, "", $4); print $4}')}
[[ $src =~ $ipv4 ]] || die "cannot tell this node's address on $iface: set VRRP_SRC_IP"
[[ $src != "$vip" ]] || die "VRRP_SRC_IP equals VRRP_VIP ($vip): the virtual address must be one no container owns"

peers="" peer_list=""
peers_given=${VRRP_PEERS:-}
for p in ${peers_given//,/ }; do
  [[ $p =~ $ipv4 ]] || die "VRRP_PEERS: $p is not an IPv4 address (keepalived takes addresses, not names: give the balancers fixed addresses)"
  [[ $p != "$src" ]] || die "VRRP_PEERS lists this node's own address $p"
  peers+="        $p"$'\n'
  peer_list+=" $p"
done
[[ -n $peers ]] || die "VRRP_PEERS is empty: name the other balancer's address"

priority=${VRRP_PRIORITY:-100}
int_in "$priority" 1 254 || die "VRRP_PRIORITY=$priority: use 1-254 (255 means 'owns the address' in VRRP and is not for a floating one)"
advert=${VRRP_ADVERT_INT:-1}
int_in "$advert" 1 255 || die "VRRP_ADVERT_INT=$advert: use a whole number of seconds, 1-255 (VRRPv2)"
router_id=${VRRP_ROUTER_ID:-51}
int_in "$router_id" 1 255 || die "VRRP_ROUTER_ID=$router_id: use 1-255"
prefix=${VRRP_VIP_PREFIX:-32}
int_in "$prefix" 1 32 || die "VRRP_VIP_PREFIX=$prefix: use 1-32"
fall=${VRRP_CHECK_FALL:-2} rise=${VRRP_CHECK_RISE:-2}
int_in "$fall" 1 10 || die "VRRP_CHECK_FALL=$fall: use 1-10"
int_in "$rise" 1 10 || die "VRRP_CHECK_RISE=$rise: use 1-10"
admin=${LAB_BALANCER_ADMIN:-127.0.0.1:9000}
[[ $admin =~ ^[0-9.]+:[0-9]+$ ]] || die "LAB_BALANCER_ADMIN=$admin: use ADDRESS:PORT"

case ${VRRP_PREEMPT:-off} in
  off) preempt="    # A node that comes back stays backup: one failover per failure, not two."$'\n'"    nopreempt" ;;
  on)
    delay=${VRRP_PREEMPT_DELAY:-0}
    int_in "$delay" 0 1000 || die "VRRP_PREEMPT_DELAY=$delay: use 0-1000 seconds"
    preempt="    # The higher priority takes the address back, $delay s after it is up."$'\n'"    preempt_delay $delay" ;;
  *) die "VRRP_PREEMPT=${VRRP_PREEMPT}: use on or off" ;;
esac

auth="    # No password: VRRP_PASSWORD is unset."
if [[ -n ${VRRP_PASSWORD:-} ]]; then
  [[ ${#VRRP_PASSWORD} -le 8 && $VRRP_PASSWORD =~ ^[A-Za-z0-9._-]+$ ]] ||
    die "VRRP_PASSWORD: use 1-8 characters of A-Z a-z 0-9 . _ - (VRRPv2 carries 8 bytes)"
  auth="    authentication {"$'\n'"        auth_type PASS"$'\n'"        auth_pass $VRRP_PASSWORD"$'\n'"    }"
fi

# ---- render keepalived.conf from the template ----

conf=$(<"$LIB/keepalived.conf.in")
subst() { conf=${conf//"@$1@"/$2}; }
subst ROUTER_NAME "$(hostname)"
subst INTERFACE "$iface"
subst ROUTER_ID "$router_id"
subst PRIORITY "$priority"
subst ADVERT_INT "$advert"
subst PREEMPT_LINES "$preempt"
subst SRC_IP "$src"
subst PEERS "${peers%$'\n'}"
subst AUTH_BLOCK "$auth"
subst VIP "$vip"
subst VIP_PREFIX "$prefix"
subst CHECK_FALL "$fall"
subst CHECK_RISE "$rise"
subst ADMIN "$admin"
if left=$(grep -o '@[A-Z_]*@' <<<"$conf"); then
  die "keepalived.conf.in has placeholders the entrypoint does not fill: $(echo $left)"
fi
# A container restarted after `docker kill` keeps its /run: keepalived would
# find its old pid file, see some process of ours with that pid in this
# fresh PID namespace, say "daemon is already running" and exit.
# (chown first: root here may lack DAC_OVERRIDE, and /run/lab/vrrp is nobody's.)
[[ -d /run/lab ]] && chown -R root:root /run/lab
rm -rf /run/keepalived /run/lab
mkdir -p /run/keepalived
printf '%s\n' "$conf" > /run/keepalived/keepalived.conf

# /run/lab/balancer.pid lets a lesson kill just the balancer;
# /run/lab/vrrp/ belongs to nobody, as whom the notify hook writes state.json.
# (Root here may lack DAC_OVERRIDE, so nobody's directory is nobody's alone.)
mkdir -m 0755 /run/lab /run/lab/vrrp
chown nobody:nogroup /run/lab/vrrp
"${DROP[@]}" "$LIB/notify" INSTANCE lab STARTING "$priority"

# ---- run both, and stop both in the right order ----

"${DROP[@]}" "${BALANCER[@]}" &
balancer=$!
echo "$balancer" > /run/lab/balancer.pid
say "balancer started (pid $balancer); VRRP: $src -> peers${peer_list} vip $vip priority $priority advert_int $advert preempt ${VRRP_PREEMPT:-off}"

keepalived --dont-fork --log-console --log-detail --no-syslog --vrrp \
  --use-file=/run/keepalived/keepalived.conf \
  --pid=/run/keepalived/keepalived.pid --vrrp_pid=/run/keepalived/vrrp.pid &
keepalived=$!

# `lab partition` and `lab heal` disconnect the container from the lab
# network and connect it again with the same address, but Docker 20.10 names
# the new interface eth1. keepalived (with dynamic_interfaces) waits for the
# interface it was given, so once Docker has finished setting the new one up
# (it has its address), give it the old name back (NET_ADMIN allows it) and
# restore the default route the rename drops.
gateway=$(ip -4 route show default | awk 'NR == 1 {print $3}')
(
  while sleep 1; do
    [[ -e /sys/class/net/$iface ]] && continue
    for dev in /sys/class/net/eth*; do
      [[ -e $dev ]] || continue
      new=${dev##*/}
      [[ -n $(ip -4 -o addr show dev "$new" 2>/dev/null) ]] || continue
      sleep 1
      ip link set dev "$new" down && ip link set dev "$new" name "$iface" &&
        ip link set dev "$iface" up && say "the lab network came back as $new: renamed it $iface for keepalived"
      [[ -n $gateway ]] && ip route replace default via "$gateway" dev "$iface" 2>/dev/null
      # A reload makes keepalived open its VRRP sockets on the interface
      # anew. Seen here before it (and before allow_if_changes): after a heal
      # the node said "backup" but never took the address when the master
      # then died. e2e_ha checks exactly that.
      kill -HUP "$keepalived" 2>/dev/null && say "keepalived reloaded on the new $iface"
      break
    done
  done
) &
renamer=$!

# On `docker stop`: keepalived first, so it drops the address and sends a
# priority-0 advert (the peer takes over within its skew time, well under a
# second); then the balancer, which finishes its in-flight requests.
stop() {
  say "stopping: keepalived first (hands the address over), then the balancer"
  kill -TERM "$renamer" 2>/dev/null || true
  kill -TERM "$keepalived" 2>/dev/null || true
  wait "$keepalived" 2>/dev/null || true
  kill -TERM "$balancer" 2>/dev/null || true
  wait "$balancer" 2>/dev/null || true
  exit 0
}
trap stop TERM INT

balancer_alive=1
while true; do
  wait -n || true
  if ! kill -0 "$keepalived" 2>/dev/null; then
    code=0; wait "$keepalived" || code=$?
    say "keepalived exited ($code): stopping the balancer; the container exits"
    kill -TERM "$renamer" 2>/dev/null || true
    kill -TERM "$balancer" 2>/dev/null || true
    wait "$balancer" 2>/dev/null || true
    exit 1
  fi
  if (( balancer_alive )) && ! kill -0 "$balancer" 2>/dev/null; then
    balancer_alive=0
    code=0; wait "$balancer" || code=$?
    # Deliberately no restart: the container stays up with keepalived in
    # FAULT, the peer holds the address, and `lab status` shows why.
    say "the balancer exited ($code): keepalived's check will fail and give the address up; restart the container to bring it back"
  fi
done
