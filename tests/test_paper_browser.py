"""Issue 24: the paper as a reader sees it, in a real headless browser (Chromium through Playwright),
for the smoke study's paper and the committed paper of the default run; and its PDF.

These tests need Debian's `chromium` (and `poppler-utils` for the PDF checks). `.ci/run` installs
both, and in CI (`CI` set) a missing browser is a failure, not a skip."""
import os
import re
import shutil
import subprocess

import pytest

from compstudy import browser, paper, paths

IN_CI = bool(os.environ.get("CI"))


def _need(tool: str, found) -> None:
    if not found:
        if IN_CI:
            pytest.fail(f"{tool} is missing in CI: .ci/run installs it (apt-get install chromium poppler-utils)")
        pytest.skip(f"{tool} is not installed (apt-get install chromium poppler-utils)")


@pytest.fixture(scope="module")
def smoke_paper(smoke_study):
    assert smoke_study["code"] == 0
    _need("chromium", paper.chromium())
    return paths.repo_root() / "paper" / "smoke" / "index.html"


def _check(index, tmp_path):
    report = browser.inspect(index, screenshots=tmp_path / "shots", max_screenshots=2)
    found = browser.problems(report)
    assert not found, "\n".join(found)
    assert report.figures and all(f["caption"].startswith("Figure ") for f in report.figures)
    heads = [h["text"] for h in report.headings]
    for section in ("Abstract", "1. Introduction", "2. Methods", "3. Results", "4. Discussion", "5. Limitations",
                    "References"):
        assert any(h.startswith(section) for h in heads), (section, heads)
    assert report.screenshots and report.screenshots[0].stat().st_size > 10_000
    return report


@pytest.mark.slow
def test_the_smoke_paper_shows_every_word_and_figure_and_loads_nothing_from_the_network(smoke_paper, tmp_path):
    report = _check(smoke_paper, tmp_path)
    assert report.title_top < 200 and report.abstract_top < 1000


@pytest.mark.slow
def test_the_committed_paper_of_the_default_run_reads_in_a_browser(tmp_path):
    _need("chromium", paper.chromium())
    _check(paths.repo_root() / "paper" / "default" / "index.html", tmp_path)


@pytest.mark.slow
def test_the_browser_check_fails_on_the_old_papers_stylesheet():
    """The paper of de49596 (lab template) hid every markdown cell: its stylesheet's
    `.jp-InputArea { display: none }` also hides rendered markdown. Its first cells are kept in
    tests/data/old_paper_excerpt.html: the check must report the title, abstract and headings."""
    _need("chromium", paper.chromium())
    found = browser.problems(browser.inspect(paths.repo_root() / "tests" / "data" / "old_paper_excerpt.html"))
    assert any("title" in p for p in found) and any("abstract" in p for p in found), found
    assert any("section heading" in p for p in found), found


@pytest.mark.slow
def test_the_browser_check_fails_when_a_hiding_rule_comes_back(smoke_paper, tmp_path):
    """The same mistake on today's page: a rule that hides the markdown cells' container."""
    copy = tmp_path / "paper"
    shutil.copytree(smoke_paper.parent, copy)
    page = (copy / "index.html").read_text(encoding="utf-8")
    rule = ".text_cell_render, .jp-InputArea, .jp-InputPrompt, .jp-OutputPrompt { display: none !important; }"
    (copy / "index.html").write_text(page.replace("</style>", rule + "\n</style>", 1), encoding="utf-8")
    found = browser.problems(browser.inspect(copy / "index.html"))
    assert any("title" in p for p in found) and any("abstract" in p for p in found)
    assert any("section heading" in p for p in found)


def test_the_check_reports_network_requests_and_python_reprs():
    report = browser.PageReport(title="T", title_top=10, title_visible=True, abstract="A", abstract_top=100,
                                abstract_visible=True, headings=[{"text": "Abstract", "visible": True, "top": 90}],
                                requests=["https://cdnjs.cloudflare.com/x.js"],
                                visible_text="training cost: {'seconds': 1.0} and ['AH90', 'AH80']")
    found = browser.problems(report)
    assert any("network" in p for p in found)
    assert sum("Python repr" in p for p in found) == 2


def _pdf_pages_with_images(pdf):
    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[2:] if line.strip() and line.split()[2] == "image"]


def _pdf_text(pdf, page=None):
    args = ["pdftotext", "-layout"] + (["-f", str(page), "-l", str(page)] if page else []) + [str(pdf), "-"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_the_smoke_pdf_shows_the_text_and_keeps_each_figure_on_its_captions_page(smoke_paper):
    _check_pdf("smoke")


@pytest.mark.slow
def test_the_committed_pdf_shows_the_text_and_keeps_each_figure_on_its_captions_page():
    _check_pdf("default")


def _check_pdf(which):
    """paper/<which>/paper.pdf holds the paper's text, and each figure on the page of its caption."""
    _need("pdftotext", shutil.which("pdftotext") and shutil.which("pdfimages"))
    pdf = paths.repo_root() / "paper" / which / "paper.pdf"
    assert pdf.exists(), f"{pdf} is built beside index.html (committed for the default run)"
    text = _pdf_text(pdf)
    assert "Abstract" in text and "Cheaper transformer language models" in text and "References" in text
    n_figures = paper.structure(pdf.with_name("index.html"))["figures"]
    pages = _pdf_pages_with_images(pdf)
    assert len(pages) == n_figures
    for number, page in enumerate(pages, 1):  # figures appear in order: the k-th image is Figure k
        assert re.search(rf"Figure {number}\.", _pdf_text(pdf, page)), f"Figure {number}'s caption is not on page {page}"
    import pikepdf

    with pikepdf.open(pdf) as document:  # tagged (its structure tree kept), and saved with object streams (compact_pdf)
        assert "/StructTreeRoot" in document.Root and bool(document.Root.MarkInfo.Marked)
        assert document.pdf_version >= "1.5", f"{pdf} was not saved again by compstudy.paper.compact_pdf"


def _structure_elements(pdf):
    import pikepdf

    with pikepdf.open(pdf) as document:
        return sum(1 for o in document.objects if isinstance(o, pikepdf.Dictionary) and o.get("/Type") == "/StructElem")


def test_compacting_the_pdf_keeps_its_text_images_and_tags_in_fewer_bytes(tmp_path):
    """`paper.compact_pdf` on the committed paper written out as Chromium writes it (every object
    uncompressed and on its own): fewer bytes, the same text, the same images and the same structure
    elements; a file that is not a PDF raises PaperError and is left as it was."""
    import pikepdf

    _need("pdftotext", shutil.which("pdftotext") and shutil.which("pdfimages"))
    committed = paths.repo_root() / "paper" / "default" / "paper.pdf"
    loose = tmp_path / "paper.pdf"
    with pikepdf.open(committed) as document:
        document.save(loose, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    before = (loose.stat().st_size, _pdf_text(loose), _pdf_pages_with_images(loose), _structure_elements(loose))
    assert before[3] > 1000  # the tagged structure tree: one element per heading, paragraph, table cell, ...
    assert paper.compact_pdf(loose) == loose
    assert loose.stat().st_size < 0.7 * before[0]
    assert (_pdf_text(loose), _pdf_pages_with_images(loose), _structure_elements(loose)) == before[1:]
    assert not list(tmp_path.glob(".*partial"))
    junk = tmp_path / "junk.pdf"
    junk.write_text("not a pdf")
    with pytest.raises(paper.PaperError, match="junk.pdf is not a PDF"):
        paper.compact_pdf(junk)
    assert junk.read_text() == "not a pdf" and not list(tmp_path.glob(".*partial"))
