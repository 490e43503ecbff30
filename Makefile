# Spectrum mastering backend. `make test` is the one test command (README, CI).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: install test lint format typecheck pytest edge-test validate build clean

install: $(STAMP)

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install lint typecheck pytest edge-test image-check

# Deno comes from the `deno` npm package, the web page's chart library from `uplot`
# (package.json pins both).
DENO_STAMP := node_modules/.installed-stamp
$(DENO_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The Supabase edge function's tests. The one that needs a running stack
# (integration_test.ts) is started by tests/local/test_edge_integration.py.
edge-test: $(DENO_STAMP)
	cd supabase/functions && DENO_DIR=../../.deno-cache ../../node_modules/.bin/deno test --frozen --allow-env --allow-net=127.0.0.1 --allow-read=.,../migrations,../../docs

pytest: install $(DENO_STAMP)
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The two handler folders are checked apart: both hold an app.py.
typecheck: install
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy functions/presign
	$(VENV)/bin/mypy functions/master/app.py
	$(VENV)/bin/mypy tools/image_check.py

validate: install
	$(VENV)/bin/sam validate --lint

# The zip function only: the master image needs Docker (see docs/deploy.md).
build: install
	$(VENV)/bin/sam build PresignFunction

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache

# The web page's chart library: the files of the npm package package.json pins, copied
# into web/vendor/ (committed: the page has no build step, so any static host can serve
# web/ as it is). tests/browser/test_page_files.py fails when they differ.
.PHONY: web-vendor
web-vendor: $(DENO_STAMP)
	cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css web/vendor/
	cp node_modules/uplot/LICENSE web/vendor/uPlot.LICENSE

# The local stack (see `mastering serve --help`): `make serve` runs it in the
# foreground; `make demo` runs one synthetic job through it end to end and leaves
# inputs and results in demo-output/ (git-ignored, safe to delete).
.PHONY: demo serve

demo: install
	$(PY) -m mastering.devstack.demo --output-dir demo-output

serve: install
	$(VENV)/bin/mastering serve

# Engine vs matchering.process, as separate processes (docs/engine.md). Takes ~15 min;
# e.g. `make bench BENCH_ARGS="--lengths 3 --rounds 1"` for a quick look.
.PHONY: bench bench-limits
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# Time, peak memory, /tmp and GB-s of one job per track length, and the master
# function's limits derived from them (README "Limits"). About 10 min here.
bench-limits: install
	$(PY) bench/limits.py $(LIMITS_ARGS)

# The master image's /var/task built without Docker, exactly as functions/master/Dockerfile
# builds it (Python 3.12 manylinux wheels, the project, bytecode, ffmpeg), then a preset
# job run from it under the Lambda runtime emulator against moto (tools/image_check.py).
# Needs PyPI and a Python 3.12 (IMAGE_CHECK_PYTHON, pyenv, or python3.12 on PATH).
# Prints the tree's size, the handler's cold import, the engine's FFTs and the job's time;
# fails on a missed goal (<= 300 MB, <= 0.5 s, scipy's compiled FFTs loaded alone). About 20 s here, plus fetching ~140 MB of wheels on a slow link.
.PHONY: image-check
image-check: install
	$(PY) tools/image_check.py $(IMAGE_CHECK_ARGS)

# docs/openapi.json: the HTTP API's OpenAPI 3.1 document, generated from the presign
# function's routes and models (what GET /openapi.json serves). A test fails when stale.
.PHONY: openapi
openapi: install
	$(PY) tools/openapi.py

# The local stack under load (a benchmark, not a test): 200 job creations at concurrency
# 20, then 20 jobs mastered by 2 workers, loopback only. Prints errors (goal 0), p50/p99
# of POST /jobs and GET /jobs/{id}, and the stack's memory before/after (tools/load.py).
.PHONY: load
load: install
	$(PY) tools/load.py $(LOAD_ARGS)
