import pandas as pd
import multiprocessing as mp

import pytest

from compstudy import cache, results


def _row(i, study="s"):
    return {"study": study, "variant": f"v{i}", "dataset": "d", "repeat": i, "perplexity": 1.0 + i}


def _writer(study, start):
    for i in range(start, start + 50):
        results.append(study, [_row(i, study)])


def test_append_and_load_round_trip():
    results.append("rt", [_row(0, "rt"), _row(1, "rt")])
    results.append("rt", [_row(2, "rt")])
    df = results.load("rt")
    assert list(df["variant"]) == ["v0", "v1", "v2"]
    assert list(df.columns) == list(results.COLUMNS)


def test_unknown_column_is_rejected_before_writing():
    with pytest.raises(ValueError, match="unknown result columns \\['bogus'\\]"):
        results.append("bad", [{"variant": "x", "bogus": 1}])
    with pytest.raises(FileNotFoundError, match="no results for study 'bad'"):
        results.load("bad")


def test_concurrent_appends_do_not_corrupt():
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=("conc", k * 100)) for k in range(3)]
    [p.start() for p in procs]
    [p.join() for p in procs]
    df = results.load("conc")
    assert len(df) == 150 and df["repeat"].nunique() == 150


def test_cache_key_is_stable_and_sensitive():
    a = cache.key("x", {"a": 1, "b": [1, 2]})
    assert a == cache.key("x", {"b": [1, 2], "a": 1})
    assert a != cache.key("x", {"a": 2, "b": [1, 2]}) and a != cache.key("y", {"a": 1, "b": [1, 2]})


def test_failed_build_leaves_no_artifact():
    key = cache.key("test", {"fail": True})
    with pytest.raises(RuntimeError):
        with cache.build(key, {}) as (folder, recipe):
            (folder / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not cache.exists(key) and not cache.path_of(key).exists()
    with cache.build(key, {"p": 1}) as (folder, recipe):
        recipe["cost"] = {"seconds": 1.0}
    assert cache.exists(key) and cache.read_recipe(key)["cost"]["seconds"] == 1.0


def test_baseline_is_reused_and_rebuilt_on_change(tiny_baseline):
    import time

    from compstudy.baseline import BaselineConfig, baseline_key, get_baseline
    from conftest import TINY

    t0 = time.perf_counter()
    again = get_baseline(BaselineConfig(**TINY), progress=False)
    assert time.perf_counter() - t0 < 5 and again.key == tiny_baseline.key
    assert again.recipe["cost"] == tiny_baseline.recipe["cost"]
    assert baseline_key(BaselineConfig(**{**TINY, "seed": 1})) != tiny_baseline.key
    assert baseline_key(BaselineConfig(**{**TINY, "train_tokens": 1234})) != tiny_baseline.key


def test_readme_documents_every_column():
    from compstudy import paths

    readme = (paths.repo_root() / "README.md").read_text()
    assert results.columns_markdown() in readme


def test_a_table_from_before_new_columns_is_upgraded_in_place(tmp_path, monkeypatch):
    import csv

    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    old = [c for c in results.COLUMNS if c not in ("dataset_sha256", "corpora_sha256")]
    path = results.measurements_path("upgrade")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=old)
        w.writeheader()
        w.writerow({"study": "upgrade", "variant": "Base", "perplexity": 10})
    results.append("upgrade", [{"study": "upgrade", "variant": "Base8b", "perplexity": 11, "dataset_sha256": "ab"}])
    df = results.load("upgrade")
    assert list(df.columns) == list(results.COLUMNS) and list(df["variant"]) == ["Base", "Base8b"]
    assert df["dataset_sha256"].isna().tolist() == [True, False]


def test_a_torn_last_row_is_reported_skipped_and_cut_before_the_next_append(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    rows = [{"study": "torn", "variant": v, "perplexity": p, "energy_method": "estimated, by TDP"}
            for v, p in (("Base", 10.0), ("Base8b", 11.0))]
    path = results.append("torn", rows)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 25])  # a kill in the middle of writing the last row
    df = results.load("torn")
    assert list(df["variant"]) == ["Base"] and "ends in a torn row" in capsys.readouterr().out
    results.append("torn", [{"study": "torn", "variant": "Base4b", "perplexity": 12.0}])
    assert "torn row" in capsys.readouterr().out
    df = results.load("torn")
    assert list(df["variant"]) == ["Base", "Base4b"] and df["perplexity"].tolist() == [10.0, 12.0]


def test_a_row_torn_inside_a_quoted_field_and_a_foreign_row_are_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    rows = [{"study": "t", "variant": v, "repeat": 0, "perplexity": p, "bits_per_byte": 1.0, "tokens_scored": 10,
             "batch_size": 8, "runtime_s": 0.5, "energy_method": "estimated, by TDP"} for v, p in (("Base", 10.0), ("Q", 11.0))]
    path = results.append("t", rows)
    blob = path.read_text()
    cut = blob.rindex("estimated, by") + 5  # inside the quoted field of the last row: pandas alone fails here
    path.write_text(blob[:cut])
    assert list(results.load("t")["variant"]) == ["Base"]
    # a foreign row with the right number of fields but text where numbers belong
    results.append("t", [dict(rows[1], perplexity="eleven")])
    df = results.load("t")
    assert list(df["variant"]) == ["Base"] and df["perplexity"].dtype.kind == "f"
    assert "not numbers (foreign rows)" in capsys.readouterr().out


def test_runs_are_never_pooled(tmp_path, monkeypatch):
    from compstudy import runs

    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("COMPSTUDY_RUN_ID", raising=False)
    a = runs.start("s", {"00.ipynb": {"repeats": 2}})
    again = runs.start("s", {"00.ipynb": {"repeats": 2}}, continue_run=a["run_id"])
    other = runs.start("s", {"00.ipynb": {"repeats": 3}})
    assert again["run_id"] == a["run_id"] and again["continued"]
    assert other["run_id"] != a["run_id"] and other["params_hash"] != a["params_hash"] and not other["continued"]
    assert [r["run_id"] for r in runs.registered("s")] == [a["run_id"], other["run_id"]]
    assert not runs.is_complete(runs.find("s", a["run_id"]))  # 00 never marked done
    runs.mark("s", a["run_id"], "00.ipynb", "done")
    assert runs.is_complete(runs.find("s", a["run_id"])) and runs.latest_complete("s")["run_id"] == a["run_id"]
    row = {"notebook": "n", "variant": "Base", "dataset": "d", "batch_size": 8, "tokens_scored": 10, "perplexity": 1.0}
    df = pd.DataFrame([dict(row, repeat=0, run_id="r1", timestamp="1", runtime_s=1.0),
                       dict(row, repeat=0, run_id="r2", timestamp="2", runtime_s=2.0),
                       dict(row, repeat=0, run_id="r2", timestamp="3", runtime_s=3.0),  # measured again in r2
                       dict(row, repeat=1, run_id="r2", timestamp="3", runtime_s=4.0)])
    monkeypatch.setenv("COMPSTUDY_RUN_ID", "r1")
    rows, chosen, note = runs.select_run(df)  # the runner's current run wins over the newest
    assert chosen == "r1" and rows["runtime_s"].tolist() == [1.0]
    monkeypatch.delenv("COMPSTUDY_RUN_ID")
    rows, chosen, note = runs.select_run(df)
    assert chosen == "r2" and rows["runtime_s"].tolist() == [3.0, 4.0] and "1 row(s) measured again" in note
    assert runs.select_run(df, "-2")[1] == "r1"
    with pytest.raises(ValueError, match=r"run 'r9' is not in the table; runs present \(oldest first\): \['r1', 'r2'\]"):
        runs.select_run(df, "r9")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["zeroed", "random"])
def test_a_corrupted_artifact_is_detected_at_load_and_rebuilt(damage, capsys):
    """Issue 14: a cached baseline with 64 KiB of its weights zeroed (or overwritten with random
    bytes) was measured as if intact. Its files are checked against the checksums its recipe
    recorded; the damaged artifact is moved aside and rebuilt."""
    import os

    import torch

    from compstudy.baseline import BaselineConfig, get_baseline
    from conftest import TINY

    cfg = BaselineConfig(**{**TINY, "seed": 11})
    art = get_baseline(cfg, progress=False)
    assert "model.safetensors" in cache.read_recipe(art.key)["files_sha256"]
    weights = art.path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    middle = len(blob) // 2
    blob[middle:middle + 65536] = bytes(65536) if damage == "zeroed" else os.urandom(65536)
    weights.write_bytes(bytes(blob))
    assert cache.verify(art.key) == ["model.safetensors"]
    again = get_baseline(cfg, progress=False)
    out = capsys.readouterr().out
    assert f"artifact {art.key} does not match its recorded checksums (model.safetensors)" in out
    assert again.key == art.key and cache.verify(again.key) == []
    assert any(p.name.startswith(f".corrupt-{art.key}") for p in art.path.parent.iterdir())
    assert again.recipe["params"] == art.recipe["params"]  # rebuilt from the same recipe
    with torch.no_grad():
        assert torch.isfinite(again.model(input_ids=torch.arange(20)[None]).logits).all()
