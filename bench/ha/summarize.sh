#!/bin/bash
# Summarise one run of images/balancer/trial/vrrp.sh: reads RESULTS_DIR/events.txt
# (one line per fault, key=value fields) and prints, per kind of fault, the
# takeover time, the failure window and the failed requests (min, median,
# max), next to VRRP's expectation for the node that took over.
#
#   bench/ha/summarize.sh bench/ha/results/<run>            # prints
#   bench/ha/summarize.sh bench/ha/results/<run> > bench/ha/results/<run>/summary.txt
set -euo pipefail
dir=${1:?usage: bench/ha/summarize.sh RESULTS_DIR}
[[ -f $dir/events.txt ]] || { echo "error: $dir/events.txt not found: give a directory written by images/balancer/trial/vrrp.sh" >&2; exit 1; }

grep -E '^(date|nproc|cpu|loadavg_start|loadavg_end|settings|keepalived):' "$dir/env.txt" || true
echo

awk '
function field(name,   i, kv) {
  for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
  return "-"
}
function add(key, v) { if (v == "-" || v == "") return; n[key]++; val[key, n[key]] = v + 0 }
function stats(key,   i, j, t, m, c) {
  c = n[key]; if (c == 0) return "-"
  for (i = 1; i <= c; i++) a[i] = val[key, i]
  for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  m = (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
  if (key ~ /failed|after_unpause/) return sprintf("%d / %g / %d", a[1], m, a[c])
  return sprintf("%.2f / %.2f / %.2f", a[1], m, a[c])
}
$1 == "steady" {
  printf "steady state: %s requests, %s failed (holder %s)\n\n", field("requests"), field("failed"), field("holder")
  next
}
{
  k = $1; kinds[k] = 1; rounds[k]++
  add(k SUBSEP "takeover", field("takeover_s"))
  add(k SUBSEP "window", field("window_s"))
  add(k SUBSEP "failed", field("failed"))
  add(k SUBSEP "fault", field("fault_s"))
  add(k SUBSEP "after_unpause", field("failed_after_unpause"))
  add(k SUBSEP "back", field("taker_back_to_backup_after_unpause_s"))
  e = field("expected_s"); p = field("taker_prio")
  # A graceful stop sends priority 0: the backup waits only its skew time.
  if (k == "stop") e = "skew " field("skew_s")
  if (e != "-") expect[k] = expect[k] (index(expect[k], "prio " p ":") ? "" : sprintf(" prio %s: %s s;", p, e))
  if (field("holder_0.5s_after_unpause") != "-") kept[k] = kept[k] " " field("victim") "->" field("holder_after")
}
END {
  printf "%-9s %6s  %-22s %-22s %-22s %s\n", "fault", "rounds", "takeover s (min/med/max)", "failure window s", "failed requests", "VRRP expects takeover"
  for (k in kinds)
    printf "%-9s %6d  %-22s %-22s %-22s%s\n", k, rounds[k], stats(k SUBSEP "takeover"), stats(k SUBSEP "window"), stats(k SUBSEP "failed"), expect[k]
  if (n["prockill" SUBSEP "fault"] > 0)
    printf "\nprockill: the holder entered FAULT after %s s (min/med/max) of the kill\n", stats("prockill" SUBSEP "fault")
  if ("pause" in kinds) {
    printf "pause: after unpause, the taker went back to backup after %s s; requests failed after unpause: %s\n", stats("pause" SUBSEP "back"), stats("pause" SUBSEP "after_unpause")
    printf "pause: paused node -> holder at the end of the round:%s\n", kept["pause"]
  }
}' "$dir/events.txt"
