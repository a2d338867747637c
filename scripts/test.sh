#!/usr/bin/env bash
# The README's test command: installs what the tests need, checks formatting, lints, validates
# template.yaml (cfn-lint + sam validate), then runs every test: unit tests, integration tests
# against the AWS emulator (each test starts its own moto on a free 127.0.0.1 port), and the
# end-to-end tests through the public HTTP API, and the web console in a headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# Incremental caches are for edit-compile loops; on a one-shot run they only cost disk (they were
# most of a 50 GB target/ here, and a CI run once died of "No space left on device" in them).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Line tables keep file:line in panics and backtraces; full debug info only makes the AWS SDK's
# test binaries slower to link and several GB larger.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

log "setup"
bash scripts/setup.sh
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Each deployable alone, as its Dockerfile or SAM builds it: a whole-workspace build unifies
# features and would hide a crate that does not compile on its own.
for crate in imagejobs-api imagejobs-processor imagejobs-ingest imagejobs-admin imagejobs-segmenter imagejobs-cli; do
  log "cargo check -p $crate (alone)"
  cargo check -p "$crate" --locked
done
# Dependencies point one way: the domain and the ports build with no AWS crate and no HTTP client.
log "cargo check -p imagejobs-shared --features ports (domain + ports alone)"
cargo check -p imagejobs-shared --no-default-features --features ports --locked
leaked=$(cargo tree -p imagejobs-shared --no-default-features --features ports -e normal --prefix none --locked \
  | grep -E '^(aws-config|aws-sdk-[a-z0-9]+|aws-smithy-[a-z-]+|reqwest|hyper|tokio) ' | sort -u || true)
if [[ -n "$leaked" ]]; then
  echo "imagejobs-shared --features ports pulls adapter crates:" >&2
  echo "$leaked" >&2
  exit 1
fi
# Fault injection (shared's `faults`, the chaos suite's decorators) and the in-memory fakes are
# for tests and the local runner only: no deployed function may build them in.
for crate in imagejobs-api imagejobs-processor imagejobs-ingest; do
  log "cargo tree -p $crate: no faults, no fakes"
  test_only=$(cargo tree -p "$crate" -e normal,features --locked \
    | grep -oE 'imagejobs-shared feature "(faults|fakes)"' | sort -u || true)
  if [[ -n "$test_only" ]]; then
    echo "$crate builds in test-only features of imagejobs-shared: $test_only" >&2
    exit 1
  fi
done
log "cargo check -p imagejobs-segmenter --features cuda (alone)"
cargo check -p imagejobs-segmenter --features cuda --locked
log "template.yaml: cfn-lint + sam validate"
bash scripts/validate-template.sh
log "cargo test (everything but the chaos suite)"
cargo test --workspace --locked -- --skip chaos_suite::
# The chaos suite's CI variant gets the machine to itself, as the reliability issue sizes it (300
# jobs within 6 minutes on 2 cores). Beside the other integration tests, each with its own moto,
# its recovery times measured the queue behind a starved CPU: one CI run of 2026-12-07 had a job
# latency p50 of 45 s instead of ~1 s, and 10 crashes over the 2-minute recovery bound.
log "cargo test: the chaos suite's CI variant, alone"
# `--workspace --test it`, not `-p imagejobs-local`: the same feature set as the run above, so
# nothing is compiled again (with `-p`, a fresh CI run rebuilt ~60 crates for it).
cargo test --workspace --test it --locked -- chaos_suite::
log "OpenAPI: openapi-spec-validator + Schemathesis against the live local stack"
bash scripts/schemathesis.sh
log "web console in headless Chromium"
bash scripts/console-test.sh
