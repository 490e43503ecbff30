# Spectrum mastering backend. `make test` is the one test command (README, CI).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: install test lint format typecheck pytest validate build clean

install: $(STAMP)

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: install lint typecheck pytest

pytest: install
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

validate: install
	$(VENV)/bin/sam validate --lint

# Zip function and layer only: the master image needs Docker (see docs/deploy.md).
build: install
	$(VENV)/bin/sam build PresignFunction
	$(VENV)/bin/sam build FfmpegLayer

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
