# OrderBookDEX — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help setup redis luacheck chain run test lint bench clean

help: ## list the targets
	@echo "usage: make <target>"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  %-8s %s\n", $$1, $$2}'

setup: redis $(STAMP) chain ## install redis-server if missing (root + apt-get), the project into .venv, the local chain

# $(call apt_install,commands,Debian package,other ways to install it): make sure every command
# is on PATH, installing the package with apt-get when root on Debian/Ubuntu, else explain.
define apt_install
	@missing=; for c in $(1); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -z "$$missing" ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing $(2) with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $(2) >/dev/null \
	    || { echo "error: apt-get install $(2) failed" >&2; exit 1; }; \
	else \
	  echo "error:$$missing not installed. Install $(2), then re-run make:" >&2; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y $(2)" >&2; \
	  printf '%b\n' "$(3)" >&2; \
	  exit 1; \
	fi
endef

redis: ## make sure redis-server and redis-cli are installed
	$(call apt_install,redis-server redis-cli,redis-server,  Fedora/RHEL:   sudo dnf install -y redis\n  macOS:         brew install redis)

# Re-installs only when a pyproject.toml changes (or .venv is gone). The Python SDK and its
# `dex` command (clients/python) are installed beside the exchange.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> pip install -e '.[dev]'"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@echo ">> pip install -e clients/python"
	$(BIN)/python -m pip install -q -e clients/python
	@touch $@

# The local EVM chain (chain/): hardhat's node and the pinned solc from package-lock.json, and
# the contracts compiled into chain/build/. Re-done only when the lock file or a contract changes.
CHAIN_STAMP := chain/node_modules/.installed
CHAIN_BUILD := chain/build/Vault.json
chain: $(CHAIN_STAMP) $(CHAIN_BUILD) ## install the local chain (npm ci in chain/) and compile the contracts

$(CHAIN_STAMP): chain/package-lock.json
	$(call apt_install,node npm,nodejs npm,  elsewhere:     install Node.js 20 (with npm))
	cd chain && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHAIN_BUILD): $(CHAIN_STAMP) chain/build.mjs $(wildcard chain/contracts/*.sol)
	cd chain && node build.mjs

run: setup ## start Redis (unless DEX_REDIS_URL answers) and all five processes; Ctrl-C stops them
	deploy/run.sh

# Two workers, a test file per worker at a time (--dist loadfile keeps each module's fixtures,
# which start real processes, in one worker): most of the suite waits on processes and
# sockets, so two files at once use the two cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup ## run the whole test suite (extra pytest options: PYTEST_ARGS='-k foo -x'; TEST_WORKERS=0: one process)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup luacheck ## ruff (lint and format) + mypy + import rules (.importlinter) + luacheck (every Lua script, as assembled)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common services
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m common.lua_check

luacheck: ## make sure luacheck (the Lua linter) is installed
	$(call apt_install,luacheck,lua-check,  elsewhere:     luarocks install luacheck)

.PHONY: node chromium web

# setup also installs the npm packages of clients/ and builds the web page (make test and make run
# call setup, so npm ci runs there too when a lock changed), and makes sure Chromium is there.
setup: web chromium

node: ## make sure Node.js (20.19 or later) and npm are installed (the TypeScript SDK and the web page)
	$(call apt_install,node npm,nodejs npm,  elsewhere:     https://nodejs.org (version 20.19 or later))
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
	  || { echo "error: Node.js $$(node --version) is too old: clients/ needs 20.19 or later" >&2; exit 1; }

chromium: ## make sure Chromium is installed (the web page's browser test drives it)
	$(call apt_install,chromium,chromium,  elsewhere:     install Chromium and put it on PATH as chromium)

# npm ci again only when a lock changes (or node_modules is gone); the page is rebuilt when its
# sources or the SDK's change. The gateway serves clients/web/dist under /app/.
WEB_SOURCES := $(wildcard clients/web/index.html clients/web/vite.config.mjs clients/web/tsconfig.json clients/web/src/* clients/ts/src/*)

web: node clients/ts/node_modules/.ci clients/web/node_modules/.ci clients/ts/dist/.built clients/web/dist/index.html ## npm ci (clients/ts, clients/web), compile the SDK and its tests, build the web page

clients/%/node_modules/.ci: clients/%/package-lock.json
	cd clients/$* && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

clients/ts/dist/.built: $(wildcard clients/ts/tsconfig.json clients/ts/src/* clients/ts/test/*) clients/ts/node_modules/.ci
	cd clients/ts && npm run --silent build
	@touch $@

clients/web/dist/index.html: $(WEB_SOURCES) clients/ts/node_modules/.ci clients/web/node_modules/.ci
	cd clients/web && npm run --silent build

# Every bench/*.py is an entry point; the modules they share are in bench/lib/, not run here.
bench: setup ## run every bench/*.py (informational: a failing benchmark does not fail make)
	@shopt -s nullglob; found=0; \
	for f in bench/*.py; do \
	  found=1; echo ">> $$f"; \
	  $(BIN)/python "$$f" || echo ">> $$f exited with status $$? (ignored)"; \
	done; \
	[ $$found = 1 ] || echo ">> no bench/*.py"

clean: ## remove var/ (local Redis data, beat schedule, logs)
	rm -rf var/
