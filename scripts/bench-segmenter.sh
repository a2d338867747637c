#!/usr/bin/env bash
# The segmenter against rembg, side by side, on this machine's CPU: one command.
#
#   bash scripts/bench-segmenter.sh            # full run: 9 interleaved requests per side and model
#   bash scripts/bench-segmenter.sh --quick    # 3 per side, no ONNX Runtime settings table
#   bash scripts/bench-segmenter.sh --save-reference   # store today's masks for later mask checks
#
# It installs rembg 2.0.86 with onnxruntime 1.31.1 (the version the segmenter loads) into its
# own .venv-bench, fetches and verifies the real weights (.local/models), builds the release
# segmenter (CARGO_TARGET_DIR is honoured), then runs scripts/bench/harness.py, which starts the
# segmenter on a free 127.0.0.1 port, interleaves rembg and segmenter requests on the sample
# photo upscaled to 12 MP, prints the tables and kills the server by its PID. Other flags are
# passed to the harness (`--models u2netp`, `--repeats N`, `--json FILE`, `--ort-settings`).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
quick=0
args=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) args+=("$a") ;;
  esac
done

pins=("rembg==2.0.86" "onnxruntime==1.31.1")
want=$(printf '%s\n' "${pins[@]}")
if [ ! -f .venv-bench/.stamp ] || [ "$(cat .venv-bench/.stamp)" != "$want" ]; then
  echo "bench: installing into .venv-bench: ${pins[*]}" >&2
  rm -rf .venv-bench
  "$PY" -m venv .venv-bench
  .venv-bench/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv-bench/bin/python -m pip install -q --disable-pip-version-check "${pins[@]}"
  printf '%s\n' "$want" > .venv-bench/.stamp
fi

"$PY" scripts/fetch_models.py --dest .local/models --quiet

echo "bench: building the release segmenter (LTO; minutes the first time)" >&2
cargo build --release -q -p imagejobs-segmenter
bin="${CARGO_TARGET_DIR:-target}/release/segmenter"

if [ $quick = 1 ]; then
  set -- --repeats 3 --ort-repeats 2
else
  set -- --repeats 9 --ort-settings --ort-repeats 5
fi
# Later flags win, so the caller's own --repeats overrides the defaults above.
exec .venv-bench/bin/python scripts/bench/harness.py --segmenter "$bin" "$@" "${args[@]}"
