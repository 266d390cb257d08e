# Two entry points for a fresh machine: `make run` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= mtg-run
PYTEST_ARGS ?=

.PHONY: run test venv clean

venv: $(STAMP)

# Reinstall whenever the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: venv
	$(BIN)/mtg run --out $(OUT)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache test-artifacts
