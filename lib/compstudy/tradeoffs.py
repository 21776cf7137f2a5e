"""Trade-offs: Pareto fronts, the break-even of a compression's cost, and what estimated energy
means for E_c."""
from __future__ import annotations

import pandas as pd

from .controls import is_control
from .ratios import GROUP_KEYS, bootstrap_mean_of_medians, paired_ratios, ratio_table


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Boolean Series: rows not dominated when both `x` and `y` are minimised (another row is at
    least as good on both and strictly better on one)."""
    xs, ys = df[x].to_numpy(), df[y].to_numpy()
    keep = []
    for i in range(len(df)):
        dominated = ((xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))).any()
        keep.append(not dominated)
    return pd.Series(keep, index=df.index)


def break_even(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Tokens of inference after which a variant's compression cost is paid back by its energy
    savings: `cost_kwh / saved_kwh_per_token`, per variant. The saving per token is the mean over
    conditions (`keys`) of the median over rounds of the paired per-round saving
    (E_base - E_variant) / tokens scored (`paired_ratios`); `never` when it is not positive.

    `cost_kwh` is the energy spent producing the variant from the baseline (distillation,
    fine-tuning, calibration, quantization); the baseline's own training is not charged to it.
    `break_even_lo` / `break_even_hi` (tokens) come from the 95 % percentile bootstrap interval of
    the saving over rounds (`scipy.stats.bootstrap`); `break_even_hi` is inf when the interval
    reaches no saving. NaN where a condition has fewer than 2 paired rounds.
    Column `control` marks the study's controls (`is_control`), which are no compression options.
    Raises ValueError (`paired_ratios` / `ratio_table`) if `base` was never measured.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    ratio_table(df, base, keys)  # raises the clear error when the base is missing
    pairs = paired_ratios(df, base, keys)
    tokens = df.groupby(["variant", *keys], dropna=False)["tokens_scored"].median().rename("tokens")
    pairs = pairs.join(tokens, on=["variant", *keys])
    pairs["saved"] = (pairs["energy_kwh_base"] - pairs["energy_kwh"]) / pairs["tokens"]
    cost = df.groupby(["variant", *keys], dropna=False)[["cost_kwh", "cost_s"]].median().groupby("variant").max()

    def tokens_for(saved, cost_kwh):
        return cost_kwh / saved if saved > 0 else np.inf

    rows = []
    for variant, g in pairs[pairs["variant"] != base].groupby("variant", sort=False):
        conds = [c["saved"] for _, c in g.groupby(keys, dropna=False, sort=False)]
        saved = float(np.mean([c.median() for c in conds]))
        lo, hi = (bootstrap_mean_of_medians(conds, n_boot, seed) if min(map(len, conds)) >= 2
                  else (np.nan, np.nan))
        c_kwh = float(cost.loc[variant, "cost_kwh"])
        rows.append({"variant": variant, "cost_kwh": c_kwh, "cost_s": float(cost.loc[variant, "cost_s"]),
                     "saved_kwh_per_token": saved, "saved_kwh_per_token_lo": lo, "saved_kwh_per_token_hi": hi,
                     "break_even_tokens": tokens_for(saved, c_kwh),
                     "break_even_lo": tokens_for(hi, c_kwh) if np.isfinite(hi) else np.nan,
                     "break_even_hi": tokens_for(lo, c_kwh) if np.isfinite(lo) else np.nan})
    g = pd.DataFrame(rows)
    g["control"] = g["variant"].map(is_control)
    g["pays_back"] = np.where(np.isfinite(g["break_even_tokens"]), "after " +
                              g["break_even_tokens"].map(lambda t: f"{t:,.0f}" if np.isfinite(t) else "") + " tokens",
                              "never")
    return g.sort_values("break_even_tokens").reset_index(drop=True)


def energy_is_estimated(df: pd.DataFrame) -> bool:
    """True when no row's energy was measured by a hardware counter."""
    return not df["energy_method"].isin(["measured", "partly measured"]).any()


def estimated_energy_note(df: pd.DataFrame) -> str:
    """The sentence the comparison prints about E_c; empty when energy was measured."""
    if not energy_is_estimated(df):
        return ""
    return ("Energy in these measurements was ESTIMATED by codecarbon (no RAPL or NVML counter): power was "
            "modelled, not read, so E_c is T_c scaled by a nearly constant factor, and the objective's energy "
            "term repeats its time term. Rankings here weigh runtime twice; they say nothing independent about "
            "energy. Rerun on a machine with RAPL or an NVIDIA GPU for measured energy.")
