# One task runner. Each target creates .venv on first use and installs the package with pinned versions.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench lint docs clean

$(STAMP): pyproject.toml constraints.txt
	@echo "Setting up $(VENV) once: PyTorch, timm and this package at the pinned versions (about 2 minutes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e ".[test,imagenet]"
	touch $(STAMP)

demo: $(STAMP)  ## refine the bundled example; writes outputs/demo/demo.png
	$(VENV)/bin/segfix demo --output outputs/demo

test: $(STAMP)  ## the default suite (CI runs this)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## also the slow tests
	$(PY) -m pytest -q --runslow

bench: $(STAMP)  ## speed and memory tables
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_startup.py

docs: $(STAMP)  ## build the documentation into site/
	$(PY) -m mkdocs build --strict -d site

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples tools

clean:
	rm -rf $(VENV) outputs .pytest_cache
