#!/bin/bash
# keepalived's notify hook: called as `notify INSTANCE NAME STATE PRIORITY`
# on every state change of the VRRP instance. Writes /run/lab/vrrp/state.json, the
# one place that says which role this balancer has and since when; the lab
# CLI reads it (`docker exec lb-N cat /run/lab/vrrp/state.json`) for `lab status`.
# Runs as `nobody` (keepalived's script_user), which owns /run/lab/vrrp.
#
# The file says what keepalived believes. The address itself is the ground
# truth: `ip -4 -o addr show dev eth0` lists it on the node that holds it.
set -u
export TZ=UTC0
umask 022           # keepalived runs hooks with umask 077; the CLI must read the file
state=${3:-UNKNOWN} priority=${4:-0}
state=${state,,}   # MASTER -> master, as `lab status --json` spells it
now=$EPOCHREALTIME # seconds.microseconds, no fork
ms=$(( ${now%.*} * 1000 + 10#${now#*.} / 1000 ))
since=$(printf '%(%Y-%m-%dT%H:%M:%S)T' "${now%.*}").${now#*.}
since=${since:0:23}Z
tmp=/run/lab/vrrp/state.json.$$
printf '{"state": "%s", "since": "%s", "since_unix_ms": %s, "priority": %s}\n' \
  "$state" "$since" "$ms" "$priority" > "$tmp" && mv -f "$tmp" /run/lab/vrrp/state.json
