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

# The OpenAPI schema comes from the code alone: placeholder URLs, so that
# manage.py starts no private PostgreSQL or Redis for it.
SCHEMA_ENV := DATABASE_URL=postgres://unused@127.0.0.1:1/unused REDIS_URL=redis://127.0.0.1:1/0 \
	SECRET_KEY=schema-check-only

# ruff (rules in pyproject.toml), one direction of imports between the apps
# (docs/architecture.md), and an OpenAPI schema without errors or warnings;
# all run in CI before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python $(LAYERS) .
	$(SCHEMA_ENV) $(BIN)/python manage.py spectacular --validate --fail-on-warn \
		--file /tmp/clarion-schema.yml

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Stop the private PostgreSQL and Redis that `make run`/`make test` started.
stop:
	$(BIN)/python -m clarion_dev.services stop
