# geoseg: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.geoseg-installed

.PHONY: install demo test lint typecheck pytest bench clean

# The venv is rebuilt only when pyproject.toml changes, so repeated runs are fast.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision pinned: these versions install from local wheels on our machines.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]' torch==2.14.1 torchvision==0.29.1
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/geoseg demo

lint: $(STAMP)
	$(VENV)/bin/ruff check geoseg tests benchmarks
	$(VENV)/bin/ruff format --check geoseg tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

# Benchmarks live outside the test suite; each prints a table with a verdict per target
# and writes JSON to benchmarks/results/. Run them on an otherwise idle machine.
bench: $(STAMP)
	$(PY) benchmarks/bench_inference.py --json benchmarks/results/inference.json
	$(PY) benchmarks/bench_vectorize.py --json benchmarks/results/vectorize.json
	$(PY) benchmarks/rf_baseline_nc.py --run runs/nc_unet

clean:
	rm -rf $(VENV) .venv312 .pytest_cache .mypy_cache .ruff_cache demo-output
