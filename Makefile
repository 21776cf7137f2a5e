# Two commands: `make study` (the default study) and `make test` (the whole test suite).
# Both create .venv if missing, install the pinned stack with torch held at 2.13.0 (an unpinned
# torch pulls gigabytes of CUDA packages on CPU machines), and register the venv's Jupyter kernel
# inside the venv. Quick when already set up. pip installs without byte-compiling (--no-compile) and
# compileall then compiles site-packages on every core: the same .pyc files, a fresh set-up in 81 s
# instead of 106-124 s on 2 cores (a module that does not compile, e.g. a package's Python-2 template,
# is skipped, as pip skips it). The study's own lib/ and tests/ are compiled too: where
# PYTHONDONTWRITEBYTECODE is set, every notebook kernel and worker would otherwise compile them again
# (1.5-2 s a process); a module edited later is recompiled in memory, so nothing goes stale.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
# where the offline corpora are copied from when data/ lacks them (see data/README.md)
SHARED_DATA ?= ../shared/data
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
# byte-compile the venv's site-packages on every core (after the --no-compile installs below)
COMPILE_SITE_PACKAGES = $(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") >/dev/null || true

.PHONY: setup study test data clean-results
STAMP := $(VENV)/.compstudy-installed

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e .
	$(COMPILE_SITE_PACKAGES)
	$(PY) -m ipykernel install --sys-prefix --name compstudy --display-name "Python (compstudy)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# corpora: copied from $(SHARED_DATA) when it has them, else downloaded from their sources; every
# file verified against its recorded checksum (compstudy.data.SOURCES). Fails in seconds, with
# instructions, when a corpus is neither there nor reachable.
data: setup
	$(PY) -m compstudy data --from $(SHARED_DATA) --config $(CONFIG)

study: setup data
	@$(PY) -m compileall -q -j 0 lib >/dev/null || true
	$(PY) -m compstudy run $(CONFIG)

# the tests also cover the optional executors (Ray, submitit: issue 30), so they install those extras
TEST_STAMP := $(VENV)/.compstudy-test-extras
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-compile -e ".[ray,slurm]"
	$(COMPILE_SITE_PACKAGES)
	@touch $(TEST_STAMP)

test: setup data $(TEST_STAMP)
	@$(PY) -m compileall -q -j 0 lib tests >/dev/null || true
	$(PY) -m pytest

clean-results:
	rm -rf runs results/smoke results/interactive figures/smoke figures/interactive
