#!/usr/bin/env bash
# The README's test command: installs what the tests need, checks formatting, lints, validates
# template.yaml (cfn-lint + sam validate), then runs every test: unit tests, integration tests
# against the AWS emulator (each test starts its own moto on a free 127.0.0.1 port), and the
# end-to-end tests through the public HTTP API.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

log "setup"
bash scripts/setup.sh
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Each deployable alone, as its Dockerfile or SAM builds it: a whole-workspace build unifies
# features and would hide a crate that does not compile on its own.
for crate in imagejobs-api imagejobs-processor imagejobs-ingest imagejobs-admin imagejobs-segmenter; do
  log "cargo check -p $crate (alone)"
  cargo check -p "$crate" --locked
done
log "cargo check -p imagejobs-segmenter --features cuda (alone)"
cargo check -p imagejobs-segmenter --features cuda --locked
log "template.yaml: cfn-lint + sam validate"
bash scripts/validate-template.sh
log "cargo test"
cargo test --workspace --locked
