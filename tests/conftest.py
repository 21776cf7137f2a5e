"""Test set-up: every output of the tests (artifacts, results, runs, figures) goes to one
temporary folder per session, never into the repository; the hub is never contacted.

Set here, at import time, so that the notebook kernels the runner starts inherit the same variables.

The notebooks run once per session: `smoke_study` runs the smoke study (configs/smoke.yaml) through
the runner, and the notebook and runner tests read that run.
"""
import contextlib
import functools
import http.server
import os
import tempfile
import threading

import pytest

_TMP = tempfile.mkdtemp(prefix="compstudy-tests-")
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
def smoke_study(tmp_path_factory):
    """The smoke study, run once per session through the runner (`python -m compstudy run
    configs/smoke.yaml`) from an empty data folder: every corpus is fetched from a loopback HTTP
    server standing in for the network and verified against its checksum.

    Yields a dict: `code` (the runner's exit status), `data` (the data folder it filled),
    `executed` (folder with a copy of the executed notebooks, taken right after the run, so that
    later reruns of the study do not change what the notebook tests read).
    """
    import shutil

    from compstudy import paths, runner

    root = tmp_path_factory.mktemp("smoke")
    served, data, executed = root / "served", root / "fresh-data", root / "executed"
    for corpus in ("wikitext-2", "tinyshakespeare"):
        shutil.copytree(paths.data_dir() / corpus, served / corpus)
    with serve_folder(served), pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPSTUDY_DATA_DIR", str(data))
        code = runner.main(["run", str(paths.repo_root() / "configs" / "smoke.yaml"), "--no-progress"])
    from compstudy import runs

    registered = runs.registered("smoke")
    if registered:  # the executed notebooks of the run just made (runs/smoke/<run_id>/)
        shutil.copytree(paths.runs_dir("smoke") / registered[-1]["run_id"], executed)
    yield {"code": code, "data": data, "executed": executed}
