# memcast: `make demo` sets up and runs a three-host cluster; `make test` runs every test.
SHELL      := /bin/bash
PHP        ?= php
PHP_CONFIG ?= php-config
RUN_TESTS  ?= $(shell $(PHP_CONFIG) --extension-dir 2>/dev/null)/build/run-tests.php
SO         := $(CURDIR)/target/release/libmemcast.so
# The PHP version `make deb` packages for: the build machine's PHP (the one
# $(PHP_CONFIG) names) by default; PHP_VERSION=8.4 builds in the Debian 13 root.
HOST_PHP_VERSION := $(shell $(PHP_CONFIG) --version 2>/dev/null | cut -d. -f1,2)
PHP_VERSION      ?= $(HOST_PHP_VERSION)
MEMCASTD   := $(CURDIR)/target/release/memcastd

.PHONY: all build deps bench-deps bench test test-start test-rust test-soak soak test-phpt test-php-src test-packaging test-php84 debian13-root lint fuzz install uninstall deb demo clean

all: build

build:
	cargo build --release --workspace

deps:
	bash scripts/install-deps.sh

# Unit tests, integration tests against real memcached, the three-host PGM
# test (root: network namespaces), the short fault soak, then PHP's own
# run-tests.php on php/tests and on php-src's own ext/session tests.
test: build test-start test-rust test-soak test-phpt test-php-src test-packaging test-php84
	bash scripts/leftovers.sh target/test-start

# Every process make test starts must be gone at its end (scripts/leftovers.sh).
test-start:
	@mkdir -p target && touch target/test-start

test-rust: build
	cargo test --release --workspace -- --skip soak_

# The fault soak (tests/soak.rs, root: five hosts in network namespaces):
# seeded random faults for SOAK_SECONDS in each of the README's two setups,
# one after the other; SOAK_SEED=<hex> replays a run's faults. `make test`
# runs 90 s (recommended setup), `make soak` 600 s per setup. The summary is printed
# and kept in target/soak-<setup>.txt, the run's logs in target/soak-<setup>-logs.
SOAK_TEST_SECONDS ?= 90
SOAK_SECONDS      ?= 600
# Sessions sealed, as with a key file by default (SOAK_SEAL=0: plain keys).
SOAK_SEAL         ?= 1
# make test runs the recommended setup's soak; the minimal setup's (PHP
# publishing directly) loses nothing but can still read a host's own last
# write stale right after its memcached lost it (README): make soak runs both.
test-soak: build
	SOAK_SEAL=$(SOAK_SEAL) SOAK_SECONDS=$(SOAK_TEST_SECONDS) cargo test --release --test soak soak_recommended -- --test-threads=1 --nocapture

soak: build
	SOAK_SEAL=$(SOAK_SEAL) SOAK_SECONDS=$(SOAK_SECONDS) cargo test --release --test soak -- --test-threads=1 --nocapture

test-phpt: build
	MEMCAST_SO=$(SO) REPORT_EXIT_STATUS=1 NO_INTERACTION=1 \
	  $(PHP) $(RUN_TESTS) -q -n -d extension=$(SO) --show-diff php/tests

# php-src's ext/session tests (from Debian's php source package, cached in
# target/php-src) run on memcast against a real memcached, locking on; the
# ones that do not apply are listed with a reason in
# tests/php-src-session-excluded.txt.
test-php-src: build
	MEMCAST_SO=$(SO) PHP=$(PHP) RUN_TESTS=$(RUN_TESTS) bash scripts/php-src-session-tests.sh

# PHP 8.4 (Debian 13): the Debian 13 root is made once per machine
# (scripts/debian13-root.sh, cached in /var/cache/memcast/trixie-root), the
# extension and memcastd built in it into target/php8.4, then the whole
# php/tests suite on PHP 8.4 and the 8.4 package (lintian, dpkg -i, php -m,
# a session through memcast) in a throwaway copy of the root. Root.
test-php84:
	bash scripts/php84.sh phpt
	bash scripts/php84.sh packaging

debian13-root:
	bash scripts/debian13-root.sh make

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --release -- -D warnings

# The fuzz targets (fuzz/fuzz_targets: frame decoder, peer stream, config
# parsers), all at once for FUZZ_SECONDS each, from the seed corpus in
# fuzz/corpus; new inputs go to a scratch corpus, crashes to fuzz/artifacts
# (and fail the run). cargo-fuzz wants nightly for -Zsanitizer;
# RUSTC_BOOTSTRAP lets the stable toolchain accept it.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := frame_open peer_stream config
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 cargo fuzz build -O
	set -e; logs=$$(mktemp -d); pids=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $$logs/$$t.corpus; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t $$logs/$$t.corpus fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 > $$logs/$$t.log 2>&1 & \
	  pids="$$pids $$!"; \
	done; \
	failed=0; i=0; for t in $(FUZZ_TARGETS); do \
	  i=$$((i+1)); pid=$$(echo $$pids | cut -d' ' -f$$i); \
	  if wait $$pid; then \
	    echo "fuzz $$t: $$(grep -E '^Done' $$logs/$$t.log), no crash"; \
	  else \
	    failed=1; echo "fuzz target $$t FAILED; see fuzz/artifacts/$$t"; \
	    grep -E 'ERROR|panicked|SUMMARY|Test unit written' $$logs/$$t.log | head -20; \
	  fi; \
	done; rm -rf $$logs; exit $$failed

# Install, as an operator would: the extension into PHP's extension dir, its
# ini (every setting commented, with its default) into PHP's conf.d, the
# daemon, a sample config (kept if one is there) and the systemd unit.
# DESTDIR installs into a staging root.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= /etc/systemd/system
EXT_DIR     ?= $(shell $(PHP_CONFIG) --extension-dir)
PHP_INI_DIR ?= $(shell $(PHP_CONFIG) --ini-dir)
INSTALLED   := $(EXT_DIR)/libmemcast.so $(PHP_INI_DIR)/memcast.ini $(BINDIR)/memcastd \
               $(SYSCONFDIR)/memcast/memcastd.toml $(UNITDIR)/memcastd.service

install: build
	install -D -m 0644 $(SO) $(DESTDIR)$(EXT_DIR)/libmemcast.so
	install -D -m 0644 php/memcast.ini $(DESTDIR)$(PHP_INI_DIR)/memcast.ini
	install -D -m 0755 $(MEMCASTD) $(DESTDIR)$(BINDIR)/memcastd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml ]; then \
	  echo "keeping $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml"; \
	else install -D -m 0644 packaging/memcastd.toml $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml; fi
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' packaging/memcastd.service.in > $(DESTDIR)$(UNITDIR)/memcastd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/memcastd.service

# Removes exactly what install put there; a sample config that was edited is
# left in place (and said so).
uninstall:
	rm -f $(DESTDIR)$(EXT_DIR)/libmemcast.so $(DESTDIR)$(PHP_INI_DIR)/memcast.ini \
	      $(DESTDIR)$(BINDIR)/memcastd $(DESTDIR)$(UNITDIR)/memcastd.service
	@if cmp -s packaging/memcastd.toml $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml; then \
	  rm -f $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml; \
	  rmdir $(DESTDIR)$(SYSCONFDIR)/memcast 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml ]; then \
	  echo "leaving $(DESTDIR)$(SYSCONFDIR)/memcast/memcastd.toml: it was edited"; fi

# One Debian package with the same files (the daemon in /usr/bin, the unit in
# /lib/systemd/system, the ini in mods-available, enabled with phpenmod) for
# one PHP version: the build machine's into target/deb, PHP_VERSION=8.4 (built
# in the Debian 13 root) into target/deb/php8.4. The last line is its path.
ifeq ($(PHP_VERSION),$(HOST_PHP_VERSION))
deb: build
	PHP_CONFIG=$(PHP_CONFIG) bash packaging/build-deb.sh target/deb
else ifeq ($(PHP_VERSION),8.4)
deb:
	bash scripts/php84.sh deb
else
deb:
	@echo "make deb: PHP_VERSION=$(PHP_VERSION): this machine's PHP is $(HOST_PHP_VERSION) (PHP_CONFIG=$(PHP_CONFIG)); PHP 8.4 builds in the Debian 13 root; for another installed PHP set PHP_CONFIG=php-configX.Y" >&2; exit 1
endif

# The install and the package, checked (root: dpkg -i, then removed again).
test-packaging: build
	bash scripts/test-packaging.sh

# The main job: a local three-host cluster (network namespaces) showing a
# session written on one host read on another, surviving a dead memcached.
demo: deps build
	bash scripts/demo.sh

# Benchmarks against php-memcached, phpredis and files (root: namespaces);
# writes bench/results/latest.md and PNG charts. BENCH_ROUNDS (3) and
# BENCH_SECONDS (5 per web variant and round) tune the run; BENCH_ONLY=
# handler, cluster_lock, lag, replication_cpu, handoff, scale, apply or
# profile runs one part alone and prints it.
bench-deps:
	bash scripts/install-deps.sh php8.2-memcached php8.2-redis redis-server wrk gnuplot-nox

bench: deps bench-deps build
	target/release/memcast-bench

clean:
	cargo clean
