import math
import time
import types

import pandas as pd

import pytest
import torch

from compstudy import energy, measure, noise, paths, ranking
from compstudy.models import ModelShape, build_model


@pytest.mark.parametrize("n,context,stride", [(10, 4, 2), (100, 16, 16), (101, 16, 5), (7, 16, 8), (33, 8, 1), (40, 8, 8), (41, 8, 20)])
def test_windows_score_every_token_but_the_first_once(n, context, stride):
    scored = []
    for begin, end, n_targets in measure.windows(n, context, stride):
        assert end - begin <= context and n_targets <= end - begin - 1  # each target has context
        assert end - n_targets - begin >= min(context - stride, context - 1) or begin == 0
        scored += list(range(end - n_targets, end))
    assert sorted(scored) == list(range(1, n))


def _direct_nll(model, ids, context, stride):
    """Token by token: each target token t's NLL given the window that scores it."""
    total, count = 0.0, 0
    for begin, end, n_targets in measure.windows(len(ids), context, stride):
        logp = torch.log_softmax(model(input_ids=ids[begin:end][None]).logits[0].double(), -1)
        for t in range(end - n_targets, end):
            total -= float(logp[t - begin - 1, ids[t]])
            count += 1
    return total, count


@pytest.fixture(scope="module")
def small_model():
    return build_model(ModelShape("gpt2", 2, 2, 32, 64), vocab_size=50, seed=1).eval()


@pytest.mark.parametrize("context,stride,batch", [(16, 8, 1), (16, 8, 3), (16, 16, 4), (64, 64, 1)])
def test_sliding_window_nll_matches_direct_computation(small_model, context, stride, batch):
    ids = torch.randint(0, 50, (57,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, n_want = _direct_nll(small_model, ids, context, stride)
    got, n_got = measure.sliding_window_nll(small_model, ids, context, stride, batch)
    assert n_got == n_want == len(ids) - 1
    assert got == pytest.approx(want, rel=1e-5)


def test_whole_text_in_one_window_equals_the_model_loss(small_model):
    ids = torch.randint(0, 50, (40,), generator=torch.Generator().manual_seed(2))
    got, n = measure.sliding_window_nll(small_model, ids, 64, 32)
    with torch.no_grad():
        loss = small_model(input_ids=ids[None], labels=ids[None]).loss
    assert got / n == pytest.approx(float(loss), rel=1e-5)


def test_eval_config_validation():
    for bad, match in [(dict(eval_stride=0), "eval_stride"), (dict(eval_context=8, eval_stride=9), "eval_stride"),
                       (dict(eval_batch_size=0), "eval_batch_size"), (dict(repeats=0), "repeats"),
                       (dict(device="tpu"), "device"), (dict(eval_context=1), "eval_context"),
                       (dict(repeats=True), "a boolean is not a number")]:
        with pytest.raises(ValueError, match=match):
            measure.EvalConfig(**bad)


def test_evaluate_records(tiny_baseline):
    cfg = measure.EvalConfig(eval_max_tokens=1000, repeats=2, eval_batch_size=4, device="cpu")
    records = measure.evaluate(tiny_baseline.model, tiny_baseline.tokenizer, ["wikitext-2:test"], cfg,
                               variant="Base", study="t")
    records = [r for r in records if not r.get("set_aside")]  # a round disturbed by another process is timed again
    assert len(records) == 2 and [r["repeat"] for r in records] == [0, 1]
    r = records[0]
    assert r["tokens_scored"] == 999
    assert r["bits_per_byte"] == pytest.approx(r["nll_nats"] * r["tokens_scored"] / math.log(2) / r["bytes_evaluated"])
    assert r["perplexity"] == pytest.approx(math.exp(r["nll_nats"]))
    assert records[1]["perplexity"] == pytest.approx(r["perplexity"], rel=1e-6)  # deterministic
    assert r["runtime_s"] > 0 and r["energy_kwh"] > 0
    assert r["energy_method"] in ("measured", "partly measured", "estimated")
    assert r["n_params"] == sum(p.numel() for p in tiny_baseline.model.parameters())
    # fp32 safetensors: 4 bytes per parameter plus a small header
    assert 4 * r["n_params"] <= r["weight_bytes"] < 4 * r["n_params"] + 50_000
    from compstudy.results import COLUMNS
    assert set(r) <= set(COLUMNS)


def test_energy_note_says_estimated_when_estimated():
    note = energy.energy_note([{"energy_method": "estimated", "energy_detail": "cpu: estimated (TDP)"}])
    assert "ESTIMATED" in note and "function of runtime" in note
    assert "measured by hardware" in energy.energy_note([{"energy_method": "measured", "energy_detail": "gpu: NVML"}])


def test_bad_dataset_fails_before_model_work(tiny_baseline):
    with pytest.raises(ValueError, match="unknown corpus"):
        measure.evaluate(tiny_baseline.model, tiny_baseline.tokenizer, ["wikitext-2:test", "nope:test"],
                         measure.EvalConfig(), variant="x", study="t")


class _DriftingModel(torch.nn.Module):
    """A fake causal LM whose forward pass sleeps `cost` seconds times a slowdown that grows with
    the wall time since `clock[0]` by `clock[1]` per second: the machine drifts, the model's
    relative speed does not."""

    def __init__(self, cost: float, clock: list, vocab: int = 512):
        super().__init__()
        self.cost, self.clock, self.vocab = cost, clock, vocab
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = types.SimpleNamespace(model_type="fake", n_positions=64)

    def forward(self, input_ids):
        now = time.perf_counter()
        until = now + self.cost * (1 + self.clock[1] * (now - self.clock[0]))
        while time.perf_counter() < until:  # a busy wait: exact where sleep overshoots by milliseconds
            pass
        return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


class _VirtualMachine:
    """A machine whose clock advances only while a fake model works, and which slows down by
    `drift` per (virtual) second: timings through it do not depend on the real machine's load."""

    def __init__(self, drift: float = 0.0):
        self.now, self.drift = 0.0, drift

    def perf_counter(self) -> float:
        return self.now

    def work(self, cost: float) -> None:
        self.now += cost * (1 + self.drift * self.now)


class _VirtualModel(_DriftingModel):
    """A fake causal LM whose forward pass costs `cost` virtual seconds on `machine`."""

    def __init__(self, cost: float, machine: _VirtualMachine):
        super().__init__(cost, [0.0, 0.0])
        self.machine = machine

    def forward(self, input_ids):
        self.machine.work(self.cost)
        return types.SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_interleaved_rounds_give_the_right_ratio_where_sequential_timing_does_not(tiny_baseline, monkeypatch):
    machine = _VirtualMachine()
    monkeypatch.setattr(energy, "time", machine)  # the meter's timer reads the virtual clock
    # and the CPU counters a quiet virtual machine's: the real machine's other processes, read over a virtual
    # pass of milliseconds, would otherwise set rounds aside (the order asserted below) when the host is busy
    monkeypatch.setattr(measure, "_cpu_times", lambda: (machine.now, 0.0, machine.now))
    base, half = _VirtualModel(0.04, machine), _VirtualModel(0.02, machine)
    tok = tiny_baseline.tokenizer
    # 2 windows (2 forward passes) per pass, 6 rounds: an even count, so each variant goes first equally often
    # the two fakes compute alike but for a Python attribute (their cost): no shared timing here
    cfg = measure.EvalConfig(eval_context=64, eval_stride=63, eval_batch_size=1, eval_max_tokens=127, repeats=6, device="cpu",
                             share_timing=False)
    size = {"n_params": 1, "n_params_nonzero": 0, "weight_bytes": 4}
    models, sizes = {"Base": (base, tok), "Half": (half, tok)}, {"Base": size, "Half": size}

    def t_c(rows):
        return ranking.ranking(pd.DataFrame(rows), n_boot=200).set_index("variant").loc["Half", "T_c"]

    # the true ratio on a steady machine
    truth = t_c(measure.evaluate_many(models, ["wikitext-2:test"], cfg, study="t", sizes=sizes))
    assert truth == pytest.approx(0.5)
    # the machine slows down by 100 % per second: interleaved rounds (Base, Half; Half, Base; ...) still see it
    machine.now, machine.drift = 0.0, 1.0
    rows = measure.evaluate_many(models, ["wikitext-2:test"], cfg, study="t", sizes=sizes)
    assert [r["variant"] for r in rows] == ["Base", "Half", "Half", "Base"] * 3
    assert t_c(rows) == pytest.approx(truth, abs=0.03)
    # sequential timing on the same drifting machine: every Base pass first, then every Half pass
    machine.now = 0.0
    seq = (measure.evaluate(base, tok, ["wikitext-2:test"], cfg, variant="Base", study="t", size=size) +
           measure.evaluate(half, tok, ["wikitext-2:test"], cfg, variant="Half", study="t", size=size))
    assert t_c(seq) > truth + 0.08  # the drift is read as a slowdown of the variant


def test_every_pass_records_its_noise_signals_and_its_run(tiny_baseline, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RUN_ID", "run-a")
    monkeypatch.setenv("COMPSTUDY_PARAMS_HASH", "abc")
    cfg = measure.EvalConfig(eval_context=None, eval_stride=None, eval_max_tokens=300, repeats=2, eval_batch_size=4,
                             device="cpu")
    from compstudy import experiments, results

    pure = measure.evaluate(tiny_baseline.model, tiny_baseline.tokenizer, ["wikitext-2:test"], cfg, variant="B", study="t")
    assert "run_id" not in pure[0] and not (paths.results_dir("t") / "measurements.csv").exists()  # measure stores nothing
    rows = experiments.measure_variants({"Base": tiny_baseline}, "t", ["wikitext-2:test"], cfg, per_round=True)
    rows = rows.to_dict("records")
    assert len(results.load("t")) == len(rows)  # the storage layer wrote them, stamped with the run
    for r in rows:
        assert r["run_id"] == "run-a" and r["params_hash"] == "abc" and r["protocol"] == "interleaved x1"
        assert r["cpu_s"] > 0 and r["others_cpu_s"] >= 0 and r["steal_s"] >= 0 and 0 <= r["interference"]
        assert r["stride"] == min(r["context"] // 2, r["context"] - 1)


def test_a_nan_measurement_is_an_error_not_a_row(tiny_baseline):
    clock = [time.perf_counter(), 0.0]

    class NaNModel(_DriftingModel):
        def forward(self, input_ids):
            return types.SimpleNamespace(logits=torch.full((*input_ids.shape, self.vocab), float("nan")))

    cfg = measure.EvalConfig(eval_context=64, eval_stride=None, eval_max_tokens=200, repeats=1, device="cpu")
    with pytest.raises(ValueError, match=r"non-finite perplexity for \['Broken'\]"):
        measure.evaluate(NaNModel(0.0, clock), tiny_baseline.tokenizer, ["wikitext-2:test"], cfg, variant="Broken",
                         study="t", size={"n_params": 1, "n_params_nonzero": 0, "weight_bytes": 4})


@pytest.mark.slow
def test_a_loaded_machine_is_detected_and_its_ratios_flagged(tiny_baseline):
    """Another busy process during the measurement: every pass records the share of the measured CPUs
    it took (`interference`), and `noise.timing_noise` marks the condition unreliable."""
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        cfg = measure.EvalConfig(eval_max_tokens=2000, repeats=3, eval_batch_size=4, device="cpu")
        art = tiny_baseline
        rows = measure.evaluate_many({"Base": (art.model, art.tokenizer), "Copy": (art.model, art.tokenizer)},
                                     ["wikitext-2:test"], cfg, study="t")
    finally:
        hog.kill()
        hog.wait()
    df = pd.DataFrame(rows)
    assert df["others_cpu_s"].median() > 0 and df["interference"].median() > 0.15
    timing = noise.timing_noise(df).iloc[0]
    assert not timing["reliable"] and "other processes took" in timing["reason"]
    assert not ranking.ranking(df, n_boot=100).set_index("variant").loc["Copy", "ranked"]


def test_a_pinned_process_counts_only_the_time_taken_on_its_own_cpus(monkeypatch):
    """A process pinned to some CPUs (taskset, a cpuset, a batch allocation, the test suite's
    workers) is not disturbed by work elsewhere: `_cpu_times` sums the busy and steal seconds of the
    CPUs it may run on only (`measured_cpus`); the machine's total where it is not pinned."""
    import os

    import psutil

    def cpu(busy, steal):
        return types.SimpleNamespace(user=busy, nice=0.0, system=0.0, irq=0.0, softirq=0.0, steal=steal)

    per_cpu = [cpu(100.0, 1.0), cpu(7.0, 0.5), cpu(1000.0, 9.0)]
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu=False: per_cpu if percpu else cpu(1107.0, 10.5))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    assert measure.measured_cpus() == [1] and measure._cpu_times()[:2] == (7.0, 0.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})
    assert measure._cpu_times()[:2] == (1100.0, 10.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert measure._cpu_times()[:2] == (1107.0, 10.5)


@pytest.mark.slow
def test_variants_with_the_same_computation_share_timed_passes_and_keep_their_own_perplexity(tiny_baseline):
    import copy

    from compstudy import models as models_mod, quantize
    from torch.nn.utils import prune as torch_prune

    base = tiny_baseline.model
    tuned = copy.deepcopy(base)  # a fine-tuned copy: other weights, the same computation
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    masked = copy.deepcopy(base)  # a mask applied in a forward pre-hook: another computation
    torch_prune.l1_unstructured(masked.transformer.h[0].mlp.c_fc, "weight", amount=0.5)
    removed = copy.deepcopy(base)  # the mask made permanent: dense zeros, Base's computation again
    torch_prune.l1_unstructured(removed.transformer.h[0].mlp.c_fc, "weight", amount=0.5)
    torch_prune.remove(removed.transformer.h[0].mlp.c_fc, "weight")
    quantized = {m: models_mod.compute_signature(quantize.quantize_in_memory(copy.deepcopy(base), quantize.QuantConfig(m)))
                 for m in ("dynamic-int8", "nf4", "fp4")}
    sig = models_mod.compute_signature
    assert sig(tuned) == sig(base) == sig(removed)
    assert sig(masked) != sig(base)
    assert len({sig(base), *quantized.values()}) == 4  # each quantization type is its own computation
    tok = tiny_baseline.tokenizer
    cfg = measure.EvalConfig(eval_max_tokens=300, repeats=2, eval_batch_size=4, device="cpu", max_retries=0)
    rows = pd.DataFrame(measure.evaluate_many({"Base": (base, tok), "Tuned": (tuned, tok), "Masked": (masked, tok)},
                                              ["wikitext-2:test"], cfg, study="t"))
    by = rows.set_index(["variant", "repeat"])
    assert (rows.loc[rows.variant == "Tuned", "timed_as"] == "Base").all()
    assert (rows.loc[rows.variant == "Masked", "timed_as"] == "Masked").all()
    for r in range(2):  # the sharer's runtime is the Base pass of the same round; its perplexity is its own
        assert by.loc[("Tuned", r), "runtime_s"] == by.loc[("Base", r), "runtime_s"]
        assert by.loc[("Tuned", r), "perplexity"] != by.loc[("Base", r), "perplexity"]
    assert rows["protocol"].eq("interleaved x2").all()
    alone = measure.evaluate(tuned, tok, ["wikitext-2:test"], cfg, variant="Tuned", study="t")
    assert alone[0]["perplexity"] == pytest.approx(by.loc[("Tuned", 0), "perplexity"], rel=1e-6)
    t = ranking.ranking(rows, n_boot=200).set_index("variant")
    assert t.loc["Tuned", "T_c"] == 1.0 and t.loc["Tuned", "T_c_lo"] == t.loc["Tuned", "T_c_hi"] == 1.0
    assert measure.shared_timing({"A": 1, "B": 2, "C": 1}) == {"A": "A", "B": "B", "C": "A"}
