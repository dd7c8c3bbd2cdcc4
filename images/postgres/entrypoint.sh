#!/bin/bash
# The lab's PostgreSQL without a manager: one image, two roles, chosen by $ROLE.
#
#   primary  first start: initdb, allow replication connections, then run.
#   replica  first start: copy the primary with pg_basebackup through a
#            replication slot, mark the copy as a hot standby, then run.
#
# Settings that may change between starts (synchronous replication) are
# written to conf.d/00-lab.conf on every start; live changes made later with
# ALTER SYSTEM (lab lag, lab replication) land in postgresql.auto.conf, which
# PostgreSQL reads last, so they win until they are reset.
#
# With FAULTPROXY_LINKS set, PostgreSQL listens on $PGPORT and our fault proxy
# on the service's port (5432) in front of it; a replica also streams the
# primary's WAL through its own proxy link ($WAL_HOST:$WAL_PORT), so the
# replication link can be slowed or cut apart from everything else.
set -euo pipefail

# With a failover manager (3 or more database nodes), Patroni runs
# PostgreSQL: see lab-postgres-ha (patroni-entrypoint.sh).
if [ "${DB_MANAGER:-}" = patroni ]; then
  exec /usr/local/bin/lab-postgres-ha
fi

PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
ROLE=${ROLE:?ROLE must be primary or replica}
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
NAME=${SERVICE_NAME:-$(hostname)}
SLOT=${NAME//-/_}

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  case "$ROLE" in
    primary)
      echo "lab-postgres: initialising a new primary"
      pwfile=$(mktemp)
      printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
      chown postgres "$pwfile"
      as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >/dev/null
      rm -f "$pwfile"
      cat >>"$PGDATA/pg_hba.conf" <<HBA
host all all 0.0.0.0/0 scram-sha-256
host replication all 0.0.0.0/0 scram-sha-256
HBA
      ;;
    replica)
      primary=${PRIMARY_HOST:?PRIMARY_HOST is required for a replica}
      export PGPASSWORD=$POSTGRES_PASSWORD
      echo "lab-postgres: waiting for $primary"
      until "$PGBIN/pg_isready" -q -h "$primary" -p 5432 -U postgres; do sleep 0.3; done
      # A replica recreated with a fresh volume finds its old slot still on
      # the primary; drop it when nobody uses it so -C can create it anew.
      "$PGBIN/psql" -q -h "$primary" -p 5432 -U postgres -d postgres -c \
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT' AND NOT active" >/dev/null
      echo "lab-postgres: copying $primary with pg_basebackup (slot $SLOT)"
      as_postgres env PGPASSWORD="$PGPASSWORD" "$PGBIN/pg_basebackup" -h "$primary" -p 5432 -U postgres \
        -D "$PGDATA" -X stream -C -S "$SLOT" --checkpoint=fast
      touch "$PGDATA/standby.signal"
      chown postgres:postgres "$PGDATA/standby.signal"
      ;;
    *) echo "lab-postgres: ROLE must be primary or replica, not $ROLE" >&2; exit 1 ;;
  esac
  echo "include_dir = 'conf.d'" >>"$PGDATA/postgresql.conf"
fi

mkdir -p "$PGDATA/conf.d"
{
  echo "listen_addresses = '*'"
  echo "wal_level = replica"
  echo "max_wal_senders = 10"
  echo "max_replication_slots = 10"
  echo "hot_standby = on"
  echo "hot_standby_feedback = on"
  # Small buffers: a laptop runs several of these side by side.
  echo "shared_buffers = 32MB"
  echo "max_connections = 200"
  echo "wal_receiver_status_interval = 1s"
  if [ "$ROLE" = replica ]; then
    echo "primary_conninfo = 'host=${WAL_HOST:-$PRIMARY_HOST} port=${WAL_PORT:-5432} user=postgres password=$POSTGRES_PASSWORD application_name=$NAME'"
    echo "primary_slot_name = '$SLOT'"
  else
    echo "synchronous_standby_names = '${SYNC_STANDBY_NAMES:-}'"
    echo "synchronous_commit = ${SYNCHRONOUS_COMMIT:-on}"
  fi
} >"$PGDATA/conf.d/00-lab.conf"
chown -R postgres:postgres "$PGDATA/conf.d"

echo "lab-postgres: starting as $ROLE"
if [ -n "${FAULTPROXY_LINKS:-}" ]; then
  as_postgres /usr/local/bin/lab-faultproxy &
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" -p "${PGPORT:-5432}"
