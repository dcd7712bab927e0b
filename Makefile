# Two entry points for a fresh machine with only python3 and make:
#   make demo   installs into .venv and runs a few sessions of the bundled fake agent
#               (in a temp root it removes after; DEMO_ARGS=--keep keeps it)
#   make test   installs into .venv (and Debian's git and chromium, as root, for the
#               workspace and browser tests) and runs lint, types and the whole test suite
#   make bench  runs the benchmarks (not part of the tests): JSON lines with ratios
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest tools browser bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m hive_actors.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hive_actors tests bench
	$(BIN)/ruff format --check hive_actors tests bench

typecheck: $(STAMP)
	$(BIN)/mypy hive_actors bench

tools:
	scripts/install-tools

browser: tools

pytest: $(STAMP) tools
	scripts/own-group $(BIN)/pytest

test: lint typecheck pytest

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py --plot docs/bench-lifecycle.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
