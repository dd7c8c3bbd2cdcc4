#!/bin/bash
# The lab's web server, behind its own fault proxy.
#
# The app listens on an internal port ($PORT) and runs the fault proxy's
# links itself, from FAULTPROXY_LINKS and FAULTPROXY_ADMIN: the link on the
# service's port hands its connections to the app in the same process, so
# `lab slow server-2` can delay, throttle, hang or cut what reaches this
# server on any kernel, without a capability and without a second TCP hop
# on every request (docs/architecture.md). Without those variables the app
# alone serves.
set -euo pipefail
# LOCAL_DATABASE=on makes this container a whole machine (lesson 3,
# separate-db): a PostgreSQL of its own starts beside the app, on loopback,
# so both share the container's CPU and memory limits as they would share
# one box. The app then reaches it at 127.0.0.1:5432.
if [ "${LOCAL_DATABASE:-}" = on ]; then
  PGBIN=/usr/lib/postgresql/15/bin
  export PGDATA=/tmp/pgdata
  # A machine that crashed and is started again keeps its disk: PostgreSQL
  # recovers from its own WAL. Its lock file names a process of the old boot
  # (whose number may now belong to another), so it goes.
  if [ -f "$PGDATA/PG_VERSION" ]; then
    rm -f "$PGDATA/postmaster.pid"
  else
    "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
  fi
  "$PGBIN/pg_ctl" -D "$PGDATA" -l /tmp/postgres.log -w start \
    -o "-c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp -c shared_buffers=32MB" >/dev/null
fi
exec /usr/local/bin/lab-app
