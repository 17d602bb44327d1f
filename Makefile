# OrderBookDEX — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help setup redis luacheck run test lint bench clean

help: ## list the targets
	@echo "usage: make <target>"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  %-8s %s\n", $$1, $$2}'

setup: redis $(STAMP) ## install redis-server if missing (root + apt-get) and the project into .venv

redis: ## make sure redis-server and redis-cli are installed
	@if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing redis-server with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null \
	    || { echo "error: apt-get install redis-server failed" >&2; exit 1; }; \
	else \
	  echo "error: redis-server (with redis-cli) is not installed. Install it, then re-run make:" >&2; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y redis-server" >&2; \
	  echo "  Fedora/RHEL:   sudo dnf install -y redis" >&2; \
	  echo "  macOS:         brew install redis" >&2; \
	  exit 1; \
	fi

# Re-installs only when pyproject.toml changes (or .venv is gone).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> pip install -e '.[dev]'"
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

run: setup ## start Redis (unless DEX_REDIS_URL answers) and all five processes; Ctrl-C stops them
	deploy/run.sh

test: setup ## run the whole test suite (extra pytest options: PYTEST_ARGS='-k foo -x')
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: setup luacheck ## ruff (lint and format) + mypy + import rules (.importlinter) + luacheck (every Lua script, as assembled)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common services
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m common.lua_check

luacheck: ## make sure luacheck (the Lua linter) is installed
	@if command -v luacheck >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo ">> installing luacheck (lua-check) with apt-get"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq lua-check >/dev/null \
	    || { echo "error: apt-get install lua-check failed" >&2; exit 1; }; \
	else \
	  echo "error: luacheck is not installed. Install it, then re-run make:" >&2; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y lua-check" >&2; \
	  echo "  elsewhere:     luarocks install luacheck" >&2; \
	  exit 1; \
	fi

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
