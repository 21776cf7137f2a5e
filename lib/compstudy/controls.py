"""The study's controls: which variants are controls (from their parsed names, `pipeline`), and
each trained variant beside its equal-training control."""
from __future__ import annotations

import pandas as pd

from .ratios import GROUP_KEYS, ratio_table


def is_control(variant: str) -> bool:
    """True for the study's controls, which are not compression options (`pipeline.Pipeline.is_control`,
    from the parsed name): the equal-training controls `Base+ft<N>`, the from-scratch controls
    `Scratch-<shape>`, the distillation controls `...-noKD` / `...-rand`, and pipelines that only
    train (`Mag0+ft`)."""
    from .pipeline import is_control as parsed

    return parsed(variant)


def control_table(measurements: pd.DataFrame, ratios: pd.DataFrame | None = None, base: str = "Base",
                  keys=GROUP_KEYS) -> pd.DataFrame:
    """Each variant whose production trained (column `control` of the measurements names its
    equal-training control `Base+ft<N>`, issue 11) beside that control.

    Per variant: `P_c` (against Base), `P_c_control` (the control's own P_c), `P_vs_control`
    (perplexity of the variant / perplexity of its control, measured under the same keys:
    same notebook run, dataset, tokens), all averaged over the conditions both were measured in,
    and `verdict`:
    - `better than its control`: P_vs_control < 1 on every condition;
    - `better than Base only through training`: P_c < 1 but not better than its control;
    - `worse than its control`: otherwise.

    Returns one row per variant with a control; the columns above plus `control`,
    `training_tokens`, `n_conditions`. Empty when no measurement names a control.
    """
    cols = ["variant", "control", "training_tokens", "P_c", "P_c_control", "P_vs_control", "n_conditions", "verdict"]
    if "control" not in measurements.columns:
        return pd.DataFrame(columns=cols)
    ratios = ratio_table(measurements, base, keys) if ratios is None else ratios
    keys = [k for k in keys if k in ratios.columns]
    named = (measurements.dropna(subset=["control"]).astype({"control": str})
             .query("control != ''").groupby("variant", sort=False)
             .agg(control=("control", "first"), training_tokens=("training_tokens", "max")))
    rows = []
    for variant, r in named.iterrows():
        v = ratios[ratios["variant"] == variant][[*keys, "P_c"]]
        c = ratios[ratios["variant"] == r["control"]][[*keys, "P_c"]]
        both = v.merge(c, on=keys, suffixes=("", "_control"))
        if both.empty:
            rows.append({"variant": variant, "control": r["control"], "training_tokens": r["training_tokens"],
                         "P_c": v["P_c"].mean(), "P_c_control": float("nan"), "P_vs_control": float("nan"),
                         "n_conditions": 0, "verdict": "control not measured"})
            continue
        rel = both["P_c"] / both["P_c_control"]
        verdict = ("better than its control" if (rel < 1).all() else
                   "better than Base only through training" if both["P_c"].mean() < 1 else "worse than its control")
        rows.append({"variant": variant, "control": r["control"], "training_tokens": int(r["training_tokens"]),
                     "P_c": both["P_c"].mean(), "P_c_control": both["P_c_control"].mean(), "P_vs_control": rel.mean(),
                     "n_conditions": len(both), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)
