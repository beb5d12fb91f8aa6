# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/corral demo

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: install-dev
	$(BIN)/python bench/sim_throughput.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/resilience.py
	$(BIN)/python bench/loops.py
	$(BIN)/python bench/http_client.py
	$(BIN)/python bench/counters.py
	$(BIN)/python bench/gateway/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .corral
