#!/bin/bash
# The lab's web server, behind its own fault proxy.
#
# The app listens on an internal port ($PORT); lab-faultproxy listens on the
# service's port and copies bytes both ways, so `lab slow server-2` can delay,
# throttle, hang or cut what reaches this server on any kernel, without a
# capability (docs/architecture.md). The proxy reads its links and admin
# address from FAULTPROXY_LINKS and FAULTPROXY_ADMIN; without them it is not
# started and the app alone serves.
set -euo pipefail
if [ -n "${FAULTPROXY_LINKS:-}" ]; then
  /usr/local/bin/lab-faultproxy &
fi
exec /usr/local/bin/lab-app
