#!/bin/bash
# Summarise one run of images/balancer/trial/vrrp.sh: reads RESULTS_DIR/events.txt
# (one line per fault, key=value fields, written by the trial) and prints, per
# kind of fault, the takeover time, the failure window, the failed requests
# and when service came back (min / median / max over the rounds), next to
# what VRRP's timers predict for the node that took over.
#
#   bench/ha/summarize.sh bench/ha/results/<run>
#   bench/ha/summarize.sh bench/ha/results/<run> > bench/ha/results/<run>/summary.txt
set -euo pipefail
dir=${1:?usage: bench/ha/summarize.sh RESULTS_DIR}
[[ -f $dir/events.txt ]] || { echo "error: $dir/events.txt not found: give a directory written by images/balancer/trial/vrrp.sh" >&2; exit 1; }

grep -E '^(date|nproc|cpu|memory|loadavg_start|loadavg_end|settings|keepalived|backend|balancer_image|balancer_image_note|docker|kernel|commit):' "$dir/env.txt" || true
echo

awk '
function field(name,   i, kv) {
  for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
  return "-"
}
function add(key, v) { if (v == "-" || v == "") return; n[key]++; val[key, n[key]] = v + 0 }
# "min / median / max" of the values collected under key
function stats(key, whole,   i, j, t, m, c, a) {
  c = n[key]; if (c == 0) return "-"
  for (i = 1; i <= c; i++) a[i] = val[key, i]
  for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  m = (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
  if (whole) return sprintf("%d / %g / %d", a[1], m, a[c])
  return sprintf("%.2f / %.2f / %.2f", a[1], m, a[c])
}
$1 == "steady" {
  late += field("driver_late"); flate += field("failed_late")
  steady = sprintf("steady state (no fault): %s requests, %s failed, holder %s", field("requests"), field("failed"), field("holder"))
  next
}
{
  k = $1
  if (!(k in rounds)) order[++nk] = k
  rounds[k]++
  add(k SUBSEP "takeover", field("takeover_s"))
  add(k SUBSEP "window", field("window_s"))
  add(k SUBSEP "ffault", field("failed_fault"))
  add(k SUBSEP "fret", field("failed_return"))
  add(k SUBSEP "stray", field("failed_stray"))
  add(k SUBSEP "recovered", field("recovered_s"))
  add(k SUBSEP "fault", field("fault_s"))
  add(k SUBSEP "back", field("taker_back_to_backup_after_unpause_s"))
  add(k SUBSEP "again", field("victim_master_again_after_return_s"))
  late += field("driver_late"); flate += field("failed_late")
  p = field("taker_prio")
  # Does the takeover fall where VRRP says it should?
  #   crash, pause: between master_down - advert_int and master_down after
  #     the fault (the last advert left up to one interval before it);
  #   stop: the node sends priority 0, the backup waits its skew only;
  #   prockill: the check fails (FAULT, priority 0 sent), then the skew.
  tk = field("takeover_s"); sk = field("skew_s"); ex = field("expected_s")
  if (tk != "-") {
    if (k == "stop") { d = tk - sk; add(k SUBSEP "beyond", d); in_range = (d >= -0.05 && d <= 0.25) }
    else if (k == "prockill") { d = tk - field("fault_s") - sk; add(k SUBSEP "beyond", d); in_range = (d >= -0.05 && d <= 0.25) }
    else { split(ex, r, /\.\./); in_range = (tk >= r[1] && tk <= r[2]) }
    checked[k]++; inside[k] += in_range
  }
  # A graceful stop and a FAULT send priority 0: the backup waits its skew only.
  e = (k == "stop") ? "skew " field("skew_s") : (k == "prockill") ? "FAULT + skew " field("skew_s") : field("expected_s")
  if (!index(expect[k], "prio " p ":")) expect[k] = expect[k] sprintf(" prio %s: %s s;", p, e)
  ends[k] = ends[k] " " field("victim") "->" field("holder_after")
}
END {
  if (steady != "") print steady "\n"
  printf "%-9s %-6s %-20s %-20s %-16s %-20s %s\n", "fault", "rounds", "takeover s", "failure window s", "failed (fault)", "recovered s", "VRRP expects takeover"
  for (i = 1; i <= nk; i++) {
    k = order[i]
    printf "%-9s %-6d %-20s %-20s %-16s %-20s%s\n", k, rounds[k], stats(k SUBSEP "takeover"), stats(k SUBSEP "window"), stats(k SUBSEP "ffault", 1), stats(k SUBSEP "recovered"), expect[k]
  }
  print "(each cell: min / median / max over the rounds; times from the fault)"
  printf "\ntakeovers where VRRP predicts them (stop, prockill: within 0.25 s after the skew time):\n"
  for (i = 1; i <= nk; i++) if (checked[order[i]]) printf "  %-9s %d of %d%s\n", order[i], inside[order[i]], checked[order[i]], (n[order[i] SUBSEP "beyond"] ? sprintf("  (takeover minus the prediction: %s s)", stats(order[i] SUBSEP "beyond")) : "")
  printf "\nfailed requests when the victim came back (start, restart, unpause) / stray failures elsewhere:\n"
  for (i = 1; i <= nk; i++) printf "  %-9s %s  /  %s\n", order[i], stats(order[i] SUBSEP "fret", 1), stats(order[i] SUBSEP "stray", 1)
  for (i = 1; i <= nk; i++) if (n[order[i] SUBSEP "again"] > 0)
    printf "\n%s: the victim took the address back %s s after it was started again (%d of %d rounds)\n", order[i], stats(order[i] SUBSEP "again"), n[order[i] SUBSEP "again"], rounds[order[i]]
  if (n["prockill" SUBSEP "fault"] > 0)
    printf "\nprockill: the holder entered FAULT %s s after its balancer was killed\n", stats("prockill" SUBSEP "fault")
  if (n["pause" SUBSEP "back"] > 0)
    printf "pause: when the paused node had the higher priority, the taker went back to BACKUP %s s after Docker logged the unpause\n", stats("pause" SUBSEP "back")
  printf "\nrequests the load driver sent over 100 ms late (the machine stalled it), all rounds: %d, of which failed: %d\n", late, flate
  printf "\nvictim -> holder at the end of each round:\n"
  for (i = 1; i <= nk; i++) printf "  %-9s%s\n", order[i], ends[order[i]]
}' "$dir/events.txt"
