# The README's two commands: `make demo` and `make test`. Each creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing m365sync with its test and demo extras (once; about a minute)..."
	$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --progress-bar off --editable '.[test,demo]' 2>&1; echo $$? > $(VENV)/.pip-status; } \
		| grep -E '^(Collecting|Successfully|ERROR)' || true
	@test "$$(cat $(VENV)/.pip-status)" = 0 || { echo "pip failed; run $(BIN)/pip install -e '.[test,demo]' to see why"; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/m365sync demo $(ARGS)

test: lint typecheck unit

# The side-by-side benchmark (bench/run.py); results in bench/results/.
bench: $(STAMP)
	$(BIN)/pip install --quiet --editable '.[bench]'
	$(BIN)/python -m bench.run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon state sim bench tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n auto $(ARGS)

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache
