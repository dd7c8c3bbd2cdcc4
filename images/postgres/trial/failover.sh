#!/bin/bash
# Trial of automatic PostgreSQL failover with Patroni + etcd in containers
# (issue 16): the recipe the lab's CLI will wire in, proven and measured.
#
#   images/postgres/trial/failover.sh [PHASE ...]
#
# Phases (default: all of them, in this order):
#   build   the trial image: scaling-lab/base + patroni + etcd-server + our files
#   three   3 nodes: kill the primary $KILLS times (time to writes-again, reads
#           on a replica meanwhile, the old primary rejoins), switchover,
#           failover to a named node, sync on/off, a replay delay on one node,
#           status as `lab status` needs it, memory at rest
#   two     2 nodes (1 replica): memory at rest, kill the primary: no quorum
#   twopaused  the same 2 nodes with failover off (Patroni paused)
#   twoone  2 nodes, one etcd member on db-1 (the layout for 2 nodes)
#   stop    3 nodes: graceful stop of the primary
#   limited 3 nodes under a memory limit ($DB_MEMORY_LIMIT, 96m): memory, one failover, OOM kills
#   one     1 node: memory at rest
#   plain   today's image without a manager (primary + replica): memory at rest
#   lost    both replicas cut off from the WAL, writes go on, the primary
#           crashes: async (promoted, writes lost), async with
#           maximum_lag_on_failover 0 (refused), sync (falls back to async
#           first), strict sync (nothing acknowledged, nothing lost)
#
# Everything goes on its own Docker bridge network (like the lab's: not
# --internal, whose DNS times out on a dead name instead of answering at once,
# which would slow every client that tries it); the host only uses
# `docker exec`. Every object is named $PFX-... and removed on exit.
# Raw output: $OUT (default bench/db-failover/results/<UTC time>/).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BASE=${BASE:-scaling-lab/base:0.1.0}
IMG=${IMG:-lab-trial/postgres-ha:dev}
PFX=${PFX:-pgha$$}
KILLS=${KILLS:-5}
OUT=${OUT:-$REPO/bench/db-failover/results/$(date -u +%Y%m%dT%H%M%SZ)}
PW=trial-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(build three two twopaused twoone stop limited one plain lost)
mkdir -p "$OUT"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S.%3N)" "$*" | tee -a "$OUT/trial.log" >&2; }
now() { date +%s.%N; }

cleanup() {
  set +e
  docker ps -aq --filter "label=lab-trial=$PFX" | xargs -r docker rm -fv >/dev/null
  docker volume ls -q --filter "label=lab-trial=$PFX" | xargs -r docker volume rm >/dev/null
  docker network ls -q --filter "label=lab-trial=$PFX" | xargs -r docker network rm >/dev/null
}
trap cleanup EXIT

# --- one cluster at a time: $CL is its prefix, NODES its node names --------

new_cluster() { # NAME COUNT [docker run -e ... args]
  local name=$1 k=$2
  shift 2
  CL="$PFX-$name"
  NET="$CL-net"
  docker network create --label "lab-trial=$PFX" "$NET" >/dev/null
  NODES=()
  for i in $(seq 1 "$k"); do NODES+=("db-$i"); done
  local list
  list=$(IFS=,; echo "${NODES[*]}")
  for n in "${NODES[@]}"; do
    docker volume create --label "lab-trial=$PFX" "$CL-$n" >/dev/null
    docker run -d --name "$CL-$n" --hostname "$n" --network "$NET" --network-alias "$n" \
      --label "lab-trial=$PFX" -v "$CL-$n:/var/lib/postgresql" \
      -e SERVICE_NAME="$n" -e DB_NODES="$list" -e POSTGRES_PASSWORD="$PW" -e DB_SCOPE="$name" \
      "$@" "$IMG" >/dev/null
  done
  log "cluster $name: ${NODES[*]} started $*"
}

drop_cluster() {
  for n in "${NODES[@]}"; do docker rm -fv "$CL-$n" >/dev/null 2>&1 || true; done
  for n in "${NODES[@]}"; do docker volume rm "$CL-$n" >/dev/null 2>&1 || true; done
  docker network rm "$NET" >/dev/null 2>&1 || true
}

c() { echo "$CL-$1"; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$(c "$1")" 2>/dev/null)" = true ]; }
alive() { for n in "${NODES[@]}"; do running "$n" && echo "$n"; done; return 0; }
sql() { local n=$1; shift; docker exec "$(c "$n")" psql -h /run/postgresql -U postgres -Atqc "$*"; }
ctl() { local n=$1; shift; docker exec "$(c "$n")" patronictl -c /run/lab/patroni.yml "$@"; }
probe() { local n=$1; shift; docker exec -i "$(c "$n")" python3 - "$@" <"$HERE/probe.py"; }
any() { local a; a=$(alive); echo "${a%%$'\n'*}"; }
others() { local n; for n in "${NODES[@]}"; do [ "$n" = "$1" ] || [ "$n" = "${2:-}" ] || echo "$n"; done; }

leader() { # the running leader, as the cluster says, or nothing
  local n
  local l
  for n in $(alive); do
    # The leader key outlives a killed primary by up to the ttl: only a
    # running container counts.
    if l=$(probe "$n" leader 2>/dev/null) && running "$l"; then echo "$l"; return 0; fi
  done
  return 1
}

wait_leader() { # [TIMEOUT] -> prints the leader's name
  local deadline=$(($(date +%s) + ${1:-90})) l
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if l=$(leader); then echo "$l"; return 0; fi
    sleep 0.5
  done
  return 1
}

wait_streaming() { # NODE [TIMEOUT]: NODE is a replica, streaming, on the leader's timeline, caught up
  local n=$1 deadline=$(($(date +%s) + ${2:-120})) l
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if l=$(leader) && [ "$l" != "$n" ] &&
      [ "$(sql "$l" "SELECT count(*) FROM pg_stat_replication WHERE application_name='$n' AND state='streaming' AND replay_lsn = pg_current_wal_lsn()" 2>/dev/null)" = 1 ]; then
      return 0
    fi
    sleep 0.5
  done
  log "$n is not streaming after ${2:-120} s; its last log lines are in $OUT/$n-not-streaming.log"
  docker logs --tail 60 "$(c "$n")" >"$OUT/$n-not-streaming.log" 2>&1 || true
  return 1
}

status() { # LABEL: the `lab status` view, saved
  local n
  n=$(any)
  echo "== $1 ($(date -u +%H:%M:%S))" >>"$OUT/$PHASE-status.txt"
  probe "$n" status | tee -a "$OUT/$PHASE-status.txt"
}

# A loop inside a node, writing through the libpq host list to whichever node
# is writable (target_session_attrs=read-write) every 100 ms: "epoch ok id" or
# "epoch fail error". The client is killed after $4 s (3), never cancelled: a
# cancelled synchronous commit is reported as a success by PostgreSQL. The
# kill rounds use 1 s, so one attempt stuck on a dying node hides at most 1 s.
WRITER='end=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt "$end" ]; do
  t=$(date +%s.%N)
  if out=$(PGPASSWORD=$POSTGRES_PASSWORD timeout -s KILL "${4:-3}" psql "host=$2 user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2" -Atqc "INSERT INTO trial(note) VALUES ('"'"'$3'"'"') RETURNING id" 2>&1); then
    echo "$t ok $out"
  else
    echo "$t fail $(echo "$out" | tr "\n" " " | cut -c1-120)"
  fi
  sleep 0.1
done'
# The same for reads on the node itself (a replica keeps serving them).
READER='end=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt "$end" ]; do
  t=$(date +%s.%N)
  if out=$(timeout -s KILL 3 psql -h /run/postgresql -U postgres -Atqc "SELECT count(*) FROM trial" 2>&1); then
    echo "$t ok $out"
  else
    echo "$t fail $(echo "$out" | tr "\n" " " | cut -c1-120)"
  fi
  sleep 0.1
done'
writer() { docker exec "$(c "$1")" bash -c "$WRITER" writer "$2" "$(IFS=,; echo "${NODES[*]}")" "$3" "${4:-3}"; }
reader() { docker exec "$(c "$1")" bash -c "$READER" reader "$2"; }

first_ok_after() { # FILE T: seconds from T to the first ok line after it
  awk -v t="$2" '$1 > t && $2 == "ok" { printf "%.2f\n", $1 - t; found=1; exit } END { if (!found) print "none" }' "$1"
}

mem() { # LABEL: docker stats and the processes inside, per node
  {
    echo "== $1 ($(date -u +%FT%TZ))"
    docker stats --no-stream --format '{{.Name}} {{.MemUsage}} {{.CPUPerc}}' $(for n in $(alive); do c "$n"; done)
    for n in $(alive); do
      echo "-- $n: RSS kB by program (shared memory counted in every postgres process)"
      docker exec "$(c "$n")" ps -eo rss=,comm= | awk '{ s[$2] += $1 } END { for (p in s) print s[p], p }' | sort -rn
      docker exec "$(c "$n")" sh -c 'cat /sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory/memory.stat 2>/dev/null | grep -E "^[0-9]+$|^(total_)?(rss|cache|shmem|inactive_file) " || cat /sys/fs/cgroup/memory.current'
    done
  } | tee -a "$OUT/memory.txt"
}

# --- phases ------------------------------------------------------------------

phase_machine() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "loadavg: $(cat /proc/loadavg)"
    echo "mem_total_kB: $(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    echo "docker: $(docker version -f '{{.Server.Version}}')"
    echo "kernel: $(uname -r)"
  } | tee -a "$OUT/machine.txt"
}

phase_build() {
  docker image inspect "$BASE" >/dev/null 2>&1 || { log "no $BASE: run make images (or lab images build) first"; exit 1; }
  log "building $IMG from $BASE"
  docker build -q --build-arg BASE="$BASE" -t "$IMG" -f "$HERE/Dockerfile" "$HERE/.." >/dev/null
  docker run --rm --entrypoint sh "$IMG" -c 'dpkg-query -W patroni etcd-server python3-etcd python3-psycopg2 postgresql-15; etcd --version | head -1; patroni --version' |
    tee "$OUT/versions.txt"
  docker image inspect -f '{{.Size}}' "$BASE" "$IMG" | paste -sd' ' | awk '{ printf "base_bytes %s\ntrial_bytes %s\nadded_mb %.1f\n", $1, $2, ($2-$1)/1e6 }' | tee -a "$OUT/versions.txt"
}

init_table() { # NODE
  sql "$1" "CREATE TABLE IF NOT EXISTS trial(id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())" >/dev/null
}

phase_three() {
  PHASE=three
  new_cluster three 3
  local t0 l
  t0=$(now)
  l=$(wait_leader 120) || { log "no leader in 120 s"; docker logs "$(c db-1)" | tail -30; exit 1; }
  log "leader $l after $(echo "$(now) - $t0" | bc) s"
  init_table "$l"
  for n in "${NODES[@]}"; do [ "$n" = "$l" ] || wait_streaming "$n" 120; done
  status "at rest"
  ctl "$l" list | tee -a "$OUT/three-status.txt"
  sleep 20
  mem "three nodes at rest (3 etcd members)"

  kill_rounds
  planned_ops
  drop_cluster
}

kill_rounds() {
  local round l w r tk again reads_fail rejoin hist_l hist_o
  echo "round killed writer_on reader_on writes_again_s reads_failed rejoin_s timeline_before timeline_after history_same rows_same" >"$OUT/three-kills.txt"
  for round in $(seq 1 "$KILLS"); do
    l=$(wait_leader 60)
    local o
    o=($(others "$l"))
    w=${o[0]} r=${o[1]}
    local tl_before
    tl_before=$(sql "$l" "SELECT timeline_id FROM pg_control_checkpoint()")
    writer "$w" 30 "round $round" 1 >"$OUT/three-kill-$round-writes.txt" &
    local wpid=$!
    reader "$r" 30 >"$OUT/three-kill-$round-reads.txt" &
    local rpid=$!
    sleep 3
    tk=$(now)
    docker kill "$(c "$l")" >/dev/null
    log "round $round: killed the primary $l (writer on $w, reader on $r)"
    wait "$wpid" "$rpid" || true
    again=$(first_ok_after "$OUT/three-kill-$round-writes.txt" "$tk")
    reads_fail=$(awk -v t="$tk" '$1 > t && $2 != "ok"' "$OUT/three-kill-$round-reads.txt" | wc -l)
    local nl
    nl=$(wait_leader 60)
    log "round $round: writes again after $again s on $nl; failed reads on $r meanwhile: $reads_fail"
    status "round $round: after killing $l" >/dev/null
    # The old primary comes back and must follow the new one.
    local ts
    ts=$(now)
    docker start "$(c "$l")" >/dev/null
    if wait_streaming "$l" 180; then
      rejoin=$(echo "$(now) - $ts" | bc | xargs printf '%.1f')
    else
      rejoin=never
      docker logs --tail 40 "$(c "$l")" >"$OUT/three-kill-$round-rejoin-log.txt" 2>&1
    fi
    # Same history: the timeline history files of the old and the new primary.
    hist_l=$(docker exec "$(c "$l")" sh -c 'cd $DB_STATE_DIR/data/pg_wal && cat $(ls *.history | sort) | md5sum')
    hist_o=$(docker exec "$(c "$nl")" sh -c 'cd $DB_STATE_DIR/data/pg_wal && cat $(ls *.history | sort) | md5sum')
    local tl_after rows_l rows_n same rows
    tl_after=$(sql "$nl" "SELECT timeline_id FROM pg_control_checkpoint()")
    sql "$nl" "CHECKPOINT" >/dev/null
    sleep 1
    rows_n=$(sql "$nl" "SELECT count(*), max(id) FROM trial")
    rows_l=$(sql "$l" "SELECT count(*), max(id) FROM trial")
    same=$([ "$hist_l" = "$hist_o" ] && echo yes || echo no)
    rows=$([ "$rows_l" = "$rows_n" ] && echo yes || echo no)
    echo "$round $l $w $r $again $reads_fail $rejoin $tl_before $tl_after $same $rows" >>"$OUT/three-kills.txt"
    log "round $round: $l rejoined in $rejoin s; timeline $tl_before -> $tl_after; history same: $same; rows same: $rows ($rows_n)"
    ctl "$nl" history >>"$OUT/three-history.txt" 2>&1 || true
  done
  awk 'NR > 1 && $5 != "none" { print $5 }' "$OUT/three-kills.txt" | sort -n |
    awk '{ v[NR] = $1 } END { printf "kills %d min %.2f median %.2f max %.2f\n", NR, v[1], (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }' |
    tee "$OUT/three-kills-summary.txt"
}

timed_commit() { # NODE LIMIT: seconds one INSERT takes to be acknowledged, timed inside the node
  docker exec "$(c "$1")" bash -c 's=$(date +%s%N)
    if timeout -s KILL "$1" psql -h /run/postgresql -U postgres -Atqc "INSERT INTO trial(note) VALUES ('"'"'timed'"'"')" >/dev/null 2>&1; then
      echo "$(( ($(date +%s%N) - s) / 1000000 )) ms"
    else
      echo "unacknowledged after $1 s (client killed, outcome unknown)"
    fi' timed "$2"
}

# Cut REPLICA off from PRIMARY's WAL only (its etcd and Patroni stay in
# touch): PRIMARY rejects its replication connections and drops the current
# one. Stands for the lab's per-link fault proxy blackholing that link.
cut_wal() { # PRIMARY REPLICA
  local ip
  ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$(c "$2")")
  docker exec "$(c "$1")" sh -c "sed -i '1i host replication all $ip/32 reject # cut $2' \$DB_STATE_DIR/data/pg_hba.conf"
  sql "$1" "SELECT pg_reload_conf()" >/dev/null
  sleep 0.3
  sql "$1" "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = '$2'" >/dev/null
}
heal_wal() { # PRIMARY
  docker exec "$(c "$1")" sh -c "sed -i '/# cut /d' \$DB_STATE_DIR/data/pg_hba.conf"
  sql "$1" "SELECT pg_reload_conf()" >/dev/null
}

planned_ops() {
  local l cand t out
  PHASE=three
  {
    l=$(wait_leader 60)
    for n in "${NODES[@]}"; do [ "$n" = "$l" ] || wait_streaming "$n" 60; done
    echo "== switchover (lab failover): $l -> any"
    t=$(now)
    ctl "$l" switchover --leader "$l" --force 2>&1 | tail -3
    local nl
    nl=$(wait_leader 60)
    wait_streaming "$l" 120
    echo "switchover: $l -> $nl, leader again after $(echo "$(now) - $t" | bc | xargs printf '%.2f') s"

    local o
    o=($(others "$nl"))
    cand=${o[1]}
    echo "== manual failover to a named node (lab promote $cand)"
    t=$(now)
    ctl "$nl" failover --candidate "$cand" --force 2>&1 | tail -3
    l=$(wait_leader 60)
    echo "promote $cand: leader is now $l after $(echo "$(now) - $t" | bc | xargs printf '%.2f') s"
    wait_streaming "$nl" 120

    local r1 r2
    o=($(others "$l"))
    r1=${o[0]} r2=${o[1]}
    echo "== replication sync (lab replication sync): synchronous_mode on, synchronous_commit remote_apply"
    ctl "$l" edit-config --force -q -s synchronous_mode=true -p synchronous_commit=remote_apply 2>&1 | tail -2
    sleep 4
    sql "$l" "SHOW synchronous_standby_names; SHOW synchronous_commit" | paste -sd' '
    ctl "$l" list 2>&1
    echo "commit with every replica connected: $(timed_commit "$l" 10)"
    local syncnode
    syncnode=$(sql "$l" "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'")
    local other
    other=$(others "$l" "$syncnode")
    echo "cutting the sync replica $syncnode off the WAL"
    cut_wal "$l" "$syncnode"
    echo "commit right after the sync replica is cut off (Patroni then names $other): $(timed_commit "$l" 30)"
    sleep 3
    echo "synchronous_standby_names now: $(sql "$l" "SHOW synchronous_standby_names")"
    echo "commit with $other as the sync replica: $(timed_commit "$l" 30)"
    echo "== synchronous_mode (not strict), both replicas cut off"
    cut_wal "$l" "$other"
    echo "commit right after: $(timed_commit "$l" 30)"
    sleep 3
    echo "synchronous_standby_names now: '$(sql "$l" "SHOW synchronous_standby_names")' (Patroni fell back to async)"
    echo "commit: $(timed_commit "$l" 30)"
    heal_wal "$l"
    wait_streaming "$r1" 60 || true
    wait_streaming "$r2" 60 || true
    echo "== synchronous_mode_strict, both replicas cut off"
    ctl "$l" edit-config --force -q -s synchronous_mode_strict=true 2>&1 | tail -1
    sleep 3
    cut_wal "$l" "$r1"
    cut_wal "$l" "$r2"
    sleep 4
    echo "synchronous_standby_names now: '$(sql "$l" "SHOW synchronous_standby_names")'"
    echo "commit with no replica to confirm it: $(timed_commit "$l" 8)"
    heal_wal "$l"
    wait_streaming "$r1" 60 || true
    wait_streaming "$r2" 60 || true
    echo "healed: commit $(timed_commit "$l" 10)"
    echo "== replication async (lab replication async)"
    ctl "$l" edit-config --force -q -s synchronous_mode=false -s synchronous_mode_strict=false -p synchronous_commit= 2>&1 | tail -1
    sleep 3
    sql "$l" "SHOW synchronous_standby_names; SHOW synchronous_commit" | paste -sd' '
    echo "commit async: $(timed_commit "$l" 10)"

    echo "== lab lag $r1 3s: recovery_min_apply_delay in $r1's own Patroni config"
    docker exec "$(c "$r1")" lab-patroni-config set recovery_min_apply_delay 3s
    sleep 2
    echo "$r1: $(sql "$r1" "SHOW recovery_min_apply_delay")  $r2: $(sql "$r2" "SHOW recovery_min_apply_delay")"
    local id t1
    id=$(sql "$l" "INSERT INTO trial(note) VALUES ('lag probe') RETURNING id")
    t1=$(now)
    local seen_r2="" seen_r1=""
    while [ -z "$seen_r1" ]; do
      [ -z "$seen_r2" ] && [ "$(sql "$r2" "SELECT count(*) FROM trial WHERE id = $id")" = 1 ] && seen_r2=$(echo "$(now) - $t1" | bc)
      [ "$(sql "$r1" "SELECT count(*) FROM trial WHERE id = $id")" = 1 ] && seen_r1=$(echo "$(now) - $t1" | bc)
      [ "$(echo "$(now) - $t1 > 15" | bc)" = 1 ] && break
      sleep 0.1
    done
    echo "a write is visible on $r2 after ${seen_r2:-?} s, on the delayed $r1 after ${seen_r1:-never} s"
    sql "$l" "INSERT INTO trial(note) SELECT 'lag load' FROM generate_series(1, 100)" >/dev/null
    sleep 1
    probe "$l" status >"$OUT/three-lag-status.json"
    echo "status during the lag: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([(n["name"], n.get("db_role"), n.get("replay_lag_ms"), n.get("recovery_min_apply_delay")) for n in d["nodes"]])' "$OUT/three-lag-status.json")"
    docker exec "$(c "$r1")" lab-patroni-config unset recovery_min_apply_delay
    sleep 2
    echo "lag off: $r1 $(sql "$r1" "SHOW recovery_min_apply_delay")"
    echo "== the same through the cluster-wide dynamic config reaches every replica:"
    ctl "$l" edit-config --force -q -p recovery_min_apply_delay=2s 2>&1 | tail -1
    sleep 3
    echo "$r1: $(sql "$r1" "SHOW recovery_min_apply_delay")  $r2: $(sql "$r2" "SHOW recovery_min_apply_delay")"
    ctl "$l" edit-config --force -q -p recovery_min_apply_delay= 2>&1 | tail -1
    sleep 3
    echo "reset: $r1: $(sql "$r1" "SHOW recovery_min_apply_delay")  $r2: $(sql "$r2" "SHOW recovery_min_apply_delay")"
  } 2>&1 | tee "$OUT/three-ops.txt"
  status "after the planned operations" >/dev/null
}

# The planned operations alone, on a cluster of their own.
phase_ops() {
  PHASE=three
  new_cluster ops 3
  local l
  l=$(wait_leader 120)
  init_table "$l"
  for n in $(others "$l"); do wait_streaming "$n" 120; done
  planned_ops
  drop_cluster
}

phase_two() {
  PHASE=two
  new_cluster two 2
  local l r tk
  l=$(wait_leader 120)
  init_table "$l"
  r=$(others "$l")
  wait_streaming "$r" 120
  status "at rest" >/dev/null
  sleep 20
  mem "two nodes at rest (2 etcd members)"
  {
    echo "== killing the primary $l of a 2-node cluster (etcd on both)"
    writer "$r" 40 "two" >"$OUT/two-kill-writes.txt" &
    local wpid=$!
    reader "$r" 40 >"$OUT/two-kill-reads.txt" &
    local rpid=$!
    sleep 3
    tk=$(now)
    docker kill "$(c "$l")" >/dev/null
    wait "$wpid" "$rpid" || true
    echo "writes again after: $(first_ok_after "$OUT/two-kill-writes.txt" "$tk") (none = never in 37 s)"
    echo "reads on $r after the kill: $(awk -v t="$tk" '$1 > t && $2 == "ok"' "$OUT/two-kill-reads.txt" | wc -l) ok, $(awk -v t="$tk" '$1 > t && $2 != "ok"' "$OUT/two-kill-reads.txt" | wc -l) failed"
    echo "$r is in recovery: $(sql "$r" "SELECT pg_is_in_recovery()")"
    echo "-- status as the CLI sees it:"
  } 2>&1 | tee "$OUT/two-ops.txt"
  status "two nodes, primary killed" | tee -a "$OUT/two-ops.txt" >/dev/null
  docker exec "$(c "$r")" python3 -c 'import urllib.request as u; print(u.urlopen("http://localhost:8008/patroni").read().decode())' >>"$OUT/two-ops.txt" 2>&1 || true
  {
    echo "== start $l again"
    docker start "$(c "$l")" >/dev/null
    local back
    back=$(wait_leader 120)
    echo "leader again: $back"
    wait_streaming "$r" 60 && echo "$r streaming again"
    echo "== now kill the replica $r: does the primary $back keep taking writes?"
    docker kill "$(c "$r")" >/dev/null
    local t
    t=$(now)
    sleep 15
    echo "commit on $back 15 s after the replica died: $(timed_commit "$back" 5)"
    echo "$back in recovery: $(sql "$back" "SELECT pg_is_in_recovery()")"
    docker logs --since "$(date -u -d @"${t%.*}" +%FT%TZ)" "$(c "$back")" 2>&1 | grep -iE 'demot|lock|etcd|DCS' | tail -5
  } 2>&1 | tee -a "$OUT/two-ops.txt"
  drop_cluster
}

# The same two nodes with failover off (Patroni paused), which is what the
# lab should run with fewer than 3 database nodes: no automatic promotion,
# and no demotion when etcd loses its majority either.
phase_twopaused() {
  PHASE=twopaused
  new_cluster twopaused 2
  local l r
  l=$(wait_leader 120)
  init_table "$l"
  r=$(others "$l")
  wait_streaming "$r" 120
  # A paused cluster never bootstraps, so failover goes off once it has a
  # primary (what `lab up --failover off` and `lab set failover=off` do).
  ctl "$l" pause --wait >"$OUT/twopaused-ops.txt" 2>&1
  {
    echo "== 2 nodes, failover off: kill the replica $r"
    docker kill "$(c "$r")" >/dev/null
    sleep 15
    echo "commit on $l 15 s after the replica died: $(timed_commit "$l" 5)"
    echo "$l in recovery: $(sql "$l" "SELECT pg_is_in_recovery()")"
    docker start "$(c "$r")" >/dev/null
    wait_streaming "$r" 120 && echo "$r streaming again"
    echo "== kill the primary $l"
    docker kill "$(c "$l")" >/dev/null
    sleep 15
    echo "$r in recovery 15 s later: $(sql "$r" "SELECT pg_is_in_recovery()") (no automatic failover)"
    echo "reads on $r: $(sql "$r" "SELECT count(*) FROM trial") rows"
    echo "== lab promote $r while etcd has no majority:"
    ctl "$r" failover --candidate "$r" --force 2>&1 | tail -2 || true
    echo "$r in recovery: $(sql "$r" "SELECT pg_is_in_recovery()")"
  } 2>&1 | tee -a "$OUT/twopaused-ops.txt"
  status "two nodes paused, primary killed" >/dev/null
  drop_cluster
}

# Two nodes with a single etcd member, on db-1: the layout the notes
# recommend for 2 nodes. Losing the replica must not cost the primary its
# writes; losing db-1 (primary and consensus) means no failover.
phase_twoone() {
  PHASE=twoone
  new_cluster twoone 2 -e DB_ETCD_NODES=db-1
  local l r
  l=$(wait_leader 120)
  init_table "$l"
  r=$(others "$l")
  wait_streaming "$r" 120
  sleep 20
  mem "two nodes at rest, one etcd member (on db-1)"
  {
    echo "== 2 nodes, etcd on db-1 only; primary $l, replica $r"
    echo "== kill the replica $r"
    docker kill "$(c "$r")" >/dev/null
    sleep 15
    echo "commit on $l 15 s after the replica died: $(timed_commit "$l" 5)"
    echo "$l in recovery: $(sql "$l" "SELECT pg_is_in_recovery()")"
    docker start "$(c "$r")" >/dev/null
    wait_streaming "$r" 120 && echo "$r streaming again after its restart"
    local p
    p=$(wait_leader 30)
    if [ "$p" != db-1 ]; then
      echo "== make db-1 the primary first (lab promote db-1)"
      ctl db-1 failover --candidate db-1 --force 2>&1 | tail -1
      p=$(wait_leader 60)
      wait_streaming db-2 120 || true
    fi
    echo "== kill the primary db-1, which also holds etcd"
    local tk
    writer db-2 25 twoone 1 >"$OUT/twoone-kill-writes.txt" &
    local wpid=$!
    reader db-2 25 >"$OUT/twoone-kill-reads.txt" &
    local rpid=$!
    sleep 3
    tk=$(now)
    docker kill "$(c db-1)" >/dev/null
    wait "$wpid" "$rpid" || true
    echo "writes again after: $(first_ok_after "$OUT/twoone-kill-writes.txt" "$tk") (none = not within 22 s)"
    echo "reads on db-2 after the kill: $(awk -v t="$tk" '$1 > t && $2 == "ok"' "$OUT/twoone-kill-reads.txt" | wc -l) ok, $(awk -v t="$tk" '$1 > t && $2 != "ok"' "$OUT/twoone-kill-reads.txt" | wc -l) failed"
    echo "db-2 in recovery: $(sql db-2 "SELECT pg_is_in_recovery()")"
    docker start "$(c db-1)" >/dev/null
    echo "leader once db-1 is back: $(wait_leader 90 || echo none)"
    wait_streaming db-2 120 && echo "db-2 streaming again"
  } 2>&1 | tee "$OUT/twoone-ops.txt"
  drop_cluster
}

# A graceful stop of the primary (`lab stop primary`): Patroni hands the key
# back, so no ttl to wait for.
phase_stop() {
  PHASE=stop
  new_cluster stop 3
  local l tk o
  l=$(wait_leader 120)
  init_table "$l"
  for n in $(others "$l"); do wait_streaming "$n" 120; done
  o=($(others "$l"))
  writer "${o[0]}" 20 stop 1 >"$OUT/stop-writes.txt" &
  local wpid=$!
  sleep 3
  tk=$(now)
  docker stop "$(c "$l")" >/dev/null
  wait "$wpid" || true
  echo "docker stop of the primary $l: writes again after $(first_ok_after "$OUT/stop-writes.txt" "$tk") s on $(wait_leader 30)" | tee "$OUT/stop-ops.txt"
  drop_cluster
}

# The same 3 nodes under a memory limit: the kernel then drops file cache
# inside each container instead of letting it grow, which is what the lab's
# budget needs. Any OOM kill shows in the output.
phase_limited() {
  PHASE=limited
  local limit=${DB_MEMORY_LIMIT:-96m}
  new_cluster limited 3 --memory "$limit" --memory-swap "$limit"
  local l tk
  l=$(wait_leader 120)
  init_table "$l"
  for n in $(others "$l"); do wait_streaming "$n" 120; done
  sql "$l" "INSERT INTO trial(note) SELECT repeat('x', 200) FROM generate_series(1, 20000)" >/dev/null
  sleep 20
  mem "three nodes at rest, --memory $limit each"
  local o
  o=($(others "$l"))
  {
    writer "${o[0]}" 30 limited 1 >"$OUT/limited-kill-writes.txt" &
    local wpid=$!
    sleep 3
    tk=$(now)
    docker kill "$(c "$l")" >/dev/null
    wait "$wpid" || true
    echo "limit $limit: writes again $(first_ok_after "$OUT/limited-kill-writes.txt" "$tk") s after killing $l"
    docker start "$(c "$l")" >/dev/null
    wait_streaming "$l" 180 && echo "$l rejoined"
    for n in "${NODES[@]}"; do
      echo "$n OOMKilled=$(docker inspect -f '{{.State.OOMKilled}}' "$(c "$n")") restarts=$(docker inspect -f '{{.RestartCount}}' "$(c "$n")")"
    done
    docker exec "$(c "$l")" sh -c 'cat /sys/fs/cgroup/memory/memory.failcnt /sys/fs/cgroup/memory/memory.max_usage_in_bytes' | paste -sd' ' | sed 's/^/failcnt, max_usage_bytes: /'
  } 2>&1 | tee "$OUT/limited-ops.txt"
  mem "three nodes after a failover and rejoin, --memory $limit each"
  drop_cluster
}

phase_one() {
  PHASE=one
  new_cluster one 1
  local l
  l=$(wait_leader 120)
  init_table "$l"
  status "at rest" >/dev/null
  sleep 20
  mem "one node at rest (1 etcd member)"
  drop_cluster
}

# For comparison: today's image (entrypoint.sh, no manager): a primary and a
# streaming replica, at rest.
phase_plain() {
  PHASE=plain
  CL="$PFX-plain"
  NET="$CL-net"
  NODES=(db-primary db-replica-1)
  docker network create --label "lab-trial=$PFX" "$NET" >/dev/null
  local n
  for n in "${NODES[@]}"; do docker volume create --label "lab-trial=$PFX" "$CL-$n" >/dev/null; done
  docker run -d --name "$CL-db-primary" --hostname db-primary --network "$NET" --network-alias db-primary \
    --label "lab-trial=$PFX" -v "$CL-db-primary:/var/lib/postgresql/data" --stop-signal SIGINT \
    -e ROLE=primary -e SERVICE_NAME=db-primary -e POSTGRES_PASSWORD="$PW" -e PGDATA=/var/lib/postgresql/data \
    --entrypoint /usr/local/bin/lab-postgres "$IMG" >/dev/null
  docker run -d --name "$CL-db-replica-1" --hostname db-replica-1 --network "$NET" --network-alias db-replica-1 \
    --label "lab-trial=$PFX" -v "$CL-db-replica-1:/var/lib/postgresql/data" --stop-signal SIGINT \
    -e ROLE=replica -e SERVICE_NAME=db-replica-1 -e PRIMARY_HOST=db-primary -e POSTGRES_PASSWORD="$PW" \
    -e PGDATA=/var/lib/postgresql/data --entrypoint /usr/local/bin/lab-postgres "$IMG" >/dev/null
  local deadline=$(($(date +%s) + 120))
  until [ "$(sql db-primary "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null)" = 1 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "plain replica never streamed"; break; }
    sleep 0.5
  done
  sql db-primary "CREATE TABLE trial(id bigserial PRIMARY KEY, note text, at timestamptz DEFAULT now())" >/dev/null
  sleep 20
  mem "today's image without a manager: db-primary + db-replica-1 at rest"
  drop_cluster
}

# Point 5 of issue 16: can a crash of the primary lose acknowledged writes?
lost_case() { # NAME [docker run -e ... args]: prints a one-line verdict
  local name=$1
  shift
  PHASE=lost-$name
  new_cluster "$name" 3 "$@"
  local l a b tk
  l=$(wait_leader 120)
  init_table "$l"
  read -r a b <<<"$(others "$l" | paste -sd' ')"
  wait_streaming "$a" 120
  wait_streaming "$b" 120
  sleep 3
  local mark
  mark=$(sql "$l" "INSERT INTO trial(note) VALUES ('before') RETURNING id")
  {
    echo "== $name: primary $l, replicas $a $b; cutting both replicas off the WAL"
    cut_wal "$l" "$a"
    cut_wal "$l" "$b"
    sleep 2
    # Writes go on for 8 s, acknowledged or not; then the primary crashes.
    writer "$l" 8 "$name" >"$OUT/lost-$name-writes.log" || true
    echo "acknowledged while the replicas were cut off: $(grep -c ' ok ' "$OUT/lost-$name-writes.log")," \
      "unacknowledged: $(grep -vc ' ok ' "$OUT/lost-$name-writes.log")"
  } 2>&1 | tee "$OUT/lost-$name.txt"
  tk=$(now)
  docker kill "$(c "$l")" >/dev/null
  echo "killed $l" | tee -a "$OUT/lost-$name.txt"
  local nl
  if nl=$(wait_leader 30); then
    {
      echo "promoted: $nl after $(echo "$(now) - $tk" | bc | xargs printf '%.1f') s"
      local ids lost
      ids=$(awk '$2 == "ok" { print $3 }' "$OUT/lost-$name-writes.log" | paste -sd,)
      if [ -n "$ids" ]; then
        lost=$(sql "$nl" "SELECT count(*) FROM unnest(ARRAY[$ids]::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM trial t WHERE t.id = a.id)")
      else
        lost=0
      fi
      echo "acknowledged writes missing on the new primary: $lost"
      echo "verdict $name: promoted $nl, lost $lost acknowledged writes"
    } 2>&1 | tee -a "$OUT/lost-$name.txt"
  else
    {
      echo "no leader 30 s after the crash: the site cannot write"
      status "no leader" >/dev/null
      docker logs --tail 200 "$(c "$a")" 2>&1 | grep -iE 'lag|healthiest|failover|promot' | tail -4
      echo "== starting the old primary $l again"
      docker start "$(c "$l")" >/dev/null
      nl=$(wait_leader 90) || nl=none
      local ids lost=unknown
      ids=$(awk '$2 == "ok" { print $3 }' "$OUT/lost-$name-writes.log" | paste -sd,)
      if [ -z "$ids" ]; then
        lost=0
      elif [ "$nl" != none ]; then
        lost=$(sql "$nl" "SELECT count(*) FROM unnest(ARRAY[$ids]::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM trial t WHERE t.id = a.id)")
      fi
      echo "leader once $l is back: $nl; acknowledged writes missing: $lost"
      echo "verdict $name: refused to promote a stale replica; writes stopped until $l came back ($nl leader), lost $lost"
    } 2>&1 | tee -a "$OUT/lost-$name.txt"
  fi
  status "after" >/dev/null
  drop_cluster
}

phase_lost() {
  lost_case async-default -e DB_MAX_LAG_ON_FAILOVER=1048576
  lost_case async-maxlag0 -e DB_MAX_LAG_ON_FAILOVER=0
  lost_case sync -e DB_REPLICATION=sync
  lost_case strict -e DB_REPLICATION=strict
  grep -h '^verdict' "$OUT"/lost-*.txt | tee "$OUT/lost-summary.txt"
}

phase_machine
for p in "${PHASES[@]}"; do
  log "phase $p"
  "phase_$p"
done
log "done: raw output in $OUT"
