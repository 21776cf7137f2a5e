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
    with pytest.raises(runner.ConfigError, match=r"\['labl'\] are declared by no notebook"):
        runner.load_study(cfg)
    cfg = _config(tmp_path, "study: t\nnotebooks: [a.ipynb]\n")
    with pytest.raises(runner.ConfigError, match=r"\['nope'\]"):
        runner.load_study(cfg, overrides={"nope": 1})
    assert runner.load_study(cfg, overrides={"divisor": 3}).notebooks[0].parameters["divisor"] == 3


def test_failing_cell_names_notebook_cell_and_error(tmp_path, capsys):
    _notebook(tmp_path / "boom.ipynb")
    cfg = _config(tmp_path, "study: failing\nparameters: {divisor: 0}\nnotebooks: [boom.ipynb]\n")
    code = runner.main(["run", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "boom.ipynb failed in cell" in err and "ZeroDivisionError" in err


@pytest.mark.slow
def test_smoke_config_end_to_end():
    code = runner.main(["run", str(ROOT / "configs" / "smoke.yaml"), "--no-progress"])
    assert code == 0
    df = results.load("smoke")
    base = df[df["variant"] == "Base"]
    assert set(base["dataset"]) == {"wikitext-2:test", "tinyshakespeare:test"}
    for col in ("perplexity", "bits_per_byte", "runtime_s", "energy_kwh", "n_params", "weight_bytes"):
        assert base[col].notna().all() and (base[col] > 0).all(), col
    assert set(base["energy_method"]) <= {"measured", "partly measured", "estimated"}
    assert (paths.runs_dir("smoke") / "00_baseline.ipynb").exists()


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml", "gpt2-paper.yaml"])
def test_shipped_configs_validate(name):
    study = runner.load_study(ROOT / "configs" / name)
    assert study.notebooks and all(nb.path.exists() for nb in study.notebooks)
