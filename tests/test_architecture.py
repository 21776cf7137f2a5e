"""The library's modules form a tree of layers (import-linter contract in pyproject.toml)."""
import shutil
import subprocess
import sys
from pathlib import Path

from compstudy import paths

ROOT = paths.repo_root()
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT + ["--no-cache"], cwd=cwd, env={"PYTHONPATH": str(pythonpath), "PATH": ""},
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept():
    run = _lint(ROOT, ROOT / "lib")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    # the same package with surgery (a low layer) importing the runner (the top): the contract must fail
    shutil.copytree(ROOT / "lib" / "compstudy", tmp_path / "lib" / "compstudy")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "lib" / "compstudy" / "surgery.py", "a") as f:
        f.write("\n\ndef _upward():\n    from . import runner  # noqa: F401\n")
    run = _lint(tmp_path, tmp_path / "lib")
    assert run.returncode != 0 and "BROKEN" in run.stdout
    assert "compstudy.surgery -> compstudy.runner" in run.stdout
