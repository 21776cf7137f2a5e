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
