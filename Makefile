# MediaPulse: the two commands a newcomer needs are `make build` and `make test`.
# Every CI workflow step is one of these targets or one `mediapulse` command.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TARGET ?= dev
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv deps data build test lint format clean lock

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: Python >= 3.11 is needed; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the locked Python dependencies

deps: venv ## install the pinned dbt packages (hub, or the mirror offline)
	$(BIN)/mediapulse deps --if-needed

data: venv ## (re)generate the demo raw data set in warehouse/raw.duckdb
	$(BIN)/mediapulse generate --force

build: venv ## the main job: packages, demo data if none, dbt build on TARGET (default dev)
	$(BIN)/mediapulse build --target $(TARGET)

lint: venv ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint ## every test: lint, the Python tests, and dbt builds on generated data
	$(BIN)/pytest $(PYTEST_ARGS)

format: venv ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: venv ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean: ## remove build products (keeps the warehouse and .venv)
	rm -rf target logs dbt_packages .pytest_cache .ruff_cache
