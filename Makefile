# Two entry points (see README): `make demo` runs the main job, `make test` the tests.
# Both create and fill ./.venv on first use and are idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lightly-glare-installed
# Tested torch pair (installs from local disk on our machines; from PyPI elsewhere).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint typecheck pytest docs format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools>=77,<82" wheel
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[all,dev,docs]"
	touch $(STAMP)

demo: install
	$(PY) tools/experiments/demo.py --work-dir work_dirs/demo

lint: install
	$(PY) -m ruff check lightly_glare tests tools examples benchmarks
	$(PY) -m ruff format --check lightly_glare tests tools examples benchmarks

typecheck: install
	$(PY) -m mypy

pytest: install
	$(PY) -m pytest -q

# The documentation site, offline, warnings as errors: docs/_build/html/index.html.
docs: install
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test: lint typecheck docs pytest

format: install
	$(PY) -m ruff format lightly_glare tests tools examples benchmarks
	$(PY) -m ruff check --fix lightly_glare tests tools examples benchmarks

clean:
	rm -rf $(VENV) work_dirs .pytest_cache .mypy_cache .ruff_cache docs/_build
