# Convenience targets; the README's two commands are the scripts themselves.
.PHONY: run test setup build release validate bench fmt clippy clean-local

run:        ## set up, start the local stack, process the sample photo, stay up
	bash scripts/run-local.sh
test:       ## everything CI runs
	bash scripts/test.sh
setup:      ## Python tools (.venv, .venv-sam), real model weights (.local/models), test models
	bash scripts/setup.sh
build:
	cargo build --workspace
release:    ## release binaries of the three functions and the segmenter (LTO; slow on 2 cores)
	cargo build --release -p imagejobs-api -p imagejobs-processor -p imagejobs-ingest -p imagejobs-segmenter
validate:   ## cfn-lint + sam validate
	bash scripts/validate-template.sh
bench:      ## the segmenter against rembg, side by side (scripts/bench-segmenter.sh; QUICK=1 for --quick)
	bash scripts/bench-segmenter.sh $(if $(QUICK),--quick,)
fmt:
	cargo fmt --all
clippy:
	cargo clippy --workspace --all-targets -- -D warnings
deploy:     ## needs AWS credentials, Docker or cargo-lambda + zig
	sam build && sam deploy
