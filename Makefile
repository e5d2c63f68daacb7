# Every set-up step lives here, so a fresh clone (and CI) needs nothing but python3.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
EXTRAS ?= postgres,tables,mlflow,fraud,serving,grpc,server,dev
PYTEST_ARGS ?=
comma := ,

.PHONY: install demo test lint fmt clean services browser

$(UV):
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv

$(VENV)/.installed-$(subst /,_,$(subst $(comma),_,$(EXTRAS))): pyproject.toml | $(UV)
	$(UV) pip install -q --compile-bytecode --python $(BIN)/python -e '.[$(EXTRAS)]'
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@

install: $(VENV)/.installed-$(subst /,_,$(subst $(comma),_,$(EXTRAS)))

# The fraud pipeline end to end on embedded defaults (SQLite + files + MLflow under ./.usina).
demo: install
	$(BIN)/python examples/fraud/demo.py

services:
	@bash scripts/services.sh

browser:
	@bash scripts/browser.sh

test: install services browser
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format src tests examples benchmarks
	$(BIN)/ruff check --fix src tests examples benchmarks

clean:
	rm -rf $(VENV) .usina .pytest_cache .mypy_cache .ruff_cache
