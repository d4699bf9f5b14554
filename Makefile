# One entry point for local runs and CI. Each target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck bench bench-dashboard bench-peers vendor clean serve

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/neutrino dev --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/sync_latency.py

bench-dashboard: $(STAMP)
	$(BIN)/python bench/dashboard_scale.py

# Neutrino against Celery and Dramatiq (bench/vs_celery.py); needs redis-server on PATH for their broker.
bench-peers: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/vs_celery.py $(BENCH_ARGS)

# Upgrade the vendored htmx files (static/vendor/) from npm.
vendor:
	$(PYTHON) scripts/fetch_vendor.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

# Re-pin the image's runtime dependencies (requirements.lock) from pyproject.toml, in a fresh venv.
.PHONY: lock
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q '.[otel]'
	( sed -n '1,2p' requirements.lock; build/lock-venv/bin/pip freeze --exclude-editable | grep -iv '^neutrino' ) \
		> build/requirements.lock && mv build/requirements.lock requirements.lock
