"""Issue 27: the probe kept. Each case the issue found (a careless or unlucky user's input) gives a
clear error before any notebook starts, or a correct result; no case loses or mixes rows.
`benchmarks/probe.py` runs the runner-level cases from the command line and records their seconds."""
import errno
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from compstudy import baseline, cache, checks, data, experiments, measure, models, paper, params, paths, runner, runs, step
from compstudy.configs import ConfigError, read_config

import model_cases

SMOKE = paths.repo_root() / "configs" / "smoke.yaml"


def _run(capsys, *argv):
    """`python -m compstudy ...` in-process: (exit code, stderr + stdout)."""
    code = runner.main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.err + out.out


def _no_notebook_ran(study: str) -> bool:
    return not list(paths.runs_dir(study).rglob("*.ipynb")) if paths.runs_dir(study).exists() else True


# ---- silently wrong -----------------------------------------------------------------------------

def test_a_changed_model_in_the_same_folder_is_measured_anew(tmp_path):
    folder = model_cases.save("gpt2", tmp_path / "mine")
    first = baseline.get_baseline(baseline.BaselineConfig(model=str(folder), device="cpu"), progress=False)
    model_cases.build("gpt2", seed=1).save_pretrained(folder)  # the user fine-tunes and saves again
    second = baseline.get_baseline(baseline.BaselineConfig(model=str(folder), device="cpu"), progress=False)
    assert first.key != second.key
    ids = model_cases.batches(1)[0]
    with torch.no_grad():
        assert not torch.equal(first.model(input_ids=ids).logits, second.model(input_ids=ids).logits)
    (folder / "notes.txt").write_text("a new file")  # any new file: a new key
    assert cache.source_fingerprint(folder) != cache.source_fingerprint(folder) | {"files_sha256": {}}
    assert "notes.txt" in cache.source_fingerprint(folder)["files_sha256"]


def _registry(study, statuses: dict[str, dict], hashes=None):
    """Runs of `study` with the given notebook statuses; returns their ids, oldest first."""
    ids = []
    for i, (name, status) in enumerate(statuses.items()):
        record = runs.start(study, {nb: {"n": (hashes or {}).get(name, 0)} for nb in status},
                            notebooks=list(status))
        for nb, s in status.items():
            runs.mark(study, record["run_id"], nb, s)
        ids.append(record["run_id"])
    os.environ.pop(runs.RUN_ENV, None)
    return ids


def test_a_killed_run_is_never_ranked_silently(monkeypatch):
    """A run killed in 01 ('running' forever): 05 alone ranks the latest *complete* run, the paper of
    the killed run is refused, and selecting it says INCOMPLETE."""
    monkeypatch.delenv(runs.RUN_ENV, raising=False)
    complete, killed = _registry("killed", {
        "a": {"00_baseline.ipynb": "done", "01_quantization.ipynb": "done", "05_comparison.ipynb": "pending"},
        "b": {"00_baseline.ipynb": "done", "01_quantization.ipynb": "running", "05_comparison.ipynb": "pending"}})
    assert runs.latest_complete("killed")["run_id"] == complete
    rows = pd.DataFrame([{"run_id": r, "timestamp": t, "notebook": "01_quantization", "variant": "Base",
                          "dataset": "d", "batch_size": 8, "tokens_scored": 1, "repeat": 0}
                         for r, t in ((complete, "1"), (killed, "2"))])
    assert runs.select_run(rows, None, "killed")[1] == complete
    assert "INCOMPLETE" in runs.select_run(rows[rows["run_id"] == killed], None, "killed")[2]
    with pytest.raises(paper.PaperError, match="incomplete"):
        paper.resolve_run("killed", killed)
    assert "RESULTS ARE MISSING" in runs.completeness("killed", killed, rows) and "was interrupted" in \
        runs.completeness("killed", killed, rows)


def test_05_alone_reads_the_complete_run_with_its_own_parameters(monkeypatch, capsys):
    """After a rerun with `-p repeats 3`, `--only 05` with the original parameters ranks the run made
    with them, and says which run it reads."""
    monkeypatch.delenv(runs.RUN_ENV, raising=False)
    study = runner.load_study(SMOKE, {"study": "rerun"}, only=["05"])
    parameters = study.all_parameters
    original = runs.start("rerun", parameters, notebooks=list(parameters))
    changed = runs.start("rerun", {**parameters, "00_baseline.ipynb": {**parameters["00_baseline.ipynb"], "x": 3}},
                         notebooks=list(parameters))
    for record in (original, changed):
        for nb in parameters:
            runs.mark("rerun", record["run_id"], nb, "done")
    chosen = runner._choose_run(study, [r.path.name for r in study.notebooks], None)
    assert chosen["run_id"] == original["run_id"] and os.environ[runs.RUN_ENV] == original["run_id"]
    assert "with this config's parameters" in capsys.readouterr().out
    assert runs.find("rerun", changed["run_id"])["params_hash"] != chosen["params_hash"]


def test_two_folder_corpora_of_one_name_are_refused_before_any_notebook(tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent / "mine").mkdir(parents=True)
        (tmp_path / parent / "mine" / "test.txt").write_text(f"text of {parent} " * 200)
    study = runner.load_study(SMOKE, {"study": "collide", "eval_datasets": [f"{tmp_path}/a/mine:test",
                                                                            f"{tmp_path}/b/mine:test"]})
    with pytest.raises(ConfigError, match="would all be labelled 'mine:test'"):
        runner.check_corpora(study)


def test_a_changed_fact_in_a_cached_recipe_is_detected(capsys):
    folder = step.cached_folder("probe", {"n": 1}, lambda meter: step.Built(files={"a.txt": lambda p: p.write_text("a")}))
    key = folder.name
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["size"] = {"weight_bytes": 997928}  # one digit changed by hand: a fact no file checksum covers
    (folder / "recipe.json").write_text(json.dumps(recipe))
    assert not cache.exists(key)
    assert "recipe.json" in capsys.readouterr().out


def _tiny_model_and_tokenizer(tmp_path):
    folder = model_cases.save("gpt2", tmp_path / "m")
    return models.load_model(folder), data.load_tokenizer(folder)


def test_an_evaluation_shorter_than_asked_says_so_in_the_output_and_the_rows(tmp_path, capsys):
    corpus = tmp_path / "short"
    corpus.mkdir()
    (corpus / "test.txt").write_text("A short held-out text, scored whole. " * 12)
    model, tok = _tiny_model_and_tokenizer(tmp_path)
    rows = measure.evaluate(model, tok, f"{corpus}:test", measure.EvalConfig(eval_max_tokens=2048, repeats=1,
                                                                            eval_context=64, eval_stride=None,
                                                                            device="cpu"),
                            variant="Base", study="short")
    assert rows[0]["eval_max_tokens"] == 2048 and rows[0]["tokens_scored"] < 2048
    assert "fewer than the 2,048 asked" in capsys.readouterr().out
    assert rows[0]["split_rule"] == "file test.txt"


def test_booleans_are_not_numbers_and_yaml_keys_are_not_repeated(tmp_path, capsys):
    with pytest.raises(params.ParameterError, match="repeats = True: a boolean is not a number"):
        params.check("00_baseline", {"repeats": True})
    code, text = _run(capsys, "run", SMOKE, "-p", "repeats", "true")
    assert code == 2 and "a boolean is not a number" in text
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("study: dup\nparameters:\n  repeats: 2\n  n_layer: 3\n  repeats: 4\nnotebooks: []\n")
    with pytest.raises(ConfigError, match="key 'repeats' appears twice in one mapping: lines 3 and 5"):
        read_config(cfg)


def test_a_folder_corpus_never_tests_on_its_training_text(tmp_path):
    novel = tmp_path / "novel"
    novel.mkdir()
    (novel / "train.txt").write_text("".join(f"Chapter {i}. " + "word " * (i % 7 + 3) + "\n" for i in range(3000)))
    train, test = data.load_text(f"{novel}:train"), data.load_text(f"{novel}:test")
    assert test and train and test not in train and not set(test.splitlines()[1:-1]) & set(train.splitlines())
    tok = data.train_bpe_tokenizer(train, 300)
    train_ids = data.encode(tok, train).tolist()
    test_ids = data.encode(tok, test)
    windows = {tuple(test_ids[b:e].tolist()) for b, e, _ in measure.windows(len(test_ids), 64, 63)}
    text_train = " ".join(map(str, train_ids))
    assert not any(" ".join(map(str, w)) in text_train for w in windows if len(w) == 64)
    assert data.split_rule(f"{novel}:test") == "last 10 % of every .txt but the held-out files"
    (novel / "test.txt").write_text("A held-out chapter. " * 50)  # a named held-out file is used as it is
    assert data.load_text(f"{novel}:test").startswith("A held-out chapter.")
    assert data.load_text(f"{novel}:train") == (novel / "train.txt").read_text()


@pytest.mark.slow
def test_fine_tuned_sweep_rows_record_their_training_and_control(tiny_baseline):
    from compstudy import prune

    cfg = prune.PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32)
    sweep_study = "sweep-rows"
    experiments.sparsity_sweep(tiny_baseline, [0.5], ["layer"], 512, ["wikitext-2:valid"], study=sweep_study,
                         datasets=["wikitext-2:test"], eval_config=measure.EvalConfig(eval_max_tokens=256, repeats=1,
                                                                                      device="cpu"),
                         base_config=cfg)
    rows = pd.read_csv(paths.results_dir(sweep_study) / "measurements.csv")
    tuned = rows[rows["variant"] == "Mag50+ft"]
    assert (tuned["training_tokens"] == 512).all() and (tuned["control"] == "Mag0+ft").all()
    assert (rows.loc[rows["variant"] == "Mag50", "training_tokens"] == 0).all()


@pytest.mark.parametrize("case", ["gpt2", "llama"])
def test_tied_weights_are_counted_once_for_dynamic_int8(case, tmp_path):
    from compstudy import quantize

    folder = model_cases.save(case, tmp_path / case)
    base = models.count_parameters(models.load_model(folder))[0]
    dq8 = quantize.quantize_model(folder, quantize.QuantConfig("dynamic-int8"))
    assert models.count_parameters(dq8)[0] == base


# ---- lost ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eight_processes_register_eight_runs_at_once(tmp_path, monkeypatch):
    import time

    env = {**os.environ, "COMPSTUDY_RESULTS_DIR": str(tmp_path)}
    env.pop(runs.RUN_ENV, None)
    start_at = f"{time.time() + 5:.3f}"  # every process registers at this instant
    code = ("import time, sys; from compstudy import runs; t = float(sys.argv[1]);\n"
            "time.sleep(max(0, t - time.time())); runs.start('race', {'00.ipynb': {'p': int(sys.argv[2])}})")
    procs = [subprocess.Popen([sys.executable, "-c", code, start_at, str(i)], env=env) for i in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    assert len({r["run_id"] for r in runs.registered("race")}) == 8


def test_a_second_start_of_a_running_study_is_refused():
    with runner.study_lock("locked"):
        with pytest.raises(ConfigError, match="is being run right now \\(process"):
            with runner.study_lock("locked"):
                pass
    with runner.study_lock("locked"):  # released: free again
        pass


# ---- late or unclear: each is an error before any notebook -----------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="the case is a machine without CUDA")
def test_cuda_on_a_machine_without_it_fails_before_any_notebook(capsys):
    code, text = _run(capsys, "run", SMOKE, "-p", "device", "cuda", "-p", "study", "nocuda")
    assert code == 2 and "device = 'cuda': this machine has no CUDA GPU" in text and _no_notebook_ran("nocuda")


def test_a_model_folder_that_does_not_exist_fails_before_any_notebook(capsys, tmp_path):
    code, text = _run(capsys, "run", SMOKE, "-p", "model", tmp_path / "nonexistent", "-p", "study", "nomodel")
    assert code == 2 and "the folder does not exist" in text and _no_notebook_ran("nomodel")


def test_a_vocabulary_the_library_cannot_build_is_refused_by_the_schema(capsys):
    code, text = _run(capsys, "run", SMOKE, "-p", "vocab_size", "258")
    assert code == 2 and "vocab_size = 258" in text and "260" in text


@pytest.mark.slow
def test_too_little_text_fails_before_any_notebook(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "test.txt").write_text("x")
    code, text = _run(capsys, "run", SMOKE, "-p", "eval_datasets", f"['{tiny}:test']", "-p", "study", "tinyeval")
    assert code == 2 and "at least 128 are needed" in text and _no_notebook_ran("tinyeval")
    small = tmp_path / "small"
    small.mkdir()
    (small / "train.txt").write_text("forty bytes of training text, no more.\n")
    code, text = _run(capsys, "run", SMOKE, "-p", "train_corpora", f"['{small}:train']", "-p", "study", "tinytrain")
    assert code == 2 and "give more text" in text and _no_notebook_ran("tinytrain")


def test_a_pickle_only_or_custom_code_checkpoint_fails_before_any_notebook(tmp_path, capsys):
    folder = model_cases.save("gpt2", tmp_path / "pickle")
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({}, folder / "pytorch_model.bin")
    code, text = _run(capsys, "run", SMOKE, "-p", "model", folder, "-p", "study", "pickle")
    assert code == 2 and "only pytorch_model.bin: pickle files" in text and _no_notebook_ran("pickle")
    folder = model_cases.save("gpt2", tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    code, text = _run(capsys, "run", SMOKE, "-p", "model", folder, "-p", "study", "custom")
    assert code == 2 and "asks for custom code" in text and _no_notebook_ran("custom")


def test_a_family_without_adapter_names_what_still_runs(tmp_path):
    folder = model_cases.save("gpt2", tmp_path / "bloomish")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bloom"}))
    with pytest.raises(checks.CheckError, match="'bloom'.*quantization.*--only 00 --only 01 --only 05"):
        checks.check_model(str(folder), ["00_baseline.ipynb", "03_pruning.ipynb"], offline=True)
    assert checks.check_model(str(folder), ["00_baseline.ipynb", "01_quantization.ipynb"], offline=True) == "bloom"


@pytest.mark.slow
def test_a_typo_in_base_variant_fails_before_any_notebook(capsys):
    code, text = _run(capsys, "run", SMOKE, "-p", "base_variant", "NoSuch", "-p", "study", "typo")
    assert code == 2 and "base_variant = 'NoSuch'" in text and _no_notebook_ran("typo")


def test_generation_prompts_come_from_the_studys_own_evaluation_text(tmp_path):
    corpus = tmp_path / "prompts"
    corpus.mkdir()
    (corpus / "test.txt").write_text("Prompts from the user's own text. " * 40)
    model, tok = _tiny_model_and_tokenizer(tmp_path)
    rows = experiments.time_generation(model, tok, "Base", "gen", new_tokens=4, prompt_tokens=8, repeats=1,
                                   prompt_spec=f"{corpus}:test", device="cpu")
    assert rows[0]["prompt_corpus"] == "prompts:test"
    assert "prompt_corpus" in pd.read_csv(paths.results_dir("gen") / "generation.csv").columns


def test_cli_commands_give_messages_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "shared" / "wikitext-2"
    bad.mkdir(parents=True)
    (bad / "valid.txt").write_text("not wikitext")
    target = tmp_path / "data"
    os.environ["COMPSTUDY_DATA_DIR"], saved = str(target), os.environ.get("COMPSTUDY_DATA_DIR")
    try:
        code, text = _run(capsys, "data", "--from", tmp_path / "shared")
    finally:
        if saved is None:
            os.environ.pop("COMPSTUDY_DATA_DIR")
        else:
            os.environ["COMPSTUDY_DATA_DIR"] = saved
    assert code == 2 and str(bad / "valid.txt") in text and ".valid.txt-" not in text and "Traceback" not in text
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    code, text = _run(capsys, "compare", foreign, foreign)
    assert code == 2 and "neither a ranking" in text and "KeyError" not in text
    code, text = _run(capsys, "params", "99_nosuch")
    assert code == 2 and "neither one of the study's notebooks" in text


@pytest.mark.slow
def test_a_silent_mirror_spends_at_most_the_download_budget(monkeypatch, tmp_path):
    """Three missing files behind a mirror that never answers: the first download gets the budget,
    the others fail at once (the probe benchmark times it for real: `benchmarks/probe.py`)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections, never answers
    monkeypatch.setenv("COMPSTUDY_CORPUS_MIRROR", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("COMPSTUDY_OFFLINE", raising=False)
    tries = []
    with data.download_budget(1.0):
        for source in data.SOURCES.values():
            if source.sha256 is None:
                continue
            try:
                data.ensure_file(source, tmp_path)
            except data.CorpusUnavailable as exc:
                tries.append(str(exc))
    server.close()
    assert len(tries) == 3 and any("allowed for downloads are spent" in t for t in tries[1:])


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")])
def test_a_full_disk_says_no_space_left_on_the_folder(error):
    def write(path):  # what torch.save or safetensors raise when the artifact disk fills up mid-write
        raise error

    with pytest.raises(cache.DiskFull, match=f"no space left on {paths.artifacts_dir()}"):
        step.cached_folder("full", {"n": str(error)}, lambda meter: step.Built(files={"w.bin": write}))
    assert not list(paths.artifacts_dir().glob("full-*")) and not list(paths.artifacts_dir().glob(".full-*"))
