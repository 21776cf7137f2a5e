"""What a reader sees of the paper: the built page opened in a real headless browser.

`inspect` opens `paper/<study>/index.html` in Chromium (driven by Playwright for Python through the
system browser's executable: Playwright's own browser download reaches a CDN, which this study
never needs) at a reader's window width, records every request the page makes, and reports what is
displayed: the title and the abstract (and how far down they start), every section heading, every
figure (displayed, non-zero size, image decoded) and caption, and the page's visible text
(`innerText`, which leaves out what CSS hides and what a closed "Show code" fold holds).
`problems` turns that report into the sentences a reader would complain with; the browser test
(`tests/test_paper_browser.py`) asserts there are none.

    from compstudy import browser
    report = browser.inspect("paper/default/index.html", screenshots="shots/")
    print(browser.problems(report))
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# visible text that betrays a Python repr of a list, a dict or a dataclass config
REPR_PATTERNS = (r"\{'", r"\['", r"\b[A-Z][A-Za-z]*Config\(")


@dataclass
class PageReport:
    """What `inspect` saw. Distances are CSS pixels from the top of the page.

    Attributes:
        title: the h1's text and `title_top` its distance; `title_visible` whether it is displayed.
        abstract: the first sentence of the abstract, `abstract_top`, `abstract_visible`.
        headings: one dict per h2 / h3: text, visible, top.
        figures: one dict per `<figure>` image: src, visible, width, height, natural_width (0 when the
            image did not decode), caption, caption_visible.
        requests: every URL the page asked for that is not `file://` or `data:` (should be none).
        visible_text: the page's `innerText`.
        height: the page's full height; screenshots: the PNGs taken, top to bottom.
    """

    title: str = ""
    title_top: float = float("inf")
    title_visible: bool = False
    abstract: str = ""
    abstract_top: float = float("inf")
    abstract_visible: bool = False
    headings: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    visible_text: str = ""
    height: float = 0.0
    screenshots: list = field(default_factory=list)


def _launch(playwright):
    from .paper import CHROMIUM_FLAGS, chromium

    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium (apt-get install chromium) or set "
                                "COMPSTUDY_CHROMIUM to a Chromium or Chrome executable")
    flags = [f for f in CHROMIUM_FLAGS if f != "--headless"]
    return playwright.chromium.launch(executable_path=exe, headless=True, args=flags)


_PROBE = """() => {
  const shown = (el) => { if (!el) return false; const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none' && el.checkVisibility(); };
  const top = (el) => el ? el.getBoundingClientRect().top + window.scrollY : Infinity;
  const h1 = document.querySelector('h1');
  const heads = [...document.querySelectorAll('h2, h3')];
  const abs = heads.find(h => h.textContent.trim().startsWith('Abstract'));
  let para = abs ? abs.nextElementSibling : null;
  while (para && para.tagName !== 'P') para = para.nextElementSibling;
  return {
    title: h1 ? h1.innerText.trim() : '', title_top: top(h1), title_visible: shown(h1),
    abstract: para ? para.innerText.trim().split('. ')[0] : '', abstract_top: top(para), abstract_visible: shown(para),
    headings: heads.map(h => ({text: h.innerText.trim(), visible: shown(h), top: top(h)})),
    figures: [...document.querySelectorAll('figure img')].map(img => {
      const cap = img.closest('figure').querySelector('figcaption');
      return {src: img.getAttribute('src'), visible: shown(img), width: img.getBoundingClientRect().width,
              height: img.getBoundingClientRect().height, natural_width: img.naturalWidth,
              caption: cap ? cap.innerText.trim() : '', caption_visible: shown(cap)}; }),
    visible_text: document.body.innerText,
    height: document.documentElement.scrollHeight,
  };
}"""


def inspect(index_html: str | Path, width: int = 1280, height: int = 1600, screenshots: str | Path | None = None,
            max_screenshots: int = 40) -> PageReport:
    """Open `index_html` in headless Chromium at `width` x `height` CSS pixels and report what a
    reader sees (`PageReport`). With `screenshots` (a folder), also save the page as consecutive
    screens `screen_01.png`, ... from the top (at most `max_screenshots`).

    Raises FileNotFoundError when `index_html` or Chromium is missing.
    """
    from playwright.sync_api import sync_playwright

    index_html = Path(index_html).resolve()
    if not index_html.exists():
        raise FileNotFoundError(f"{index_html} does not exist: build the paper first (compstudy.paper.build_paper)")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(index_html.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            found = page.evaluate(_PROBE)
            shots = []
            if screenshots is not None:
                folder = Path(screenshots)
                folder.mkdir(parents=True, exist_ok=True)
                n = min(max_screenshots, int(found["height"] // height) + 1)
                for i in range(n):
                    page.evaluate(f"window.scrollTo(0, {i * height})")
                    shot = folder / f"screen_{i + 1:02d}.png"
                    page.screenshot(path=str(shot))
                    shots.append(shot)
        finally:
            browser.close()
    foreign = [u for u in requests if not u.startswith(("file://", "data:"))]
    return PageReport(requests=foreign, screenshots=shots, **found)


def problems(report: PageReport, first_screen: float = 1000.0) -> list[str]:
    """What a reader of `report`'s page would stumble on, one sentence each ([] when nothing):
    the title or the abstract's first sentence not visible within the first `first_screen` pixels,
    a hidden section heading, a figure not displayed, of zero size or not decoded, a caption not
    displayed, a request to the network, a Python repr in the visible text (`REPR_PATTERNS`)."""
    out = []
    if not report.title or not report.title_visible or report.title_top > first_screen:
        out.append(f"the title is not visible within the first {first_screen:.0f} px (top {report.title_top})")
    if not report.abstract or not report.abstract_visible or report.abstract_top > first_screen:
        out.append(f"the abstract is not visible within the first {first_screen:.0f} px (top {report.abstract_top})")
    hidden = [h["text"] for h in report.headings if not h["visible"]]
    if hidden:
        out.append(f"{len(hidden)} section heading(s) not displayed, e.g. {hidden[:3]}")
    if not report.headings:
        out.append("the page has no section headings")
    for f in report.figures:
        if not (f["visible"] and f["width"] > 0 and f["height"] > 0 and f["natural_width"] > 0):
            out.append(f"figure {f['src']} is not displayed (visible {f['visible']}, size {f['width']}x{f['height']}, "
                       f"decoded width {f['natural_width']})")
        if not (f["caption"] and f["caption_visible"]):
            out.append(f"figure {f['src']} has no visible caption")
    if report.requests:
        out.append(f"the page made {len(report.requests)} request(s) to the network, e.g. {report.requests[:3]}")
    for pattern in REPR_PATTERNS:
        for m in re.finditer(pattern, report.visible_text):
            line = report.visible_text[max(0, m.start() - 60): m.end() + 60].replace("\n", " ")
            out.append(f"a Python repr is visible ({pattern!r}): ...{line}...")
            break
    return out
