# facelab: make install | test | test-browser | test-repro | test-worlds | notebooks | lab | bench | clean
#
# `make test` on a clean clone creates .venv, installs facelab with its pinned dev extras, then the
# --no-deps packages of requirements-nodeps.txt, and runs the tests and the notebooks (nbval).
# A stamp file makes the install a no-op until pyproject.toml or requirements-nodeps.txt change.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.facelab-installed
# Interpreter used to create the venv: python3.11 if present, else python3 (pip then refuses
# anything outside pyproject's requires-python, >=3.11,<3.13).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)

# Notebooks are collected by nbval; the folder may not exist yet in an early checkout.
TEST_PATHS := tests $(wildcard notebooks)
PYTEST_ARGS ?=
LAB_ARGS ?=
# JupyterLab refuses to start as root (containers, CI machines) unless told to.
ROOT_ARGS := $(if $(filter 0,$(shell id -u)),--allow-root)

# Other numerics for `make test-repro`: one thread (other reduction orders), and ATen's scalar
# kernels with oneDNN and MKL capped at AVX2 (what a CPU without AVX-512 computes), one at a time.
# CI runs both at once (REPRO_BOTH: a one-core machine without AVX-512), a notebook at a time on
# whichever core is free, beside test-worlds (.ci/run, make repro-notebook and repro-report).
REPRO_THREADS := OMP_NUM_THREADS=1
REPRO_ISA := ATEN_CPU_CAPABILITY=default,ONEDNN_MAX_CPU_ISA=AVX2,MKL_ENABLE_INSTRUCTIONS=AVX2
REPRO_BOTH := $(REPRO_THREADS),$(REPRO_ISA)
REPRO_SETTINGS := $(REPRO_THREADS) $(REPRO_ISA)
RECORD := build/repro
NBVAL := FACELAB_DEVICE=cpu MPLBACKEND=Agg $(PY) -m pytest --nbval-lax --nbval-current-env

.PHONY: help venv install test test-browser test-repro repro-notebook repro-report test-worlds notebooks lab bench \
  clean distclean FORCE

help:
	@echo "make install   create .venv and install facelab[dev] + requirements-nodeps.txt (--no-deps)"
	@echo "make test      run tests/ and the notebooks (nbval) on CPU"
	@echo "make test-browser run notebooks 00, 01, 05 in JupyterLab + headless Chromium; move sliders, upload a photo"
	@echo "make test-repro run the notebooks (nbval) again with other numerics, and report the spread"
	@echo "make repro-notebook NOTEBOOK=notebooks/01_....ipynb  one notebook under other numerics (CI); make repro-report"
	@echo "make test-worlds build mini32 (world64 at 32 px) and run every notebook on it (issue #18)"
	@echo "make notebooks execute every notebook in place (after changing the library or a world)"
	@echo "make lab       start JupyterLab on notebooks/ (LAB_ARGS='--no-browser --port 8899')"
	@echo "make bench     run bench/generator.py"
	@echo "make clean     remove caches and build outputs (keeps .venv)"
	@echo "make distclean clean, and remove .venv too"

$(PY):
	@test -n "$(PYTHON)" || { echo "error: neither python3.11 nor python3 found on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

venv install: $(STAMP)

$(STAMP): pyproject.toml requirements-nodeps.txt | $(PY)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps -r requirements-nodeps.txt
	@touch $@

test: $(STAMP)
	rm -rf $(RECORD)/default
	FACELAB_NB_RECORD=$(RECORD)/default $(NBVAL) $(TEST_PATHS) $(PYTEST_ARGS)

# tests/browser (skipped by `make test`): JupyterLab on a free loopback port, driven by headless
# Chromium through selenium. Debian's chromium and chromium-driver are installed when missing.
BROWSER_PKGS := chromium chromium-driver

test-browser: $(STAMP)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "error: chromium/chromedriver missing; install them (Debian: apt-get install -y $(BROWSER_PKGS)) as root" >&2; \
	    exit 1; \
	  fi; \
	  apt-get update && apt-get install -y $(BROWSER_PKGS); \
	fi
	FACELAB_BROWSER=1 $(PY) -m pytest tests/browser $(PYTEST_ARGS)

# Issue #18: the world is one parameter. mini32 is world64 cut at 32 px (another resolution and
# num_ws, no training: facelab.nets.stylegan2.lower_resolution), built by the same pipeline as any
# world at a small N into build/worlds (rebuilt when world64 changes); then every notebook runs on
# it (execution and a printed claims verdict only; such a world's numbers mean nothing).
# MINI32_ARGS sizes the build: small, since the notebooks only need to run.
# MINI32_BUDGETS: the notebooks' CPU budgets on mini32 (build --budget, kept in its world.json), a quarter
# or less of world64's (facelab.worlds.PRESETS): every cell still runs, with fewer steps and faces.
WORLDS_HOME := $(CURDIR)/build/worlds
MINI32 := $(WORLDS_HOME)/worlds/mini32
MINI32_ARGS ?= --n-samples 1000 --h-epochs 2 --mapper-steps 60 --encoder-steps 60
MINI32_BUDGETS ?= cpu.project_steps=20 cpu.wplus_steps=8 cpu.pti_pivot_steps=16 cpu.pti_tune_steps=16 \
  cpu.photo_pivot_steps=12 cpu.photo_tune_steps=8 cpu.upload_tune_steps=20 cpu.mapper_steps=4 \
  cpu.boundary_samples=500 cpu.eval_faces=16 cpu.locality_faces=4
MINI32_BUILD := $(MINI32_ARGS) $(addprefix --budget ,$(MINI32_BUDGETS))

# The build's arguments as a file that changes only when they do, so new arguments rebuild mini32.
$(WORLDS_HOME)/mini32.args: FORCE
	@mkdir -p $(@D); echo '$(MINI32_BUILD)' | cmp -s - $@ || echo '$(MINI32_BUILD)' > $@

$(MINI32)/.done-cards: facelab/weights/world64.pt $(WORLDS_HOME)/mini32.args | $(STAMP)
	rm -rf $(MINI32)
	FACELAB_DEVICE=cpu $(PY) -m facelab.train.build mini32 --generator world64 --resolution 32 \
	  --home $(WORLDS_HOME) $(MINI32_BUILD)

test-worlds: $(MINI32)/.done-cards
	FACELAB_TEST_WORLD=mini32 FACELAB_TEST_WORLD_HOME=$(WORLDS_HOME) FACELAB_DEVICE=cpu \
	  $(PY) -m pytest tests/test_notebooks_on_a_world.py $(PYTEST_ARGS)

# Each setting is NAME=VALUE[,NAME=VALUE...]; its nbval records go to build/repro/<setting>.
test-repro: $(STAMP)
	@for s in $(REPRO_SETTINGS); do \
	  echo "== notebooks under nbval with $$s"; rm -rf "$(RECORD)/$$s"; \
	  env $$(echo $$s | tr , ' ') FACELAB_NB_RECORD="$(RECORD)/$$s" $(NBVAL) notebooks $(PYTEST_ARGS) || exit 1; \
	done
	@$(MAKE) --no-print-directory repro-report

# One notebook (NOTEBOOK=path) under one setting (REPRO_SETTING, default REPRO_BOTH), its record added
# to that setting's folder beside the others' (CI's lanes); repro-report compares every record so far
# with the committed notebooks and fails if a checked cell moved.
REPRO_SETTING ?= $(REPRO_BOTH)
repro-notebook: $(STAMP)
	@test -f "$(NOTEBOOK)" || { echo "error: make repro-notebook needs NOTEBOOK=notebooks/NN_name.ipynb" >&2; exit 2; }
	env $$(echo '$(REPRO_SETTING)' | tr , ' ') FACELAB_NB_RECORD="$(RECORD)/$(REPRO_SETTING)" \
	  $(NBVAL) "$(NOTEBOOK)" $(PYTEST_ARGS)

repro-report: $(STAMP)
	$(PY) tests/notebook_spread.py $(RECORD)/*

notebooks: $(STAMP)
	FACELAB_DEVICE=cpu $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=1200 notebooks/*.ipynb
	$(PY) scripts/slim_notebooks.py notebooks/*.ipynb  # the same figures, losslessly smaller

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_ARGS) $(LAB_ARGS)

bench: $(STAMP)
	$(PY) bench/generator.py

clean:
	rm -rf build/ dist/ *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)

FORCE:
