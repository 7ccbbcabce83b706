# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv when it is missing and install what they need into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Extras the test suite exercises (every optional backend that has tests).
TEST_EXTRAS := redis,jwt,watch,metrics,dart,postgres
# PEP 735 dependency group with the tools (test, lint, bench anchors, docs); needs pip >= 25.1.
DEV_GROUP := dev

.PHONY: demo test test-all lint typecheck pytest pytest-on docs bench clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[$(TEST_EXTRAS)]' --group $(DEV_GROUP)
	touch $@

venv: $(VENV)/.test-installed

demo: $(VENV)/.demo-installed
	$(BIN)/fokha demo

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src

pytest: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The test suite on another interpreter: make pytest-on PY=/path/to/python3.X
# (used by .ci/run for the oldest and newest Python the classifiers claim).
PY_TAG = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
pytest-on:
	@test -n "$(PY_TAG)" || { echo "pytest-on: PY=$(PY) is not a Python interpreter"; exit 2; }
	test -x .venv-$(PY_TAG)/bin/python || $(PY) -m venv .venv-$(PY_TAG)
	.venv-$(PY_TAG)/bin/python -m pip install --quiet --upgrade pip
	.venv-$(PY_TAG)/bin/python -m pip install --quiet -e '.[$(TEST_EXTRAS)]' --group test --group bench
	.venv-$(PY_TAG)/bin/python -m pytest $(PYTEST_ARGS)

# The API reference is generated from the docstrings; --strict fails on any warning
# (not with --quiet: that drops warnings before --strict can count them).
docs: $(VENV)/.test-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

test: lint typecheck docs pytest

# Everything at full size: the chaos and cross-process tests with their large
# default counts (see docs/topics/testing.md for each variable).
test-all: export FOKHA_FULL_SIZE = 1
test-all: test

bench: $(VENV)/.test-installed
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis dist build .site .venv-3.*
