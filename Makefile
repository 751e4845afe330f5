# veza-ops: `make demo` and `make test` work on a fresh Debian 12 machine as root.
# Each target installs what is missing (idempotently), then does its job.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
APT_PACKAGES := postgresql-15 gnupg zstd prometheus python3-venv ca-certificates nginx-light pgbackrest \
  chromium
LOCK := requirements.lock
# The lock's resolver (see the `lock` target); pinned so that `make lock` is reproducible too.
UV_VERSION := 0.13.9
# `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest allowed version; plain
# `make lock` keeps the pins already in the lock and only adds or changes what pyproject needs.
LOCK_FLAGS ?=

.PHONY: setup system venv lock test lint typecheck unit demo demo-exit bench screenshots clean

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

# The project's virtualenv: pip itself at the version and hash pinned in requirements-pip.lock
# (the bundled one mis-resolves extras under --require-hashes), then every third-party package
# at the version and hash pinned in $(LOCK), then the two local distributions (veza-ops, and the
# sandbox in sandbox/) editable and without dependencies. Reinstalled when a lock or a
# pyproject.toml changes; `pip check` fails when a pyproject asks for something the lock lacks
# (then run `make lock`).
venv: $(VENV)/.installed

$(VENV)/.installed: $(LOCK) requirements-pip.lock pyproject.toml sandbox/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements-pip.lock
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e . -e ./sandbox
	$(PY) -m pip check
	@touch $@

# Regenerate $(LOCK): the whole dependency tree of veza-ops with the extras make installs (dev,
# sandbox), pinned with the sha256 of every file, for Python 3.11 (Debian 12's).
# Tool: uv's `uv pip compile` (the PyPI package `uv`, pinned above). Chosen over pip-tools'
# pip-compile because it is one self-contained binary that does not hook into pip's internals
# (pip-compile breaks with new pip releases), resolves for a target Python version rather than
# the one running it, writes hashes for every platform's files, and takes seconds.
lock:
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(BIN)/uv --version 2>/dev/null | grep -q '^uv $(UV_VERSION) ' || \
	  $(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra sandbox --python-version 3.11 \
	  --generate-hashes --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) -o $(LOCK)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# pytest: $(WORKERS) xdist workers on the machine's 2 cores (much of a release test is waiting on
# rollouts and analysis intervals; 5 measured best: 6 m 25 s at 4, 5 m 46 s at 5, 5 m 52 s at 6;
# session 11, alternating: 7 m 10 s at 5, 7 m 43 s at 7, the cores already 91-94 % busy at 5);
# loadgroup hands tests out one by one except those sharing a costly module fixture, areas
# interleaved and known-long tests first (tests/fixtures/scheduling.py). Bytecode caching is
# forced on: with PYTHONDONTWRITEBYTECODE set (as on our CI machines), every pod, flow-run and
# CLI process the suite starts would compile the project's modules again, and every worker
# would rewrite the test modules' asserts again.
WORKERS ?= 5
unit: setup
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -n $(WORKERS) --dist loadgroup --durations=15

test: setup lint typecheck unit

demo: setup
	$(BIN)/veza-ops demo

demo-exit: setup
	$(BIN)/veza-ops demo --exit

bench: setup
	$(PY) -m bench.recovery_bench

# The Prefect UI screenshots the README shows (docs/img/*.png): the browser tests of the e2e
# module (headless Chromium through the UI of a real server, after real runs) save them there.
screenshots: setup
	env -u PYTHONDONTWRITEBYTECODE VEZA_SCREENSHOTS_DIR=$(CURDIR)/docs/img \
	  $(BIN)/pytest -q -p no:randomly tests/platform/test_trigger_e2e.py -k test_ui_

clean:
	-$(BIN)/veza-ops sandbox down 2>/dev/null
	rm -rf .sandbox .mypy_cache .ruff_cache .pytest_cache
