# Two commands do all set-up: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000
SEEDS ?= 200

.PHONY: run test install dev lint bench sim clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	bash scripts/fetch-htmx.sh
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	bash scripts/fetch-htmx.sh
	bash scripts/install-test-deps.sh
	touch $@ $(STAMP)

install: $(STAMP)
dev: $(DEVSTAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_demo.py --host $(HOST) --port $(PORT)

test: $(DEVSTAMP)
	$(BIN)/ruff check .
	@if command -v nix-instantiate >/dev/null 2>&1; then nix-instantiate --parse flake.nix >/dev/null && echo "flake.nix: parses"; else echo "flake.nix: parse check skipped (nix-instantiate is not installed)"; fi
	$(BIN)/python scripts/lint_dockerfile.py Dockerfile
	$(BIN)/python -m pytest -q

lint: $(DEVSTAMP)
	$(BIN)/ruff check .

sim: $(DEVSTAMP)
	$(BIN)/python -m pytest -q tests/sim --sim-seeds=$(SEEDS)

bench: $(DEVSTAMP)
	$(BIN)/python bench/land_concurrent.py

clean:
	rm -rf $(VENV) .pytest_cache
