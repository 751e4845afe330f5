# veza-ops: `make demo` and `make test` work on a fresh Debian 12 machine as root.
# Each target installs what is missing (idempotently), then does its job.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PACKAGES := postgresql-15 gnupg zstd prometheus python3-venv ca-certificates

.PHONY: setup system venv test lint typecheck unit demo demo-exit bench clean

setup: system venv

# System packages: only what is missing; apt-get update once, only when something is.
system:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or install:$$missing)"; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The project's virtualenv, rebuilt when pyproject.toml changes.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: setup lint typecheck unit

demo: setup
	$(BIN)/veza-ops demo

demo-exit: setup
	$(BIN)/veza-ops demo --exit

bench: setup
	$(PY) -m bench.recovery_bench

clean:
	-$(BIN)/veza-ops sandbox down 2>/dev/null
	rm -rf .sandbox .mypy_cache .ruff_cache .pytest_cache
