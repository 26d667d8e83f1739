# The README's two commands: `make demo` and `make test`. Each creates .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
# Every package of the venv at the versions of constraints-dev.txt (`make constraints` refreshes
# them); `make PIN= ...` installs the newest releases instead.
PIN ?= --constraint constraints-dev.txt

.PHONY: demo test lint typecheck unit bench clean constraints

$(STAMP): pyproject.toml constraints-dev.txt
	@echo "Creating $(VENV) and installing m365sync with its test and demo extras (once; about a minute)..."
	$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --progress-bar off $(PIN) --editable '.[test,demo]' 2>&1; echo $$? > $(VENV)/.pip-status; } \
		| grep -E '^(Collecting|Successfully|ERROR)' || true
	@test "$$(cat $(VENV)/.pip-status)" = 0 || { echo "pip failed; run $(BIN)/pip install $(PIN) -e '.[test,demo]' to see why"; exit 1; }
	touch $(STAMP)

# Re-pin: a fresh venv of the newest releases, `make test` on it, and only if that passes,
# its versions into constraints-dev.txt (review and commit the diff).
constraints:
	rm -rf $(VENV)
	$(MAKE) PIN= test
	{ sed -n '/^#/p' constraints-dev.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^#'; } > constraints-dev.txt.new
	mv constraints-dev.txt.new constraints-dev.txt

demo: $(STAMP)
	rm -rf .demo  # the project's own demo folder (older demos left no mark in it)
	$(BIN)/m365sync demo --dir .demo $(ARGS)

test: lint typecheck unit

# The side-by-side benchmark (bench/run.py); results in bench/results/.
bench: $(STAMP)
	$(BIN)/pip install --quiet $(PIN) --editable '.[bench]'
	$(BIN)/python -m bench.run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon state sim bench tests

typecheck: $(STAMP)
	$(BIN)/mypy

# SCIMMY, the tests' second PBX (Node): its packages as the lock file pins them.
SCIMMY := sim/scimmy/node_modules/.package-lock.json
$(SCIMMY): sim/scimmy/package-lock.json
	cd sim/scimmy && npm ci --no-audit --no-fund --loglevel=error

unit: $(STAMP) $(SCIMMY)
	$(BIN)/pytest -n auto $(ARGS)

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache
