# One entry point for local runs and CI. Each target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck bench clean serve

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/neutrino dev --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy neutrino workers
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy neutrino workers

bench: $(STAMP)
	$(BIN)/python bench/sync_latency.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
