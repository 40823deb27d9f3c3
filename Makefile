# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: demo test lint up bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.8

# Installed once per change of the pinned files.
$(VENV)/.installed: requirements.txt requirements-test.txt | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements-test.txt
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python scripts/demo.py

up: $(VENV)/.installed
	$(BIN)/python scripts/demo.py --standalone

lint: $(VENV)/.installed
	$(BIN)/ruff check dags plugins tests scripts
	$(BIN)/ruff format --check dags plugins tests scripts

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .demo
