"""How noisy the timing of each condition was, and whether its ratios can be ranked."""
from __future__ import annotations

import pandas as pd

from .ratios import GROUP_KEYS


# Noise thresholds (`timing_noise`). Measured on the study's 2-core VM with nothing else running
# (benchmarks/timing_protocol.py and a fresh default run): interference 0.00-0.03 per condition (the
# runner's own process included) and a base spread (max / min - 1 over 3 rounds of 32,768-token
# passes) of 0.03-0.38, 0.49 over 8 rounds of 8,192-token passes; a busy process on one of the two
# cores takes about half of the machine (interference near 0.5).
MAX_INTERFERENCE = 0.10   # median share of the machine other processes (and steal) took during the passes


MAX_BASE_SPREAD = 0.60    # (max / min - 1) of the base's own pass times over the rounds of a condition


def timing_noise(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS, max_interference: float = MAX_INTERFERENCE,
                 max_base_spread: float = MAX_BASE_SPREAD) -> pd.DataFrame:
    """How noisy the timing of each condition (*keys) was, and whether its ratios are reliable.

    Per condition: `rounds`, `base_spread` = max / min - 1 of the base's pass times over the
    rounds (the machine's own noise: the same work timed again), `interference` = median over
    the condition's passes of the share of the machine that other processes and the hypervisor
    took (`measure.timed_pass`; NaN for rows recorded before it existed), `cpu_per_wall` = median
    process CPU seconds per wall second (about the thread count when the process ran unhindered),
    and `reliable` = interference <= `max_interference` and base_spread <= `max_base_spread`,
    with `reason` saying which limit was passed.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    rows = []
    for cond, g in df.groupby(keys, dropna=False, sort=False):
        cond = cond if isinstance(cond, tuple) else (cond,)
        bt = g.loc[g["variant"] == base, "runtime_s"].to_numpy(float)
        spread = float(bt.max() / bt.min() - 1) if len(bt) >= 2 else float("nan")
        inter = float(np.nanmedian(g["interference"])) if "interference" in g and g["interference"].notna().any() else float("nan")
        cpu = float(np.nanmedian(g["cpu_s"] / g["runtime_s"])) if "cpu_s" in g and g["cpu_s"].notna().any() else float("nan")
        reasons = []
        if inter > max_interference:
            reasons.append(f"other processes took {inter:.0%} of the machine (limit {max_interference:.0%})")
        if spread > max_base_spread:
            reasons.append(f"the base's own pass times spread by {spread:.0%} (limit {max_base_spread:.0%})")
        rows.append({**dict(zip(keys, cond)), "rounds": len(bt), "base_spread": spread, "interference": inter,
                     "cpu_per_wall": cpu, "reliable": not reasons, "reason": "; ".join(reasons)})
    return pd.DataFrame(rows)
