#!/usr/bin/env bash
# The README's run command: on a fresh machine, installs what is missing, builds, starts the AWS
# emulator + segmenter (CPU, real ISNet and u2netp weights fetched and verified by setup) +
# API/processor/ingest (the local runner), sends the bundled sample photo through the public HTTP
# API, writes the cutout and a before/after preview to out/, prints the job and the commands for
# the next requests, and keeps the stack up until Ctrl-C.
#
#   bash scripts/run-local.sh            # stays up until Ctrl-C
#   bash scripts/run-local.sh --once     # stops after the sample job (scripted checks)
#
# Ports (override with env): API_PORT=3000, SEGMENTER_PORT=8080, MOTO_PORT=5055.
# MODEL_DIR (default .local/models) holds the weights setup installs (isnet, isnet-int8, u2netp);
# other catalog files (u2net.onnx, birefnet-general.onnx, ...) placed there are served too.
# MODEL=u2netp picks the model of the sample job (default: the segmenter's, ISNet fp16).
# BUILD_PROFILE=stack builds optimised binaries (Cargo.toml's `stack` profile; scripts/load-test.sh
# uses it) instead of the default debug ones (`dev`, which shares the tests' build).
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
MODEL=${MODEL:-}
BUILD_PROFILE=${BUILD_PROFILE:-dev}

for cmd in cargo curl python3; do
  command -v "$cmd" >/dev/null || { echo "error: $cmd is required" >&2; exit 1; }
done
for port in "$API_PORT" "$SEGMENTER_PORT" "$MOTO_PORT"; do
  port_free "$port" || { echo "error: port $port is in use (set API_PORT/SEGMENTER_PORT/MOTO_PORT)" >&2; exit 1; }
done

log "setup (Python tools in .venv, model weights in .local/models; the first run fetches them)"
MODEL_DIR="$MODEL_DIR" bash scripts/setup.sh --no-sam

log "build (profile $BUILD_PROFILE)"
cargo build --profile "$BUILD_PROFILE" -p imagejobs-local -p imagejobs-segmenter -p imagejobs-admin -p imagejobs-cli
# Where cargo put them: the workspace's target/ unless CARGO_TARGET_DIR moves it; the dev
# profile's folder is named debug.
bin="${CARGO_TARGET_DIR:-$PWD/target}/$([ "$BUILD_PROFILE" = dev ] && echo debug || echo "$BUILD_PROFILE")"

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
.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" > .local/logs/moto.log 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/" 30 moto "${pids[-1]}"
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"

log "segmenter on 127.0.0.1:$SEGMENTER_PORT (MODEL_DIR=$MODEL_DIR)"
# The segmenter shares this machine's cores with moto and the runner: idle ONNX Runtime threads
# that spin for work take CPU from them (the load run: 76-78 % of the segmenter alone with
# spinning, 80-84 % without, at the same images per minute alone). A dedicated instance keeps
# the segmenter's default (on). ORT_SPINNING=true overrides.
ORT_SPINNING=${ORT_SPINNING:-false} ORT_DYLIB_PATH=$(cat .local/ort-dylib-path) \
  "$bin"/segmenter --host 127.0.0.1 --port "$SEGMENTER_PORT" --model-dir "$MODEL_DIR" \
  > .local/logs/segmenter.log 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$SEGMENTER_PORT/ping" 60 segmenter "${pids[-1]}"

log "API + processor + ingest (local runner) on 127.0.0.1:$API_PORT"
"$bin"/imagejobs-local serve --addr "127.0.0.1:$API_PORT" \
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
key=$(JOBS_TABLE=imagejobs-jobs "$bin"/imagejobs-admin keys create --owner demo --name run-local \
  --scopes jobs:write,jobs:read,metrics:read | jget key)
auth="Authorization: Bearer $key"
echo "$key" > .local/api-key

log "submitting $SAMPLE${MODEL:+ (model $MODEL)}"
started=$(date +%s.%N)
model_field=()
[ -n "$MODEL" ] && model_field=(-F "model=$MODEL")
job=$(curl -sS -H "$auth" -H 'Prefer: wait=20' -F "file=@$SAMPLE" "${model_field[@]}" "$api/v1/jobs")
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
elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)")
result_key=$(printf '%s' "$job" | jget result key)
engine=$(printf '%s' "$job" | jget result engine)
fraction=$(printf '%s' "$job" | jget result foreground_fraction)
out="out/$id.${result_key##*.}"
curl -sS -L -H "$auth" -o "$out" "$api/v1/jobs/$id/result"
preview="out/$id-preview.png"
"$bin"/imagejobs-local preview "$SAMPLE" "$out" -o "$preview" > /dev/null

log "after: $out"
"$bin"/imagejobs-local inspect "$out"

root=$(pwd)
cat <<EOT

Done, with model $engine in ${elapsed} s (submit to result, over HTTP); the cutout keeps
$(python3 -c "import sys; print(f'{100 * float(sys.argv[1]):.1f}')" "$fraction") % of the picture.
  cutout:  $root/$out
  preview: $root/$preview   (original | cutout over a checkerboard)
Your API key (owner 'demo', also in .local/api-key): $key
Next request (paste it into any shell while this runs):

  curl -sS -H 'Authorization: Bearer $key' -H 'Prefer: wait=20' \\
    -F file=@$root/$SAMPLE -F model=u2netp -F output_format=webp -F scale=0.5 $api/v1/jobs

Then: curl -sS -H 'Authorization: Bearer $key' $api/v1/jobs | python3 -m json.tool
      curl -sS -L -H 'Authorization: Bearer $key' -o result.png $api/v1/jobs/<id>/result

The same with the CLI ("$bin"/imagejobs, or cargo run -p imagejobs-cli -- …; --help lists all):

  export IMAGEJOBS_URL=$api IMAGEJOBS_API_KEY=$key
  "$bin"/imagejobs remove $root/$SAMPLE -o cutout.webp --model u2netp --scale 0.5
  "$bin"/imagejobs remove $root/assets/ -o cutouts/      # a folder: 4 at a time, progress bar
  "$bin"/imagejobs jobs list

More keys: AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION \\
      AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY JOBS_TABLE=imagejobs-jobs \\
      "$bin"/imagejobs-admin keys create --owner you
Models: curl -sS http://127.0.0.1:$SEGMENTER_PORT/models | python3 -m json.tool
Logs: $root/.local/logs/{moto,segmenter,runner}.log
EOT

if [ $once = 1 ]; then exit 0; fi
log "stack is up; Ctrl-C to stop"
wait "${pids[@]}"
