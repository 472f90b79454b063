# Every target that runs code creates .venv on first use and reinstalls the
# project when pyproject.toml changes (the stamp file tracks that).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint demo sandbox bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check wxgate tests bench deploy
	$(BIN)/ruff format --check wxgate tests bench deploy

# The soak tests (marked `soak`: long sends and whole fault scenarios) run in `make chaos`.
test: lint
	$(BIN)/pytest -q -m "not soak"

# make demo DEMO_ARGS=--keep: stay up for the web console until Ctrl-C.
demo: $(STAMP)
	$(BIN)/wxgate demo $(DEMO_ARGS)

sandbox: $(STAMP)
	$(BIN)/wxgate sandbox

# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--quick" (see docs/performance.md).
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# The campaign runs on SQLite, Redis and a three-primary Redis Cluster (tests/chaos/run.py).
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run --full
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
