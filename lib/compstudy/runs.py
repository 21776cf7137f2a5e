"""Runs: every measurement row belongs to one run, and ratios never mix runs.

A *run* is one execution of a study's notebooks with one set of parameters. Its id is recorded in
every row of `measurements.csv` (`run_id`) beside a hash of the parameters that produced it
(`params_hash`), so that a rerun with other parameters, a run killed halfway, or a notebook rerun
by hand is never pooled with another run's rows.

- `python -m compstudy run CONFIG` starts a new run (id `YYYYMMDD-HHMMSS-<hash>`), with
  `params_hash` the SHA-256 (first 12 hex) of every notebook's resolved parameters, and passes both
  to the notebooks' kernels as `COMPSTUDY_RUN_ID` and `COMPSTUDY_PARAMS_HASH`. With `--only`, it
  continues the study's latest run when that run had the same parameters (the re-measured rows
  replace the earlier ones), and starts a new run otherwise.
- A notebook run outside the runner (Jupyter) writes into run `interactive-<hash>`, where
  the hash covers the parameters that decide whether two measurements are comparable (the
  baseline's artifact key, datasets, context, stride, device). Rerunning a notebook with those
  unchanged replaces its rows in that run; changing them starts another run.
- Notebook 05 (and `compare`) read one run: the one named, else the runner's current run
  (`COMPSTUDY_RUN_ID`), else the latest run in the table (`select_run`).

Within a run, a row measured again (same notebook, variant, dataset, batch size, tokens, repeat)
replaces the earlier one (`select_run` keeps the last written).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import time

import pandas as pd

from . import paths

RUN_ENV, HASH_ENV = "COMPSTUDY_RUN_ID", "COMPSTUDY_PARAMS_HASH"
# a row measured again within a run replaces the earlier one when these agree
ROW_KEY = ("notebook", "variant", "dataset", "batch_size", "tokens_scored", "repeat")
LEGACY_RUN = "legacy"  # rows written before run ids existed


def params_hash(parameters) -> str:
    """First 12 hex digits of the SHA-256 of `parameters` as canonical JSON (sorted keys;
    values JSON cannot hold are written with `str`)."""
    blob = json.dumps(parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def new_run_id(phash: str) -> str:
    """`YYYYMMDD-HHMMSS-<phash[:6]><2 random hex>`: sortable by start time, unique per start."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{phash[:6]}{secrets.token_hex(1)}"


def current(comparable: dict | None = None) -> tuple[str, str]:
    """(run_id, params_hash) of the measurements this process writes: the runner's (environment
    variables `COMPSTUDY_RUN_ID`, `COMPSTUDY_PARAMS_HASH`) when set, else the interactive run
    `interactive-<hash of comparable>`."""
    run_id = os.environ.get(RUN_ENV)
    if run_id:
        return run_id, os.environ.get(HASH_ENV, "")
    phash = params_hash(comparable or {})
    return f"interactive-{phash}", phash


def registry_path(study: str):
    """`results/<study>/runs.json`: the runs the runner started, oldest first."""
    return paths.results_dir(study) / "runs.json"


def registered(study: str) -> list[dict]:
    """The runs `start` recorded for `study` (run_id, params_hash, started, config, notebooks)."""
    path = registry_path(study)
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"runs: {path} could not be read ({type(exc).__name__}: {exc}); starting a new list")
        return []


def start(study: str, parameters: dict, *, continue_matching: bool = False, config: str = "",
          notebooks: list[str] | None = None) -> dict:
    """Begin (or, with `continue_matching`, continue) a run of `study`; record it in
    `results/<study>/runs.json` (written atomically) and export it to this process's environment,
    which the notebooks' kernels inherit.

    Args:
        parameters: every notebook's resolved parameters ({notebook file: {name: value}}).
        continue_matching: reuse the study's latest run when its `params_hash` is the same (the
            runner's `--only`); otherwise a new run is started.

    Returns the run's record: run_id, params_hash, started, config, notebooks, continued.
    """
    phash = params_hash(parameters)
    runs = registered(study)
    if continue_matching and runs and runs[-1].get("params_hash") == phash:
        record = dict(runs[-1], continued=True)
    else:
        record = {"run_id": new_run_id(phash), "params_hash": phash, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "config": config, "notebooks": notebooks or sorted(parameters), "continued": False}
        runs.append({k: v for k, v in record.items() if k != "continued"})
        path = registry_path(study)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(runs, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    os.environ[RUN_ENV], os.environ[HASH_ENV] = record["run_id"], phash
    return record


def select_run(df: pd.DataFrame, run: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """The rows of one run, with rows measured again within it replaced by their last version.

    Args:
        df: a measurements table (`results.load`), possibly holding several runs.
        run: a run id; "latest" or None = the runner's current run (`COMPSTUDY_RUN_ID`) when the
            table has it, else the run whose newest row is the newest; "-2" = the one before, etc.

    Returns (rows, run_id, note): `note` says which run was chosen among how many.

    Raises ValueError naming the runs present when `run` is not among them.
    """
    df = df.copy()
    if "run_id" not in df.columns:
        df["run_id"] = LEGACY_RUN
    df["run_id"] = df["run_id"].fillna(LEGACY_RUN).astype(str).replace({"": LEGACY_RUN, "nan": LEGACY_RUN})
    if df.empty:
        return df, "", "no measurements"
    newest = df.groupby("run_id")["timestamp"].max().sort_values() if "timestamp" in df else \
        df.groupby("run_id").size()
    order = list(newest.index)  # oldest first
    env_run = os.environ.get(RUN_ENV)
    if run in (None, "latest"):
        chosen = env_run if env_run in order else order[-1]
    elif run.lstrip("-").isdigit() and run.startswith("-"):
        if int(run[1:]) > len(order):
            raise ValueError(f"run {run}: the table holds only {len(order)} run(s): {order}")
        chosen = order[-int(run[1:])]
    elif run in order:
        chosen = run
    else:
        raise ValueError(f"run {run!r} is not in the table; runs present (oldest first): {order}")
    rows = df[df["run_id"] == chosen]
    key = [k for k in ROW_KEY if k in rows.columns]
    before = len(rows)
    rows = rows.drop_duplicates(subset=key, keep="last").reset_index(drop=True) if key else rows
    note = f"run {chosen} ({len(rows)} rows; {len(order)} run(s) in the table, the others left out)"
    if before > len(rows):
        note += f"; {before - len(rows)} row(s) measured again within the run were replaced by their last version"
    return rows, chosen, note
