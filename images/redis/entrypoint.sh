#!/bin/bash
# The lab's Redis: in memory only (nothing saved to disk, so a restart is a
# cold cache), reachable on the lab network, password from the lab's secrets.
# With FAULTPROXY_LINKS set, Redis listens on $REDIS_PORT and our fault proxy
# on the service's port in front of it (see images/app/entrypoint.sh).
set -euo pipefail
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"
if [ -n "${FAULTPROXY_LINKS:-}" ]; then
  setpriv --reuid=redis --regid=redis --init-groups /usr/local/bin/lab-faultproxy &
fi
exec setpriv --reuid=redis --regid=redis --init-groups /usr/bin/redis-server \
  --bind 0.0.0.0 --port "${REDIS_PORT:-6379}" --protected-mode no --save '' --appendonly no \
  --maxmemory 64mb --maxmemory-policy allkeys-lru --requirepass "$REDIS_PASSWORD"
