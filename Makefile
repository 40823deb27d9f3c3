# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)/plugins
# The browser test drives Debian's chromium (Playwright never downloads its own browser).
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-prod lint up bench clean chromium

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.8

# Installed once per change of the pinned files. Compiled to bytecode at install: where
# PYTHONDONTWRITEBYTECODE is set (as on CI), every process would otherwise recompile every
# module it imports (Great Expectations alone: 13 s instead of 4 s per task).
$(VENV)/.installed: requirements.txt requirements-test.txt | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements-test.txt
	touch $@

# Installed only when missing (CI runs as root on a clean Debian); a no-op once present.
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
	test -x $@

chromium: $(CHROMIUM)

demo: $(VENV)/.installed
	$(BIN)/python scripts/demo.py

up: $(VENV)/.installed
	$(BIN)/python scripts/demo.py --standalone

lint: $(VENV)/.installed
	$(BIN)/ruff check dags plugins tests scripts docker
	$(BIN)/ruff format --check dags plugins tests scripts docker

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest

# The production configuration on loopback (crossborder/prodenv.py): Celery executor,
# the local PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379).
test-prod: $(VENV)/.installed
	$(BIN)/python -m pytest -m production

# The pipeline next to the raw-copy floor (scripts/bench.py); BENCH_ROWS="5000000 20000000"
# shows how time and memory scale.
BENCH_ROWS ?= 5000000
bench: $(VENV)/.installed
	$(BIN)/python scripts/bench.py --rows $(BENCH_ROWS)

clean:
	rm -rf $(VENV) .demo
