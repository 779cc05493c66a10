# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# The trainer tests (marker `backend`) run again under each of these Keras
# backends, one pytest process each (Keras reads KERAS_BACKEND at import).
BACKENDS ?= jax torch

.PHONY: demo test test-backends deps chromium postgresql frontend frontend-deps lint bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	touch $@

deps: $(VENV)/.installed

# Browser tests use Debian's Chromium (never a browser that a tool downloads).
chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# The shared-storage tests and benchmark start a private PostgreSQL server
# (tb_retune/testing/postgres.py) from Debian's binaries.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; }

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

frontend-deps: frontend/node_modules/.installed

# Rebuilds the tab into tb_retune/static/ (the built files are committed).
frontend: frontend-deps
	cd frontend && npm run build

lint: deps
	$(BIN)/ruff check tb_retune tests demo $(wildcard benchmarks)
	$(BIN)/mypy tb_retune

test: deps chromium postgresql frontend-deps lint
	cd frontend && npm test
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests
	$(MAKE) --no-print-directory test-backends

# The trainer-side suite (live control, restore, resume, custom loops, the
# proofs) under the other backends; the rest does not depend on the backend.
test-backends: deps
	@set -e; for b in $(BACKENDS); do \
	  echo "== KERAS_BACKEND=$$b: pytest -m backend"; \
	  KERAS_BACKEND=$$b $(BIN)/python -m pytest -q -m backend $(PYTEST_ARGS) tests; \
	done

demo: deps
	$(BIN)/python demo/run.py $(DEMO_ARGS)

bench: deps chromium postgresql
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

bench-quick: deps chromium postgresql
	$(BIN)/python benchmarks/run.py --quick --json bench.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) frontend/node_modules build dist *.egg-info
