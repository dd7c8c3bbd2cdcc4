#!/bin/bash
# keepalived's health check of the balancer in this container: exit 0 when
# its admin API answers GET /healthz with a 2xx, anything else is a failure.
# Bash's /dev/tcp, so the image needs no curl; keepalived runs this as
# `nobody` and kills it after the `timeout` of its vrrp_script block.
#
# keepalived's own track_process cannot be used in a container: it learns
# about processes from the kernel's process connector, which only answers
# listeners in the initial PID namespace.
addr=${1:-127.0.0.1:9000}   # the admin API, from keepalived.conf
host=${addr%:*} port=${addr##*:}
exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3 || exit 1
IFS= read -r -t 1 status <&3 || exit 1
[[ $status =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]]
