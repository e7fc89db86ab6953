# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench stop install

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

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Stop the private PostgreSQL and Redis that `make run`/`make test` started.
stop:
	$(BIN)/python -m clarion_dev.services stop
