# CX Predict: `make demo` runs the whole main job on the embedded defaults, `make test` runs the tests.
# Everything installs from the committed lock (uv.lock) into ./.venv.

SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
WORKSPACE ?= .cxpredict
DEMO_CUSTOMERS ?= 20000
PYTEST_ARGS ?=
# Test files run on this many pytest-xdist workers, one file per worker at a time (module fixtures
# stay built once); Redis keys and PostgreSQL databases are per test, so workers never share state.
PYTEST_WORKERS ?= 2
JUPYTER_ARGS ?=
# Jupyter refuses to run as root unless told to (containers, CI machines).
JUPYTER_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
FEAST_UI_PORT ?= 8890
# LightGBM's OpenMP threads spin-wait on a shared 2-core machine unless told to sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test test-fast lint lock benchmarks notebooks feast-ui clean

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## install the locked environment into .venv (with JupyterLab: the notebooks group)

demo: install ## generate a world, ingest it and run the pipeline end to end
	$(VENV)/bin/cxpredict demo --workspace $(WORKSPACE) --customers $(DEMO_CUSTOMERS)

test: install ## the whole test suite
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install ## the suite without slow end-to-end tests and without PostgreSQL/Redis
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not services" $(PYTEST_ARGS)

lint: install ## ruff: lint rules and formatting (CI runs this before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lock: | $(UV) ## re-resolve the lock file after changing pyproject.toml (and the Bento's requirements.txt)
	$(UV) lock --python $(PYTHON)
	$(UV) export --frozen --no-hashes --no-dev --no-emit-project -o requirements.txt

notebooks: install ## open notebooks/ in JupyterLab on $(WORKSPACE) (remote: JUPYTER_ARGS="--no-browser --port 8899")
	CXPREDICT_HOME=$(abspath $(WORKSPACE)) $(VENV)/bin/jupyter lab $(JUPYTER_ROOT) $(JUPYTER_ARGS) notebooks/

feast-ui: install ## Feast's web UI on $(WORKSPACE)'s feature repository, http://127.0.0.1:$(FEAST_UI_PORT) (after `make demo`)
	CXPREDICT_HOME=$(abspath $(WORKSPACE)) $(VENV)/bin/feast -c features/feature_repo ui --host 127.0.0.1 --port $(FEAST_UI_PORT)

benchmarks: install ## run every benchmark script (long: see docs/benchmarks.md)
	for script in benchmarks/*.py; do $(VENV)/bin/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(WORKSPACE) .pytest_cache
