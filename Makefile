# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench stop install

# The import-layer check: the shared tool beside the checkout, else the copy in .ci/.
LAYERS ?= $(firstword $(wildcard ../shared/tools/import_layers.py) .ci/import_layers.py)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m clarion_dev.run

test: $(STAMP)
	$(BIN)/python -m clarion_dev.testrun $(ARGS)

# ruff (rules in pyproject.toml) and one direction of imports between the apps
# (docs/architecture.md); both run in CI before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python $(LAYERS) .

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Stop the private PostgreSQL and Redis that `make run`/`make test` started.
stop:
	$(BIN)/python -m clarion_dev.services stop
