# The two commands of the README: `make demo` runs the whole pipeline on this machine, `make test` runs
# every check. Both set up what they need first (scripts/setup-dev.sh).
VENV ?= .venv
BIN := $(VENV)/bin
export FACECAP_SHARED ?= $(abspath ../shared)

.PHONY: setup test lint typecheck unit demo clean

$(BIN)/.facecap-installed: pyproject.toml scripts/setup-dev.sh
	VENV=$(VENV) bash scripts/setup-dev.sh
	touch $@

setup: $(BIN)/.facecap-installed

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m unit

demo: setup
	$(BIN)/facecap demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) greengrass-build components/*/greengrass-build demo-output .pytest_cache .mypy_cache .ruff_cache
