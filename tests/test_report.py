"""A study's PROVENANCE.md (compstudy.report) and the `python -m compstudy` entry point (compstudy.__main__):
the fast tier's tests of the two modules that only a whole study run exercised before
(benchmarks/fast_tier.py --coverage)."""
import runpy
import shutil
import sys

import pytest

from compstudy import data, paths, report


def test_provenance_names_commit_corpora_figures_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COMPSTUDY_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("COMPSTUDY_RUN_ID", "run-7")
    # a data folder with the real valid split, and a test split whose bytes differ from the recorded ones
    real = paths.data_dir() / "wikitext-2" / "valid.txt"
    monkeypatch.setenv("COMPSTUDY_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "wikitext-2").mkdir(parents=True)
    shutil.copy(real, tmp_path / "data" / "wikitext-2" / "valid.txt")
    (tmp_path / "data" / "wikitext-2" / "test.txt").write_text("not the corpus\n")
    (tmp_path / "figures" / "prov").mkdir(parents=True)
    (tmp_path / "figures" / "prov" / "tradeoff.png").write_bytes(b"\x89PNG")
    config = tmp_path / "prov.yaml"
    config.write_text("study: prov\nparameters: {n_layer: 2}\n")

    text = report.write_provenance("prov", config, wall_s=12.4).read_text()
    assert "by `python -m compstudy run" in text and "- study wall time: 12 s" in text
    assert "- commit: `" in text and "run: `run-7`" in text
    valid = data.SOURCES[("wikitext-2", "valid.txt")]
    assert f"`wikitext-2/valid.txt`: {real.stat().st_size:,} bytes, sha256 `{valid.sha256}` (matches sha256" in text
    assert "`wikitext-2/test.txt`: 15 bytes" in text and "(DOES NOT MATCH sha256 reference)" in text
    assert "tinyshakespeare" not in text  # absent from the data folder: not listed
    assert "- `figures/prov/tradeoff.png`" in text
    assert "```yaml\nstudy: prov\nparameters: {n_layer: 2}\n```" in text


def test_no_corpus_in_the_data_folder_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_DATA_DIR", str(tmp_path / "empty"))
    assert report.corpus_lines() == ["- none of the registered corpora is in the data dir"]


def test_a_partial_rerun_is_appended_to_an_existing_provenance_only(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    assert report.note_partial_run("prov", ["01_quantization"], 3.0) is None  # no provenance yet: nothing written
    assert not (tmp_path / "results" / "prov").exists()
    (tmp_path / "results" / "prov").mkdir(parents=True)
    (tmp_path / "results" / "prov" / "PROVENANCE.md").write_text("# Provenance\n")
    out = report.note_partial_run("prov", ["01_quantization", "05_comparison"], 3.0)
    text = out.read_text()
    assert text.startswith("# Provenance\n") and "re-ran 01_quantization, 05_comparison alone at commit" in text
    assert "(3 s)" in text


def test_python_dash_m_compstudy_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["compstudy", "params", "00_baseline"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("compstudy", run_name="__main__")
    assert stop.value.code == 0
    assert "eval_max_tokens" in capsys.readouterr().out  # the baseline notebook's parameters, documented
    monkeypatch.setattr(sys, "argv", ["compstudy", "no-such-command"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("compstudy", run_name="__main__")
    assert stop.value.code == 2 and "invalid choice: 'no-such-command'" in capsys.readouterr().err
