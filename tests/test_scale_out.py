"""Issue 30: plan every artifact of a study, build them in parallel (Ray, submitit), publish them
safely, and let the notebooks only measure.

The smoke study's first notebooks are planned and built into empty artifact folders: on a local
Ray cluster (2 workers, a worker killed mid-build on its first artifact), with submitit's local
executor, and by two `build` processes at once. Every artifact an executor builds has the same
weights, file for file, as the one the session's sequential smoke study built (`smoke_study`, the
same thread count); `compstudy run` then builds nothing and measures what the sequential run
measured."""
import json
import os
import subprocess
import sys

from pathlib import Path

import pandas as pd
import pytest
import torch

from compstudy import cache, executors, paths, plan, results, runner

SMOKE = paths.repo_root() / "configs" / "smoke.yaml"
FIRST = ["00_baseline", "01_quantization"]


def _study(only=FIRST):
    return runner.load_study(SMOKE, only=only)


def _entries(folder):
    """The artifacts in a cache folder: every entry but the hidden ones (claims, temporary and corrupt folders)."""
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else set()


def _weights(folder, key):
    """The checksums of an artifact's weights and tokenizer files (its histories and timings differ by nature)."""
    recipe = json.loads((folder / key / "recipe.json").read_text())
    return {f: h for f, h in recipe["files_sha256"].items() if f.endswith((".safetensors", "tokenizer.json"))}


def _build_log(folder):
    path = folder / ".build-log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    folder = tmp_path / "artifacts"
    monkeypatch.setenv("COMPSTUDY_ARTIFACTS_DIR", str(folder))
    return folder


def test_list_scheduling_of_a_known_graph():
    nodes = [{"key": "a", "parents": [], "seconds": 4.0}, {"key": "b", "parents": ["a"], "seconds": 3.0},
             {"key": "c", "parents": ["a"], "seconds": 3.0}, {"key": "d", "parents": [], "seconds": 2.0},
             {"key": "e", "parents": ["b", "c"], "seconds": 1.0}]
    assert executors.list_schedule(nodes, 1) == pytest.approx(13.0)  # all the work
    assert executors.list_schedule(nodes, 2) == pytest.approx(8.0)   # the critical path a-b-e
    assert executors.list_schedule(nodes, 16) == pytest.approx(8.0)


@pytest.mark.slow
def test_plan_keys_everything_a_fresh_study_needs_before_building(empty_cache):
    graph = plan.plan(_study(["00_baseline", "01_quantization", "02_distillation", "03_pruning", "04_hybrid"]))
    counts = graph.to_json()["counts"]
    assert counts["cached"] == 0 and counts["artifacts"] >= 40
    kinds = {n.kind for n in graph.nodes.values()}
    assert {"tokenizer", "baseline", "distill", "prune-heads", "quant-4b", "quant-hqq4", "finetune"} <= kinds
    # the plateau check and the Minitron widths key on the built baseline: pending, never guessed
    assert {p.target for p in graph.pending} >= {"plateau", "Minitron width recipes"}
    first = graph.waves()[0]
    assert [n.kind for n in first] == ["tokenizer"]
    assert not _entries(empty_cache)  # planning built nothing


@pytest.mark.slow
def test_ray_builds_the_plan_a_killed_worker_leaves_no_half_artifact_and_run_then_builds_nothing(
        empty_cache, tmp_path, monkeypatch, smoke_study):
    ray = pytest.importorskip("ray")
    marker = tmp_path / "killed-once"
    env = executors._worker_env() | {"COMPSTUDY_TEST_KILL_ONCE": str(marker),
                                     "PYTHONPATH": os.pathsep.join([str(paths.repo_root() / "tests"),
                                                                    os.environ.get("PYTHONPATH", "")])}
    # 2 workers with as many threads as the sequential run had (OMP_NUM_THREADS, 1 unless set: tests/conftest.py):
    # a float sum's order depends on the thread count, so only builds with the same threads are bit-identical
    # (Base's perplexity 318.982043 with 1 thread, 318.982005 with 2); twice as many logical CPUs as threads
    threads = torch.get_num_threads()
    ray.init(num_cpus=2 * threads, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": "fault_hooks.kill_first_build"})
    try:
        report = executors.build(_study(), "ray", workers=2, threads=threads, ray_retries=2)
    finally:
        ray.shutdown()
    assert marker.exists()  # a worker was killed mid-build, its files written into its temporary folder ...
    temporary = os.path.basename(marker.read_text())
    killed_key = temporary[1:].rsplit("-", 1)[0]
    assert temporary.startswith(".") and temporary not in _entries(empty_cache)  # ... which is never an artifact
    assert cache.exists(killed_key)  # and the retry built that artifact whole
    graph = plan.plan(_study())
    assert graph.to_json()["counts"]["missing"] == 0 and not graph.pending  # the retry finished the graph
    built = _entries(empty_cache)
    assert built == set(graph.nodes) and all(cache.exists(k) for k in built)  # every artifact complete, verified
    assert len(report.waves) >= 2 and report.after["cached"] == len(built)
    log = _build_log(empty_cache)
    assert sorted(e["key"] for e in log) == sorted(built)  # each built once (the killed attempt never published)
    assert len({e["pid"] for e in log}) >= 2  # by more than one worker
    # the same weights, file for file, as the sequential smoke study's artifacts
    sequential_cache = Path(smoke_study["env"]["COMPSTUDY_ARTIFACTS_DIR"])
    assert {k: _weights(empty_cache, k) for k in built} == {k: _weights(sequential_cache, k) for k in built}
    # the notebooks now only measure: nothing new in the cache, the sequential run's perplexities (01's notebook,
    # which loads the baseline and a quantized variant from the cache; every artifact's weights are checked above)
    before = {k: (empty_cache / k / "recipe.json").stat().st_mtime for k in built}
    session_results = Path(smoke_study["env"]["COMPSTUDY_RESULTS_DIR"])  # the sequential smoke study wrote there
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COMPSTUDY_RUNS_DIR", str(tmp_path / "runs"))
    assert runner.main(["run", str(SMOKE), "--no-progress", "--only", "01_quantization", "-p", "variants", '["8b"]',
                        "-p", "bits_sweep", "[]"]) == 0
    assert _entries(empty_cache) == built
    assert {k: (empty_cache / k / "recipe.json").stat().st_mtime for k in built} == before
    assert len(_build_log(empty_cache)) == len(log)
    ours = results.load(str(tmp_path / "results" / "smoke" / "measurements.csv"))
    sequential = results.load(str(session_results / "smoke" / "measurements.csv"))
    assert sequential["run_id"].nunique() == 1  # the session's complete smoke run, as it was (its reruns write copies)
    key = ["notebook", "variant", "dataset"]
    a = ours[ours["notebook"] == "01_quantization"].groupby(key)["perplexity"].median()
    b = sequential.groupby(key)["perplexity"].median().reindex(a.index)
    assert len(a) == 4  # Base and Base8b on both datasets
    pd.testing.assert_series_equal(a, b, check_exact=True)


@pytest.mark.slow
def test_submitit_local_executor_builds_the_same_artifacts_as_a_local_build(empty_cache, tmp_path, smoke_study):
    pytest.importorskip("submitit")
    only = ["00_baseline"]  # the tokenizer, then the baseline, then its plateau check: three waves of jobs
    executors.build(_study(only), "slurm", threads=torch.get_num_threads(), slurm_parameters={"cluster": "local"},
                    slurm_folder=tmp_path / "submitit")
    graph = plan.plan(_study(only))
    assert graph.to_json()["counts"]["missing"] == 0 and not graph.pending
    assert _entries(empty_cache) == set(graph.nodes) and len(graph.nodes) >= 2
    assert {e["pid"] for e in _build_log(empty_cache)} - {os.getpid()}  # built in submitit's job processes
    # the same weights, file for file, as the session's sequential (local) build of the same keys
    by_submitit = {k: _weights(empty_cache, k) for k in graph.nodes}
    sequential_cache = Path(smoke_study["env"]["COMPSTUDY_ARTIFACTS_DIR"])
    assert by_submitit == {k: _weights(sequential_cache, k) for k in graph.nodes}
    assert sum(len(v) for v in by_submitit.values()) >= 2


@pytest.mark.slow
def test_two_build_processes_on_one_cache_build_each_artifact_once(empty_cache):
    # 00's three artifacts (the tokenizer, the baseline, its plateau check), all wanted by both processes at once
    cmd = [sys.executable, "-m", "compstudy", "build", str(SMOKE), "--only", "00_baseline"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd + ["--threads", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    log = _build_log(empty_cache)
    keys = [e["key"] for e in log]
    assert len(keys) == len(set(keys)) == len(_entries(empty_cache)) >= 3  # each artifact built once
    assert not list((empty_cache / ".claims").glob("*.claim"))  # every claim released


def test_a_stale_claim_is_taken_over_and_a_live_one_waited_for(empty_cache, monkeypatch):
    from compstudy import step

    folder = step.claims_dir()
    folder.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "k1.claim").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": 0}))
    with step.claim("k1") as mine:  # its process is gone: taken over at once
        assert mine and json.loads((folder / "k1.claim").read_text())["pid"] == os.getpid()
    assert not (folder / "k1.claim").exists()
    monkeypatch.setattr(step, "CLAIM_POLL_S", 0.05)
    (folder / "k2.claim").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getppid(), "since": 0}))
    (empty_cache / "k2").mkdir()  # the live holder finishes: the artifact appears
    monkeypatch.setattr(cache, "exists", lambda key: key == "k2")
    with step.claim("k2") as mine:
        assert mine is False  # built by the other: not built again


def test_rows_of_many_workers_land_in_one_table_and_a_torn_part_loses_only_its_last_row(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    code = ("import os, sys\nfrom compstudy import results\n"
            "for i in range(200):\n"
            "    results.append('w', [{'study': 'w', 'variant': os.environ['COMPSTUDY_WORKER'], 'repeat': i, "
            "'perplexity': 1.0, 'runtime_s': 0.1}])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "COMPSTUDY_WORKER": f"node{i}/gpu{i}"})
             for i in range(3)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    parts = sorted((tmp_path / "w" / "parts").glob("measurements.*.csv"))
    assert [p.name for p in parts] == [f"measurements.node{i}_gpu{i}.csv" for i in range(3)]
    table = results.load("w")
    assert len(table) == 600 and table.groupby("variant").size().tolist() == [200, 200, 200]
    with open(parts[1], "a") as fh:  # a worker killed in the middle of a row
        fh.write("w,,node1/gpu1,,,2")
    table = results.load("w")
    assert len(table) == 600
