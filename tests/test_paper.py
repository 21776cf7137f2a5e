"""Issue 13: the paper (`compstudy.paper`) built from the smoke study, and the committed paper of
the default run."""
import re

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from compstudy import controls, paper, paths

SECTIONS = ["Abstract", "1. Introduction", "2. Methods", "3. Results", "4. Discussion", "5. Limitations", "References"]


def _heads(structure):
    return [re.sub(r"\s+", " ", h) for h in structure["headings"]]


@pytest.mark.slow
def test_the_smoke_study_builds_a_paper_with_every_section_and_every_figure_captioned(smoke_study, monkeypatch):
    assert smoke_study["code"] == 0
    index = paths.repo_root() / "paper" / "smoke" / "index.html"
    assert index.exists(), "the runner builds the paper at the end of a complete study"
    s = paper.structure(index)
    heads = _heads(s)
    for section in SECTIONS:
        assert any(h.startswith(section) for h in heads), (section, heads)
    assert [h for h in heads if re.match(r"3\.\d ", h)] == [f"3.{i} {t}" for i, t in enumerate(paper.SECTIONS.values(), 1)]
    assert s["figures"] >= 10 and s["figures"] == s["captions"], s
    assert s["inlined_images"] == 0  # figures are files
    assert len(list(index.parent.glob("figure_*.png"))) == s["figures"]
    text = index.read_text()
    outside_code = re.sub(r"<details.*?</details>", "", text, flags=re.S)
    assert "from compstudy import" not in outside_code and "from compstudy import" in text  # folded, not gone
    assert "injected-parameters" not in text and "Try this" not in text
    for var, value in smoke_study["env"].items():  # the smoke study's results
        monkeypatch.setenv(var, value)
    ranked = pd.read_csv(paths.results_dir("smoke") / "ranking.csv").query("ranked")
    candidates = ranked[~ranked["variant"].map(controls.is_control) & (ranked["variant"] != "Base")]
    abstract = text[text.index(">Abstract"):text.index(">1. Introduction")]
    assert f"The best, {candidates.iloc[0]['variant']}," in abstract  # the abstract's numbers and names come from the run
    named = ranked[ranked["variant"].map(controls.is_control)]["variant"]
    assert not any(f"The best, {c}," in abstract for c in named)  # issue 28: a control is never the best


@pytest.mark.slow
def test_the_committed_paper_of_the_default_run_has_the_structure_the_build_produces(smoke_study):
    committed = paths.repo_root() / "paper" / "default" / "index.html"
    assert committed.exists(), "paper/default/ is committed with the default run's results"
    built, ours = paper.structure(paths.repo_root() / "paper" / "smoke" / "index.html"), paper.structure(committed)
    # the default study runs 00-05; notebook 06 is its own study (configs/scale.yaml), read by 05's finding (h)
    scale_title = paper.SECTIONS["06_scale"]
    unnumbered = [re.sub(r"^3\.\d+ ", "3.x ", h) for h in _heads(built) if not h.endswith(scale_title)]
    assert [re.sub(r"^3\.\d+ ", "3.x ", h) for h in _heads(ours)] == unnumbered
    assert [h for h in _heads(ours) if re.match(r"3\.\d ", h)] == [
        f"3.{i} {t}" for i, t in enumerate([t for t in paper.SECTIONS.values() if t != scale_title], 1)]
    smoke_html = (paths.repo_root() / "paper" / "smoke" / "index.html").read_text(encoding="utf-8")
    scale_section = re.search(r"<h3[^>]*>3\.\d+ " + re.escape(scale_title) + r".*?(?=<h[23])", smoke_html, flags=re.S)
    scale_figures = len(re.findall(r'<img[^>]*src="figure_', scale_section.group(0))) if scale_section else 0
    assert ours["figures"] == built["figures"] - scale_figures == ours["captions"] and ours["inlined_images"] == 0
    assert sum(p.stat().st_size for p in committed.parent.iterdir()) < 5_000_000  # small: figures as files


def test_a_figure_without_a_caption_stops_the_build(tmp_path):
    nb = new_notebook()
    cell = new_code_cell("plot()")
    cell.outputs = [new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]
    nb.cells = [cell]
    path = tmp_path / "09_x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(paper.PaperError, match="caption"):
        paper._results_cells(path, {"figure": 0})
    cell.metadata["caption"] = "What the figure shows."
    nbformat.write(nb, path)
    cells = paper._results_cells(path, {"figure": 0})
    assert any("Figure 1." in c.source for c in cells if c.cell_type == "markdown")


def test_every_figure_cell_of_the_notebooks_carries_its_captions():
    """The source notebooks: every cell that calls a plotting function has as many captions as
    figures it draws (the paper checks the executed outputs; this catches a new figure early)."""
    for nb_path in sorted((paths.repo_root() / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            if cell.cell_type == "code" and "plots." in cell.source:
                meta = cell.metadata
                assert meta.get("caption") or meta.get("captions"), (nb_path.name, cell.source[:80])
