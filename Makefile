# The two commands of the README:
#   make run    set up and run the platform (sequence up on SQLite under ./.sequence)
#   make test   set up and run the whole test suite (what CI runs)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# Test processes: most tests wait on real servers, sandboxes and leases, so two workers on
# two cores take a third less time than one (2026-12-01: 1,272 s in one process, 812-823 s
# on two). Whole files go to one worker (--dist loadfile): a file's module fixtures
# (coordinators, platforms) start once, and its tests keep their order.
TEST_WORKERS ?= 2

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
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

unit: venv
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

docs: venv
	$(PY) scripts/gen_cli_docs.py

bench: venv
	$(PY) bench/_all.py

clean:
	rm -rf $(VENV) .sequence .mypy_cache .ruff_cache .pytest_cache
