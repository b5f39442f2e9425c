# CX Predict: `make demo` runs the whole main job on the embedded defaults, `make test` runs the tests.
# Everything installs from the committed lock (uv.lock) into ./.venv.

SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
WORKSPACE ?= .cxpredict
DEMO_CUSTOMERS ?= 20000
PYTEST_ARGS ?=
# LightGBM's OpenMP threads spin-wait on a shared 2-core machine unless told to sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-fast lint lock benchmarks clean

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## install the locked environment into .venv

demo: install ## generate a world, ingest it and run the pipeline end to end
	$(VENV)/bin/cxpredict demo --workspace $(WORKSPACE) --customers $(DEMO_CUSTOMERS)

test: install ## the whole test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install ## the suite without slow end-to-end tests and without PostgreSQL/Redis
	$(VENV)/bin/pytest -m "not slow and not services" $(PYTEST_ARGS)

lint: install ## ruff: lint rules and formatting (CI runs this before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: | $(UV) ## re-resolve the lock file after changing pyproject.toml
	$(UV) lock --python $(PYTHON)

benchmarks: install ## run every benchmark script (long: see docs/benchmarks.md)
	for script in benchmarks/*.py; do $(VENV)/bin/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(WORKSPACE) .pytest_cache
