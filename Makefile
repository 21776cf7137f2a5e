# Two commands: `make study` (the default study) and `make test` (the whole test suite); `make test-fast`
# runs the fast tier only (`pytest -m "not slow"`), for the edit-test loop.
# Each creates .venv if missing, installs the pinned stack with torch held at 2.13.0 (an unpinned
# torch pulls gigabytes of CUDA packages on CPU machines), and registers the venv's Jupyter kernel
# inside the venv. Quick when already set up.
# Byte-code: pip installs without byte-compiling (--no-compile), and the commands below run Python with
# PYTHONDONTWRITEBYTECODE emptied, so that each module is compiled once, by the first process that
# imports it, and its .pyc (in .venv, lib/ and tests/ __pycache__) serves every later notebook kernel,
# worker and test run. Where the environment sets PYTHONDONTWRITEBYTECODE (as these machines do), every
# process would otherwise compile its imports again (1.5-2 s a process for lib/ alone). Compiling only
# what is imported (a notebook kernel's imports: 4,521 of site-packages' 20,437 modules) replaced compiling
# all of site-packages on every core, 60 s of a fresh set-up (README, "Tests and CI").

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
# where the offline corpora are copied from when data/ lacks them (see data/README.md)
SHARED_DATA ?= ../shared/data
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# empty, not unset: Python writes byte-code unless the variable is a non-empty string
export PYTHONDONTWRITEBYTECODE :=

.PHONY: setup study test test-fast data clean-results
STAMP := $(VENV)/.compstudy-installed

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e .
	$(PY) -m ipykernel install --sys-prefix --name compstudy --display-name "Python (compstudy)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# corpora: copied from $(SHARED_DATA) when it has them, else downloaded from their sources; every
# file verified against its recorded checksum (compstudy.data.SOURCES). Fails in seconds, with
# instructions, when a corpus is neither there nor reachable.
data: setup
	$(PY) -m compstudy data --from $(SHARED_DATA) --config $(CONFIG)

study: setup data
	$(PY) -m compstudy run $(CONFIG)

# the tests also cover the optional executors (Ray, submitit: issue 30), so they install those extras. The
# package is installed already (editable): pip takes it as it is and installs only the extras' requirements
# (`pip install -e ".[ray,slurm]"` would build the editable package a second time: 8 s of the set-up)
TEST_STAMP := $(VENV)/.compstudy-test-extras
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-compile "compstudy[ray,slurm]"
	@touch $(TEST_STAMP)

# two pytest workers (pytest-xdist), handed a test at a time in the collection's order (a module that must stay
# on one worker, as one unit: tests/conftest.py, pytest_xdist_make_scheduler): one
# runs the smoke study while the other takes the rest, each on its own CPUs (tests/conftest.py). In one process
# where a process cannot choose its CPUs (macOS, Windows) or has only one, and with TEST_WORKERS=0
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2 else 0)' 2>/dev/null || echo 0)
test: setup data $(TEST_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder

# the fast tier: every module, no notebook run, no model trained beyond the tests' tiny ones (README, "Tests")
test-fast: setup data $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --no-loadscope-reorder

clean-results:
	rm -rf runs results/smoke results/interactive figures/smoke figures/interactive
