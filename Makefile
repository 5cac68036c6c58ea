# Every target that runs code sets the environment up first (creates .venv if missing).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export FASTFACE_MODE ?= tiny
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo lint test test-any-cpu test-full colab-check notebooks lab bench clean chromium browser-test

# pip -q still prints warnings. Where pip's own config lists local index folders (this machine's
# does), it warns "Location 'file:...' is ignored" for every package they lack: nothing a user of
# this project can act on, so exactly those lines are dropped. Other warnings and errors show.
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory\.$$" || true; }
pip = @echo "$(PY) -m pip $(1)" && $(PY) -m pip $(1) $(QUIET_PIP)

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(call pip,install -q --upgrade pip)
	$(call pip,install -q -r requirements.txt)
	$(call pip,install -q --no-deps -r requirements-nodeps.txt)
	$(call pip,install -q --no-deps --no-build-isolation -e .)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fastface demo --out runs/demo

# Code checks, the first step of `make test` (settings in pyproject.toml): ruff's linter over the code,
# ruff's formatter in check mode, and import-linter's contracts (the layers of fastface_lite/__init__.py).
LINTED    := fastface_lite tests bench notebooks/build.py notebooks/src
FORMATTED := $(LINTED)

lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(FORMATTED)
	$(VENV)/bin/lint-imports --no-cache --no-logo

# The code checks, unit tests, every notebook re-run under nbval against its stored outputs (tiny
# mode, CPU), and notebook 03 driven in a real headless browser (about 40 s; chromium comes from apt,
# see below).
NBVAL := --nbval --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with notebooks/sanitize.cfg

test: setup lint chromium
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q $(NBVAL) notebooks/*.ipynb
	$(PY) -m pytest -q tests/browser

# The unit tests again on MKL's generic kernels, the ones MKL picks on AMD CPUs: a test that passes
# only with one CPU's kernels (bit-equal floats across batch shapes) fails here on any x86 machine.
# As long as the unit tests (about 3 min), so CI runs it (.ci/run) and `make test` does not.
test-any-cpu: setup
	MKL_CBWR=COMPATIBLE $(PY) -m pytest -q tests

# Full mode on the CPU, offline: a hub cache of tiny random weights under the real repo ids (and a
# tiny insightface buffalo_l pack) is built in .cache/hub-tiny (tests/support/hub_cache.py), then every
# notebook runs in full mode against it (plain execution, outputs not compared) and a small
# `fastface eval` + `fastface metrics` (tests/support/full_mode.py). Images at 256 px (FASTFACE_SIZE);
# one torch thread per process (two notebooks run side by side; with two threads each, a loaded
# 2-core machine slows down many times over).
TINY_HUB := $(CURDIR)/.cache/hub-tiny
FULL_ENV := FASTFACE_MODE=full FASTFACE_ALLOW_CPU_FULL=1 FASTFACE_SIZE=256 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
	HF_HUB_CACHE=$(TINY_HUB)/hub FASTFACE_INSIGHTFACE_ROOT=$(TINY_HUB)/insightface \
	PYTHONPATH=$(CURDIR):$(CURDIR)/tests

test-full: setup
	rm -rf $(TINY_HUB)
	PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(PY) -m support.hub_cache --out $(TINY_HUB)
	$(FULL_ENV) $(PY) -m support.full_mode

# Rebuild the notebooks from their jupytext-paired sources notebooks/src/*.py (notebooks/jupytext.toml):
# badge and Colab set-up cell in front, run with nbclient in tiny mode, outputs stored (commit both).

# The notebooks' Colab set-up in a fresh virtualenv standing in for a Colab runtime (torch 2.14.1 +
# torchvision 0.29.1 and Colab's numpy, pandas, kernel, ...), then the notebooks and import-surface
# tests against what it installed; fails if the set-up moved any of those versions (.ci/colab_check.sh).
colab-check:
	bash .ci/colab_check.sh

notebooks: setup
	$(PY) notebooks/build.py

# Debian's chromium and its matching chromedriver, for the browser check (apt-get: needs root).
chromium:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; fi

# Runs notebooks/03_guidance_schedules.ipynb in JupyterLab in headless chromium and moves a slider
# of its sweep (tests/browser); screenshot in figures/browser_03_sweep.png.
browser-test: setup chromium
	$(PY) -m pytest -q tests/browser

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: setup
	$(PY) bench/run.py
	$(PY) bench/bench_speed.py
	$(PY) bench/bench_recorder.py

clean:
	rm -rf $(VENV) .pytest_cache .cache/colab-venv
