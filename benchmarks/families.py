"""Every supported family through the whole study: `configs/class.yaml` with `-p model DIR` on a tiny
random-init checkpoint of each (`tests/model_cases.py`: 2 layers, hidden size 64, 8 heads, the
grouped-query cases with 2 key-value heads, vocabulary 512, saved as a hub checkpoint would be:
safetensors, config, tokenizer), one study per family (`-p study families-<case>`), every notebook.

    .venv/bin/python benchmarks/families.py [CASE ...]

Writes benchmarks/results/families.json: per family, whether every notebook completed, the seconds of
each notebook, the variants ranked (and left out) by notebook 05, and the lines of code of the family's
adapter file (`lib/compstudy/families/<family>.py`). The perplexities of random models mean nothing;
what the run shows is that every technique of the study runs on each architecture. Time nothing else
meanwhile.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))


def adapter_lines(model_type: str) -> int:
    """Non-blank, non-comment lines of a family's adapter file."""
    path = ROOT / "lib" / "compstudy" / "families" / f"{model_type}.py"
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#"))


def main(cases=None) -> dict:
    import pandas as pd

    import model_cases
    from compstudy import conclusions, paths, provenance, runner

    cases = cases or model_cases.CASES
    env = provenance.environment()
    out = {"config": "configs/class.yaml", "commit": env["git_commit"], "cpu": env["cpu"],
           "cpu_threads": env["cpu_threads"], "families": {}}
    path = HERE / "results" / "families.json"
    if path.exists():  # keep the cases not run this time
        out["families"] = json.loads(path.read_text()).get("families", {})
    with tempfile.TemporaryDirectory(prefix="families-") as tmp:
        for case in cases:
            folder = model_cases.save(case, Path(tmp) / case)
            study_name = f"families-{case}"
            study = runner.load_study(ROOT / "configs" / "class.yaml", {"model": str(folder), "study": study_name})
            t0 = time.perf_counter()
            try:
                runner.run_study(study, progress=False)
                status = "completed"
            except (runner.NotebookFailed, runner.ConfigError) as exc:
                status = f"failed: {exc}"
            except Exception as exc:  # record it and go on with the next family
                status = f"failed: {type(exc).__name__}: {exc}"
            record = {"model_type": model_cases.model_type(case), "status": status,
                      "notebook_seconds": {k: round(v, 1) for k, v in study.timings.items()},
                      "total_seconds": round(time.perf_counter() - t0, 1),
                      "adapter_lines": adapter_lines(model_cases.model_type(case))}
            ranking = paths.results_dir(study_name) / "ranking.csv"
            if ranking.exists():
                cov = conclusions.coverage(pd.read_csv(ranking))
                record.update(candidates=cov["candidates"], ranked=cov["ranked"], unranked=cov["unranked"],
                              variants_ranked=int(pd.read_csv(ranking)["ranked"].astype(bool).sum()))
            out["families"][case] = record
            print(case, {k: v for k, v in record.items() if k != "notebook_seconds"}, flush=True)
            path.write_text(json.dumps(out, indent=1) + "\n")
    print("written", path)
    return out


if __name__ == "__main__":
    main(sys.argv[1:] or None)
