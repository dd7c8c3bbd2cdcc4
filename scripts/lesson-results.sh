#!/usr/bin/env bash
# Runs every lesson (or those named) with --json and keeps each report in
# docs/labs/results/DATE-TIME/NAME.json (a folder per run, so no earlier
# result is overwritten). The guides in docs/labs/ quote their figures from
# such files only; each report records the machine, its load and the time.
#
#   scripts/lesson-results.sh                  # every lesson, one after another
#   scripts/lesson-results.sh cache sessions   # only these
#
# Lessons run one at a time: they measure latency and capacity, and two at
# once would disturb each other. Run it on an otherwise idle machine.
set -uo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:-target/release/lab}
[ -x "$LAB" ] || { echo "error: $LAB is missing: run \`make images\` first" >&2; exit 1; }
OUT=docs/labs/results/$(date -u +%Y-%m-%dT%H%MZ)
mkdir -p "$OUT"
if [ $# -gt 0 ]; then
    names=("$@")
else
    mapfile -t names < <("$LAB" lesson list | awk '{print $2}')
fi
failed=0
for name in "${names[@]}"; do
    file="$OUT/$name.json"
    echo "== $name -> $file (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if "$LAB" --lab "results-$$" lesson run "$name" --json >"$file.tmp"; then
        echo "   the claim holds"
    else
        echo "   the claim did NOT hold (exit $?): see $file"
        failed=1
    fi
    mv "$file.tmp" "$file"
done
exit $failed
