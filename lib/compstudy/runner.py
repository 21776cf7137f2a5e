"""Run a study: execute a config's notebooks in order with papermill.

    python -m compstudy run configs/default.yaml [-p key value ...] [--only 01_quantization]
    python -m compstudy params [03_pruning]     # the parameter schema, with its documentation

A config is YAML:

    study: default                 # results/<study>/, runs/<study>/, figures/<study>/
    extends: other.yaml            # optional: start from another config (its parameters and notebooks)
    parameters:                    # given to every notebook that uses the name
      n_layer: 6
    notebooks:
      - path: notebooks/00_baseline.ipynb
        parameters: {repeats: 3}   # this notebook only

Precedence, lowest first: the schema's default (`compstudy.params`), a config's `parameters`, a
notebook entry's `parameters`, the command line's `-p` (which wins over both config levels).

Every value is validated against the schema before anything runs (types, ranges, cross-field
rules, then the corpora: present, verified, decodable): a bad value fails within seconds, naming
the parameter, the value given and what is allowed; a name no notebook uses is rejected with the
names in use. A notebook outside the schema is checked against the names its `parameters` cell
declares (papermill's inspection). The study's notebooks receive their shared parameters as one
dict, `shared`, and their own parameters by name. Executed copies go to `runs/<study>/`. A failing
cell stops the run with the notebook, the cell and the error.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import params, paths, results, runs
from .configs import ConfigError, _resolve, read_config  # noqa: F401 (runner.ConfigError, runner.read_config)

KERNEL_NAME = "compstudy"


@dataclass
class NotebookRun:
    path: Path
    parameters: dict = field(default_factory=dict)  # what papermill injects, resolved and validated
    given: dict = field(default_factory=dict)  # the values the config and command line gave (printed)


@dataclass
class Study:
    name: str
    notebooks: list[NotebookRun]
    config_path: Path | None = None
    complete: bool = True  # False when --only selected a subset of the config's notebooks
    timings: dict = field(default_factory=dict)  # notebook file name -> wall seconds, filled by run_study
    # every notebook's resolved parameters, --only or not: what the run's params_hash covers
    all_parameters: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)  # the run record (compstudy.runs.start), filled by run_study


def notebook_parameters(path: str | Path) -> dict:
    """The parameters a notebook declares (name -> default as written), via papermill."""
    import papermill

    params = papermill.inspect_notebook(str(path))
    return {name: info.get("default") for name, info in params.items()}


def _schema_parameters(nb: Path, shared: dict, own: dict, overrides: dict, label: str) -> tuple[dict, dict, list[str]]:
    """A schema notebook's parameters (`compstudy.params`): the config's shared values, then its
    entry's, then the command line, split into the `shared` dict and the notebook's own names,
    validated. Returns (papermill parameters, the values given, problems)."""
    usable = set(params.shared_names(nb.name)) | set(params.own_names(nb.name))
    bad = sorted(set(own) - usable - {"study"})
    if bad:
        return {}, {}, [f"{label}: {nb.name} does not use parameter(s) {bad}; it uses: {sorted(usable)}"]
    given = {k: v for k, v in shared.items() if k in usable}
    given.update({k: v for k, v in own.items() if k != "study"})
    given.update({k: v for k, v in overrides.items() if k in usable})  # the command line wins
    mine = set(params.shared_names(nb.name))
    try:
        resolved = params.check(nb.name, {k: v for k, v in given.items() if k in mine},
                                {k: v for k, v in given.items() if k not in mine})
    except params.ParameterError as exc:
        return {}, given, exc.problems
    run_params = {"shared": {k: resolved[k] for k in params.shared_names(nb.name)}} if mine else {}
    run_params.update({k: resolved[k] for k in params.own_names(nb.name)})
    return run_params, given, []


def load_study(config_path: str | Path, overrides: dict | None = None, only: list[str] | None = None) -> Study:
    """Read and validate a study config; apply `overrides` (`-p`: they win over every config value,
    shared or per notebook).

    The study's own notebooks (`compstudy.params.NOTEBOOKS`) are validated against the parameter
    schema here, before anything runs: types, ranges and cross-field rules, every problem of
    every notebook reported at once. Other notebooks are checked against the names their
    `parameters` cell declares (papermill's inspection).

    Raises ConfigError naming the offending parameter, the value given and what is allowed.
    """
    config_path = Path(config_path)
    cfg = read_config(config_path)
    if not cfg.get("study") or not isinstance(cfg["study"], str):
        raise ConfigError(f"{config_path}: 'study' (a name) is required")
    entries = cfg.get("notebooks") or []
    if not entries:
        raise ConfigError(f"{config_path}: 'notebooks' must list at least one notebook")
    overrides = dict(overrides or {})
    shared = dict(cfg.get("parameters") or {})
    shared.update(overrides)
    shared["study"] = overrides.get("study", cfg["study"])
    if not isinstance(shared["study"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", shared["study"]):
        raise ConfigError(f"study = {shared['study']!r}: a name of letters, digits, '.', '_' or '-' is required "
                          f"(it names results/<study>/)")
    base = config_path.resolve().parent
    notebook_runs, declared_anywhere, problems = [], set(), {}
    for entry in entries:
        extra = set(entry) - {"path", "parameters"}
        if extra or "path" not in entry:
            raise ConfigError(f"{config_path}: notebook entries take 'path' and 'parameters', got {sorted(entry)}")
        nb = _resolve(entry["path"], base)
        if not nb.exists():
            raise ConfigError(f"{config_path}: notebook {entry['path']} not found (looked at {nb})")
        if nb.suffix != ".ipynb":
            raise ConfigError(f"{config_path}: {entry['path']} is not a notebook (.ipynb)")
        own = entry.get("parameters") or {}
        if not isinstance(own, dict):
            raise ConfigError(f"{config_path}: parameters of {nb.name} must be a mapping, got {own!r}")
        if params.known(nb.name):
            declared_anywhere |= set(params.shared_names(nb.name)) | set(params.own_names(nb.name))
            run_params, given, found = _schema_parameters(nb, shared, own, overrides, str(config_path))
            for problem in found:  # a shared value's problem is reported once, with every notebook it reaches
                problems.setdefault(problem, []).append(nb.stem)
            notebook_runs.append(NotebookRun(nb, {"study": shared["study"], **run_params}, given))
            continue
        declared = notebook_parameters(nb)
        declared_anywhere |= set(declared)
        bad = sorted(set(own) - set(declared))
        if bad:
            raise ConfigError(f"{config_path}: {nb.name} does not declare parameter(s) {bad}; "
                              f"it declares: {sorted(declared)}")
        run_params = {k: v for k, v in shared.items() if k in declared}
        run_params.update(own)
        run_params.update({k: v for k, v in overrides.items() if k in declared})  # the command line wins
        notebook_runs.append(NotebookRun(nb, run_params, {k: v for k, v in run_params.items() if k != "study"}))
    bad_shared = sorted(set(shared) - declared_anywhere - {"study"})
    lines = [f"- {p} (notebooks: {', '.join(where)})" for p, where in problems.items()]
    if bad_shared:
        lines.insert(0, f"- parameter(s) {bad_shared} are used by no notebook of {config_path}; "
                        f"names in use: {sorted(declared_anywhere)}")
    if lines:
        raise ConfigError(f"{len(lines)} problem(s) found before running anything "
                          f"(`python -m compstudy params` lists every parameter):\n" + "\n".join(lines))
    all_parameters = {r.path.name: dict(r.parameters) for r in notebook_runs}
    if only:
        keep = [r for r in notebook_runs if any(o in r.path.name for o in only)]
        if not keep:
            raise ConfigError(f"--only {only} matches none of {[r.path.name for r in notebook_runs]}")
        notebook_runs = keep
    return Study(shared["study"], notebook_runs, config_path, complete=not only, all_parameters=all_parameters)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (terminal colours)."""
    return _ANSI.sub("", text)


def strip_ansi_outputs(path: str | Path) -> None:
    """Remove ANSI colour codes from the stored outputs (tracebacks, streams) of an executed
    notebook, in place: IPython colours its tracebacks for a terminal, and the codes would show
    as garbage in the HTML report and in a browser. Does nothing if the file is missing."""
    import nbformat

    path = Path(path)
    if not path.exists():
        return
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "traceback" in out:
                clean = [strip_ansi(line) for line in out["traceback"]]
                changed |= clean != out["traceback"]
                out["traceback"] = clean
            if isinstance(out.get("text"), str) and "\x1b[" in out["text"]:
                out["text"], changed = strip_ansi(out["text"]), True
            if "evalue" in out and "\x1b[" in str(out["evalue"]):
                out["evalue"], changed = strip_ansi(str(out["evalue"])), True
    if changed:
        nbformat.write(nb, path)


CORPUS_PARAMETERS = ("train_corpora", "eval_datasets")  # notebook parameters that name corpus specs


def _declared_value(text):
    """A default as papermill reports it (source text) turned into a value; the text if it is no literal."""
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def study_corpora(study: Study) -> dict[str, list[str]]:
    """Corpus spec -> the parameters that name it, over every notebook of `study` (its own
    default where a notebook is given none). Raises ConfigError for a value that is not a list of specs."""
    found: dict[str, list[str]] = {}
    for run in study.notebooks:
        if params.known(run.path.name):  # the schema's notebooks: corpora are shared parameters, resolved
            declared, given = {}, run.parameters.get("shared", {})
        else:
            declared, given = notebook_parameters(run.path), run.parameters
        for name in CORPUS_PARAMETERS:
            if name not in declared and name not in given:
                continue
            value = given.get(name, _declared_value(declared.get(name)))
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} = {value!r} ({run.path.name}): expected a non-empty list of corpus specs "
                                  f"such as ['wikitext-2:test', 'tinyshakespeare:test']")
            for spec in value:
                found.setdefault(spec, []).append(f"{name} ({run.path.name})")
    return found


def check_corpora(study: Study) -> dict[str, list[str]]:
    """Make sure every corpus the study names can be read, before any notebook starts: specs
    parsed, registered files verified against their checksums or downloaded once
    (`data.ensure_available`), folders decodable. Returns spec -> files.

    Raises ConfigError naming the parameter, the spec and what to do (within seconds: nothing is
    tokenized or trained).
    """
    from . import data

    files, problems = {}, []
    specs = study_corpora(study)
    with data.download_budget():  # a silent mirror costs at most data.DOWNLOAD_BUDGET_S in all
        for spec, where in specs.items():
            try:
                files[spec] = data.ensure_available(spec)
            except (ValueError, FileNotFoundError) as exc:
                problems.append(f"{where[0]}: corpus {spec!r} cannot be used: {exc}")
    if not problems:
        for label, which in data.label_collisions(specs).items():
            problems.append(f"corpora {which} would all be labelled {label!r} in the results (a folder corpus is named "
                            f"by its folder's name), so their rows could not be told apart: rename one folder")
    if problems:
        raise ConfigError(f"{len(problems)} corpus problem(s), found before running anything:\n- " + "\n- ".join(problems))
    return files


OUTPUT_FOLDERS = (("artifacts", paths.artifacts_dir, "COMPSTUDY_ARTIFACTS_DIR"), ("results", paths.results_dir,
                  "COMPSTUDY_RESULTS_DIR"), ("runs", paths.runs_dir, "COMPSTUDY_RUNS_DIR"),
                  ("figures", paths.figures_dir, "COMPSTUDY_FIGURES_DIR"))


def check_output_folders(study: str) -> None:
    """Make sure every folder the study writes (artifacts, results/<study>, runs/<study>,
    figures/<study>) can be created and written, before any notebook starts: a file is created
    and removed in each.

    Raises ConfigError naming each folder that cannot be written, why, and the environment
    variable that moves it.
    """
    import tempfile

    problems = []
    for label, where, env in OUTPUT_FOLDERS:
        folder = where() if label == "artifacts" else where(study)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as exc:
            problems.append(f"the {label} folder {folder} cannot be written ({type(exc).__name__}: {exc}); "
                            f"make it writable or set {env} to a writable folder")
    if problems:
        raise ConfigError(f"{len(problems)} output folder problem(s), found before running anything:\n- "
                          + "\n- ".join(problems))


def _kernel_name() -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return KERNEL_NAME if KERNEL_NAME in specs else None


class NotebookFailed(RuntimeError):
    """A notebook cell raised during a study run."""


def run_study(study: Study, progress: bool = True, continue_run: str | None = None, executor: str = "local",
              address: str | None = None, paper: bool = True) -> list[Path]:
    """Execute the study's notebooks in order; returns the executed copies' paths
    (`runs/<study>/<run_id>/NN_*.ipynb`). When the run is complete and has 05_comparison, the
    paper (`paper/<study>/`, HTML and PDF) is built from it, unless `paper` is False (it then keeps
    its last build).

    `executor="ray"` (a node with several GPUs) runs the measuring notebooks after 00 at once, one
    per GPU (Ray sets each one's `CUDA_VISIBLE_DEVICES`; each writes its own results part,
    `results.write_path`, and its rows record their GPU), then the analysis notebooks. Timing is
    never shared: with fewer than two GPUs it refuses (ConfigError); on CPU, `build --executor ray`
    parallelises the builds and `run` measures one notebook after another.

    Raises ConfigError (from the checks: output folders, corpora, device, model, base variant,
    sizes; or a study already being run) before anything runs, and NotebookFailed after the last
    notebook when any notebook failed, naming each failed notebook, its cell and error; the other
    notebooks still run and every result written stays written.
    """
    saved = {k: os.environ.get(k) for k in (runs.RUN_ENV, runs.HASH_ENV)}
    try:
        return _execute_study(study, progress, continue_run, executor, address, paper)
    finally:  # the run's id reaches its kernels only: a later run in this process starts its own
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def study_lock(study: str):
    """Hold `results/<study>/.running` (an exclusive lock, released by the operating system when
    the process ends, a `kill -9` included) while a study runs: a second start of the same study
    is refused with a ConfigError naming the process that holds it, so two runs never write the
    same study's executed notebooks, figures and paper at once."""
    import fcntl

    folder = paths.results_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".running"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise ConfigError(f"study {study!r} is being run right now ({holder}); wait for it to finish, or give this run "
                          f"another study name (-p study NAME)") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        yield
    finally:
        fh.close()


def check_before_running(study: Study) -> dict:
    """Every check the runner can make before the first notebook (`compstudy.checks`): device,
    model (folder, weights, custom code, family adapter), base variant, corpus sizes. Returns
    {"model_type": ..., "sizes": {...}}. Raises ConfigError (CheckError)."""
    from . import checks, data

    shared = next((r.parameters.get("shared") for r in study.notebooks if r.parameters.get("shared")), None)
    names = [r.path.name for r in study.notebooks]
    out = {"model_type": None, "sizes": {}}
    if shared:
        checks.check_device(shared.get("device", "auto"))
        out["model_type"] = checks.check_model(shared.get("model"), names, data.is_offline())
        if any(runs.measuring([n]) for n in names):
            out["sizes"] = checks.check_sizes(shared, names)
    for r in study.notebooks:
        if "base_variant" in r.parameters:
            checks.check_base_variant(r.parameters["base_variant"], study.all_parameters)
    return out


def gpus_for_concurrent_measurement() -> int:
    """How many GPUs this node offers for measuring notebooks at once; raises ConfigError when
    fewer than two (timing is never shared: two timed passes never run on one device at once)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        raise ConfigError(f"run --executor ray measures notebooks at once, one per GPU; this machine has {n} GPU(s), and "
                          f"timing is never shared (two timed passes on one device disturb each other). Build in "
                          f"parallel instead (python -m compstudy build CONFIG --executor ray), then run CONFIG: "
                          f"it measures one notebook after another")
    return n


def _execute_study(study: Study, progress: bool, continue_run: str | None = None, executor: str = "local",
                   address: str | None = None, paper: bool = True) -> list[Path]:
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        gpus_for_concurrent_measurement()
    check_output_folders(study.name)  # before any notebook: nothing is computed that cannot be written
    check_corpora(study)  # before any notebook: a missing or altered corpus fails in seconds
    facts = check_before_running(study)
    if facts["model_type"]:
        from . import families

        fam = families.ADAPTERS.get(facts["model_type"])
        print(f"model: {paths.shown(study.notebooks[0].parameters['shared']['model'])} ({facts['model_type']}, "
              f"{'adapter ' + fam.name if fam else 'no family adapter: quantization only'})", flush=True)
    for note in facts["sizes"].get("notes", []):
        print(f"note: {note}", flush=True)
    os.environ["COMPSTUDY_NO_PROGRESS"] = "1"  # inherited by the kernels: no frozen bars in stored outputs
    names = [r.path.name for r in study.notebooks]
    with study_lock(study.name):
        study.run = _choose_run(study, names, continue_run)
        out_dir = paths.runs_dir(study.name) / study.run["run_id"]
        out_dir.mkdir(parents=True, exist_ok=True)
        kernel = _kernel_name()
        executed, failed = [], {}
        t_study = time.perf_counter()
        if executor == "ray":  # 00 first, the measuring notebooks at once (a GPU each), the analysis last
            _concurrent_notebooks(study, out_dir, kernel, progress, executed, failed, address)
        for i, run in enumerate(study.notebooks, 1):
            if run.path.name in study.timings:  # run by _concurrent_notebooks
                continue
            output = out_dir / run.path.name
            print(f"[{i}/{len(study.notebooks)}] {run.path.name}  given: {_given(run)} (the rest: defaults of "
                  f"compstudy.params)", flush=True)
            measuring = bool(runs.measuring([run.path.name]))
            if measuring:
                runs.mark(study.name, study.run["run_id"], run.path.name, "running")
            t0 = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(run.path), str(output), parameters=run.parameters, kernel_name=kernel,
                    cwd=str(run.path.parent), progress_bar=progress, log_output=False,
                )
            except PapermillExecutionError as exc:
                failed[run.path.name] = (f"cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: "
                                         f"{strip_ansi(str(exc.evalue))}; executed copy with the traceback: {output}")
                print(f"    FAILED in {time.perf_counter() - t0:.1f} s: {failed[run.path.name]}", flush=True)
            except DeadKernelError:  # a crash in native code or the memory killer: the other notebooks still run
                failed[run.path.name] = (f"its kernel died (a crash in native code, or killed for memory); the "
                                         f"executed copy up to the last finished cell: {output}")
                print(f"    FAILED in {time.perf_counter() - t0:.1f} s: {failed[run.path.name]}", flush=True)
            finally:
                strip_ansi_outputs(output)
            if measuring:
                runs.mark(study.name, study.run["run_id"], run.path.name,
                          "failed" if run.path.name in failed else "done")
            study.timings[run.path.name] = time.perf_counter() - t0
            if run.path.name not in failed:
                executed.append(output)
                print(f"    done in {study.timings[run.path.name]:.1f} s -> {output}", flush=True)
        wall = time.perf_counter() - t_study
    print(f"study {study.name!r}: {len(executed)} of {len(study.notebooks)} notebook(s) in {wall:.1f} s", flush=True)
    from .report import note_partial_run, write_provenance

    record = runs.find(study.name, study.run["run_id"]) or study.run
    if failed:
        raise NotebookFailed(
            f"{len(failed)} notebook(s) failed: " + "; ".join(f"{n} failed in {why}" for n, why in failed.items())
            + f". Run {study.run['run_id']} is incomplete (notebooks without results: "
            + ", ".join(f"{n} ({s})" for n, s in runs.missing(record).items()) + "); no paper was built. "
            f"After a fix, `python -m compstudy run {study.config_path} --only <notebook> --continue {study.run['run_id']}` "
            f"re-runs the failed notebooks into the same run.")
    if study.complete:
        print(f"provenance: {write_provenance(study.name, study.config_path, wall)}", flush=True)
    else:
        note_partial_run(study.name, names, wall)
    _print_outcome(study, record, paper=paper)
    return executed


def _concurrent_notebooks(study: Study, out_dir: Path, kernel: str, progress: bool, executed: list, failed: dict,
                          address: str | None) -> None:
    """`run --executor ray`: 00 (the baseline) here, then every other measuring notebook as a Ray task
    holding one GPU, each writing its own results part (`COMPSTUDY_WORKER` = its name)."""
    import papermill
    import ray

    first, rest = study.notebooks[0], [r for r in study.notebooks[1:] if runs.measuring([r.path.name])]
    for run in [first]:
        t0 = time.perf_counter()
        papermill.execute_notebook(str(run.path), str(out_dir / run.path.name), parameters=run.parameters,
                                   kernel_name=kernel, cwd=str(run.path.parent), progress_bar=progress, log_output=False)
        study.timings[run.path.name] = time.perf_counter() - t0
        executed.append(out_dir / run.path.name)
        runs.mark(study.name, study.run["run_id"], run.path.name, "done")
    env = {k: v for k, v in os.environ.items() if k.startswith(("COMPSTUDY_", "HF_", "CODECARBON_"))}

    @ray.remote(num_gpus=1, max_calls=1)
    def execute(path, output, parameters, worker):
        os.environ[results.WORKER_ENV] = worker  # its own results part; the kernel inherits it
        t0 = time.perf_counter()
        papermill.execute_notebook(path, output, parameters=parameters, kernel_name=kernel, cwd=str(Path(path).parent),
                                   progress_bar=False, log_output=False)
        return time.perf_counter() - t0

    ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, ignore_reinit_error=True)
    try:
        refs = {}
        for run in rest:
            runs.mark(study.name, study.run["run_id"], run.path.name, "running")
            refs[run.path.name] = (run, execute.remote(str(run.path), str(out_dir / run.path.name), run.parameters,
                                                       run.path.stem))
        for name, (run, ref) in refs.items():
            try:
                study.timings[name] = ray.get(ref)
                executed.append(out_dir / name)
            except Exception as exc:  # the others still finish; the run names what failed
                failed[name] = f"{type(exc).__name__}: {strip_ansi(str(exc))[-400:]}; executed copy: {out_dir / name}"
                study.timings[name] = float("nan")
            runs.mark(study.name, study.run["run_id"], name, "failed" if name in failed else "done")
    finally:
        ray.shutdown()


def _given(run: NotebookRun) -> str:
    """The values the config and command line gave a notebook, as printed (the from-scratch shape
    left out when a model is loaded: it does not apply)."""
    given = dict(run.given)
    if given.get("model"):
        for k in ("family", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "dropout", "tokenizer",
                  "train_tokens", "lr"):
            given.pop(k, None)
    return ", ".join(f"{k}={v!r}" for k, v in given.items()) or "nothing"


def _choose_run(study: Study, names: list[str], continue_run: str | None) -> dict:
    """The run this invocation writes into, said in one line: an explicit `--continue RUN`; for
    analysis notebooks alone (05), the latest complete run with this config's measuring parameters
    (else the latest complete run, and the line says its parameters differ); else the study's
    latest run with the same parameters when it is incomplete (continued: its re-measured rows
    replace the earlier ones), or a new run."""
    parameters = study.all_parameters or {r.path.name: r.parameters for r in study.notebooks}
    mhash = runs.params_hash({k: v for k, v in parameters.items() if k in runs.measuring(parameters)})
    if continue_run:
        record = runs.start(study.name, parameters, continue_run=continue_run, config=str(study.config_path or ""),
                            notebooks=names)
        print(f"run {record['run_id']} (continued, as asked: --continue); results/{study.name}/runs/ lists the study's runs",
              flush=True)
        return record
    if not runs.measuring(names):  # analysis only: rank a complete run, write nothing new into the registry
        record = runs.latest_complete(study.name, mhash)
        note = "the latest complete run with this config's parameters"
        if record is None:
            record = runs.latest_complete(study.name)
            note = "the latest complete run; its measuring parameters DIFFER from this config's (-p run ID picks another)"
        if record is None:
            raise ConfigError(f"study {study.name!r} has no complete run to read (results/{study.name}/runs/): run the "
                              f"study first, or name a run with -p run ID")
        os.environ[runs.RUN_ENV], os.environ[runs.HASH_ENV] = record["run_id"], record["params_hash"]
        print(f"reading run {record['run_id']}: {note}", flush=True)
        return record
    latest = [r for r in runs.registered(study.name) if r.get("measure_hash", r.get("params_hash")) == mhash]
    if latest and not runs.is_complete(latest[-1]) and not study.complete:
        record = runs.start(study.name, parameters, continue_run=latest[-1]["run_id"],
                            config=str(study.config_path or ""), notebooks=names)
        print(f"run {record['run_id']} (continued: the latest run with these parameters is incomplete, "
              f"{runs.missing(latest[-1])}); results/{study.name}/runs/ lists the study's runs", flush=True)
        return record
    record = runs.start(study.name, parameters, config=str(study.config_path or ""), notebooks=names)
    print(f"run {record['run_id']} (new; parameters {record['params_hash']}); results/{study.name}/runs/ lists the "
          f"study's runs", flush=True)
    return record


def _print_outcome(study: Study, record: dict, top: int = 5, paper: bool = True) -> None:
    """Where the paper is (built here when `paper`), and the top of the ranking's compression
    candidates (never a control), how many were ranked and how many left out; a warning with the
    command that re-measures their notebooks when more than a quarter are unranked."""
    from . import conclusions
    from .paper import build_paper

    if not paper:
        print(f"paper: not rebuilt (--no-paper); paper/{study.name}/ holds its last build", flush=True)
    elif runs.is_complete(record) and any(r.path.stem == "05_comparison" for r in study.notebooks):
        try:
            page = build_paper(study.name, run_id=record["run_id"])
            print(f"paper: {page} (open it in a browser)", flush=True)
        except Exception as exc:  # the measurements are written; a rendering failure must not hide them
            print(f"the paper could not be built: {type(exc).__name__}: {exc}", flush=True)
    ranking = paths.results_dir(study.name) / "ranking.csv"
    if not ranking.exists():
        return
    import pandas as pd

    r = pd.read_csv(ranking)
    cands = conclusions.candidates(r)
    cov = conclusions.coverage(r)
    cols = [c for c in ("rank", "rank_range", "tier", "variant", "P_c", "T_c", "E_c", "opt", "opt_lo", "opt_hi") if c in r]
    best = cands[cands["ranked"].astype(bool)].sort_values("opt")
    print(f"ranking ({paths.shown(ranking)}): {conclusions.coverage_sentence(r)} Top {min(top, len(best))} compression "
          f"candidates (controls and Base left out):", flush=True)
    print(best[cols].head(top).round(3).to_string(index=False), flush=True)
    if cov["share_unranked"] > 0.25:
        unranked = cands[~cands["ranked"].astype(bool) & cands["variant"].isin([v for vs in cov["reasons"].values() for v in vs])]
        from . import results as results_table

        m = results_table.load(study.name)
        m = m[m["run_id"].astype(str) == record["run_id"]] if "run_id" in m else m
        notebooks = sorted({n.split(":")[0] for n in m[m["variant"].isin(unranked["variant"])]["notebook"].astype(str)}
                           & {r.path.stem for r in study.notebooks})
        only = " ".join(f"--only {n}" for n in notebooks) or "--only 01 --only 04"
        print(f"WARNING: {cov['unranked']} of {cov['candidates']} candidates ({cov['share_unranked']:.0%}) are not "
              f"ranked ({', '.join(f'{k}: {len(v)}' for k, v in cov['reasons'].items())}); the ranking above leaves "
              f"them out. Re-measure their notebooks on a quiet machine:\n"
              f"    python -m compstudy run {study.config_path} {only} --continue {record['run_id']} --only 05",
              flush=True)


def _parse_value(key: str, text: str):
    """A `-p KEY VALUE` value parsed as YAML. Raises ConfigError naming the parameter."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"-p {key} {text!r}: not a valid YAML value ({exc.problem or exc}); lists look like "
                          f"'[1, 2]', strings like 'name' or '\"name\"'") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compstudy", description="Run the compression study.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute a study config's notebooks with papermill")
    run_p.add_argument("config", help="a YAML study config, e.g. configs/default.yaml")
    run_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                       help="override a shared parameter (VALUE parsed as YAML); repeatable")
    run_p.add_argument("--only", action="append", help="run only notebooks whose file name contains this")
    run_p.add_argument("--no-progress", action="store_true", help="hide papermill's cell progress bar")
    run_p.add_argument("--no-paper", action="store_true",
                       help="do not build the paper at the end (paper/<study>/ keeps its last build), e.g. while "
                            "re-running 05_comparison to try its parameters")
    run_p.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: one notebook after another (default); ray: on a node with several GPUs, the "
                            "measuring notebooks at once, one per GPU")
    run_p.add_argument("--address", help="ray: an existing cluster's address")
    run_p.add_argument("--continue", dest="continue_run", metavar="RUN_ID",
                       help="write into this registered run (re-measured rows replace its earlier ones) instead of a new one")
    par_p = sub.add_parser("params", help="print the parameter schema (of one notebook when given) with its documentation")
    par_p.add_argument("notebook", nargs="?", help="a notebook path or name, e.g. 03_pruning; all when left out")
    data_p = sub.add_parser("data", help="copy or download the corpora a config needs, and verify their checksums")
    data_p.add_argument("--config", default=str(paths.repo_root() / "configs" / "default.yaml"),
                        help="the study config whose corpora are needed (default: configs/default.yaml)")
    data_p.add_argument("--from", dest="source", help="a folder of corpora to copy from first (e.g. ../shared/data)")
    plan_p = sub.add_parser("plan", help="print a study's artifact graph (what its notebooks build, which is cached, "
                                         "estimated costs) and write it as JSON")
    plan_p.add_argument("config", help="a YAML study config")
    plan_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    plan_p.add_argument("--only", action="append", help="plan only notebooks whose file name contains this")
    plan_p.add_argument("--json", dest="json_path", help="where to write the graph (default runs/<study>/plan.json)")
    build_p = sub.add_parser("build", help="build every missing artifact of a study, parents first, on an executor")
    build_p.add_argument("config", help="a YAML study config")
    build_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    build_p.add_argument("--only", action="append", help="build only what notebooks whose file name contains this need")
    build_p.add_argument("--executor", choices=("local", "ray", "slurm"), default="local",
                         help="local: in this process, in order (default); ray: a Ray Core task per artifact; "
                              "slurm: a submitit job array per wave")
    build_p.add_argument("--address", help="ray: an existing cluster's address (default: start a local one)")
    build_p.add_argument("--workers", type=int, help="tasks at once (default: the cores, or 1 for local)")
    build_p.add_argument("--threads", type=int, help="torch threads per task (default: cores / workers)")
    build_p.add_argument("--slurm", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                         help="slurm: a submitit parameter (partition, timeout_min, gpus_per_node, ...; "
                              "cluster local runs the jobs here); repeatable")
    build_p.add_argument("--report", help="where to write the build's report as JSON")
    cmp_p = sub.add_parser("compare", help="compare the rankings of two runs: STUDY[@RUN] or a CSV path[@RUN]")
    cmp_p.add_argument("a", help="STUDY[@RUN] (RUN: a run id, latest, -2, ...), a measurements.csv[@RUN] or a ranking.csv")
    cmp_p.add_argument("b", help="the other run, in the same forms")
    args = parser.parse_args(argv)

    if args.command == "compare":
        from .compare import main as compare_main

        try:
            return compare_main(args.a, args.b)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "data":
        return _data_command(args.config, args.source)
    if args.command in ("plan", "build"):
        return _plan_or_build(args)

    if args.command == "params":
        if args.notebook is None or params.known(args.notebook):
            print(params.describe(args.notebook))
        elif Path(args.notebook).is_file():
            for name, default in notebook_parameters(args.notebook).items():
                print(f"{name} = {default}")
        else:
            print(f"error: {args.notebook!r} is neither one of the study's notebooks ({', '.join(params.NOTEBOOKS)}) nor "
                  f"a notebook file", file=sys.stderr)
            return 2
        return 0
    try:
        overrides = {k: _parse_value(k, v) for k, v in args.parameter}
        study = load_study(args.config, overrides, args.only)
        run_study(study, progress=not args.no_progress, continue_run=args.continue_run, executor=args.executor,
                  address=args.address, paper=not args.no_paper)
    except (ConfigError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


def _plan_or_build(args) -> int:
    """`python -m compstudy plan` / `build` (compstudy.plan, compstudy.executors)."""
    import json

    from . import executors, plan as plans

    try:
        overrides = {k: _parse_value(k, v) for k, v in args.parameter}
        study = load_study(args.config, overrides, args.only)
        only = [nb.path.stem for nb in study.notebooks]
        if args.command == "plan":
            graph = plans.plan(study, only)
            for line in plans.describe(graph):
                print(line)
            path = graph.save(args.json_path or paths.runs_dir(study.name) / "plan.json")
            print(f"written {paths.shown(path)}")
            return 0
        slurm = {k: _parse_value(k, v) for k, v in args.slurm}
        report = executors.build(study, args.executor, address=args.address, workers=args.workers,
                                 threads=args.threads, only=only, slurm_parameters=slurm)
        if args.report:
            Path(args.report).write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
        return 0
    except (ConfigError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _data_command(config: str, source: str | None) -> int:
    """`python -m compstudy data`: copy what `source` has, then verify or download what the config needs."""
    from . import data

    if source and Path(source).is_dir():
        try:
            for path in data.copy_from(source):
                print(f"copied and verified {path}")
        except (data.CorpusChecksumError, data.CorpusUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif source:
        print(f"{source} is not a folder: nothing copied; missing corpora are downloaded from their sources")
    try:
        files = check_corpora(load_study(config))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for spec, found in files.items():
        print(f"{spec}: " + (", ".join(str(f) for f in found) or "fetched online when first read"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
