"""Issue 29: the dose-response curves (compstudy.dose) and finding (h) on the scale points
(compstudy.findings.finding_h), each on hand-made rows whose answer is known."""
import math

import pandas as pd
import pytest

from compstudy import dose, findings, params, scale
from compstudy.baseline import BaselineConfig


def _rows(notebook, points, base_ppl=(10.0, 20.0), base_bytes=1000):
    """Measurement rows of a dose sweep: Base and each (variant, axis, method, dose, (ppl per corpus), bytes)."""
    rows = [dict(notebook=notebook, variant="Base", dataset=d, perplexity=p, weight_bytes=base_bytes, dtype="float32",
                 dose_axis="", dose_method="", dose=math.nan, training_tokens=0, set_aside="")
            for d, p in zip(("a", "b"), base_ppl)]
    for variant, axis, method, value, ppls, nbytes in points:
        rows += [dict(notebook=notebook, variant=variant, dataset=d, perplexity=p, weight_bytes=nbytes, dtype="float32",
                      dose_axis=axis, dose_method=method, dose=value, training_tokens=0, set_aside="")
                 for d, p in zip(("a", "b"), ppls)]
    return rows


def test_curves_measure_each_point_against_its_own_sweeps_base_and_add_the_origin():
    rows = _rows("01:dose", [("Basehqq4", "weight bits", "HQQ", 4.0, (10.05, 20.1), 400),
                             ("Basehqq2", "weight bits", "HQQ", 2.0, (12.0, 30.0), 300)])
    rows += _rows("03:dose", [("AH50", "heads kept", "heads", 0.5, (11.0, 22.0), 800)], base_ppl=(11.0, 21.0))
    rows += [dict(rows[-1], variant="AH50+ft", training_tokens=100)]  # fine-tuned: not a point of the curve
    rows += [dict(rows[2], perplexity=99.0, set_aside="disturbed")]  # set aside: never read
    c = dose.curves(pd.DataFrame(rows))
    hqq2 = c[c["variant"] == "Basehqq2"].iloc[0]
    assert hqq2["perplexity_change_pct"] == pytest.approx((20 + 50) / 2)
    assert (hqq2["lo"], hqq2["hi"]) == pytest.approx((20.0, 50.0))
    assert hqq2["size_fraction"] == pytest.approx(0.3)
    ah = c[c["variant"] == "AH50"].iloc[0]  # against 03's Base (11, 21), not 01's
    assert ah["perplexity_change_pct"] == pytest.approx((0 + 100 * (22 / 21 - 1)) / 2)
    origins = c[c["variant"] == "Base"]
    assert set(zip(origins["axis"], origins["dose"])) == {("weight bits", 32.0), ("heads kept", 1.0)}
    assert "AH50+ft" not in set(c["variant"])
    lines = dose.headline(c)
    assert any(line.startswith("weight bits: HQQ: within 1 % of Base down to 4 bits; 2 bits costs +35.0 %") for line in lines)


def test_a_sweep_without_its_base_is_refused_by_name():
    rows = [r for r in _rows("01:dose", [("Basehqq4", "weight bits", "HQQ", 4.0, (10.1, 20.4), 400)]) if r["variant"] != "Base"]
    with pytest.raises(ValueError, match="01:dose"):
        dose.curves(pd.DataFrame(rows))


def _points(costs_by_tpp, technique="Base4b", spread=0.05):
    return pd.DataFrame([{"point": f"p{i}", "label": f"p{i}", "series": "size", "tokens_per_param": tpp, "epochs": 1.0,
                          "technique": technique, "perplexity_change_pct": cost, "lo": cost - spread, "hi": cost + spread}
                         for i, (tpp, cost) in enumerate(costs_by_tpp)])


def test_finding_h_agrees_when_the_cost_rises_with_tokens_per_parameter():
    pts = pd.concat([_points([(0.5, 0.1), (3.0, 0.4), (9.0, 1.5)]),
                     _points([(0.5, 1.0), (3.0, 2.0), (9.0, 6.0)], "Basehqq3")])
    row = findings.finding_h(findings.Evidence.of(scale=pts))
    assert row["verdict"] == "agrees", row
    assert "Base4b: +0.10 % at 0.5 tokens/parameter" in row["ours"] and "Spearman +1.00" in row["ours"]


def test_finding_h_disagrees_when_the_cost_falls_and_cannot_tell_within_the_corpora_range():
    falling = _points([(0.5, 2.0), (3.0, 1.0), (9.0, 0.2)])
    assert findings.finding_h(findings.Evidence.of(scale=falling))["verdict"] == "disagrees"
    flat = _points([(0.5, 0.10), (3.0, 0.12), (9.0, 0.14)], spread=0.5)  # rising, but inside the corpora's range
    assert findings.finding_h(findings.Evidence.of(scale=flat))["verdict"] == "cannot tell"
    two = _points([(0.5, 0.1), (9.0, 5.0)])
    assert findings.scale_verdict(two, "Base4b")[0] == "cannot tell"
    missing = findings.finding_h(findings.Evidence.of(scale=None, scale_note="no scale points here"))
    assert missing["verdict"] == "cannot tell" and "no scale points here" in missing["ours"]


def test_scale_plan_shares_the_point_both_series_have_and_checks_shapes_early():
    cfg = BaselineConfig(n_layer=2, n_head=8, n_embd=128, train_tokens=2_000_000)
    pts = scale.plan(cfg, [[2, 4, 64], [2, 8, 128]], 2_000_000, [500_000, 2_000_000])
    assert [p.series for p in pts] == ["size", "size+tokens", "tokens"]
    assert pts[1].config == cfg  # the default point is the default study's own baseline (the same cache key)
    with pytest.raises(ValueError, match="n_head must divide"):
        scale.plan(cfg, [[2, 3, 64]], 1000, [])
    with pytest.raises(params.ParameterError) as err:
        params.check("06_scale", {}, {"sizes": [[2, 3, 64]], "techniques": ["AH80", "Nope7"]})
    assert "sizes: [2, 3, 64]" in str(err.value) and "Nope7" in str(err.value)


def test_a_point_the_model_does_not_allow_is_left_out_of_the_sweep_with_its_reason(monkeypatch):
    """A technique that does not apply to the model (registry.NotApplicable: GPTQModel on a family it
    does not define) is left out of the curve with the library's reason; the other points are measured."""
    from compstudy import experiments, pipeline
    from compstudy.registry import NotApplicable

    def build(base, p, *args, **kwargs):
        if p.name == "Basegptq3":
            raise NotApplicable("gptq: GPTQModel 7.6 could not quantize this 'gpt_neox' model")
        return f"built {p.name}"

    measured = {}
    monkeypatch.setattr(pipeline, "build", build)
    monkeypatch.setattr(experiments, "dose_point", lambda p, art, base: ("weight bits", p.name, 3.0 if "3" in p.name else 4.0))
    monkeypatch.setattr(experiments, "measure_variants", lambda variants, *a, **k: measured.update(variants) or pd.DataFrame())
    rows, skipped = experiments.dose_sweep("base", ["Basehqq3", "Basegptq3"], None, [], study="s", datasets=[],
                                           eval_config=None, notebook="01_quantization")
    assert set(measured) == {"Base", "Basehqq3"}
    assert skipped == {"Basegptq3": "gptq: GPTQModel 7.6 could not quantize this 'gpt_neox' model"}
