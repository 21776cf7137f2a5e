"""Issue 11: the plateau check, the equal-training controls Base+ft<N>, and the findings table."""
import math

import pandas as pd
import pytest

from compstudy import baseline, controls, data, findings, pipeline, ranking, ratios, reference
from compstudy.distill import DistillConfig
from compstudy.finetune import Finetune, FinetuneConfig
from compstudy.pipeline import Pipeline, StepDefaults
from compstudy.prune import PruneConfig

CORPORA = ["tinyshakespeare:train"]
DEFAULTS = StepDefaults(distill=DistillConfig(tokens=3000, n_layer=1, batch_size=8, seq_len=32),
                        kd=DistillConfig(tokens=2000, batch_size=8, seq_len=32),
                        prune=PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32,
                                          finetune_tokens=1000),
                        finetune=FinetuneConfig(finetune_lr=5e-4, finetune_batch_size=8, finetune_seq_len=32))


# ---------------------------------------------------------------------------- plateau check

@pytest.mark.slow
def test_plateau_check_fails_on_an_undertrained_tiny_model():
    # 4,096 tokens is far from the plateau: the continuation must still improve held-out perplexity
    config = baseline.BaselineConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=300, train_tokens=4096,
                                     batch_size=8, seq_len=64, lr=2e-3, train_corpora=["tinyshakespeare:train"],
                                     device="cpu")
    check = baseline.plateau_check(config, progress=False)
    assert check.continuation_tokens == 1024 and check.continuation_lr == pytest.approx(2e-3 * 0.1)
    assert check.after.perplexity < check.before.perplexity  # computed from the actual continuation
    assert check.improvement_pct == pytest.approx(100 * (1 - check.after.perplexity / check.before.perplexity))
    assert check.improvement_pct > 1 and not check.converged
    assert "**The baseline is not converged" in check.sentence()
    # the baseline itself is untouched: its held-out loss is still the "before" figure
    art = baseline.get_baseline(config, progress=False)
    _, val = data.training_streams(art.tokenizer, config.train_corpora, config.val_fraction)
    assert baseline.heldout(art.model, art.tokenizer, val).perplexity == pytest.approx(check.before.perplexity, rel=1e-6)
    # a looser threshold turns the same measurement into a pass (same cached continuation)
    loose = baseline.plateau_check(config, threshold_pct=check.improvement_pct + 0.01, progress=False)
    assert loose.converged and loose.after == check.after and "at its plateau" in loose.sentence()


def test_plateau_check_is_saved_for_notebook_05(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    held = baseline.HeldOut(5.0, math.exp(5.0), 2.0, 100, 300)
    check = baseline.PlateauCheck(held, held, 0.25, 10, 2e-4, 1.0, 0.0, 1.0)
    baseline.save_plateau(check, "s")
    assert baseline.load_plateau("s") == check
    baseline.save_plateau(None, "s")
    assert baseline.load_plateau("s") is None


def test_plateau_check_rejects_bad_arguments():
    config = baseline.BaselineConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=300)
    with pytest.raises(ValueError, match="fraction must be in"):
        baseline.plateau_check(config, fraction=0)
    with pytest.raises(ValueError, match="threshold_pct"):
        baseline.plateau_check(config, threshold_pct=-1)
    assert baseline.plateau_check(baseline.BaselineConfig(model="some/model")) is None


# ---------------------------------------------------------------------------- controls

MINITRON = ["Depth50", "Depth50+KD", "MLP25+KD", "Emb66+KD", "Depth50+75+MLP50+ft", "AH90+ft", "Mag50+ft"]


@pytest.mark.parametrize("name", pipeline.paper_grid() + MINITRON)
def test_every_training_pipeline_gets_its_equal_training_control(name):
    spec = Pipeline.from_name(name, DEFAULTS)
    trains = any(s.kind in ("distill", "kd") or (s.kind == "prune" and s.config.finetune_tokens) for s in spec.steps)
    control = pipeline.control_name(name, DEFAULTS)
    if trains:
        assert control == f"Base+ft{pipeline.tokens_text(pipeline.training_tokens(spec))}"
        assert control in pipeline.with_controls([name], DEFAULTS)
        assert Pipeline.from_name(control, DEFAULTS).name == control
        assert pipeline.training_tokens(Pipeline.from_name(control, DEFAULTS)) == pipeline.training_tokens(spec)
    else:
        assert control is None and pipeline.with_controls([name], DEFAULTS) == [name]


def test_the_grid_with_controls_builds_one_control_per_budget():
    names = pipeline.with_controls(pipeline.paper_grid() + MINITRON, DEFAULTS)
    assert [n for n in names if n.startswith("Base+ft")] == ["Base+ft3k", "Base+ft2k", "Base+ft1k"]
    assert pipeline.control_name("Base+ft3k", DEFAULTS) is None  # a control has no control
    assert pipeline.tokens_text(10_000) == "10k" and pipeline.tokens_text(12_345) == "12345"
    with pytest.raises(ValueError, match="finetune tokens must be >= 1"):
        Finetune(tokens=0)


def test_the_control_trains_the_unpruned_base_on_the_same_tokens(tiny_baseline):
    control = pipeline.control_name("Distil", DEFAULTS)
    art = pipeline.build(tiny_baseline, Pipeline.from_name(control, DEFAULTS), CORPORA, device="cpu", progress=False,
                         defaults=DEFAULTS)
    assert art.recipe["size"]["n_params"] == tiny_baseline.recipe["size"]["n_params"]
    assert art.history["tokens"].iloc[-1] == (3000 // (8 * 32)) * 8 * 32  # the distillation budget, in whole steps
    assert art.cost["seconds"] > 0 and art.key != tiny_baseline.key
    changed = any((a != b).any() for a, b in zip(art.model.parameters(), tiny_baseline.model.parameters()))
    assert changed


def _measurements(rows):
    """Hand-made measurement rows: variant, dataset, perplexity, runtime_s (2 repeats), control."""
    out = []
    for variant, dataset, ppl, runtimes, control, tokens in rows:
        for i, t in enumerate(runtimes):
            out.append(dict(variant=variant, dataset=dataset, repeat=i, perplexity=ppl, runtime_s=t,
                            energy_kwh=t * 1e-6, energy_method="estimated", device="cpu", notebook="n",
                            batch_size=8, tokens_scored=100, control=control, training_tokens=tokens))
    return pd.DataFrame(out)


def test_control_table_separates_compression_from_training():
    rows = []
    for ds in ("a", "b"):
        rows += [("Base", ds, 100.0, [1.0, 1.0], "", 0), ("Base+ft10k", ds, 90.0, [1.0, 1.0], "", 10_000),
                 ("Good", ds, 85.0, [0.5, 0.5], "Base+ft10k", 10_000),
                 ("Lucky", ds, 95.0, [0.5, 0.5], "Base+ft10k", 10_000),
                 ("Worse", ds, 120.0, [0.5, 0.5], "Base+ft10k", 10_000),
                 ("Orphan", ds, 95.0, [0.5, 0.5], "Base+ft99k", 99_000), ("Base4b", ds, 101.0, [2.0, 2.0], "", 0)]
    table = controls.control_table(_measurements(rows)).set_index("variant")
    assert table.loc["Good", "verdict"] == "better than its control"
    assert table.loc["Good", "P_vs_control"] == pytest.approx(85 / 90)
    assert table.loc["Lucky", "verdict"] == "better than Base only through training"
    assert table.loc["Worse", "verdict"] == "worse than its control"
    assert table.loc["Orphan", "verdict"] == "control not measured"
    assert "Base4b" not in table.index and "Base+ft10k" not in table.index


# ---------------------------------------------------------------------------- findings

def test_claim_verdicts_on_intervals():
    assert findings.claim_verdict(1.1, 1.3, 1.0, "above") == "agrees"
    assert findings.claim_verdict(0.7, 0.9, 1.0, "above") == "disagrees"
    assert findings.claim_verdict(0.9, 1.1, 1.0, "above") == "cannot tell"
    assert findings.claim_verdict(0.7, 0.9, 1.0, "below") == "agrees"
    assert findings.claim_verdict(1.1, 1.3, 1.0, "below") == "disagrees"
    assert findings.claim_verdict(math.nan, 1.3, 1.0, "below") == "cannot tell"
    with pytest.raises(ValueError, match="claim must be"):
        findings.claim_verdict(0, 1, 0.5, "over")
    assert findings.combine(["agrees", "agrees"]) == "agrees"
    assert findings.combine(["agrees", "cannot tell"]) == "cannot tell"
    assert findings.combine(["agrees", "disagrees", "cannot tell"]) == "disagrees"
    assert findings.combine([]) == "cannot tell"


def _table(rows):
    m = _measurements(rows)
    ratio_rows = ratios.ratio_table(m)
    rank = ranking.ranking(m, n_boot=200, ratios=ratio_rows)
    return findings.findings_table(m, ratio_rows, rank, reference.paper_changes("gpt2"), reference.paper_ranking("gpt2")).set_index(
        "finding", drop=False)


def _row(table, letter):
    return table[table["finding"].str.startswith(f"({letter})")].iloc[0]


def test_findings_agree_disagree_and_cannot_tell_on_hand_made_rows():
    rows = []
    for ds, wobble in (("a", 0.0), ("b", 1.0)):
        rows += [("Base", ds, 100.0, [1.00, 1.01, 0.99], "", 0),
                 ("Base4b", ds, 102.0 + wobble, [0.50, 0.51, 0.49], "", 0),      # (a) agrees
                 ("Base8b", ds, 100.5, [0.98, 1.03, 1.00], "", 0),               # (b) straddles 1: cannot tell
                 ("AH80", ds, 150.0, [0.9, 0.91, 0.89], "", 0),                  # (c) agrees: far above quantization
                 ("Distil", ds, 95.0 + 10 * wobble, [0.6, 0.61, 0.59], "Base+ft5k", 5000),  # (d): P 0.95..1.05
                 ("Distil4b", ds, 110.0, [0.30, 0.31, 0.29], "Base+ft5k", 5000),
                 ("Depth50+KD", ds, 120.0, [0.5, 0.5, 0.5], "Base+ft2k", 2000),
                 ("Scratch-Depth50", ds, 140.0, [0.5, 0.5, 0.5], "", 0)]        # (g) agrees
        # (f): sweep, Mag10 recovers 20 %, Mag90 recovers 90 % of the loss against Mag0+ft
        rows += [("Mag0+ft", ds, 98.0, [1.0, 1.0], "", 1000), ("Mag10", ds, 108.0, [1.0, 1.0], "", 0),
                 ("Mag10+ft", ds, 106.0, [1.0, 1.0], "", 1000), ("Mag90", ds, 998.0, [1.0, 1.0], "", 0),
                 ("Mag90+ft", ds, 188.0, [1.0, 1.0], "", 1000)]
    t = _table(rows)
    assert _row(t, "a")["verdict"] == "agrees"
    assert _row(t, "b")["verdict"] == "cannot tell"
    assert _row(t, "c")["verdict"] == "agrees"
    assert _row(t, "d")["verdict"] == "cannot tell"  # perplexity ratio spans 1 across corpora
    assert _row(t, "e")["verdict"] in findings.VERDICTS
    assert _row(t, "f")["verdict"] == "agrees"
    assert _row(t, "g")["verdict"] == "agrees"
    assert set(t["verdict"]) <= set(findings.VERDICTS)
    assert (t.loc[t["verdict"] != "disagrees", "why"] == "").all()


def test_findings_disagree_with_a_computed_reason():
    rows = []
    for ds in ("a", "b"):
        rows += [("Base", ds, 100.0, [1.00, 1.01, 0.99], "", 0),
                 ("Base4b", ds, 101.0, [3.0, 3.1, 2.9], "", 0),     # (a) energy rises: disagrees (CPU kernels)
                 ("Base8b", ds, 100.1, [0.5, 0.52, 0.49], "", 0),   # (b) faster: disagrees
                 ("AH90", ds, 100.05, [0.9, 0.91, 0.89], "", 0),    # (c) below the quantized: disagrees
                 ("Distil", ds, 90.0, [0.6, 0.61, 0.59], "Base+ft5k", 5000),  # (d) better than Base: disagrees
                 ("Depth50+KD", ds, 150.0, [0.5, 0.5, 0.5], "Base+ft2k", 2000),
                 ("Scratch-Depth50", ds, 130.0, [0.5, 0.5, 0.5], "", 0)]      # (g) disagrees
    t = _table(rows)
    for letter in "abcdg":
        assert _row(t, letter)["verdict"] == "disagrees", letter
    assert "CPU" in _row(t, "a")["why"] and "estimated" in _row(t, "a")["why"]
    assert "5,000 tokens" in _row(t, "d")["why"]
    assert _row(t, "f")["verdict"] == "cannot tell" and "not measured" in _row(t, "f")["ours"]


def test_a_fine_tuned_variant_and_its_control_see_the_same_tokens_in_the_same_batches(tiny_baseline):
    """Issue 25's defect: post-pruning fine-tuning trained on batches of `calibration_batch_size * 2`
    while its control Base+ft<N> used FinetuneConfig's batch size, so the control was equal only
    while that product was 16. Both now go through `finetune.finetune` with the same settings."""
    defaults = StepDefaults(prune=PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32,
                                              finetune_tokens=2048),
                            finetune=FinetuneConfig(finetune_batch_size=16, finetune_seq_len=32))
    variant = pipeline.build(tiny_baseline, Pipeline.from_name("AH50+ft", defaults), CORPORA, device="cpu",
                             progress=False, defaults=defaults)
    control = pipeline.build(tiny_baseline, Pipeline.from_name(pipeline.control_name("AH50+ft", defaults), defaults),
                             CORPORA, device="cpu", progress=False, defaults=defaults)
    assert pipeline.control_name("AH50+ft", defaults) == "Base+ft2048"
    assert variant.history["batch_sha1"].tolist() == control.history["batch_sha1"].tolist()
    assert len(variant.history) == 2048 // (16 * 32)
