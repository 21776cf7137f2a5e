"""How noisy the timing of each condition was, and whether its ratios can be ranked."""
from __future__ import annotations

import pandas as pd

from .ratios import GROUP_KEYS, usable


# Noise limits (`timing_noise`), chosen with benchmarks/noise_limits.py (results in
# benchmarks/results/noise_limits.json): the default's Base timed over 12 rounds on the quiet 2-core
# VM and again with a CPU burner on for 20 s of every minute. A pass is set aside when others took
# more than `EvalConfig.max_pass_interference` of the measured CPUs (those the process may run on:
# the machine's unless it is pinned; its round is timed again); what is
# left is judged here.
MAX_INTERFERENCE = 0.10   # median share of the measured CPUs others (and steal) took during the used passes
MAX_BASE_SPREAD = 0.15    # robust spread of the base's used pass times: 1.4826 x MAD of their logs (about their sd)


def robust_spread(times) -> float:
    """1.4826 x the median absolute deviation of log(times): about the standard deviation of the
    log pass times, but one outlier pass moves it little (NaN for fewer than 3 times)."""
    import numpy as np

    t = np.log(np.asarray(times, float))
    if len(t) < 3:
        return float("nan")
    return float(1.4826 * np.median(np.abs(t - np.median(t))))


def timing_noise(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS, max_interference: float = MAX_INTERFERENCE,
                 max_base_spread: float = MAX_BASE_SPREAD) -> pd.DataFrame:
    """How noisy the timing of each condition (*keys) was, and whether its ratios are reliable.

    Per condition: `rounds` (the base's used rounds), `base_spread` = `robust_spread` of the base's
    used pass times (the machine's own noise: the same work timed again), `base_range` = their
    max / min - 1 (reported, not judged: one disturbed pass decides it), `interference` = median over
    the used passes of the share of the measured CPUs (`measure.measured_cpus`) that other processes and the hypervisor took
    (`measure.timed_pass`), `disturbed_passes` (passes during which others took more than the limit),
    `set_aside_passes` / `retried_rounds` (the timed passes of the rounds set aside, and those rounds),
    `cpu_per_wall` = median process CPU seconds per wall second, and `reliable`, with `reason` saying
    which limit was passed: retries that ran out (a disturbed pass had to be used), interference >
    `max_interference`, or base_spread > `max_base_spread`.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    rows = []
    for cond, g_all in df.groupby(keys, dropna=False, sort=False):
        cond = cond if isinstance(cond, tuple) else (cond,)
        g = usable(g_all)
        aside = g_all[~g_all.index.isin(g.index)]
        timed = g_all["variant"] == g_all["timed_as"] if "timed_as" in g_all else pd.Series(True, g_all.index)
        marks = g_all["disturbed"].fillna("").astype(str) if "disturbed" in g_all else pd.Series("", g_all.index)
        disturbed = g_all[timed & (marks != "")]
        still = disturbed[disturbed.index.isin(g.index)]  # disturbed passes that were used: retries ran out
        bt = g.loc[g["variant"] == base, "runtime_s"].to_numpy(float)
        spread = robust_spread(bt)
        span = float(bt.max() / bt.min() - 1) if len(bt) >= 2 else float("nan")
        inter = float(np.nanmedian(g["interference"])) if "interference" in g and g["interference"].notna().any() else float("nan")
        cpu = float(np.nanmedian(g["cpu_s"] / g["runtime_s"])) if "cpu_s" in g and g["cpu_s"].notna().any() else float("nan")
        retried = int(aside[["repeat", "attempt"]].drop_duplicates().shape[0]) if len(aside) and "attempt" in aside else 0
        reasons = []
        if len(still):
            rounds = sorted(set(int(r) for r in disturbed["repeat"]))
            reasons.append(f"{len(disturbed)} passes disturbed (in rounds {', '.join(map(str, rounds))}; {retried} rounds "
                           f"timed again), and the retries ran out")
        if inter > max_interference:
            reasons.append(f"other processes took {inter:.0%} of the measured CPUs (limit {max_interference:.0%})")
        if spread > max_base_spread:
            reasons.append(f"the base's own pass times spread by {spread:.0%} (robust sd of log times; limit "
                           f"{max_base_spread:.0%})")
        rows.append({**dict(zip(keys, cond)), "rounds": len(bt), "base_spread": spread, "base_range": span,
                     "interference": inter, "disturbed_passes": len(disturbed), "set_aside_passes": int(timed[aside.index].sum()),
                     "retried_rounds": retried, "cpu_per_wall": cpu, "reliable": not reasons, "reason": "; ".join(reasons)})
    return pd.DataFrame(rows)
