# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
NEXTEST_PROFILE ?= default

.PHONY: help deps browser-deps build run up down test test-unit smoke fmt fmt-check lint clean-run packaging-test compose-test bench bench-quick link-order

help:
	@echo "make run     start PostgreSQL, NATS and all six services (foreground, Ctrl-C stops)"
	@echo "make up      the same in the background; returns when the gateway is ready"
	@echo "make down    stop what 'make up' started"
	@echo "make test    build everything and run every test"
	@echo "make packaging-test  offline checks of Dockerfile, compose, Helm charts, k8s/, Tiltfile"
	@echo "make compose-test    the images and docker-compose.yml on a real Docker engine (docs/docker.md)"
	@echo "make bench   performance figures beside their baselines (BENCHMARKS.md)"
	@echo "make link-order  re-profile which functions the services run (tools/link-order)"
	@echo "make fmt | fmt-check | lint"

deps:
	@bash scripts/ensure-deps.sh

# Debian's chromium and e2e/browser/node_modules for the storefront's browser test.
browser-deps:
	@bash scripts/ensure-browser.sh

build:
	$(CARGO) build --workspace --bins

run: deps build
	@bash scripts/stack.sh run

up: deps build
	@bash scripts/stack.sh up

down:
	@bash scripts/stack.sh down

# Every test: unit, integration against the real PostgreSQL and NATS, and
# end-to-end against the real binaries (which are built first).
test: deps browser-deps
	$(CARGO) build --workspace --bins
	@# nextest runs every test in a process of its own (the configuration
	@# tests set environment variables), in parallel across test binaries.
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked
	$(CARGO) nextest run --workspace --profile $(NEXTEST_PROFILE) --no-tests=fail
	@$(MAKE) --no-print-directory packaging-test

# Offline checks of the Dockerfile, docker-compose.yml, the Helm charts, k8s/
# and the Tiltfile (creates .venv/ with pinned tools on first use).
packaging-test:
	@bash scripts/check-packaging.sh

# The images and docker-compose.yml on a real Docker engine: installs and
# starts dockerd if needed, builds the images, runs the user story and a
# restart under load against the compose stack (docs/docker.md). Publishes the
# gateway on GATEWAY_PORT (default 8080).
compose-test:
	@bash scripts/compose-test.sh

# `make up`, a ready gateway, `make down`, and no service process left.
smoke: deps build
	@bash scripts/stack.sh up
	curl -fsS http://127.0.0.1:8080/readyz/downstreams
	@echo
	@bash scripts/stack.sh down
	@if pgrep -f 'target/debug/(gateway|inventory|order|user|producer|consumer)$$' >/dev/null; then \
	  echo "service processes left behind:"; pgrep -af 'target/debug/'; exit 1; fi
	@echo "smoke: ok"

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Issue 9's figures beside their baselines, release build, its own stack on
# ports 18000+ (see BENCHMARKS.md); bench-quick is the same for a few seconds
# with debug binaries, so CI proves the harness still runs.
bench: deps
	@bash scripts/bench.sh full

bench-quick: deps
	@bash scripts/bench.sh quick

# The functions the services run, for the release link to lay out together
# (tools/link-order/build.rs): after a toolchain, dependency or profile change.
link-order: deps
	@command -v valgrind >/dev/null || apt-get install -y -q valgrind || { apt-get update -q && apt-get install -y -q valgrind; }
	@python3 scripts/link-order.py
