#!/usr/bin/env bash
# The web console in a real headless Chromium against the local stack (issue 14 §3): starts moto,
# the segmenter (u2netp only: the small, fast model) and the local runner the way
# scripts/run-local.sh does, on free ports of their own, creates a key, then runs
# scripts/console_test.py (Playwright driving Debian's /usr/bin/chromium): key, model list,
# dropping two real photos, the jobs going queued → succeeded, the cutout over the checkerboard
# in the slider, the download, the history with cursor paging, forgetting the key. Saves a
# screenshot to docs/img/console.png (SCREENSHOT=path to put it elsewhere). Stops what it
# started by PID.
#
# Needs what `bash scripts/setup.sh` (without --no-sam) installs: chromium, .venv-browser.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SCREENSHOT=${SCREENSHOT:-docs/img/console.png}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "error: $CHROMIUM missing; run bash scripts/setup.sh" >&2; exit 1; }
[ -x .venv-browser/bin/python ] || { echo "error: .venv-browser missing; run bash scripts/setup.sh" >&2; exit 1; }
[ -f .local/models/u2netp.onnx ] || { echo "error: .local/models/u2netp.onnx missing; run bash scripts/setup.sh" >&2; exit 1; }

started=$(date +%s)
log "console test: build (no-op after cargo test)"
cargo build -q -p imagejobs-local -p imagejobs-segmenter -p imagejobs-admin
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"

# Three free ports, chosen by the kernel (never the run command's 3000/8080/5055).
read -r api_port seg_port moto_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()')

work=$(mktemp -d)
mkdir -p "$work/models"
# Only u2netp: the segmenter loads every catalog model it finds, and the others take seconds.
ln -s "$PWD/.local/models/u2netp.onnx" "$work/models/u2netp.onnx"

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
dump_logs() {
  # moto's log is one line per request: its end says little.
  echo "--- moto" >&2; tail -n 5 "$work/moto.log" >&2
  for f in segmenter runner; do echo "--- $f" >&2; tail -n 40 "$work/$f.log" >&2; done
}

.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$moto_port/moto-api/" 30 moto "${pids[-1]}" || { dump_logs; exit 1; }
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"

ORT_DYLIB_PATH=$(cat .local/ort-dylib-path) \
  "$bin"/segmenter --host 127.0.0.1 --port "$seg_port" --model-dir "$work/models" \
  > "$work/segmenter.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$seg_port/ping" 60 segmenter "${pids[-1]}" || { dump_logs; exit 1; }

"$bin"/imagejobs-local serve --addr "127.0.0.1:$api_port" --default-model u2netp \
  --segmenter-url "http://127.0.0.1:$seg_port" > "$work/runner.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$api_port"
wait_http "$api/health" 60 "local runner" "${pids[-1]}" || { dump_logs; exit 1; }

key=$(JOBS_TABLE=imagejobs-jobs "$bin"/imagejobs-admin keys create --owner console-test \
  --name console-test --scopes jobs:write,jobs:read | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')

log "console test: Chromium against $api"
if ! CHROMIUM="$CHROMIUM" .venv-browser/bin/python scripts/console_test.py --api "$api" --key "$key" \
  --photo assets/portrait-astronaut.png --photo assets/sample-rocket.jpg \
  --screenshot "$SCREENSHOT"; then
  dump_logs
  exit 1
fi
log "console test: passed in $(($(date +%s) - started)) s; screenshot $SCREENSHOT"
