# One command each: run, test, lint, bench. Everything installs into ./.venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test lint bench bench-replicas train openapi assets screenshots clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on disk; any other spec pulls CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install  ## migrate the embedded SQLite default, print demo keys and the console URL, serve on $(HOST):$(PORT)
	$(BIN)/tollgate migrate
	@echo "Demo predict key, for the API (shown once):"
	@$(BIN)/tollgate keys create --customer demo --name "make run demo key" 2>/dev/null
	@echo "Demo console key (billing: the demo customer's usage, plan and invoices; shown once):"
	@$(BIN)/tollgate keys create --customer demo --scope billing --name "make run console key" 2>/dev/null
	@echo "Console: http://$(HOST):$(PORT)/console/ (sign in with the console key)"
	@echo "  operator console (customers, keys, plans, billing): sign in with an admin key from"
	@echo "  $(BIN)/tollgate keys create --operator --scope admin [--scope finance]"
	@echo "API docs: http://$(HOST):$(PORT)/docs"
	$(BIN)/tollgate serve --host $(HOST) --port $(PORT)

test: install  ## the whole suite against Postgres on 127.0.0.1:5432 (and SQLite), one worker per core
	$(BIN)/python -m pytest -n auto

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict app
	$(BIN)/lint-imports

bench: install  ## bounded loopback load vs a bare FastAPI endpoint; period close over 1M rows; console pages at 10k customers / 1M rows
	$(BIN)/python -m scripts.bench
	$(BIN)/python -m scripts.bench_close
	$(BIN)/python -m scripts.bench_console

bench-replicas: install  ## 1, 2 and 4 server processes on one Postgres and Redis: req/s, ledger commits, what saturates (docs/scaling.md)
	$(BIN)/python -m scripts.bench_replicas

train: install  ## rebuild the shipped model weights and manifests (deterministic)
	$(BIN)/python -m models.train

screenshots: install  ## refresh docs/console/*.png: the browser tests in headless Chromium, saving what they see
	TOLLGATE_SCREENSHOTS=1 $(BIN)/python -m pytest -m browser tests/console

openapi: install  ## regenerate docs/openapi.json
	$(BIN)/python -m scripts.openapi > docs/openapi.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

assets:  ## refresh the vendored console and /docs assets from the npm registry (committed)
	scripts/frontend/vendor.sh
