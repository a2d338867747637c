#!/usr/bin/env bash
# The reliability issue's soak: the chaos suite (local/tests/it/chaos_suite.rs) at soak size,
# by default 1,000 jobs across 5 owners, with the same faults, kills and invariants as its CI
# variant (300 jobs, 3 owners, part of `bash scripts/test.sh`). Prints the seed and the table;
# exits non-zero when an invariant broke or a fault kind fired fewer than 5 times.
#
# A soak offers its load at a rate a 2-core machine sustains with every fault and kill
# (CHAOS_JOBS_PER_MINUTE, default 100: ~10 minutes for 1,000 jobs). At the CI variant's burst
# rate (240/min) the backlog grows for the whole soak, jobs wait minutes in the queue, and the
# queue wait rather than recovery sets the time a crashed job takes to finish.
#
#   bash scripts/chaos-soak.sh                       # CHAOS_JOBS=1000 CHAOS_OWNERS=5
#                                                    # CHAOS_JOBS_PER_MINUTE=100
#   CHAOS_SEED=1313 bash scripts/chaos-soak.sh       # replay a seed
# The whole output is kept in .local/logs/chaos-soak.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# The test command's build settings (scripts/test.sh), so a soak after it compiles nothing.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CHAOS_JOBS="${CHAOS_JOBS:-1000}" CHAOS_OWNERS="${CHAOS_OWNERS:-5}"
export CHAOS_JOBS_PER_MINUTE="${CHAOS_JOBS_PER_MINUTE:-100}"
mkdir -p .local/logs
bash scripts/setup.sh
log "chaos soak: $CHAOS_JOBS jobs, $CHAOS_OWNERS owners, $CHAOS_JOBS_PER_MINUTE jobs/min, seed ${CHAOS_SEED:-default}"
status=0
cargo test --workspace --test it --locked -- chaos_suite:: --nocapture \
  > .local/logs/chaos-soak.log 2>&1 || status=$?
grep -E '^(\| |chaos|test |thread .* panicked)' .local/logs/chaos-soak.log || true
exit "$status"
