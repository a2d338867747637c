#!/usr/bin/env bash
# The README's run command: on a fresh machine, installs what is missing, builds, starts the AWS
# emulator + segmenter (CPU) + API/processor/ingest (the local runner), sends the bundled sample
# photo through the public HTTP API, writes the cutout to out/, prints the job and a curl for the
# next request, and keeps the stack up until Ctrl-C.
#
#   bash scripts/run-local.sh            # stays up until Ctrl-C
#   bash scripts/run-local.sh --once     # stops after the sample job (scripted checks)
#
# Ports (override with env): API_PORT=3000, SEGMENTER_PORT=8080, MOTO_PORT=5055.
# MODEL_DIR (default .local/models, empty) may hold rembg ONNX weights such as u2net.onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

once=0
[ "${1:-}" = "--once" ] && once=1
API_PORT=${API_PORT:-3000}
SEGMENTER_PORT=${SEGMENTER_PORT:-8080}
MOTO_PORT=${MOTO_PORT:-5055}
MODEL_DIR=${MODEL_DIR:-.local/models}
SAMPLE=${SAMPLE:-assets/sample-rocket.jpg}

for cmd in cargo curl python3; do
  command -v "$cmd" >/dev/null || { echo "error: $cmd is required" >&2; exit 1; }
done
for port in "$API_PORT" "$SEGMENTER_PORT" "$MOTO_PORT"; do
  port_free "$port" || { echo "error: port $port is in use (set API_PORT/SEGMENTER_PORT/MOTO_PORT)" >&2; exit 1; }
done

log "setup (Python tools in .venv; first run installs them)"
bash scripts/setup.sh --no-sam

log "build (debug profile; image crates optimised)"
cargo build -p imagejobs-local -p imagejobs-segmenter -p imagejobs-admin

mkdir -p .local/logs "$MODEL_DIR" out
pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping (${pids[*]})"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "AWS emulator (moto) on 127.0.0.1:$MOTO_PORT"
.venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" > .local/logs/moto.log 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/" 30 moto "${pids[-1]}"
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"

log "segmenter on 127.0.0.1:$SEGMENTER_PORT (MODEL_DIR=$MODEL_DIR)"
ORT_DYLIB_PATH=$(cat .local/ort-dylib-path) \
  target/debug/segmenter --host 127.0.0.1 --port "$SEGMENTER_PORT" --model-dir "$MODEL_DIR" \
  > .local/logs/segmenter.log 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$SEGMENTER_PORT/ping" 60 segmenter "${pids[-1]}"

log "API + processor + ingest (local runner) on 127.0.0.1:$API_PORT"
target/debug/imagejobs-local serve --addr "127.0.0.1:$API_PORT" \
  --segmenter-url "http://127.0.0.1:$SEGMENTER_PORT" > .local/logs/runner.log 2>&1 &
pids+=($!)
api="http://127.0.0.1:$API_PORT"
wait_http "$api/health" 60 "local runner" "${pids[-1]}"

jget() { # jget KEY [KEY...] < json: prints that field
  python3 -c 'import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1:]:
    d = d[k]
print(d)' "$@"
}
log "API key for owner 'demo' (imagejobs-admin keys create)"
key=$(JOBS_TABLE=imagejobs-jobs target/debug/imagejobs-admin keys create --owner demo --name run-local 2>/dev/null | jget key)
auth="Authorization: Bearer $key"
echo "$key" > .local/api-key

log "submitting $SAMPLE"
job=$(curl -sS -H "$auth" -H 'Prefer: wait=20' -F "file=@$SAMPLE" "$api/v1/jobs")
id=$(printf '%s' "$job" | jget id)
for _ in $(seq 1 60); do
  status=$(printf '%s' "$job" | jget status)
  case "$status" in succeeded|failed|canceled) break ;; esac
  sleep 1
  job=$(curl -sS -H "$auth" "$api/v1/jobs/$id")
done
printf '%s\n' "$job" | python3 -m json.tool
if [ "$status" != succeeded ]; then
  echo "error: job $id ended $status (logs in .local/logs/)" >&2
  exit 1
fi
result_key=$(printf '%s' "$job" | jget result key)
out="out/$id.${result_key##*.}"
curl -sS -L -H "$auth" -o "$out" "$api/v1/jobs/$id/result"

log "before: $SAMPLE"
target/debug/imagejobs-local inspect "$SAMPLE"
log "after: $out"
target/debug/imagejobs-local inspect "$out"

cat <<EOT

Done: the cutout is in $out.
Your API key (owner 'demo', also in .local/api-key): $key
Next request (paste it):

  curl -sS -H 'Authorization: Bearer $key' -H 'Prefer: wait=20' \\
    -F file=@$SAMPLE -F output_format=webp -F scale=0.5 $api/v1/jobs

Then: curl -sS -H 'Authorization: Bearer $key' $api/v1/jobs | python3 -m json.tool
      curl -sS -L -H 'Authorization: Bearer $key' -o result.png $api/v1/jobs/<id>/result
More keys: JOBS_TABLE=imagejobs-jobs AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION \\
      target/debug/imagejobs-admin keys create --owner you
Logs: .local/logs/{moto,segmenter,runner}.log
EOT

if [ $once = 1 ]; then exit 0; fi
log "stack is up; Ctrl-C to stop"
wait "${pids[@]}"
