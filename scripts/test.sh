#!/usr/bin/env bash
# `make test`'s runner, after fmt and clippy. Every test of the workspace
# runs; what changes is how they share the machine's 2 cores:
#
# - With cargo-nextest installed (`cargo install cargo-nextest`), the test
#   binaries run side by side, three tests at a time (.config/nextest.toml):
#   the end-to-end tests spend most of their time waiting on Docker. The
#   lessons then run alone, because they measure speed and capacity. The
#   doc tests run last (nextest does not run them).
# - Without it, `cargo test` runs the binaries one after another, as before.
#
# Both run every test and report every failure (no fail-fast).
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
if "$CARGO" nextest --version >/dev/null 2>&1; then
    rc=0
    echo "== tests, side by side (cargo nextest), the lessons apart"
    "$CARGO" nextest run --workspace --no-fail-fast -E 'not binary(e2e_lessons)' || rc=1
    echo "== the lessons, alone"
    "$CARGO" nextest run --workspace --no-fail-fast --no-tests=pass -E 'binary(e2e_lessons)' --success-output final || rc=1
    echo "== doc tests"
    "$CARGO" test --workspace --doc || rc=1
    exit $rc
fi
echo "== tests (cargo test; install cargo-nextest to run test binaries side by side)"
exec "$CARGO" test --workspace --no-fail-fast
