# memcast: `make demo` sets up and runs a three-host cluster; `make test` runs every test.
PHP        ?= php
PHP_CONFIG ?= php-config
RUN_TESTS  ?= $(shell $(PHP_CONFIG) --extension-dir 2>/dev/null)/build/run-tests.php
SO         := $(CURDIR)/target/release/libmemcast.so
MEMCASTD   := $(CURDIR)/target/release/memcastd

.PHONY: all build deps test test-rust test-phpt lint demo clean

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

demo: deps build
	bash scripts/demo.sh

clean:
	cargo clean
