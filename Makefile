# `make demo` and `make test` set themselves up; `make setup` only builds .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast test-all docs clean

setup: $(STAMP)

# torch is pinned first so pip takes the CPU build from this disk instead of a CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; run 'make PY=python3 ...'"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet torch
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: setup
	$(BIN)/postrl demo --out runs/demo

# `test` is what CI runs (under 15 minutes on 2 cores); torch.compile's CPU code generation alone
# takes minutes, so the compile tests run in `test-all`.
test: setup
	$(BIN)/python -m pytest -q -m "not compile"

test-all: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

docs: setup
	$(BIN)/python -m postrl.algorithms.docs > docs/algorithms.md
	$(BIN)/python -m postrl.algorithms.docs --preference > docs/preference.md

clean:
	rm -rf $(VENV) runs
