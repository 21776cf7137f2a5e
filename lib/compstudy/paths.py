"""Where the study reads and writes: data, artifact cache, results, runs, figures.

Every location has a default inside the repository and an environment variable that
overrides it, so tests and users can redirect outputs without editing code.

| location  | default            | environment variable     |
|-----------|--------------------|--------------------------|
| data      | `<repo>/data`      | `COMPSTUDY_DATA_DIR`     |
| artifacts | `<repo>/artifacts` | `COMPSTUDY_ARTIFACTS_DIR`|
| results   | `<repo>/results`   | `COMPSTUDY_RESULTS_DIR`  |
| runs      | `<repo>/runs`      | `COMPSTUDY_RUNS_DIR`     |
| figures   | `<repo>/figures`   | `COMPSTUDY_FIGURES_DIR`  |
"""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root: `COMPSTUDY_ROOT` if set, else the checkout this package
    was installed from (editable install), else the current working directory."""
    if os.environ.get("COMPSTUDY_ROOT"):
        return Path(os.environ["COMPSTUDY_ROOT"]).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").exists() and (here / "lib" / "compstudy").exists():
        return here
    return Path.cwd().resolve()


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).resolve() if value else repo_root() / default


def data_dir() -> Path:
    """Folder holding the corpora (`wikitext-2/`, `tinyshakespeare/`, ...)."""
    return _dir("COMPSTUDY_DATA_DIR", "data")


def artifacts_dir() -> Path:
    """Folder of cached artifacts (tokenizers, models, compressed variants)."""
    return _dir("COMPSTUDY_ARTIFACTS_DIR", "artifacts")


def results_dir(study: str | None = None) -> Path:
    """Folder of measurement tables, `results/<study>/` when `study` is given."""
    base = _dir("COMPSTUDY_RESULTS_DIR", "results")
    return base / study if study else base


def runs_dir(study: str | None = None) -> Path:
    """Folder of executed notebooks, `runs/<study>/` when `study` is given."""
    base = _dir("COMPSTUDY_RUNS_DIR", "runs")
    return base / study if study else base


def figures_dir(study: str | None = None) -> Path:
    """Folder of saved figures, `figures/<study>/` when `study` is given (created)."""
    base = _dir("COMPSTUDY_FIGURES_DIR", "figures")
    path = base / study if study else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def shown(path: str | Path) -> str:
    """`path` as a reader should see it in a notebook's output: relative to the repository root
    when it lies inside it (`figures/default/x.png`), else its last two parts (`…/study/x.png`);
    never a machine's absolute path."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root().resolve()))
    except ValueError:
        return str(Path("…", *path.parts[-2:]))


def executed_by_runner() -> bool:
    """True inside a notebook that `python -m compstudy run` executes (the runner sets
    COMPSTUDY_NO_PROGRESS for its kernels): outputs are stored, so no progress bars or widgets."""
    return bool(os.environ.get("COMPSTUDY_NO_PROGRESS"))
