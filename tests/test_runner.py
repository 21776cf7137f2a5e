import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from compstudy import paths, results, runner

ROOT = paths.repo_root()


def _notebook(path, body="x = 1 / divisor"):
    nb = new_notebook()
    params = new_code_cell("divisor = 1\nlabel = 'a'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell("y = 2"), new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _config(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_unknown_notebook_parameter_is_rejected_before_running(tmp_path):
    _notebook(tmp_path / "a.ipynb")
    cfg = _config(tmp_path, "study: t\nnotebooks:\n  - path: a.ipynb\n    parameters: {divisr: 2}\n")
    with pytest.raises(runner.ConfigError, match=r"does not declare parameter\(s\) \['divisr'\].*divisor"):
        runner.load_study(cfg)


def test_unknown_shared_and_override_parameters_are_rejected(tmp_path):
    _notebook(tmp_path / "a.ipynb")
    cfg = _config(tmp_path, "study: t\nparameters: {labl: b}\nnotebooks: [a.ipynb]\n")
    with pytest.raises(runner.ConfigError, match=r"\['labl'\] are used by no notebook"):
        runner.load_study(cfg)
    cfg = _config(tmp_path, "study: t\nnotebooks: [a.ipynb]\n")
    with pytest.raises(runner.ConfigError, match=r"\['nope'\]"):
        runner.load_study(cfg, overrides={"nope": 1})
    assert runner.load_study(cfg, overrides={"divisor": 3}).notebooks[0].parameters["divisor"] == 3


@pytest.mark.slow
def test_failing_cell_names_notebook_cell_and_error(tmp_path, capsys):
    _notebook(tmp_path / "boom.ipynb")
    cfg = _config(tmp_path, "study: failing\nparameters: {divisor: 0}\nnotebooks: [boom.ipynb]\n")
    code = runner.main(["run", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "boom.ipynb failed in cell" in err and "ZeroDivisionError" in err


@pytest.mark.slow
def test_a_kernel_that_dies_fails_its_notebook_and_the_next_one_still_runs(tmp_path, capsys):
    """A crash in native code (here: the kernel process exits) is a failed notebook, named, not a
    traceback out of the runner; the notebooks after it still run."""
    _notebook(tmp_path / "a_dies.ipynb", body="import os\nos._exit(1)")
    _notebook(tmp_path / "b_fine.ipynb")
    cfg = _config(tmp_path, "study: dying\nnotebooks: [a_dies.ipynb, b_fine.ipynb]\n")
    code = runner.main(["run", str(cfg), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "a_dies.ipynb failed in its kernel died" in captured.err
    assert "b_fine.ipynb" in captured.out and "done in" in captured.out.split("b_fine.ipynb", 1)[1]


@pytest.mark.slow
def test_smoke_config_end_to_end(smoke_study, tmp_path, monkeypatch):
    """The smoke study from an empty data dir (`smoke_study`): every corpus is fetched from a local
    HTTP server (standing in for the network), verified against its checksum, and the study runs.
    Its results and runs are copied first, and the reruns below write into the copies: the other
    tests read the session's run as it was (its cache is shared, and the reruns build nothing)."""
    import shutil

    assert smoke_study["code"] == 0
    env = smoke_study["env"]
    monkeypatch.setenv("COMPSTUDY_ARTIFACTS_DIR", env["COMPSTUDY_ARTIFACTS_DIR"])
    for var, sub in [("COMPSTUDY_RESULTS_DIR", "results"), ("COMPSTUDY_RUNS_DIR", "runs")]:
        shutil.copytree(env[var], tmp_path / sub)
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("COMPSTUDY_FIGURES_DIR", str(tmp_path / "figures"))
    empty = smoke_study["data"]
    assert {p.name for p in (empty / "wikitext-2").iterdir()} == {"valid.txt", "test.txt"}
    assert (empty / "tinyshakespeare" / "input.txt").exists()
    df = results.load("smoke")
    base = df[df["variant"] == "Base"]
    assert set(base["dataset"]) == {"wikitext-2:test", "tinyshakespeare:test"}
    for col in ("perplexity", "bits_per_byte", "runtime_s", "energy_kwh", "n_params", "weight_bytes"):
        assert base[col].notna().all() and (base[col] > 0).all(), col
    assert set(base["energy_method"]) <= {"measured", "partly measured", "estimated"}
    assert (base["dataset_sha256"].str.len() == 64).all() and base["corpora_sha256"].str.contains("wikitext-2:valid=").all()
    assert (smoke_study["executed"] / "00_baseline.ipynb").exists()
    provenance = (paths.results_dir("smoke") / "PROVENANCE.md").read_text()
    assert "wikitext-2/valid.txt" in provenance and "matches sha256 reference" in provenance
    # issue 11: every trained variant names its equal-training control, which was measured too
    trained = df[df["training_tokens"].fillna(0) > 0]
    named = trained[trained["control"].fillna("") != ""]
    assert "Distil" in set(named["variant"]) and "Distil-noKD" in set(df["variant"])  # -noKD is a control itself
    assert set(named["control"]) <= set(df["variant"])
    assert (paths.results_dir("smoke") / "plateau.json").exists()
    import pandas as pd

    from compstudy import findings
    table = pd.read_csv(paths.results_dir("smoke") / "findings.csv")
    assert len(table) == len(findings.FINDINGS) and set(table["verdict"]) <= set(findings.VERDICTS)
    # issue 12: one run, one set of rows. Every row names the run; a rerun of 01 with other parameters
    # is a new run, and 05 ranks that run's rows only (01's variants, at the new number of rounds)
    first = df["run_id"].unique().tolist()
    assert len(first) == 1 and df["params_hash"].nunique() == 1 and df["protocol"].str.startswith("interleaved").all()
    assert (df["stride"] <= df["context"] - 1).all()
    # (two variants and a one-point weight-bits curve: the rerun's own parameters, and a shorter rerun)
    # (--no-paper: paper/smoke/ keeps the session run's build, which tests/test_paper*.py read)
    page = ROOT / "paper" / "smoke" / "index.html"
    built = page.stat().st_mtime_ns
    assert runner.main(["run", str(ROOT / "configs" / "smoke.yaml"), "--no-progress", "--no-paper", "--only",
                        "01_quantization", "--only", "05_comparison", "-p", "repeats", "3", "-p", "variants",
                        '["8b", "4b"]', "-p", "bits_sweep", '["hqq2"]']) == 0
    assert page.stat().st_mtime_ns == built
    df = results.load("smoke")
    assert df["run_id"].nunique() == 2
    second = df[df["run_id"] != first[0]]
    # 01's measured variants at the new rounds, and its weight-bits curve (measured once by design, `:dose`)
    assert set(second["notebook"]) == {"01_quantization", "01_quantization:dose"}
    measured = second[second["notebook"] == "01_quantization"]
    assert set(measured["variant"]) == {"Base", "Base8b", "Base4b"}  # the variants the rerun asked for
    # (the curve's one asked point and its 32-bit end, the base)
    assert set(second.loc[second["notebook"] == "01_quantization:dose", "variant"]) == {"Base", "Basehqq2"}
    assert set(measured.groupby("variant")["repeat"].nunique()) == {3}
    rank = pd.read_csv(paths.results_dir("smoke") / "ranking.csv")
    assert set(rank["variant"]) == set(second["variant"])
    assert (rank.loc[rank["ranked"].astype(bool), "min_repeats"] == 3).all()
    # a kill in the middle of writing the last row: 05 reports and skips it, and still runs
    table = results.measurements_path("smoke")
    blob = table.read_bytes()
    table.write_bytes(blob[: len(blob) - 40])
    # (05 alone ranks the latest complete run with its own parameters, issue 27: the first run, all notebooks)
    assert runner.main(["run", str(ROOT / "configs" / "smoke.yaml"), "--no-progress", "--no-paper", "--only",
                        "05_comparison"]) == 0
    ranked_now = set(pd.read_csv(paths.results_dir("smoke") / "ranking.csv")["variant"])
    assert ranked_now == set(df.loc[df["run_id"] == first[0], "variant"])


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "gpt2-paper.yaml", "llama.yaml", "online.yaml"])
def test_shipped_configs_validate(name):
    study = runner.load_study(ROOT / "configs" / name)
    assert study.notebooks and all(nb.path.exists() for nb in study.notebooks)


def test_command_line_beats_the_configs_per_notebook_value(tmp_path):
    _notebook(tmp_path / "a.ipynb")
    cfg = _config(tmp_path, "study: t\nparameters: {divisor: 2}\nnotebooks:\n  - path: a.ipynb\n"
                            "    parameters: {divisor: 5}\n")
    assert runner.load_study(cfg).notebooks[0].parameters["divisor"] == 5
    assert runner.load_study(cfg, overrides={"divisor": 7}).notebooks[0].parameters["divisor"] == 7


def test_extends_merges_parameters_and_inherits_notebooks(tmp_path):
    _notebook(tmp_path / "a.ipynb")
    _config(tmp_path, "study: base\nparameters: {divisor: 2, label: x}\nnotebooks: [a.ipynb]\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("extends: ../study.yaml\nstudy: child\nparameters: {label: z}\n")
    study = runner.load_study(child)
    assert study.name == "child" and study.notebooks[0].path == (tmp_path / "a.ipynb").resolve()
    assert study.notebooks[0].parameters == {"divisor": 2, "label": "z"}
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\nstudy: l\n")
    with pytest.raises(runner.ConfigError, match="extends itself"):
        runner.load_study(loop)


@pytest.mark.parametrize("text,match", [
    ("study: [t", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("study: t\nnotebooks: a.ipynb\n", "'notebooks' must be a list"),
    ("study: t\nnotebooks: [README.md]\n", "is not a notebook"),
    ("study: t\nnotebooks: [a.ipynb, 3]\n", "must be a path or a mapping"),
])
def test_config_mistakes_are_messages_not_tracebacks(tmp_path, text, match):
    _notebook(tmp_path / "a.ipynb")
    (tmp_path / "README.md").write_text("not a notebook")
    with pytest.raises(runner.ConfigError, match=match):
        runner.load_study(_config(tmp_path, text))


def test_malformed_command_line_value_is_a_clear_error(tmp_path, capsys):
    _notebook(tmp_path / "a.ipynb")
    cfg = _config(tmp_path, "study: t\nnotebooks: [a.ipynb]\n")
    assert runner.main(["run", str(cfg), "-p", "divisor", "[1"]) == 2
    assert "-p divisor '[1': not a valid YAML value" in capsys.readouterr().err


@pytest.mark.slow
def test_stored_tracebacks_have_no_colour_codes(tmp_path, capsys):
    _notebook(tmp_path / "boom.ipynb")
    cfg = _config(tmp_path, "study: colourless\nparameters: {divisor: 0}\nnotebooks: [boom.ipynb]\n")
    assert runner.main(["run", str(cfg), "--no-progress"]) == 1
    from compstudy import runs

    nb = nbformat.read(paths.runs_dir("colourless") / runs.registered("colourless")[-1]["run_id"] / "boom.ipynb",
                       as_version=4)
    tracebacks = [line for c in nb.cells for o in c.get("outputs", []) for line in o.get("traceback", [])]
    assert tracebacks and not any("\x1b[" in line for line in tracebacks)
    assert "\x1b[" not in capsys.readouterr().err


def test_corpora_are_checked_before_any_notebook_runs(tmp_path, capsys):
    import time

    nb = new_notebook()
    params = new_code_cell("eval_datasets = ['wikitext-2:test']\ntrain_corpora = ['tinyshakespeare:train']")
    params.metadata["tags"] = ["parameters"]
    marker = tmp_path / "ran"
    nb.cells = [params, new_code_cell(f"open({str(marker)!r}, 'w').close()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "c.ipynb")
    cfg = _config(tmp_path, "study: corpora\nparameters: {eval_datasets: ['nope:test', 'wikitext-2:dev']}\n"
                            "notebooks: [c.ipynb]\n")
    t0 = time.perf_counter()
    assert runner.main(["run", str(cfg), "--no-progress"]) == 2
    assert time.perf_counter() - t0 < 10 and not marker.exists()
    err = capsys.readouterr().err
    assert "2 corpus problem(s)" in err and "unknown corpus 'nope'" in err and "not 'dev'" in err
    assert set(runner.check_corpora(runner.load_study(cfg, {"eval_datasets": ["wikitext-2:test"]}))) == {
        "wikitext-2:test", "tinyshakespeare:train"}


def test_the_commit_is_dirty_for_code_changes_not_for_the_runs_own_outputs(tmp_path, monkeypatch):
    import subprocess

    from compstudy import provenance

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for rel in ("lib/a.py", "figures/default/f.png", "results/default/ranking.csv", "paper/default/index.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("0")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    clean = provenance.git_commit()
    assert clean and not clean.endswith("-dirty")
    for rel in ("figures/default/f.png", "results/default/ranking.csv", "paper/default/index.html"):
        (tmp_path / rel).write_text("regenerated")
    assert provenance.git_commit() == clean  # the run's own outputs
    (tmp_path / "lib/a.py").write_text("changed")
    assert provenance.git_commit() == f"{clean}-dirty"
