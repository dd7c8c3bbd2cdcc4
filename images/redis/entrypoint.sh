#!/bin/bash
# The lab's Redis: in memory only (nothing saved to disk, so a restart is a
# cold cache), reachable on the lab network, password from the lab's secrets.
set -euo pipefail
: "${REDIS_PASSWORD:?REDIS_PASSWORD is required}"
exec setpriv --reuid=redis --regid=redis --init-groups /usr/bin/redis-server \
  --bind 0.0.0.0 --port 6379 --protected-mode no --save '' --appendonly no \
  --maxmemory 64mb --maxmemory-policy allkeys-lru --requirepass "$REDIS_PASSWORD"
