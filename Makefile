# Every target that runs code sets the environment up first (creates .venv if missing).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export FASTFACE_MODE ?= tiny
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo lint test test-any-cpu notebooks lab bench clean chromium browser-test

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
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

# Rebuild the notebooks from their jupytext-paired sources notebooks/src/*.py (notebooks/jupytext.toml):
# badge and Colab set-up cell in front, run with nbclient in tiny mode, outputs stored (commit both).
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
	$(PY) bench/bench_recorder.py

clean:
	rm -rf $(VENV) .pytest_cache
