# stalwart: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv deps lint typecheck test test-unit test-sim test-integration bench run clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Servers the integration tests start on their own ports (installed only when missing).
deps:
	bash scripts/install-test-deps.sh

lint: venv
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck: venv
	$(BIN)/mypy --strict src/

test: venv deps lint typecheck
	$(BIN)/pytest tests

test-unit: venv
	$(BIN)/pytest tests/unit

test-sim: venv
	$(BIN)/pytest tests/sim

test-integration: venv deps
	$(BIN)/pytest tests/integration

# A 3-node key-value cluster on loopback under kill/pause/partition faults for ~30 s; prints the
# verdict (linearizable or NOT) and the path of the HTML report.
run: venv
	$(BIN)/stalwart drill --nodes 3 --duration 30

bench: venv
	bash scripts/install-test-deps.sh --bench
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
