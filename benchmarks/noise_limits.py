"""Choose the noise limits (`measure.EvalConfig.max_pass_interference`, `noise.MAX_BASE_SPREAD`,
`noise.MAX_INTERFERENCE`) from measurements on this kind of machine (issue 28).

    .venv/bin/python benchmarks/noise_limits.py [ROUNDS]

The default study's baseline and a copy of it (timed apart: `share_timing` off) are timed with the
protocol (32,768-token passes, interleaved rounds, no retries) twice: on the quiet machine, and with
a CPU burner (benchmarks/burner.py) busy on one core for 20 s of every minute. For each pass it
records the wall time and the share of the machine other processes took (`interference`), and for
each run the robust spread of Base's pass times (1.4826 x MAD of their logs) over all passes and
over the passes under the interference limit, and the copy's T_c with all passes and with the
disturbed rounds left out. Writes benchmarks/results/noise_limits.json. Time nothing else meanwhile.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(rounds: int = 12) -> dict:
    import numpy as np
    import pandas as pd

    from burner import burning
    from compstudy import baseline, configs, measure, noise, params, provenance, ranking

    cfg = configs.read_config(HERE.parent / "configs" / "default.yaml")
    p = params.check("00_baseline", {k: v for k, v in cfg["parameters"].items() if k in params.shared_names("00_baseline")})
    base = baseline.get_baseline(baseline.BaselineConfig.from_params(p), progress=False)
    twin = copy.deepcopy(base.model)
    eval_config = measure.EvalConfig.from_params(p, repeats=rounds, share_timing=False, max_retries=0, device="cpu")
    out = {"commit": provenance.git_commit(), "cpu": provenance.environment()["cpu"], "rounds": rounds,
           "tokens_per_pass": eval_config.eval_max_tokens, "runs": {}}
    size = base.recipe["size"]
    for label in ("quiet", "loaded"):
        t0 = time.perf_counter()
        with (burning(20, 60, 3600) if label == "loaded" else _nothing()):
            rows = measure.evaluate_many({"Base": (base.model, base.tokenizer), "Copy": (twin, base.tokenizer)},
                                         ["wikitext-2:test"], eval_config, study="noise-limits",
                                         sizes={"Base": size, "Copy": size})
        df = pd.DataFrame(rows).assign(notebook="n")
        inter = df["interference"].to_numpy()
        b = df[df.variant == "Base"]
        limit = eval_config.max_pass_interference
        disturbed_rounds = set(df.loc[df["interference"] > limit, "repeat"])
        kept = df[~df["repeat"].isin(disturbed_rounds)]
        t_all = ranking.ranking(df, n_boot=200).set_index("variant").loc["Copy", "T_c"]
        t_kept = ranking.ranking(kept, n_boot=200).set_index("variant").loc["Copy", "T_c"] if len(kept) else float("nan")
        out["runs"][label] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "interference_per_pass": [round(float(x), 4) for x in inter],
            "interference_median": round(float(np.median(inter)), 4), "interference_max": round(float(inter.max()), 4),
            "passes_over_limit": int((inter > limit).sum()), "passes": len(inter),
            "base_times_s": [round(float(t), 4) for t in b["runtime_s"]],
            "base_range_all": round(float(b["runtime_s"].max() / b["runtime_s"].min() - 1), 4),
            "base_robust_spread_all": round(noise.robust_spread(b["runtime_s"]), 4),
            "base_robust_spread_kept": round(noise.robust_spread(b[~b["repeat"].isin(disturbed_rounds)]["runtime_s"]), 4)
            if len(b[~b["repeat"].isin(disturbed_rounds)]) >= 3 else None,
            "copy_T_c_all": round(float(t_all), 4), "copy_T_c_kept": round(float(t_kept), 4),
        }
        print(label, {k: v for k, v in out["runs"][label].items() if not isinstance(v, list)}, flush=True)
    out["limits"] = {"max_pass_interference": measure.EvalConfig().max_pass_interference,
                     "max_interference": noise.MAX_INTERFERENCE, "max_base_spread": noise.MAX_BASE_SPREAD}
    (HERE / "results" / "noise_limits.json").write_text(json.dumps(out, indent=1) + "\n")
    print("written", HERE / "results" / "noise_limits.json")
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
