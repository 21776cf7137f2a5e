"""Every notebook runs top to bottom: checked on the executed copies of the session's smoke study
(`smoke_study`, configs/smoke.yaml through the runner), so each notebook runs once per test session."""
import nbformat
import pytest

from compstudy import params, paths

NOTEBOOKS = sorted(p.name for p in (paths.repo_root() / "notebooks").glob("*.ipynb"))


def test_the_smoke_study_runs_every_notebook_of_the_schema():
    assert [n.removesuffix(".ipynb") for n in NOTEBOOKS] == list(params.NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_without_errors(smoke_study, name):
    assert smoke_study["code"] == 0
    nb = nbformat.read(smoke_study["executed"] / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'study = "smoke"' in injected[0].source


def _output_text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "Traceback " + "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    return "\n".join(str(data[k]) for k in ("text/plain", "text/markdown", "text/html") if k in data)


JUNK = {
    "a progress bar": r"\d+%\|",
    "a traceback": r"Traceback",
    "a Python warning": r"\b[A-Z]\w*Warning\b|warnings\.warn",  # UserWarning, FutureWarning, ...; not the study's own "Warning:"
    "a widget's repr": r"interactive\(children=",
    "a config's repr": r"\b\w+Config\(\w+=",
    "a list's or dict's repr": r"\[\'|\{\'",  # issue 24: a sentence or a table instead
    "a raw table": r"<table border=\"1\" class=\"dataframe\"",  # issue 24: tables.show (no bare index, units, rounding)
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_executed_outputs_hold_no_junk(smoke_study, name):
    """Issue 13: an executed notebook's outputs are what a reader of the paper sees: no progress
    bar, traceback, warning, widget or dataclass repr, and no machine's absolute path."""
    import re

    nb = nbformat.read(smoke_study["executed"] / name, as_version=4)
    absolute = [str(paths.repo_root().resolve()), str(smoke_study["data"]), "/tmp/", "/home/", "/root/"]
    found = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = _output_text(output)
            found += [f"cell {i}: {what}: {re.search(rx, text).group(0)!r}" for what, rx in JUNK.items()
                      if re.search(rx, text)]
            found += [f"cell {i}: an absolute path ({a})" for a in absolute if a in text]
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                found.append(f"cell {i}: stderr output: {text[:120]!r}")
    assert not found, "\n".join(found)
