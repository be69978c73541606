# MediaPulse: the two commands a newcomer needs are `make build` and `make test`.
# Every CI workflow step is one of these targets or one `mediapulse` command.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TARGET ?= dev
PYTEST_ARGS ?=
# make test: test files run side by side, one per core (TEST_JOBS=0: one after the other, in one process)
TEST_JOBS ?= auto
# make bench: watch events, days of history and repetitions per measurement
SCALE ?= 10M
DAYS ?= 90
RUNS ?= 3

# CI rehearsals: the workflows in .github/workflows run these same commands, step by step,
# plus the steps that only a runner needs (production's guard, and unseal-raw, seal-raw and
# mask-raw, which carry production's raw data between runners: here raw.duckdb stays put).
# STORE stands in for GitHub's artifact store, OUT for the job's summary and PR comment.
STORE ?= ci-artifacts
OUT ?= ci-output
STATE := $(STORE)/production-state
# The targets the workflows take from repository variables MEDIAPULSE_PROD_TARGET and
# MEDIAPULSE_CI_TARGET (the same variables here; DuckDB's `prod` and `ci` by default).
PROD_TARGET ?= $(or $(MEDIAPULSE_PROD_TARGET),prod)
# make ci-rollback: the kept release to restore (empty: the one before the last change of code)
TO ?=
CI_TARGET ?= $(or $(MEDIAPULSE_CI_TARGET),ci)
MP := $(BIN)/mediapulse

# The Python environment, in parts (pyproject.toml): the base (dbt, DuckDB, the CLI) for
# `make build` and `make venv`; the extra of each other engine a target named here is on
# (TARGET, PROD_TARGET or CI_TARGET: the workflows' repository variables), read from
# profiles/profiles.yml with the standard library as production's guard reads it; `docs` (the
# site's builder) for `make docs`; `dev` (the test and lint tools, both engines and docs) for
# `make test` and `make lint`. Every part is pinned by requirements.lock (resolved with every
# extra) as constraints, and has its stamp: it is installed once, again when the lock or
# pyproject.toml changes; dev stamps the parts it holds too.
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock
ENGINES = $(shell PYTHONPATH=scripts $(PYTHON) -c 'import sys; \
    from mediapulse.security.guard import PROFILES, target_types; \
    types = target_types(PROFILES.read_text()); \
    print(*sorted({types.get(t) for t in sys.argv[1:]} & {"postgres", "spark"}))' \
    $(TARGET) $(PROD_TARGET) $(CI_TARGET) 2>/dev/null)
DEV_STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help venv provision deps data build test lint lint-pr lint-sql format clean lock unit-test unit-test-pr bench \
	ci-nightly ci-refresh ci-pr ci-validate ci-deploy ci-rollback

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: Python >= 3.11 is needed; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	@touch $@

# an extra on top of the base: postgres, spark, docs, or dev (which holds the other three)
$(VENV)/.installed-%: $(STAMP)
	$(PIP) -e '.[$*]'
	@touch $@ $(if $(filter dev,$*),$(addprefix $(VENV)/.installed-,postgres spark docs))

venv: $(STAMP) $(ENGINES:%=$(VENV)/.installed-%) ## create .venv: the locked base (DuckDB), and the extra of a target on PostgreSQL or Spark (TARGET=postgres)

provision: ## the machine's packages the tests need (PostgreSQL, Chromium, Java, ip): .ci/provision
	@.ci/provision

deps: venv ## install the pinned dbt packages (hub, or the mirror offline)
	$(BIN)/mediapulse deps --if-needed

data: venv ## (re)generate the demo raw data set in warehouse/raw.duckdb
	$(BIN)/mediapulse generate --force

build: venv ## the main job: packages, demo data if none, dbt build on TARGET (default dev)
	$(BIN)/mediapulse build --target $(TARGET)

lint: $(DEV_STAMP) deps ## ruff lint and format check, the package's layers (import-linter), the SQL lint, the docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=scripts $(BIN)/lint-imports --no-cache
	$(MP) lint-sql
	$(MAKE) docs

# make lint-pr: the commit the pull request is compared with (GitHub's merge commit: its base)
BASE ?= HEAD^1
lint-pr: $(DEV_STAMP) deps ## a pull request's lint: ruff and the layers on everything (seconds), the SQL and the docs site only where the PR changed them (BASE, default HEAD^1)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=scripts $(BIN)/lint-imports --no-cache
	$(MP) lint-sql --changed-from $(BASE)
	PYTHONPATH=scripts $(BIN)/python tools/docs_site.py --mediapulse $(MP) --changed-from $(BASE)

lint-sql: $(DEV_STAMP) deps ## sqlfluff on the SQL as dbt renders it (rules in .sqlfluff), and line lengths
	$(MP) lint-sql

test: provision $(DEV_STAMP) lint ## every test: lint, the Python tests, and dbt builds on generated data (installs what they need first)
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --durations=15 $(PYTEST_ARGS)

unit-test: $(DEV_STAMP) ## the Python tests that need no dbt run, their files side by side on every core (TEST_JOBS)
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile -m "not dbt" $(PYTEST_ARGS)

unit-test-pr: $(DEV_STAMP) ## a pull request's unit tests: those its change (since BASE) reaches; all of them when it changed Python
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile -m "not dbt" --changed-from=$(BASE) $(PYTEST_ARGS)

bench: venv ## performance report at SCALE (default 10M events, 90 days): bench/results.{json,md}
	$(MP) bench --scale $(SCALE) --days $(DAYS) --runs $(RUNS)

ci-nightly: venv ## rehearse the nightly workflow: full refresh, freshness, docs, state in STORE, docs site
	$(MP) nightly --target $(PROD_TARGET) --artifacts $(STATE) --summary $(OUT)/nightly.md
	$(MP) evaluate --target $(CI_TARGET) --json $(STATE)/evaluator.json --markdown $(OUT)/evaluator.md
	$(MP) drop-ci-schemas --target $(CI_TARGET)
	$(MP) report --target $(PROD_TARGET) --artifacts $(STATE) --out $(OUT)/report --summary $(OUT)/report.md
	$(MAKE) docs

ci-refresh: venv ## rehearse the hourly refresh: new raw rows into production, state in STORE
	$(MP) refresh --target $(PROD_TARGET) --artifacts $(STATE) --summary $(OUT)/refresh.md
	$(MP) report --target $(PROD_TARGET) --artifacts $(STATE) --out $(OUT)/report --summary $(OUT)/report.md

ci-pr: venv ## rehearse the PR workflow: lint (what changed since BASE), unit tests, slim CI, data diff, evaluator, codegen check
	$(MAKE) lint-pr
	$(MAKE) unit-test-pr
	$(MP) slim-ci --target $(CI_TARGET) --state $(STATE) --summary $(OUT)/slim-ci.md
	$(MP) diff --target $(CI_TARGET) --summary $(OUT)/data-diff.md --json $(OUT)/data-diff.json
	$(MP) evaluate --target $(CI_TARGET) --baseline $(STATE)/evaluator.json --json $(OUT)/evaluator.json --markdown $(OUT)/evaluator.md
	$(MP) codegen --target $(CI_TARGET) --check --markdown $(OUT)/codegen.md
	$(MP) summarize --title "MediaPulse PR checks" --out $(OUT)/pr-comment.md $(OUT)/slim-ci.md $(OUT)/data-diff.md $(OUT)/evaluator.md $(OUT)/codegen.md
	$(MP) drop-ci-schemas --target $(CI_TARGET)

ci-validate: venv ## rehearse PR validation: build and test tag:critical+ before merge
	$(MP) slim-ci --target $(CI_TARGET) --select tag:critical+ --state $(STATE) --summary $(OUT)/validate.md
	$(MP) drop-ci-schemas --target $(CI_TARGET)

ci-deploy: venv ## rehearse the deploy workflow: build prod from this checkout, swap, publish state
	$(MP) deploy --target $(PROD_TARGET) --artifacts $(STATE) --summary $(OUT)/deploy.md
	$(MP) keep-diff --target $(PROD_TARGET) --print-pull-request --commit-message-env COMMIT_MESSAGE
	$(MP) keep-diff --target $(PROD_TARGET) --diff $(OUT)/merged-pr/data-diff.json --commit-message-env COMMIT_MESSAGE
	$(MP) evaluate --target $(CI_TARGET) --json $(STATE)/evaluator.json --markdown $(OUT)/evaluator.md
	$(MP) drop-ci-schemas --target $(CI_TARGET)

ci-rollback: venv ## rehearse the rollback workflow: put back a kept release (TO=id, or the one before the last change of code) and its state
	$(MP) rollback --target $(PROD_TARGET) --artifacts $(STATE) --to "$(TO)"

.PHONY: docs
docs: venv $(VENV)/.installed-docs ## the docs site into site/: CLI reference from the CLI, strict build (a warning fails)
	$(BIN)/python tools/docs_site.py --mediapulse $(MP)

format: $(DEV_STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: venv ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock

clean: ## remove build products (keeps the warehouse and .venv)
	rm -rf target logs dbt_packages .pytest_cache .ruff_cache $(OUT)
