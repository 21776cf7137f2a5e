"""Test set-up: every output of the tests (artifacts, results, runs, figures) goes to one
temporary folder per session, never into the repository; the hub is never contacted.

Set here, at import time, so that the notebook kernels the runner starts inherit the same variables.

The notebooks run once per session: `smoke_study` runs the smoke study (configs/smoke.yaml) through
the runner, and the notebook and runner tests read that run.

`make test` runs two pytest workers (pytest-xdist, `-n 2`). Each worker is a session of its own, with
its own folders, but for the smoke study: it runs once, in the worker that first asks for it, into a
folder both workers share, and the other worker waits for it (a file lock). The tests that read it
run after every other test, but for the first of them, which starts it (`pytest_collection_modifyitems`):
one worker runs the smoke study while the other takes the rest.
"""
import contextlib
import functools
import http.server
import json
import os
import tempfile
import threading

from pathlib import Path

import pytest

# One torch thread a process: two workers share the two cores, and two processes with two threads each
# slow each other far more than twice (../shared/STACK.md). Every build of a session, the executors'
# included, takes the same count: a float sum's order depends on it, and the scale-out tests compare
# weights bit for bit. Inherited by the notebook kernels, build processes and workers the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Until the smoke study has run, each pytest-xdist worker keeps to its own CPUs (worker i of n: every n-th
# CPU from the i-th), and so do the kernels, builds and workers it starts. A timed pass counts only what
# others take of the CPUs it may run on (compstudy.measure.measured_cpus), so the smoke study's passes
# are not disturbed by the other worker's tests: its timings stay reliable, and it ranks its variants as
# it would alone. Once it has run, a worker takes every CPU again (`_release_cpus`), for the executors'
# tests that follow it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_ALL_CPUS = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
if _WORKER.startswith("gw") and _ALL_CPUS:
    _cpus, _n = sorted(_ALL_CPUS), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if 1 < _n <= len(_cpus):
        os.sched_setaffinity(0, set(_cpus[int(_WORKER[2:]) % _n::_n]))


def _release_cpus() -> None:
    """This process (a pytest-xdist worker) may run on every CPU it started with again."""
    if _ALL_CPUS and os.sched_getaffinity(0) != _ALL_CPUS:
        os.sched_setaffinity(0, _ALL_CPUS)

_TMP = tempfile.mkdtemp(prefix="compstudy-tests-")
# shared by the workers of one pytest-xdist run (they have the same PYTEST_XDIST_TESTRUNUID); this session's
# folder when pytest runs alone
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
SHARED = Path(tempfile.gettempdir()) / f"compstudy-tests-{_RUN}" if _RUN else Path(_TMP)
for _var, _sub in [("COMPSTUDY_ARTIFACTS_DIR", "artifacts"), ("COMPSTUDY_RESULTS_DIR", "results"),
                   ("COMPSTUDY_RUNS_DIR", "runs"), ("COMPSTUDY_FIGURES_DIR", "figures")]:
    os.environ[_var] = os.path.join(_TMP, _sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["COMPSTUDY_OFFLINE"] = "1"
os.environ["COMPSTUDY_NO_PROGRESS"] = "1"  # executed notebooks store no frozen progress bars
os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
# GPTQModel packs 2/4/8-bit weights with a C++ extension it compiles on first use (once per machine, into
# ~/.cache/gptqmodel: 28 s here), else with its own Python packer of the same format; the tests' matrices
# are tiny, so a fresh machine (CI) takes the Python packer instead of paying the compile
os.environ.setdefault("GPTQMODEL_DISABLE_PACK_EXT", "1")

TINY = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=512, train_tokens=40_000,
            batch_size=16, seq_len=64, lr=3e-3)


@pytest.fixture(scope="session")
def tiny_baseline():
    """A tiny GPT-2 trained for a few seconds on the real corpora (cached for the session)."""
    from compstudy.baseline import BaselineConfig, get_baseline

    return get_baseline(BaselineConfig(**TINY), progress=False)


@pytest.fixture(scope="session")
def tiny_llama():
    from compstudy.baseline import BaselineConfig, get_baseline

    return get_baseline(BaselineConfig(family="llama", **TINY), progress=False)


@contextlib.contextmanager
def serve_folder(served):
    """A local HTTP server on 127.0.0.1 serving `served` (laid out as <corpus>/<file>), set as
    COMPSTUDY_CORPUS_MIRROR with downloads allowed while the context lasts."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPSTUDY_CORPUS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
        mp.delenv("COMPSTUDY_OFFLINE", raising=False)
        try:
            yield served
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def loopback_mirror(tmp_path):
    """`serve_folder` on an empty folder of this test; yields the served folder."""
    served = tmp_path / "served"
    served.mkdir()
    with serve_folder(served):
        yield served


@pytest.fixture(scope="session")
def smoke_study():
    """The smoke study, run once per pytest run through the runner (`python -m compstudy run
    configs/smoke.yaml`) from an empty data folder: every corpus is fetched from a loopback HTTP
    server standing in for the network and verified against its checksum.

    It runs into its own folders under `SHARED`, once for all pytest-xdist workers: the first worker
    to ask runs it under a file lock, and the other reads its outcome once the lock is free.

    Returns a dict: `code` (the runner's exit status), `data` (the data folder it filled),
    `executed` (a copy of the executed notebooks, taken right after the run), and `env`: the
    COMPSTUDY_*_DIR variables of its artifacts, results, runs and figures (set them, with
    monkeypatch, to read its outputs through `compstudy.paths`). Its outputs are read, never
    changed: a test that runs the study again copies them first.
    """
    from filelock import FileLock

    root = SHARED / "smoke"
    outcome = root / "outcome.json"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(SHARED / "smoke.lock")):
        if not outcome.exists():
            _run_smoke_study(root, outcome)
        facts = json.loads(outcome.read_text())
    _release_cpus()  # the smoke study has run: nothing measured here needs a quiet CPU any more
    if facts.get("error"):
        pytest.fail(f"the smoke study raised (in the worker that ran it): {facts['error']}")
    return {"code": facts["code"], "data": Path(facts["data"]), "executed": Path(facts["executed"]),
            "env": facts["env"]}


def _run_smoke_study(root: Path, outcome: Path) -> None:
    """Run the smoke study into `root` and write its outcome (`smoke_study`'s dict, as JSON) to
    `outcome`, a raised error included, so that no worker runs it twice."""
    import shutil
    import traceback

    from compstudy import paths, runner, runs

    served, data, executed = root / "served", root / "fresh-data", root / "executed"
    env = {var: str(root / sub) for var, sub in [("COMPSTUDY_ARTIFACTS_DIR", "artifacts"),
                                                  ("COMPSTUDY_RESULTS_DIR", "results"),
                                                  ("COMPSTUDY_RUNS_DIR", "runs"), ("COMPSTUDY_FIGURES_DIR", "figures")]}
    facts = {"code": None, "data": str(data), "executed": str(executed), "env": env, "error": ""}
    try:
        for corpus in ("wikitext-2", "tinyshakespeare"):
            shutil.copytree(paths.data_dir() / corpus, served / corpus)
        with serve_folder(served), pytest.MonkeyPatch.context() as mp:
            mp.setenv("COMPSTUDY_DATA_DIR", str(data))
            for var, value in env.items():
                mp.setenv(var, value)
            facts["code"] = runner.main(["run", str(paths.repo_root() / "configs" / "smoke.yaml"), "--no-progress"])
            registered = runs.registered("smoke")
            if registered:  # the executed notebooks of the run just made (runs/smoke/<run_id>/)
                shutil.copytree(paths.runs_dir("smoke") / registered[-1]["run_id"], executed)
    except BaseException as exc:
        facts["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        outcome.write_text(json.dumps(facts))


# modules whose tests must run in one worker, in order: the property tests' coverage check reads what the
# module's other tests recorded (TRIED)
ONE_WORKER_MODULES = ("test_shapes_property.py",)


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler for `make test`: a test at a time, in the collection's order, but the
    tests of a module in `ONE_WORKER_MODULES` go to one worker as one unit. (pytest-xdist 3.8's
    `--dist loadgroup` does this for `xdist_group` marks, by appending the group to each node id, which
    pytest 9.2 no longer lets a plugin change; its scheduler reads the group from our list instead.)"""
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


# the tests of the smoke study that take longest (the executors' builds: 1-2 minutes; the end-to-end reruns:
# 1 minute), longest first, started first once it has run, so that neither worker is left with two of them
LONGEST_AFTER_THE_SMOKE_STUDY = (
    "test_ray_builds_the_plan_a_killed_worker_leaves_no_half_artifact_and_run_then_builds_nothing",
    "test_smoke_config_end_to_end",
    "test_submitit_local_executor_builds_the_same_artifacts_as_a_local_build",
)
# pytest-xdist hands a worker up to three tests ahead (its scheduler tops a worker up while it has two or
# fewer pending): two short tests after each long one keep the next long one for the other worker
SHORT_TESTS_BETWEEN_LONG_ONES = 2


def pytest_collection_modifyitems(config, items):
    """The tests that read the smoke study (`smoke_study`) run after every other test, but for the
    first of them, which runs first and starts the study. Of the others, those of
    `LONGEST_AFTER_THE_SMOKE_STUDY` come first, longest first, each followed by
    `SHORT_TESTS_BETWEEN_LONG_ONES` short ones; then the rest, slow ones first. Under pytest-xdist
    (`make test`: `pytest_xdist_make_scheduler` hands out a test at a time, in this order) one worker runs
    the smoke study while the other works through the rest, and once it has run, each worker takes one
    long test at a time."""
    reading = [item for item in items if "smoke_study" in getattr(item, "fixturenames", ())]
    if not reading:
        return
    others = [item for item in items if "smoke_study" not in getattr(item, "fixturenames", ())]
    longest = sorted((item for item in reading[1:] if item.originalname in LONGEST_AFTER_THE_SMOKE_STUDY),
                     key=lambda item: LONGEST_AFTER_THE_SMOKE_STUDY.index(item.originalname))
    # sorted is stable: the collection's order within each rank
    short = sorted((item for item in reading[1:] if item not in longest),
                   key=lambda item: item.get_closest_marker("slow") is None)
    tail = []
    for item in longest:
        tail += [item] + short[:SHORT_TESTS_BETWEEN_LONG_ONES]
        short = short[SHORT_TESTS_BETWEEN_LONG_ONES:]
    items[:] = reading[:1] + others + tail + short
