"""The parameter schema (compstudy.params): declared once, validated before anything runs, and the
notebooks' parameters cells are no second copy of it."""
import ast
import time

import papermill
import pytest

from compstudy import params, paths, runner

ROOT = paths.repo_root()
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_every_name_is_declared_once_across_the_schema():
    from compstudy import schema

    groups = list(params.SHARED) + [own for _, own in params.NOTEBOOKS.values()]
    fields = [(n, g.model_fields[n]) for g in groups for n in params.names(g)]
    all_names = [n for n, _ in fields]
    # a name in two groups is one declaration (device: schema.DEVICE in the baseline and the measurement)
    twice = {n for n in all_names if all_names.count(n) > 1}
    assert twice <= {"device"}, sorted(twice)
    assert all(f.description == schema.DEVICE.description and f.default == schema.DEVICE.default
               for n, f in fields if n == "device")
    assert "study" not in all_names and "shared" not in all_names


@pytest.mark.parametrize("stem", list(params.NOTEBOOKS))
def test_parameters_cell_holds_study_shared_and_its_own_names_with_the_schema_defaults(stem):
    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"))
    expected = {"study", *params.own_names(stem)} | ({"shared"} if params.shared_names(stem) else set())
    assert set(declared) == expected
    defaults = params.defaults(stem)
    for name in params.own_names(stem):  # the cell's value is the schema's default: no copy that can disagree
        assert ast.literal_eval(declared[name]["default"]) == defaults[name], name


@pytest.mark.parametrize("stem", list(params.NOTEBOOKS))
def test_schema_defaults_are_valid_and_are_the_default_study(stem):
    resolved = params.resolve(stem, {}, {"study": "x"})
    assert resolved.study == "x" and resolved["repeats" if "repeats" in resolved else "top"]
    # the schema's defaults are the study that runs the notebook: the default study, or the scale study for 06
    default = runner.load_study(ROOT / "configs" / ("scale.yaml" if stem == "06_scale" else "default.yaml"))
    run = next(r for r in default.notebooks if r.path.stem == stem)
    effective = {**run.parameters.get("shared", {}), **{k: v for k, v in run.parameters.items() if k != "shared"}}
    assert {k: effective[k] for k in params.defaults(stem)} == params.defaults(stem)


def test_command_line_beats_the_configs_per_notebook_value_in_the_schema():
    # smoke.yaml sets sparsities [0.5] and calibration_batches 2 for 03_pruning; -p wins over both
    study = runner.load_study(SMOKE, overrides={"sparsities": [0.2], "calibration_batches": 3})
    pruning = next(r for r in study.notebooks if r.path.stem == "03_pruning")
    assert pruning.parameters["sparsities"] == [0.2]
    assert pruning.parameters["shared"]["calibration_batches"] == 3
    assert runner.load_study(SMOKE).notebooks[3].parameters["sparsities"] == [0.5]


@pytest.mark.parametrize("args,words", [
    (["-p", "repeats", "abc"], ["repeats = 'abc'", "valid integer", "int >= 1"]),
    (["-p", "eval_context", "100000"], ["eval_context = 100000", "<= n_positions (128)"]),
    (["-p", "sparsities", "[1.5]"], ["sparsities = [1.5]", "[0, 1)"]),
    (["-p", "variants", '["9b"]'], ["'9b'", "allowed: ['8b', '4b'"]),
    (["-p", "family", "gpt3"], ["family = 'gpt3'", "'gpt2' or 'llama'"]),
    (["-p", "grid_quants", "[null, 3b]"], ["'3b'", "unknown"]),
    (["-p", "divergence", "sideways"], ["divergence = 'sideways'", "'forward' or 'reverse'"]),
])
def test_a_bad_value_fails_before_any_notebook_starts_naming_it(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RUNS_DIR", str(tmp_path / "runs"))
    t0 = time.perf_counter()
    assert runner.main(["run", str(SMOKE), "--no-progress", *args]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "before running anything" in err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "runs").exists()  # nothing started


def test_every_problem_is_reported_at_once_and_a_shared_one_once():
    with pytest.raises(runner.ConfigError) as exc:
        runner.load_study(SMOKE, overrides={"lr": -1, "n_layer": 2.5, "top": 0})
    text = str(exc.value)
    assert text.startswith("3 problem(s)") and text.count("lr = -1") == 1
    assert "notebooks: 00_baseline, 01_quantization, 02_distillation, 03_pruning, 04_hybrid" in text
    assert "top = 0" in text and "05_comparison" in text


def test_a_notebook_entry_cannot_set_a_name_its_notebook_does_not_use(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"study: t\nnotebooks:\n  - path: {ROOT / 'notebooks' / '05_comparison.ipynb'}\n"
                   f"    parameters: {{n_layer: 4}}\n")
    with pytest.raises(runner.ConfigError, match=r"does not use parameter\(s\) \['n_layer'\]"):
        runner.load_study(cfg)


def test_params_command_prints_the_schema_with_its_documentation(capsys):
    assert runner.main(["params", "03_pruning"]) == 0
    out = capsys.readouterr().out
    assert "sparsities = [0.1, 0.3, 0.5, 0.7, 0.9]" in out and "fractions of block weights set to zero" in out
    assert "n_layer = 2" in out and "# BaselineConfig (shared)" in out and "\nvariants = " not in out
    assert runner.main(["params"]) == 0
    out = capsys.readouterr().out
    assert all(f"# {g.__name__}" in out for g in params.SHARED) and "hard_label_weight" in out


def test_resolve_validates_a_notebook_run_on_its_own():
    with pytest.raises(params.ParameterError, match=r"head_keep = \[0.9, 1.5\]"):
        params.resolve("03_pruning", {}, {"study": "x", "head_keep": [0.9, 1.5]})
    with pytest.raises(params.ParameterError, match=r"no shared parameter\(s\) \['sparsities'\]"):
        params.resolve("03_pruning", {"sparsities": [0.5]}, {"study": "x"})
    p = params.resolve("01_quantization", {"n_layer": 3}, {"study": "x", "variants": ["8b"]})
    assert p.n_layer == 3 and p.variants == ["8b"] and p.eval_max_tokens == 32768
    # papermill used directly injects a shared parameter by name: it is used, not silently ignored
    assert params.resolve("01_quantization", {"n_layer": 3}, {"study": "x", "n_layer": 4}).n_layer == 4
    with pytest.raises(params.ParameterError, match="n_layer = 0"):
        params.resolve("00_baseline", {}, {"study": "x", "n_layer": 0})
    with pytest.raises(AttributeError, match="no parameter 'n_layers'"):
        p.n_layers


def test_an_unwritable_output_folder_fails_before_any_notebook_starts(tmp_path, monkeypatch, capsys):
    # a file where the results folder should be: no one can create the folder (root included)
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(blocker))
    monkeypatch.setenv("COMPSTUDY_RUNS_DIR", str(tmp_path / "runs"))
    t0 = time.perf_counter()
    assert runner.main(["run", str(SMOKE), "--no-progress"]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "the results folder" in err and "COMPSTUDY_RESULTS_DIR" in err and "before running anything" in err
    assert not list((tmp_path / "runs").glob("smoke/*.ipynb"))  # no notebook ran


def test_a_notebook_run_in_jupyter_runs_the_class_config_into_its_own_study(monkeypatch):
    """Issue 13: Run All in Jupyter (no runner: `shared` empty, study the placeholder) uses
    configs/class.yaml's study name and shared values; the notebook's own values are its
    parameters cell's (issue 25: a value written there always wins, even the schema's default)."""
    import yaml

    monkeypatch.delenv("COMPSTUDY_CONFIG", raising=False)
    cell = params.defaults("03_pruning")  # the parameters cell as committed: the schema's defaults
    scope = {"study": "interactive", **{k: cell[k] for k in params.own_names("03_pruning")}}
    klass = yaml.safe_load((paths.repo_root() / "configs" / "class.yaml").read_text())
    entry = next(e["parameters"] for e in klass["notebooks"] if "03_pruning" in e["path"])
    p = params.resolve("03_pruning", {}, scope)
    assert p.study == klass["study"] == "class"
    assert p.train_tokens == klass["parameters"]["train_tokens"] and p.sparsities == cell["sparsities"] != entry["sparsities"]
    edited = params.resolve("03_pruning", {}, {**scope, "sparsities": [0.3]})
    assert edited.sparsities == [0.3] and edited.train_tokens == klass["parameters"]["train_tokens"]
    monkeypatch.setenv("COMPSTUDY_CONFIG", str(paths.repo_root() / "configs" / "smoke.yaml"))
    assert params.resolve("03_pruning", {}, scope).study == "smoke"
    monkeypatch.setenv("COMPSTUDY_CONFIG", str(paths.repo_root() / "configs" / "llama.yaml"))  # extends default.yaml
    llama = params.resolve("03_pruning", {}, scope)
    assert llama.family == "llama" and llama.train_tokens == params.defaults()["train_tokens"]
    monkeypatch.setenv("COMPSTUDY_CONFIG", "/nonexistent.yaml")
    with pytest.raises(params.ParameterError, match="COMPSTUDY_CONFIG"):
        params.resolve("03_pruning", {}, scope)


def test_in_jupyter_a_value_written_back_to_its_default_is_the_one_used(monkeypatch):
    """Issue 25's defect: with the class config, 01's cell showed five variants (the default) but the
    notebook ran three (class.yaml's), because a cell value equal to the schema default was taken
    for an unedited one. The cell's value is what runs."""
    monkeypatch.delenv("COMPSTUDY_CONFIG", raising=False)
    cell = {"study": "interactive", "variants": ["8b", "4b", "4bfp4", "bf16", "dq8"]}
    assert params.resolve("01_quantization", {}, cell).variants == cell["variants"]
