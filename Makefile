# Two entry points for a fresh machine: `make run` and `make test`. Both create or refresh .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= mtg-run
WORLD  ?= mtg-world
PYTEST_ARGS ?=

.PHONY: run world test venv clean

venv: $(STAMP)

# Reinstall whenever the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: venv
	$(BIN)/mtg run --out $(OUT)

# The sample world (6 districts over the globe) planned in 6 km tiles and run on a LocalCluster of 2 workers.
world: venv
	$(BIN)/mtg sample --world 6 --out $(WORLD)/sample
	$(BIN)/mtg plan --catalog $(WORLD)/sample/catalog.json --aoi $(WORLD)/sample/truth/mine_points.parquet \
		--buffer 1km --tile-km 6 --years 2021-2023 --workers 2 -o $(WORLD)/plan.parquet
	$(BIN)/mtg run --plan $(WORLD)/plan.parquet --out $(WORLD)/run --points $(WORLD)/sample/truth/mine_points.parquet \
		--country-col country --scheduler local --workers 2

# One pytest worker per core, each test file on one worker (module fixtures such as the sample world are made once).
test: venv
	$(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OUT) $(WORLD) .pytest_cache test-artifacts
