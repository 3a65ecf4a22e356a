# The two commands of the README:
#   make run    set up and run the platform (sequence up on SQLite under ./.sequence)
#   make test   set up and run the whole test suite (what CI runs)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python

.PHONY: run test venv lint typecheck unit bench docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	@bash scripts/sandbox-deps.sh
	$(VENV)/bin/sequence up

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

test: venv
	bash scripts/test-deps.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -q -m "not slow"

docs: venv
	$(PY) scripts/gen_cli_docs.py

bench: venv
	$(PY) bench/_all.py

clean:
	rm -rf $(VENV) .sequence .mypy_cache .ruff_cache .pytest_cache
