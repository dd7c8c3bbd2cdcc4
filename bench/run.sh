#!/usr/bin/env bash
# Every benchmark, one after another (they measure, so never two at once):
#   bench/balancer/run.sh  lab-balancer vs nginx (and direct), driven by wrk
#   bench/load/run.sh      lab load vs wrk and oha against a trivial server
#   bench/up/run.sh        lab up vs docker compose, and the lab's memory at rest
# Each prints its own figures; bench/README.md records them with the machine.
set -euo pipefail
cd "$(dirname "$0")"
status=0
for b in balancer load up; do
  echo "=== bench/$b"
  bash "$b/run.sh" || { echo "bench/$b failed"; status=1; }
done
exit $status
