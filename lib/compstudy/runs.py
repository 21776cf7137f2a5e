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
from pathlib import Path

import pandas as pd

from . import paths

RUN_ENV, HASH_ENV = "COMPSTUDY_RUN_ID", "COMPSTUDY_PARAMS_HASH"
# a row measured again within a run replaces the earlier one when these agree
ROW_KEY = ("notebook", "variant", "dataset", "batch_size", "tokens_scored", "repeat", "attempt")
LEGACY_RUN = "legacy"  # rows written before run ids existed


def params_hash(parameters) -> str:
    """First 12 hex digits of the SHA-256 of `parameters` as canonical JSON (sorted keys;
    values JSON cannot hold are written with `str`)."""
    blob = json.dumps(parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def new_run_id(phash: str) -> str:
    """`YYYYMMDD-HHMMSS-<phash[:6]><6 random hex>`: sortable by start time, unique per start (also for
    many processes starting in the same second)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{phash[:6]}{secrets.token_hex(3)}"


def current(comparable: dict | None = None) -> tuple[str, str]:
    """(run_id, params_hash) of the measurements this process writes: the runner's (environment
    variables `COMPSTUDY_RUN_ID`, `COMPSTUDY_PARAMS_HASH`) when set, else the interactive run
    `interactive-<hash of comparable>`."""
    run_id = os.environ.get(RUN_ENV)
    if run_id:
        return run_id, os.environ.get(HASH_ENV, "")
    phash = params_hash(comparable or {})
    return f"interactive-{phash}", phash


ANALYSIS_NOTEBOOKS = ("05_comparison",)  # notebooks that read a run's measurements and measure nothing


def registry_path(study: str):
    """`results/<study>/runs/`: one JSON file per run the runner started (`<run_id>.json`), each
    written only by the process that runs it (atomically: a uniquely named temporary file renamed
    into place), so any number of processes can register runs at once. `results/<study>/runs.json`,
    the single file of earlier versions, is still read."""
    return paths.results_dir(study) / "runs"


def _write_record(study: str, record: dict) -> None:
    import tempfile

    folder = registry_path(study)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{record['run_id']}-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
    os.replace(tmp, folder / f"{record['run_id']}.json")


def registered(study: str) -> list[dict]:
    """The runs recorded for `study`, oldest first: run_id, params_hash, measure_hash, started,
    config, notebooks (the run's notebooks, in order) and status ({notebook: "pending" | "running" |
    "done" | "failed"}). A file that cannot be read is reported and skipped."""
    out = []
    legacy = paths.results_dir(study) / "runs.json"
    if legacy.exists():
        try:
            out += [{**r, "legacy": True} for r in json.loads(legacy.read_text(encoding="utf-8"))]
        except (OSError, json.JSONDecodeError) as exc:
            print(f"runs: {legacy} could not be read ({type(exc).__name__}: {exc}); its runs are left out")
    folder = registry_path(study)
    for f in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"runs: {f} could not be read ({type(exc).__name__}: {exc}); that run is left out")
    return sorted(out, key=lambda r: (r.get("started_ns", 0) or 0, r.get("started", ""), r["run_id"]))


def find(study: str, run_id: str) -> dict | None:
    """The registered record of `run_id`, or None."""
    return next((r for r in registered(study) if r["run_id"] == run_id), None)


def measuring(notebooks) -> list[str]:
    """The notebooks (file names or stems) that measure: all but `ANALYSIS_NOTEBOOKS`."""
    return [n for n in notebooks if Path(str(n)).stem not in ANALYSIS_NOTEBOOKS]


def missing(record: dict) -> dict[str, str]:
    """{notebook: status} of the run's measuring notebooks that did not finish ("failed",
    "running" for a run killed or still under way, "pending" for never started); {} for a complete
    run. Runs of earlier versions (no statuses) count as complete."""
    status = record.get("status")
    if status is None:
        return {}
    return {n: status.get(n, "pending") for n in measuring(record.get("notebooks", [])) if status.get(n) != "done"}


def is_complete(record: dict) -> bool:
    """Every measuring notebook of the run finished."""
    return not missing(record)


def latest_complete(study: str, measure_hash: str | None = None) -> dict | None:
    """The latest complete run of `study` (with `measure_hash`, when given), or None."""
    runs = [r for r in registered(study) if is_complete(r)
            and (measure_hash is None or r.get("measure_hash", r.get("params_hash")) == measure_hash)]
    return runs[-1] if runs else None


def start(study: str, parameters: dict, *, continue_run: str | None = None, config: str = "",
          notebooks: list[str] | None = None) -> dict:
    """Begin (or continue) a run of `study`; record it in `results/<study>/runs/<run_id>.json` and
    export it to this process's environment, which the notebooks' kernels inherit.

    Args:
        parameters: every notebook's resolved parameters ({notebook file: {name: value}}).
        continue_run: a registered run id to continue (its re-measured rows replace the earlier
            ones); None starts a new run.
        notebooks: the notebooks this invocation runs, in order.

    Returns the run's record (run_id, params_hash, measure_hash, started, config, notebooks,
    status, continued). Raises ValueError naming the registered runs for an unknown `continue_run`.
    """
    phash = params_hash(parameters)
    mhash = params_hash({k: v for k, v in parameters.items() if Path(k).stem not in ANALYSIS_NOTEBOOKS})
    notebooks = list(notebooks or sorted(parameters))
    if continue_run:
        record = find(study, continue_run)
        if record is None:
            raise ValueError(f"run {continue_run!r} is not a registered run of study {study!r}; runs: "
                             f"{[r['run_id'] for r in registered(study)]}")
        record = {**record, "continued": True}
        record["notebooks"] = list(dict.fromkeys([*record.get("notebooks", []), *notebooks]))
        record.setdefault("status", {n: "done" for n in record["notebooks"] if n not in notebooks})
        for n in notebooks:
            record["status"][n] = "pending"
    else:
        record = {"run_id": new_run_id(phash), "params_hash": phash, "measure_hash": mhash,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started_ns": time.time_ns(), "config": config,
                  "notebooks": sorted(parameters), "status": {n: "pending" for n in sorted(parameters)},
                  "continued": False, "pid": os.getpid()}
    _write_record(study, {k: v for k, v in record.items() if k not in ("continued", "legacy")})
    os.environ[RUN_ENV], os.environ[HASH_ENV] = record["run_id"], record["params_hash"]
    return record


def mark(study: str, run_id: str, notebook: str, status: str) -> None:
    """Record that `notebook` of run `run_id` is now "running", "done" or "failed"."""
    record = find(study, run_id)
    if record is None or record.get("legacy"):
        return
    record.setdefault("status", {})[notebook] = status
    _write_record(study, record)


def completeness(study: str, run_id: str, rows: pd.DataFrame) -> str:
    """One sentence for the first output of notebook 05: did every measuring notebook of the run it
    reads finish? Names those that failed, were interrupted or never ran (their variants are missing
    from every table that follows). For a run outside the registry (a notebook run in Jupyter), the
    notebooks that have rows."""
    present = sorted(set(rows["notebook"].dropna().astype(str).str.split(":").str[0])) if len(rows) else []
    record = find(study, run_id)
    if record is None or record.get("status") is None:
        return (f"Run {run_id} is not one the runner registered: it holds rows of {', '.join(present) or 'no notebook'}; "
                f"whether others are missing cannot be told.")
    gone = missing(record)
    if not gone:
        return f"Every measuring notebook of run {run_id} finished ({', '.join(measuring(record['notebooks']))})."
    words = {"failed": "failed", "running": "was interrupted", "pending": "never ran"}
    return (f"RESULTS ARE MISSING from run {run_id}: " + ", ".join(f"{Path(n).stem} {words.get(s, s)}" for n, s in gone.items())
            + ". Every table and figure below lacks their variants.")


def run_file(study: str, name: str, run_id: str | None = None) -> Path:
    """`runs/<study>/<run_id>/<name>`: where a run keeps its own copy of a results file (the
    baseline's facts, the plateau check, the ranking, the findings) beside its executed notebooks,
    so that the paper of a run is built from that run's files alone. `run_id` defaults to the
    current run (`current`); the folder is created."""
    run_id = run_id or current()[0]
    folder = paths.runs_dir(study) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def save_file(study: str, name: str, text: str) -> Path:
    """Write `text` to `results/<study>/<name>` (the study's latest) and to the current run's copy
    (`run_file`); returns the first path."""
    path = paths.results_dir(study) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    run_file(study, name).write_text(text, encoding="utf-8")
    return path


def select_run(df: pd.DataFrame, run: str | None = None, study: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """The rows of one run, with rows measured again within it replaced by their last version.

    Args:
        df: a measurements table (`results.load`), possibly holding several runs.
        run: a run id; "latest" or None = the runner's current run (`COMPSTUDY_RUN_ID`) when the
            table has it, else the latest *complete* run (`is_complete`, from `study`'s registry)
            whose rows the table holds (an incomplete one only when none is complete, and the note
            says so in capitals); "-2" = the one before the latest, etc.
        study: the study whose registry says which runs are complete (None: every run counts as
            complete).

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
    incomplete = ""
    if run in (None, "latest"):
        if env_run in order:
            chosen = env_run
        else:  # the latest complete run in the table; an incomplete one only when no run is complete, and said so
            done = [r["run_id"] for r in registered(study)] if study else []
            complete = [r for r in order if r not in done or is_complete(find(study, r) or {})]
            chosen = complete[-1] if complete else order[-1]
            if not complete:
                incomplete = (f"; WARNING: run {chosen} is INCOMPLETE (notebooks that did not finish: "
                              f"{missing(find(study, chosen) or {})}), and no complete run has rows")
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
    note = f"run {chosen} ({len(rows)} rows; {len(order)} run(s) in the table, the others left out){incomplete}"
    if before > len(rows):
        note += f"; {before - len(rows)} row(s) measured again within the run were replaced by their last version"
    return rows, chosen, note
