"""Test set-up: every output of the tests (artifacts, results, runs, figures) goes to one
temporary folder per session, never into the repository; the hub is never contacted.

Set here, at import time, so that the notebook kernels nbval starts inherit the same variables.
"""
import os
import tempfile

import pytest

_TMP = tempfile.mkdtemp(prefix="compstudy-tests-")
for _var, _sub in [("COMPSTUDY_ARTIFACTS_DIR", "artifacts"), ("COMPSTUDY_RESULTS_DIR", "results"),
                   ("COMPSTUDY_RUNS_DIR", "runs"), ("COMPSTUDY_FIGURES_DIR", "figures")]:
    os.environ[_var] = os.path.join(_TMP, _sub)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["COMPSTUDY_OFFLINE"] = "1"
os.environ["COMPSTUDY_NO_PROGRESS"] = "1"  # notebooks run by nbval store no frozen progress bars  # no corpus download: tests that download allow it themselves (loopback)
os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")

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


@pytest.fixture
def loopback_mirror(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving a folder laid out as <corpus>/<file>, set as
    COMPSTUDY_CORPUS_MIRROR, with downloads allowed; yields the served folder."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("COMPSTUDY_CORPUS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("COMPSTUDY_OFFLINE", raising=False)
    yield served
    server.shutdown()
    server.server_close()
