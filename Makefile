# One command each: run, test, lint, bench. Everything installs into ./.venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test lint bench train openapi assets clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on disk; any other spec pulls CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install  ## migrate the embedded SQLite default, print a demo key, serve on $(HOST):$(PORT)
	$(BIN)/tollgate migrate
	@echo "Demo predict key (shown once):"
	@$(BIN)/tollgate keys create --customer demo --name "make run demo key" 2>/dev/null
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

train: install  ## rebuild the shipped model weights and manifests (deterministic)
	$(BIN)/python -m models.train

openapi: install  ## regenerate docs/openapi.json
	$(BIN)/python -m scripts.openapi > docs/openapi.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

assets:  ## refresh the vendored console and /docs assets from the npm registry (committed)
	scripts/frontend/vendor.sh
