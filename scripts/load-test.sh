#!/usr/bin/env bash
# The reliability issue's load run on the local stack: the segmenter alone, then 120 jobs of a
# 400x328 PNG with u2netp through POST /v1/jobs from 16 client threads (429/503 retried with the
# same Idempotency-Key), every job read until it ends (scripts/load_test.py). Exits 1 when any
# job did not succeed. Starts its own stack with scripts/run-local.sh and stops it by PID.
#
# The stack runs optimised binaries (BUILD_PROFILE=stack, Cargo.toml), as it runs when
# deployed: the debug build's runner spent about three times the CPU for the same work, on the
# cores the segmenter shares with it here. The first run builds them (BUILD_PROFILE=dev reuses
# the debug build instead).
#
#   bash scripts/load-test.sh                 # JOBS=120 THREADS=16 MODEL=u2netp
# Ports: API_PORT=3300, SEGMENTER_PORT=8300, MOTO_PORT=5300. Figures: .local/logs/load-test.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export API_PORT=${API_PORT:-3300} SEGMENTER_PORT=${SEGMENTER_PORT:-8300} MOTO_PORT=${MOTO_PORT:-5300}
mkdir -p .local/logs
rm -f .local/api-key
BUILD_PROFILE=${BUILD_PROFILE:-stack} MODEL=u2netp bash scripts/run-local.sh > .local/logs/load-test-stack.log 2>&1 &
stack=$!
trap 'kill "$stack" 2>/dev/null || true; wait "$stack" 2>/dev/null || true' EXIT
log "waiting for the local stack (log: .local/logs/load-test-stack.log)"
for ((i = 0; i < 1800; i++)); do
  grep -q "Ctrl-C" .local/logs/load-test-stack.log 2>/dev/null && [ -s .local/api-key ] && break
  kill -0 "$stack" 2>/dev/null || { tail -30 .local/logs/load-test-stack.log >&2; exit 1; }
  sleep 1
done
[ -s .local/api-key ] || { echo "the stack did not come up" >&2; exit 1; }
log "load run"
.venv/bin/python scripts/load_test.py \
  --api "http://127.0.0.1:$API_PORT" --segmenter "http://127.0.0.1:$SEGMENTER_PORT" \
  --key "$(cat .local/api-key)" --photo assets/sample-rocket.jpg --model "${MODEL:-u2netp}" \
  --jobs "${JOBS:-120}" --threads "${THREADS:-16}" --json .local/logs/load-test.json
