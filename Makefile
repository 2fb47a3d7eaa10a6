# `make run` and `make test` set themselves up from nothing: a virtualenv in .venv with the
# project and what it needs. Embedded Postgres and Redis start when no URLs are given.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format clean image bench

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./client
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/authbroker run

test: $(STAMP)
	@bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

image:
	docker build -f deploy/Dockerfile -t authbroker .

bench: $(STAMP)
	-$(BIN)/python -m pip install --quiet py-spy
	$(BIN)/python -m bench $(BENCH_ARGS)
