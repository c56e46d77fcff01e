# Two commands: `make demo` (the whole job on the synthetic corpus) and `make test`.
# Each creates .venv and installs the package first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/synthetic/run.sh

# One pytest worker per core (pytest-xdist), each test file in one worker (its module fixtures
# built once); TEST_JOBS=0 runs in this process.
TEST_JOBS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check asr_kd tests && $(BIN)/ruff format --check asr_kd tests

clean:
	rm -rf $(VENV) exp/demo
