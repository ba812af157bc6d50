# Two entry points for a fresh clone; each creates .venv on first use.
#   make demo   set up, then run `byorn demo` on the built-in tiny model and data
#   make test   set up with test extras, then lint (ruff) and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test setup clean

$(BIN)/byorn: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, at constraints.txt's pin: anything that lets pip choose would pull a multi-GB CUDA build.
	$(PIP) torch
	$(PIP) -e '.[test]'
	touch $@

setup: $(BIN)/byorn

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/byorn demo --json runs/demo/demo.json

test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs
