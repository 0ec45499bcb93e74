PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: test lint typecheck demo venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check ratts tests bench
	$(BIN)/ruff format --check ratts tests bench

typecheck: venv
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

demo: venv
	$(BIN)/python -m ratts.demo

clean:
	rm -rf $(VENV) build dist *.egg-info
