# memcast: `make demo` sets up and runs a three-host cluster; `make test` runs every test.
SHELL      := /bin/bash
PHP        ?= php
PHP_CONFIG ?= php-config
RUN_TESTS  ?= $(shell $(PHP_CONFIG) --extension-dir 2>/dev/null)/build/run-tests.php
SO         := $(CURDIR)/target/release/libmemcast.so
MEMCASTD   := $(CURDIR)/target/release/memcastd

.PHONY: all build deps test test-rust test-phpt lint fuzz demo clean

all: build

build:
	cargo build --release --workspace

deps:
	bash scripts/install-deps.sh

# Unit tests, integration tests against real memcached, the three-host PGM
# test (root: network namespaces), then PHP's own run-tests.php on tests/phpt.
test: build test-rust test-phpt

test-rust: build
	cargo test --release --workspace

test-phpt: build
	MEMCAST_SO=$(SO) REPORT_EXIT_STATUS=1 NO_INTERACTION=1 \
	  $(PHP) $(RUN_TESTS) -q -n -d extension=$(SO) --show-diff tests/phpt

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --release -- -D warnings

# The fuzz targets (fuzz/fuzz_targets: frame decoder, peer stream, config
# parsers), FUZZ_SECONDS each, from the seed corpus in fuzz/corpus; new inputs
# go to a scratch corpus, crashes to fuzz/artifacts (and fail the run).
# cargo-fuzz wants nightly for -Zsanitizer; RUSTC_BOOTSTRAP lets the stable
# toolchain accept it.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame_open peer_stream config
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 cargo fuzz build -O
	set -e; for t in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d); \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t $$scratch fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 2>&1 | \
	    grep -E '^(Done|stat::number_of_executed_units|INFO: seed corpus)|ERROR|panicked|SUMMARY' ; \
	  status=$${PIPESTATUS[0]}; rm -rf $$scratch; \
	  if [ $$status -ne 0 ]; then echo "fuzz target $$t failed (exit $$status); see fuzz/artifacts/$$t"; exit 1; fi; \
	done

demo: deps build
	bash scripts/demo.sh

clean:
	cargo clean
