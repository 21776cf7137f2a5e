"""A variant against its base: medians over repeats, % changes and ratios (the paper's Table 1
shape), and the study's paired per-round ratios (T_c, E_c) with their bootstrap intervals.

Wallace et al. (ICPE 2025) report, per variant, the percentage change of perplexity, runtime and
energy against the uncompressed base, averaged over their datasets; `changes` and `table1` compute
the same from our measurements. `paired_ratios` / `ratio_table` / `ratio_intervals` compute P_c,
T_c and E_c as the ranking uses them (`compstudy.ranking`). Give one run's rows
(`runs.select_run`): ratios never mix runs.
"""
from __future__ import annotations

import pandas as pd


METRICS = ("perplexity", "runtime_s", "energy_kwh", "weight_bytes")  # weight_bytes: ours only


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """The rows every ratio is computed from: all but the passes set aside (column `set_aside`, a
    disturbed round's passes, recorded with their reason and timed again: `measure.evaluate_many`)."""
    if "set_aside" not in df.columns:
        return df
    return df[df["set_aside"].fillna("").astype(str) == ""]


def medians(df: pd.DataFrame, keys=("variant", "dataset", "batch_size")) -> pd.DataFrame:
    """Median over repeats of each metric per `keys` (keys missing from `df` are dropped)."""
    df = usable(df)
    keys = [k for k in keys if k in df.columns]
    cols = [c for c in (*METRICS, "bits_per_byte", "n_params", "n_params_nonzero",
                        "tokens_per_s", "cost_s", "cost_kwh") if c in df.columns]
    return df.groupby(keys, sort=False)[cols].median().reset_index()


def changes(df: pd.DataFrame, base: str = "Base", keys=("dataset", "batch_size")) -> pd.DataFrame:
    """Percentage change of each metric against `base` measured under the same `keys`.

    Args:
        df: measurements (one row per repeat or already reduced); medians are taken per
            (variant, *keys).
        base: the variant every other is compared with.

    Returns one row per (variant, *keys) with each metric, its `<metric>_change_pct`
    (100 * (x / x_base - 1)) and `<metric>_ratio` (x / x_base).

    Raises ValueError naming the missing rows if `base` was not measured under some key.
    """
    keys = [k for k in keys if k in df.columns]
    med = medians(df, ("variant", *keys))
    base_rows = med[med["variant"] == base].set_index(keys) if keys else med[med["variant"] == base]
    if base_rows.empty:
        raise ValueError(f"no rows of base variant {base!r}; variants present: {sorted(med['variant'].unique())}")
    out = []
    for _, row in med.iterrows():
        k = tuple(row[c] for c in keys) if keys else None
        try:
            b = base_rows.loc[k if len(keys) > 1 else k[0]] if keys else base_rows.iloc[0]
        except KeyError:
            raise ValueError(f"base {base!r} has no measurement for {dict(zip(keys, k))}") from None
        new = row.to_dict()
        for m in METRICS:
            if m in med.columns:
                new[f"{m}_ratio"] = row[m] / b[m]
                new[f"{m}_change_pct"] = 100 * (row[m] / b[m] - 1)
        out.append(new)
    return pd.DataFrame(out)


def table1(df: pd.DataFrame, base: str = "Base", keys=("batch_size",)) -> pd.DataFrame:
    """The paper's Table 1 shape: per variant, mean over datasets of perplexity, runtime (s) and
    energy and of their % changes against `base` (changes are computed per dataset first).
    Energy is given in joules (`energy_J` = kWh x 3.6e6), not kWh: one evaluation pass is a few
    joules, which a kWh column rounded for display shows as 0.0."""
    ch = changes(df, base, ("dataset", *keys))
    keys = [k for k in keys if k in ch.columns]
    cols = [c for m in METRICS for c in (m, f"{m}_change_pct") if c in ch.columns]
    table = ch.groupby(["variant", *keys], sort=False)[cols].mean().reset_index()
    if "energy_kwh" in table.columns:
        table.insert(table.columns.get_loc("energy_kwh"), "energy_J", table.pop("energy_kwh") * 3.6e6)
    return table


def _pct(x: float) -> str:
    return f"{x:+.1f} %"


def describe_changes(table: pd.DataFrame, what: str, base: str = "Base") -> list[str]:
    """Plain sentences, computed from a `changes`/`table1` result, one per variant and batch size:
    the measured % changes against `base`. Nothing in them is typed by hand."""
    lines = []
    for _, row in table[table["variant"] != base].iterrows():
        parts = []
        for m, label in (("perplexity", "perplexity"), ("runtime_s", "runtime"), ("energy_kwh", "energy"),
                         ("weight_bytes", "weights on disk")):
            col = f"{m}_change_pct"
            if col in row and pd.notna(row[col]):
                parts.append(f"{label} {_pct(row[col])}")
        where = f" at batch size {int(row['batch_size'])}" if "batch_size" in row and pd.notna(row["batch_size"]) else ""
        verdict = ""
        if "runtime_s_change_pct" in row and pd.notna(row["runtime_s_change_pct"]):
            verdict = " — faster than Base" if row["runtime_s_change_pct"] < 0 else " — slower than Base"
        lines.append(f"{row['variant']} ({what}{where}): " + ", ".join(parts) + verdict)
    return lines


GROUP_KEYS = ("notebook", "batch_size", "dataset", "tokens_scored")


def paired_ratios(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS) -> pd.DataFrame:
    """Per (variant, *keys, repeat): the variant's runtime and energy divided by those of its base's
    pass in the same round (`T_ratio`, `E_ratio`). Rounds are those of the interleaved protocol
    (`measure.evaluate_many`): a variant and its base measured in one call share round indices.
    Rows without the base's pass of the same round are dropped."""
    df = usable(df)
    keys = [k for k in keys if k in df.columns]
    cols = ["variant", *keys, "repeat", "runtime_s", "energy_kwh"]
    v = df[cols]
    b = v[v["variant"] == base].drop(columns="variant")
    m = v.merge(b, on=[*keys, "repeat"], suffixes=("", "_base"))
    m["T_ratio"] = m["runtime_s"] / m["runtime_s_base"]
    m["E_ratio"] = m["energy_kwh"] / m["energy_kwh_base"]
    return m


def ratio_table(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS) -> pd.DataFrame:
    """Per (variant, *keys): P_c = median perplexity / median perplexity of `base` measured under the
    same keys (same notebook, batch size, dataset and number of tokens); T_c and E_c = the median
    over rounds of the paired per-round ratios (`paired_ratios`); `n_rounds` = paired rounds.
    Rows without a matching base are dropped; the dropped variants are listed in `attrs["unmatched"]`.
    Give one run's rows (`runs.select_run`): ratios never mix runs.

    Raises ValueError naming the keys if `base` was never measured.
    """
    df = usable(df)
    keys = [k for k in keys if k in df.columns]
    med = df.groupby(["variant", *keys], dropna=False)[["perplexity", "runtime_s", "energy_kwh"]].median().reset_index()
    b = med[med["variant"] == base]
    if b.empty:
        raise ValueError(f"no measurement of the base variant {base!r}: every ratio needs it (variants present: "
                         f"{sorted(med['variant'].unique())}); measure {base!r} under the same {keys}")
    merged = med.merge(b.drop(columns="variant"), on=keys, suffixes=("", "_base"), how="left")
    unmatched = sorted(merged.loc[merged["perplexity_base"].isna(), "variant"].unique())
    merged = merged.dropna(subset=["perplexity_base"]).copy()
    pairs = paired_ratios(df, base, keys).groupby(["variant", *keys], dropna=False).agg(
        T_c=("T_ratio", "median"), E_c=("E_ratio", "median"), n_rounds=("T_ratio", "size")).reset_index()
    merged = merged.merge(pairs, on=["variant", *keys], how="left")
    merged["P_c"] = merged["perplexity"] / merged["perplexity_base"]
    merged["n_rounds"] = merged["n_rounds"].fillna(0).astype(int)
    merged.attrs["unmatched"] = unmatched
    return merged


def bootstrap_mean_of_medians(samples: list, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile bootstrap interval (scipy.stats.bootstrap) of the mean over conditions of the
    median over rounds; each condition's rounds are resampled independently."""
    import numpy as np
    from scipy import stats

    def statistic(*xs, axis=-1):
        return np.mean([np.median(x, axis=axis) for x in xs], axis=0)

    if all(np.ptp(x) == 0 for x in samples):  # nothing varies: the interval is the point
        v = float(statistic(*[np.asarray(x)[None] for x in samples])[0])
        return v, v
    res = stats.bootstrap(tuple(np.asarray(x, float) for x in samples), statistic, n_resamples=n_boot,
                          method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_intervals(df: pd.DataFrame, base: str = "Base", by=(), keys=GROUP_KEYS, n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """T_c and E_c per (variant, *by) as `ranking` computes them, with their 95 % intervals, for
    error bars: the mean over the conditions (`keys`) of the median over rounds of the paired
    per-round ratio to `base` (`paired_ratios`), and a percentile bootstrap over rounds
    (`scipy.stats.bootstrap`; each condition resampled apart).

    Args:
        by: columns of `keys` kept apart (e.g. ("batch_size",)); the other keys are averaged over.
    Returns one row per (variant, *by): T_c, T_c_lo, T_c_hi, E_c, E_c_lo, E_c_hi (ratios, 1 = the
    base), the same as % changes (`runtime_change_pct`, `runtime_change_pct_lo`, ...,
    `energy_change_pct_hi` = 100 * (ratio - 1)) and n_rounds (fewest paired rounds over its
    conditions); the intervals are NaN where a condition has fewer than 2 paired rounds.
    Raises ValueError naming `by` and the allowed columns if `by` is not among the measured keys.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    if not set(by) <= set(keys):
        raise ValueError(f"by={list(by)}: allowed are the measured condition keys {keys}")
    pairs = paired_ratios(df, base, keys)
    out = []
    for group, g in pairs.groupby(["variant", *by], dropna=False, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        conds = [c for _, c in g.groupby(keys, dropna=False, sort=False)]
        row = {**dict(zip(["variant", *by], group)), "n_rounds": min(len(c) for c in conds)}
        for m, col in (("T_c", "T_ratio"), ("E_c", "E_ratio")):
            row[m] = float(np.mean([c[col].median() for c in conds]))
            row[f"{m}_lo"], row[f"{m}_hi"] = (bootstrap_mean_of_medians([c[col] for c in conds], n_boot, seed)
                                              if row["n_rounds"] >= 2 else (np.nan, np.nan))
        for m, name in (("T_c", "runtime"), ("E_c", "energy")):
            for end in ("", "_lo", "_hi"):
                row[f"{name}_change_pct{end}"] = 100 * (row[m + end] - 1)
        out.append(row)
    return pd.DataFrame(out)
