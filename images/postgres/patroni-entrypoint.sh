#!/bin/bash
# The lab's highly available PostgreSQL node: one container runs
#
#   etcd      one member of the consensus store (when this node is listed in
#             DB_ETCD_NODES). Three members survive the loss of any one; the
#             store says who holds the leader key, i.e. who is the primary.
#   Patroni   the manager: creates or copies the database, runs PostgreSQL as
#             primary or replica, renews the leader key while it is primary,
#             and promotes a replica when the key expires (automatic failover).
#   PostgreSQL  started and stopped by Patroni, never by this script.
#
# Names never change (db-1, db-2, ...); roles move. Everything comes from the
# environment the CLI sets:
#
#   SERVICE_NAME          this node's name (default: the hostname)
#   DB_NODES              every database node, comma-separated: db-1,db-2,db-3
#   DB_ETCD_NODES         the nodes that run an etcd member (default DB_NODES)
#   POSTGRES_PASSWORD     the superuser's password (the app logs in with it)
#   REPLICATION_PASSWORD  the replication user's (default POSTGRES_PASSWORD)
#   DB_SCOPE              the cluster's name in etcd (default lab)
#   DB_REPLICATION        async | sync | strict (first start of the cluster only;
#                         later: patronictl edit-config)
#   DB_TTL DB_LOOP_WAIT DB_RETRY_TIMEOUT   Patroni's timings, seconds (5 1 2)
#   DB_MAX_LAG_ON_FAILOVER                 bytes (1048576)
#   ETCD_HEARTBEAT_MS ETCD_ELECTION_MS     etcd's timings (100 1000)
#   PG_LISTEN PG_CONNECT_ADDRESS           PostgreSQL's address, and the one
#                         replicas use (0.0.0.0:5432, NODE:5432)
#   FAULTPROXY_LINKS      when set, the lab's fault proxy runs in front
#
# Failover on/off is not set here: Patroni's pause (failover off) is part of
# the cluster's dynamic configuration, and a paused cluster never bootstraps,
# so the CLI pauses it once it has a primary (PATCH /config {"pause": true}).
#
# Data: PostgreSQL in $DB_STATE_DIR/data, etcd in $DB_STATE_DIR/etcd, the
# node's live overrides in $DB_STATE_DIR/lab-overrides.json: mount one volume
# on $DB_STATE_DIR (/var/lib/postgresql) so all three outlive the container.
set -euo pipefail

export NODE_NAME=${SERVICE_NAME:-$(hostname)}
export DB_STATE_DIR=${DB_STATE_DIR:-/var/lib/postgresql}
export PGDATA=$DB_STATE_DIR/data
export DB_SCOPE=${DB_SCOPE:-lab}
: "${DB_NODES:?DB_NODES is required: every database node, e.g. db-1,db-2,db-3}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
export POSTGRES_PASSWORD
export REPLICATION_PASSWORD=${REPLICATION_PASSWORD:-$POSTGRES_PASSWORD}
DB_ETCD_NODES=${DB_ETCD_NODES:-$DB_NODES}
export DB_TTL=${DB_TTL:-5} DB_LOOP_WAIT=${DB_LOOP_WAIT:-1} DB_RETRY_TIMEOUT=${DB_RETRY_TIMEOUT:-2}
export DB_MAX_LAG_ON_FAILOVER=${DB_MAX_LAG_ON_FAILOVER:-1048576}
export PATRONI_LOG_LEVEL=${PATRONI_LOG_LEVEL:-INFO}
export PATRONI_CONFIG=/run/lab/patroni.yml
# Where PostgreSQL listens, and the address other nodes use for replication
# and pg_rewind. The lab puts its fault proxy in front of both
# (FAULTPROXY_LINKS): PostgreSQL on 127.0.0.1:15432, clients on :5432,
# replication on :5433, so a fault on the replication link leaves the
# clients' link alone.
export PG_LISTEN=${PG_LISTEN:-0.0.0.0:5432}
export PG_CONNECT_ADDRESS=${PG_CONNECT_ADDRESS:-$NODE_NAME:5432}

say() { echo "lab-postgres-ha: $*" >&2; }
fail() { say "$*"; exit 1; }

for v in DB_TTL DB_LOOP_WAIT DB_RETRY_TIMEOUT DB_MAX_LAG_ON_FAILOVER; do
  [[ ${!v} =~ ^[0-9]+$ ]] || fail "$v must be a whole number, not '${!v}'"
done
((DB_LOOP_WAIT + 2 * DB_RETRY_TIMEOUT <= DB_TTL)) ||
  fail "DB_TTL ($DB_TTL) must be at least DB_LOOP_WAIT + 2 * DB_RETRY_TIMEOUT"

case "${DB_REPLICATION:-async}" in
  async) export DB_SYNC_MODE=false DB_SYNC_STRICT=false DB_SYNCHRONOUS_COMMIT=on ;;
  # remote_apply: a commit returns once the replica has applied it, so a read
  # on that replica right after sees it (what `lab replication sync` promises).
  sync) export DB_SYNC_MODE=true DB_SYNC_STRICT=false DB_SYNCHRONOUS_COMMIT=remote_apply ;;
  strict) export DB_SYNC_MODE=true DB_SYNC_STRICT=true DB_SYNCHRONOUS_COMMIT=remote_apply ;;
  *) fail "DB_REPLICATION must be async, sync or strict, not $DB_REPLICATION" ;;
esac

IFS=, read -ra etcd_nodes <<<"$DB_ETCD_NODES"
hosts=() initial=() member=false
for n in "${etcd_nodes[@]}"; do
  hosts+=("$n:2379")
  initial+=("$n=http://$n:2380")
  [ "$n" = "$NODE_NAME" ] && member=true
done
ETCD_HOSTS=$(IFS=,; echo "${hosts[*]}")
export ETCD_HOSTS

mkdir -p "$PGDATA" "$DB_STATE_DIR/etcd" /run/postgresql /run/lab
chown postgres:postgres "$DB_STATE_DIR" "$PGDATA" "$DB_STATE_DIR/etcd" /run/postgresql /run/lab
chmod 700 "$PGDATA" "$DB_STATE_DIR/etcd"

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
as_postgres /usr/local/bin/lab-patroni-config render

# Wait for a process to end, however the shell's `wait` is interrupted.
await() { while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
stop() {
  # Patroni first: as primary it stops PostgreSQL and hands the leader key
  # back, so a graceful stop fails over at once instead of after the ttl.
  # This shell is PID 1: when it exits, the kernel kills everything left in
  # the container, so it must not exit before Patroni has finished.
  if [ -n "${patroni_pid:-}" ]; then kill -TERM "$patroni_pid" 2>/dev/null; await "$patroni_pid"; fi
  if [ -n "${etcd_pid:-}" ]; then kill -TERM "$etcd_pid" 2>/dev/null; await "$etcd_pid"; fi
  exit "${1:-0}"
}
trap stop TERM INT

if [ -n "${FAULTPROXY_LINKS:-}" ]; then
  setpriv --reuid=postgres --regid=postgres --init-groups /usr/local/bin/lab-faultproxy &
fi

if $member; then
  # snapshot-count and compaction bound the history etcd keeps: Patroni writes a
  # few keys every loop_wait, forever.
  # setpriv directly, not through as_postgres: a function run with & is a
  # subshell, and $! would be that shell, which dies on TERM without passing
  # it on.
  setpriv --reuid=postgres --regid=postgres --init-groups env GOMAXPROCS="${ETCD_GOMAXPROCS:-1}" /usr/bin/etcd \
    --name "$NODE_NAME" --data-dir "$DB_STATE_DIR/etcd" \
    --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$NODE_NAME:2379" \
    --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls "http://$NODE_NAME:2380" \
    --initial-cluster "$(IFS=,; echo "${initial[*]}")" --initial-cluster-state new \
    --initial-cluster-token "$DB_SCOPE" \
    --heartbeat-interval "${ETCD_HEARTBEAT_MS:-100}" --election-timeout "${ETCD_ELECTION_MS:-1000}" \
    --snapshot-count 2000 --auto-compaction-mode revision --auto-compaction-retention 1000 \
    --quota-backend-bytes $((64 * 1024 * 1024)) \
    --logger zap --log-outputs stderr --log-level "${ETCD_LOG_LEVEL:-warn}" &
  etcd_pid=$!
  say "etcd member $NODE_NAME started (cluster: $DB_ETCD_NODES)"
fi

say "starting Patroni as $NODE_NAME (nodes: $DB_NODES, replication: ${DB_REPLICATION:-async})"
setpriv --reuid=postgres --regid=postgres --init-groups /usr/bin/patroni "$PATRONI_CONFIG" &
patroni_pid=$!

# Whichever ends first ends the container: a node whose manager or whose
# etcd member died must not pretend to be healthy.
set +e
wait -n
rc=$?
say "a process ended (exit $rc); stopping the node"
stop 1
