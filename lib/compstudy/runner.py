"""Run a study: execute a config's notebooks in order with papermill.

    python -m compstudy run configs/default.yaml [-p key value ...] [--only 01_quantization]
    python -m compstudy params notebooks/00_baseline.ipynb

A config is YAML:

    study: default                 # results/<study>/, runs/<study>/, figures/<study>/
    parameters:                    # shared: given to every notebook that declares the name
      n_layer: 6
    notebooks:
      - path: notebooks/00_baseline.ipynb
        parameters: {repeats: 3}   # this notebook only

Every name is checked against the notebooks' `parameters` cells (papermill's inspection) before
anything runs: a per-notebook name the notebook does not declare, or a shared / `-p` name no
notebook declares, is rejected with the allowed names. Executed copies go to `runs/<study>/`.
A failing cell stops the run with the notebook, the cell and the error.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths

KERNEL_NAME = "compstudy"


class ConfigError(ValueError):
    """A study config or its parameters are invalid."""


@dataclass
class NotebookRun:
    path: Path
    parameters: dict = field(default_factory=dict)


@dataclass
class Study:
    name: str
    notebooks: list[NotebookRun]
    config_path: Path | None = None
    complete: bool = True  # False when --only selected a subset of the config's notebooks


def notebook_parameters(path: str | Path) -> dict:
    """The parameters a notebook declares (name -> default as written), via papermill."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    return {name: info.get("default") for name, info in params.items()}


def _resolve(path: str | Path, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for root in (base, paths.repo_root()):
        if (root / p).exists():
            return (root / p).resolve()
    return (paths.repo_root() / p).resolve()


def load_study(config_path: str | Path, overrides: dict | None = None, only: list[str] | None = None) -> Study:
    """Read and validate a study config; apply `overrides` (shared parameters from `-p`).

    Raises ConfigError naming the offending key and the allowed names, before anything runs.
    """
    config_path = Path(config_path)
    if not config_path.exists():
        raise ConfigError(f"config {config_path} does not exist")
    cfg = yaml.safe_load(config_path.read_text()) or {}
    unknown_top = set(cfg) - {"study", "description", "parameters", "notebooks"}
    if unknown_top:
        raise ConfigError(f"{config_path}: unknown top-level keys {sorted(unknown_top)}; "
                          f"allowed: study, description, parameters, notebooks")
    if not cfg.get("study") or not isinstance(cfg["study"], str):
        raise ConfigError(f"{config_path}: 'study' (a name) is required")
    entries = cfg.get("notebooks") or []
    if not entries:
        raise ConfigError(f"{config_path}: 'notebooks' must list at least one notebook")
    shared = dict(cfg.get("parameters") or {})
    shared.update(overrides or {})
    shared["study"] = cfg["study"] if "study" not in (overrides or {}) else overrides["study"]
    base = config_path.resolve().parent
    runs, declared_anywhere = [], set()
    for entry in entries:
        entry = {"path": entry} if isinstance(entry, str) else dict(entry)
        extra = set(entry) - {"path", "parameters"}
        if extra or "path" not in entry:
            raise ConfigError(f"{config_path}: notebook entries take 'path' and 'parameters', got {sorted(entry)}")
        nb = _resolve(entry["path"], base)
        if not nb.exists():
            raise ConfigError(f"{config_path}: notebook {entry['path']} not found (looked at {nb})")
        declared = notebook_parameters(nb)
        declared_anywhere |= set(declared)
        own = dict(entry.get("parameters") or {})
        bad = sorted(set(own) - set(declared))
        if bad:
            raise ConfigError(f"{config_path}: {nb.name} does not declare parameter(s) {bad}; "
                              f"it declares: {sorted(declared)}")
        params = {k: v for k, v in shared.items() if k in declared}
        params.update(own)
        runs.append(NotebookRun(nb, params))
    bad_shared = sorted(set(shared) - declared_anywhere - {"study"})
    if bad_shared:
        raise ConfigError(f"shared parameter(s) {bad_shared} are declared by no notebook of "
                          f"{config_path}; declared names: {sorted(declared_anywhere)}")
    if only:
        keep = [r for r in runs if any(o in r.path.name for o in only)]
        if not keep:
            raise ConfigError(f"--only {only} matches none of {[r.path.name for r in runs]}")
        runs = keep
    return Study(shared["study"], runs, config_path, complete=not only)


def _kernel_name() -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return KERNEL_NAME if KERNEL_NAME in specs else None


class NotebookFailed(RuntimeError):
    """A notebook cell raised during a study run."""


def run_study(study: Study, progress: bool = True) -> list[Path]:
    """Execute the study's notebooks in order; returns the executed copies' paths.

    Raises NotebookFailed naming the notebook, the cell and the error; earlier notebooks'
    results stay written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir = paths.runs_dir(study.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = _kernel_name()
    executed = []
    t_study = time.perf_counter()
    for i, run in enumerate(study.notebooks, 1):
        output = out_dir / run.path.name
        print(f"[{i}/{len(study.notebooks)}] {run.path.name}  parameters: {run.parameters}", flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(run.path), str(output), parameters=run.parameters, kernel_name=kernel,
                cwd=str(run.path.parent), progress_bar=progress, log_output=False,
            )
        except PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{run.path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                f"{exc.ename}: {exc.evalue}\nexecuted copy with the traceback: {output}"
            ) from None
        executed.append(output)
        print(f"    done in {time.perf_counter() - t0:.1f} s -> {output}", flush=True)
    wall = time.perf_counter() - t_study
    print(f"study {study.name!r}: {len(executed)} notebook(s) in {wall:.1f} s", flush=True)
    from .report import note_partial_run, write_provenance

    if study.complete:
        print(f"provenance: {write_provenance(study.name, study.config_path, wall)}", flush=True)
    else:
        note_partial_run(study.name, [r.path.name for r in study.notebooks], wall)
    _print_outcome(study.name)
    return executed


def _print_outcome(study: str, top: int = 5) -> None:
    """Where the report is, and the top of the ranking (when the comparison notebook wrote one)."""
    from .report import build_report

    try:
        report = build_report(study)
        print(f"report: {report}", flush=True)
    except Exception as exc:  # the measurements are written; a rendering failure must not hide them
        print(f"report could not be rendered: {type(exc).__name__}: {exc}", flush=True)
    ranking = paths.results_dir(study) / "ranking.csv"
    if ranking.exists():
        import pandas as pd

        r = pd.read_csv(ranking)
        cols = [c for c in ("rank", "variant", "P_c", "T_c", "E_c", "opt", "opt_lo", "opt_hi", "within_noise") if c in r]
        print(f"ranking ({ranking}), top {top}:", flush=True)
        print(r[cols].head(top).round(3).to_string(index=False), flush=True)


def _parse_value(text: str):
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compstudy", description="Run the compression study.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute a study config's notebooks with papermill")
    run_p.add_argument("config", help="a YAML study config, e.g. configs/default.yaml")
    run_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                       help="override a shared parameter (VALUE parsed as YAML); repeatable")
    run_p.add_argument("--only", action="append", help="run only notebooks whose file name contains this")
    run_p.add_argument("--no-progress", action="store_true", help="hide papermill's cell progress bar")
    par_p = sub.add_parser("params", help="list a notebook's parameters and defaults")
    par_p.add_argument("notebook")
    args = parser.parse_args(argv)

    if args.command == "params":
        for name, default in notebook_parameters(args.notebook).items():
            print(f"{name} = {default}")
        return 0
    overrides = {k: _parse_value(v) for k, v in args.parameter}
    try:
        study = load_study(args.config, overrides, args.only)
        run_study(study, progress=not args.no_progress)
    except (ConfigError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
