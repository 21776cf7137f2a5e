"""The study as a paper: one self-contained HTML page (and its PDF) built from a run's executed
notebooks and results.

Built with nbconvert's `basic` template (the cells' HTML alone) inside a page of this module's own
(`PAGE`, `CSS`), from one notebook that this module assembles:

- front matter written here, whose every number is computed from the run's files: the title,
  an abstract, an introduction, the methods (the run's own model, read from
  `results/<study>/baseline.json`; the measurement protocol with the run's own rounds and pass
  length; the objective, typeset as MathML; the naming key read from `docs/glossary.md`), a
  discussion and the limitations (both generated from `findings.csv`, `ranking.csv`,
  `plateau.json` and the measurements: energy method, device, model size), and the references;
- one results section per executed notebook (`runs/<study>/NN_*.ipynb`): its Markdown and outputs,
  its code folded into a "Show code" block, its title line, parameters cells and "Try this"
  exercises left out, every figure a `<figure>` with its numbered caption taken from its cell
  (metadata `caption`, or `captions` for a cell with several figures), stderr streams dropped.

The page loads nothing from the network: no MathJax, mermaid or require.js from a CDN (the lab
template's), no web fonts; math is MathML converted at build time (latex2mathml), which browsers
render natively. Figures are PNG files beside `index.html`, never inlined as base64.
`paper.pdf` is the same page printed by headless Chromium (`build_pdf`), then saved again by pikepdf
with compressed object streams (PDF 1.5): the same pages, text, images and accessibility tags, in half
the bytes (Chromium writes each of the tagged structure tree's thousands of elements as an object of its own,
uncompressed).

Why not Jupyter Book 2 (mystmd): `jupyter-book build --html` (2.1.7) first downloads its theme
from api.mystmd.org, which fails offline (tried: "getaddrinfo ENOTFOUND api.mystmd.org"); its PDF
export needs LaTeX or Typst templates fetched the same way. nbconvert builds offline in seconds.
"""
from __future__ import annotations

import html
import json
import math
import re
import shutil
import time
from pathlib import Path

from . import paths
from .provenance import environment
from .tables import plural, sentence_list

TITLE = "Cheaper transformer language models: quantization, distillation, pruning and their hybrids, measured"

# (key, reference) in citation order; the methods each notebook applies and the seed papers
REFERENCES = [
    ("Wallace2025", "Wallace, T., Ombuki-Berman, B., Ezzati-Jivan, N. Optimization Strategies for Enhancing "
                    "Resource Efficiency in Transformers & Large Language Models. ICPE 2025. arXiv:2502.00046."),
    ("Gholami2023", "Gholami, S., Omar, M. Can pruning make Large Language Models more efficient? "
                    "arXiv:2310.04573, 2023."),
    ("Hinton2015", "Hinton, G., Vinyals, O., Dean, J. Distilling the Knowledge in a Neural Network. "
                   "arXiv:1503.02531, 2015."),
    ("Sanh2019", "Sanh, V., Debut, L., Chaumond, J., Wolf, T. DistilBERT, a distilled version of BERT: smaller, "
                 "faster, cheaper and lighter. arXiv:1910.01108, 2019 (the recipe of DistilGPT2)."),
    ("Michel2019", "Michel, P., Levy, O., Neubig, G. Are Sixteen Heads Really Better than One? NeurIPS 2019."),
    ("Dettmers2022", "Dettmers, T., Lewis, M., Belkada, Y., Zettlemoyer, L. LLM.int8(): 8-bit Matrix "
                     "Multiplication for Transformers at Scale. NeurIPS 2022."),
    ("Dettmers2023", "Dettmers, T., Pagnoni, A., Holtzman, A., Zettlemoyer, L. QLoRA: Efficient Finetuning of "
                     "Quantized LLMs. NeurIPS 2023 (the NF4 data type)."),
    ("Muralidharan2024", "Muralidharan, S., Sreenivas, S. T., Joshi, R., et al. Compact Language Models via "
                         "Pruning and Knowledge Distillation (Minitron). NeurIPS 2024."),
    ("Xia2024", "Xia, M., Gao, T., Zeng, Z., Chen, D. Sheared LLaMA: Accelerating Language Model Pre-training "
                "via Structured Pruning. ICLR 2024."),
    ("Gu2024", "Gu, Y., Dong, L., Wei, F., Huang, M. MiniLLM: Knowledge Distillation of Large Language Models. "
               "ICLR 2024."),
    ("Sun2023", "Sun, M., Liu, Z., Bair, A., Kolter, J. Z. A Simple and Effective Pruning Approach for Large "
                "Language Models (Wanda). arXiv:2306.11695, 2023."),
    ("Radford2019", "Radford, A., Wu, J., Child, R., et al. Language Models are Unsupervised Multitask "
                    "Learners (GPT-2). 2019."),
    ("Merity2016", "Merity, S., Xiong, C., Bradbury, J., Socher, R. Pointer Sentinel Mixture Models "
                   "(WikiText-2). arXiv:1609.07843, 2016."),
    ("Karpathy2015", "Karpathy, A. char-rnn: tinyshakespeare corpus. 2015."),
    ("Chen2016", "Chen, J., Revels, J. Robust benchmarking in noisy environments. arXiv:1608.04295, 2016."),
]

FAMILIES = {"gpt2": "GPT-2", "llama": "Llama"}

SECTIONS = {  # notebook stem -> results section title, in the paper's order (06 feeds 05, so it comes first)
    "00_baseline": "The baseline",
    "01_quantization": "Quantization",
    "02_distillation": "Knowledge distillation",
    "03_pruning": "Pruning",
    "04_hybrid": "Hybrids",
    "06_scale": "Scale: the effects against model size and training tokens",
    "05_comparison": "Comparison: the objective, Pareto fronts, findings",
}


class PaperError(RuntimeError):
    """The paper cannot be built: a run's file is missing, or a figure has no caption."""


def _md(text: str):
    from nbformat.v4 import new_markdown_cell

    return new_markdown_cell(text.strip() + "\n")


def _pct(x: float) -> str:
    return f"{100 * (x - 1):+.1f} %"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


RUN_FILES = ("ranking.csv", "findings.csv")  # written by notebook 05 for the run it ranked


def resolve_run(study: str, run_id: str | None = None) -> str:
    """The run a paper is built from: `run_id`, else the study's latest complete run. Raises
    PaperError when there is none, or when the run is incomplete."""
    from . import runs

    record = runs.find(study, run_id) if run_id else runs.latest_complete(study)
    if record is None:
        raise PaperError(f"study {study!r} has {'no run ' + repr(run_id) if run_id else 'no complete run'}: run the "
                         f"study first (python -m compstudy run configs/{study}.yaml)")
    if not runs.is_complete(record):
        raise PaperError(f"run {record['run_id']} of study {study!r} is incomplete ({runs.missing(record)}): its paper "
                         f"would mix what it measured with nothing; finish it with --continue {record['run_id']}")
    return record["run_id"]


def _load(study: str, run_id: str) -> dict:
    """The run's own files (`runs/<study>/<run_id>/`: its ranking, findings, plateau check and
    baseline facts, beside its executed notebooks) and its rows. Raises PaperError naming a
    missing file: the title, the notebooks and the ranking must come from one run."""
    import pandas as pd

    from . import results, runs

    folder = paths.runs_dir(study) / run_id
    missing = [f"{paths.shown(folder / n)}" for n in RUN_FILES if not (folder / n).exists()]
    if missing:
        raise PaperError(f"cannot build the paper of run {run_id} of study {study!r}: {missing} missing (notebook 05 "
                         f"writes them for the run it ranks: python -m compstudy run configs/{study}.yaml --only 05 "
                         f"-p run {run_id})")
    measurements, chosen, _ = runs.select_run(results.load(study), run_id, study)
    plateau, model = folder / "plateau.json", folder / "baseline.json"
    return {"ranking": pd.read_csv(folder / "ranking.csv"), "findings": pd.read_csv(folder / "findings.csv"),
            "measurements": measurements, "run_id": chosen,
            "plateau": json.loads(plateau.read_text()) if plateau.exists() else None,
            "model": json.loads(model.read_text()) if model.exists() else None}


def facts(study: str, run_id: str) -> dict:
    """Every number the front matter states, computed from the run's files (`_load`): the model
    (`results/<study>/baseline.json`, written by notebook 00), its size, corpora, rounds, tokens
    per pass, energy method, device, the ranked variants and tier 1, the best variant's ratios,
    the findings' verdict counts, the plateau check. Raises PaperError."""
    from . import conclusions, controls, noise

    d = _load(study, run_id)
    m, r, f = d["measurements"], d["ranking"], d["findings"]
    base = m[m["variant"] == "Base"]
    main = m[m["notebook"].astype(str).str.match(r"^0[0-4]_[a-z]+$")]
    ranked = r[r["ranked"].astype(bool)].sort_values("rank")
    candidates = ranked[~ranked["variant"].map(controls.is_control) & (ranked["variant"] != "Base")]
    tier1 = candidates[candidates["tier"] == 1]
    best = candidates.iloc[0] if len(candidates) else None
    methods = sorted(set(m["energy_method"].astype(str))) if "energy_method" in m else []
    verdicts = f["verdict"].value_counts().to_dict()
    cpu = str(m["cpu"].iloc[0]) if "cpu" in m and len(m) else "unknown CPU"
    timing = noise.timing_noise(main) if len(main) else None
    spread = timing["base_spread"].dropna() if timing is not None and len(timing) else []
    devices = sorted(set(m["device"].astype(str))) if "device" in m else []
    coverage = conclusions.coverage(r)  # candidates apart from Base, controls and curve points
    return {
        "study": study, "run_id": d["run_id"], "model": d["model"],
        "family": str(base["family"].iloc[0]) if len(base) and "family" in base else "",
        "n_params": int(base["n_params"].median()) if len(base) else 0,
        "datasets": sorted(set(main["dataset"].astype(str))),
        "n_variants": int(m["variant"].nunique()),
        "n_ranked": len(ranked), "n_candidates": coverage["candidates"], "n_candidates_ranked": coverage["ranked"],
        "n_curve_points": coverage["curve_points"],
        "tier1": list(tier1["variant"]),
        "best": None if best is None else {k: best[k] for k in ("variant", "P_c", "T_c", "E_c", "opt", "rank_range")},
        "rounds": int(main["repeat"].max() + 1) if len(main) else 0,
        "tokens_per_pass": sorted(set(int(t) for t in main["tokens_scored"])) if len(main) else [],
        "context": sorted(set(int(c) for c in main["context"])) if len(main) else [],
        "energy_methods": methods, "energy_estimated": methods == ["estimated"],
        "devices": devices, "cpu": cpu,
        "findings": {k: int(v) for k, v in verdicts.items()}, "n_findings": len(f),
        "findings_table": f, "ranking": ranked,
        "plateau": d["plateau"],
        "base_spread": (float(min(spread)), float(max(spread))) if len(spread) else None,
    }


def abstract(x: dict) -> str:
    """The abstract: every number from `facts`. A control (`controls.is_control`) is never the best."""
    fam = FAMILIES.get(x["family"], x["family"] or "transformer")
    s = [f"We apply quantization, knowledge distillation, pruning and their hybrids to one "
         f"{fam} language model of {x['n_params']:,} parameters and measure "
         f"{plural(x['n_variants'], 'variant')} with one protocol: perplexity on {sentence_list(x['datasets'])}, and runtime "
         f"and energy of a whole evaluation pass, timed in {plural(x['rounds'], 'interleaved round')} against the "
         f"baseline on {sentence_list(x['devices']) or 'this machine'} ({x['cpu']})."]
    if x["best"] is not None:
        b = x["best"]
        left_out = x["n_candidates"] - x["n_candidates_ranked"]
        s.append(f"Ranked by the objective of Wallace et al. (opt = P_c^1.5 (0.5 T_c + 0.5 E_c)), "
                 f"{x['n_candidates_ranked']} of {plural(x['n_candidates'], 'compressed candidate')} are measured well "
                 f"enough to rank" + (f" ({left_out} left out: measured once, or timed under interference)" if left_out else "")
                 + (f" ({plural(x['n_curve_points'], 'point')} of the dose-response curves and sweeps, measured once "
                    f"by design, are shown as curves, not ranked)" if x.get("n_curve_points") else "")
                 + f"; {plural(len(x['tier1']), 'candidate')} cannot be told apart from the best "
                 f"({sentence_list(x['tier1'])}). The best, {b['variant']}, changes perplexity by {_pct(b['P_c'])} "
                 f"and runtime by {_pct(b['T_c'])} against the baseline.")
    else:
        s.append("No compressed candidate was measured well enough to rank (see the comparison's noise table).")
    v = x["findings"]
    s.append(f"Of the {plural(x['n_findings'], 'finding')} of the seed papers checked, {v.get('agrees', 0)} agree with "
             f"our measurements, {v.get('disagrees', 0)} disagree and {v.get('cannot tell', 0)} cannot be decided "
             f"within the intervals.")
    s.append("Energy was " + ("estimated from runtime and the processor's TDP (no hardware counter), so it "
                              "repeats runtime" if x["energy_estimated"] else
                              f"obtained as: {', '.join(x['energy_methods'])}") + ".")
    return " ".join(s)


INTRODUCTION = """
Language models are expensive to run, and the common remedies, quantization, knowledge
distillation and pruning, each trade some accuracy for speed, memory or energy. Whether the trade
is worth it depends on the model, the hardware and what the user values. Wallace et al.
[Wallace2025] measured these techniques and their combinations on GPT-2 models and ranked them
with one adjustable objective; Gholami and Omar [Gholami2023] studied weight pruning at several
sparsities, with fine-tuning afterwards. This study reproduces both designs as executable notebooks
over one small library, adds the controls a reviewer would ask for (equal-training controls,
from-scratch controls, interleaved and paired timing, intervals), and lets its reader rerun every
number with other parameters, models or hardware.
"""

_CORPUS_CITES = {"wikitext-2": "Merity2016", "tinyshakespeare": "Karpathy2015"}


def model_paragraph(x: dict) -> str:
    """'Model and data', computed from the run's `baseline.json` (notebook 00) and its rows: the
    family, shape and size of the model this run measured, whether it was trained here (corpora,
    tokens, tokenizer) or loaded (from where), and the evaluation corpora."""
    m = x.get("model")
    evals = sentence_list(f"`{d}`" for d in x["datasets"]) or "no corpus"
    if not m:
        return (f"**Model and data.** This run recorded no description of its baseline (notebook 00 writes "
                f"`results/{x['study']}/baseline.json`); its rows name a {x['family'] or 'unknown'} model of "
                f"{x['n_params']:,} parameters, evaluated on {evals}.")
    fam = FAMILIES.get(m["family"], m["family"])
    heads = f"{m['n_head']} attention heads" + (f" sharing {m['n_kv_head']} key-value heads (grouped-query attention)"
                                                 if m.get("n_kv_head") and m["n_kv_head"] != m["n_head"] else "")
    shape = (f"a {fam}-architecture model (`{m['architecture']}`) of {m['n_layer']} layers, {heads} and hidden size "
             f"{m['n_embd']}: {m['n_params']:,} parameters, a vocabulary of {m['vocab_size']:,} tokens and a context of "
             f"{m['context']:,} tokens, computing in {m['dtype']}")
    if m["trained_here"]:
        cites = sorted({_CORPUS_CITES[c.split(":")[0]] for c in m["train_corpora"] if c.split(":")[0] in _CORPUS_CITES})
        origin = (f"trained here from random initialisation for {m['train_tokens']:,} tokens on "
                  f"{sentence_list(f'`{c}`' for c in m['train_corpora'])}" + (f" [{', '.join(cites)}]" if cites else "")
                  + f", with {m['tokenizer']}")
    else:
        origin = (f"loaded from `{m['model']}` (pretrained elsewhere, not trained by this study)"
                  + (" [Radford2019]" if m["family"] == "gpt2" else ""))
    return (f"**Model and data.** The baseline of this run is {shape}, {origin}. Every variant is measured on {evals} "
            f"on {m['device']}. The baseline and every variant are built by the notebooks' library (`compstudy`) and "
            f"cached by the hash of every parameter that produced them.")


TECHNIQUES = """
**Techniques.** LLM.int8() 8-bit and NF4 / FP4 4-bit quantization with bitsandbytes
[Dettmers2022, Dettmers2023]; distillation of a half-depth student with a temperature-softened KL
to the teacher [Hinton2015, Sanh2019], forward or reverse KL [Gu2024]; attention-head pruning by
gradient importance [Michel2019]; unstructured magnitude and Wanda pruning [Sun2023] with
fine-tuning [Gholami2023]; width and depth pruning followed by distillation (Minitron
[Muralidharan2024]) and pruning to a target shape (Sheared-LLaMA [Xia2024]).

**Measurement.** Perplexity and bits per byte follow the strided sliding-window protocol; every
token is scored once. Runtime is the wall time of a whole evaluation pass after an untimed warm-up.
The variants of a notebook and its baseline are timed together in rounds, each round timing one
pass of every variant in a rotating order, and a variant's runtime ratio to the baseline is taken
within a round (paired) and summarised by the median over rounds with a 95 % bootstrap interval.
Variants that perform the same computation (same shapes, dtypes and operations, other weight
values) share one timing. Conditions whose timing was disturbed (other processes, or the
baseline's own passes spreading too much) are flagged and left out of the ranking [Chen2016].
"""

OBJECTIVE = r"""
**The objective** [Wallace2025]. For each variant, with $P_c$, $T_c$, $E_c$ its perplexity,
runtime and energy divided by the baseline's,

$$\mathrm{opt} = P_c^{\gamma}\,(\alpha\,T_c + \beta\,E_c), \qquad \gamma = 1.5,\ \alpha = \beta = 0.5 \text{ by default;}$$

lower is better. Intervals of opt come from the bootstrap over rounds; variants whose intervals
overlap the best one's form tier 1.
"""


def methods_facts(x: dict) -> str:
    """The run's own protocol figures, as a sentence."""
    return (f"In this run every pass scored {' / '.join(f'{t:,}' for t in x['tokens_per_pass'])} tokens per "
            f"corpus with windows of {' / '.join(map(str, x['context']))} tokens, and every condition was timed "
            f"in {plural(x['rounds'], 'round')}.")


def naming_key() -> str:
    """The 'Variant names' section of docs/glossary.md (one source for the paper and the glossary)."""
    text = (paths.repo_root() / "docs" / "glossary.md").read_text(encoding="utf-8")
    start = text.index("## Variant names")
    return "**Naming key.**" + text[start + len("## Variant names"):]


def discussion(x: dict) -> str:
    """The findings of the seed papers as checked in this run, one sentence each (from findings.csv)."""
    lines = []
    for _, row in x["findings_table"].iterrows():
        why = f" Why: {row['why']}." if isinstance(row.get("why"), str) and row["why"] else ""
        lines.append(f"- **{row['finding']}** ({row['claim']}): ours {row['ours']}; the paper {row['paper']}. "
                     f"Verdict: *{row['verdict']}*.{why}")
    return "\n".join(lines)


def limitations(x: dict) -> str:
    """What the run's numbers cannot say, stated from its own facts."""
    items = []
    if x["energy_estimated"]:
        items.append("**Energy is estimated**, not measured: the machine exposes no RAPL or NVML counter, so "
                     "codecarbon modelled power from the processor's TDP and load. E_c then follows T_c, and no "
                     "conclusion here rests on energy independently of runtime.")
    else:
        items.append(f"Energy was obtained as {', '.join(x['energy_methods'])}; parts marked estimated are models, "
                     "not readings.")
    if x["devices"] == ["cpu"]:
        quant = x["ranking"][x["ranking"]["variant"].isin(["Base8b", "Base4b"])].set_index("variant")["T_c"]
        slower = ", ".join(f"{v} T_c = {t:.2f}" for v, t in quant.items() if _finite(t) and t > 1)
        items.append(f"**CPU, not GPU.** Every pass ran on {x['cpu']}; the seed paper timed CUDA kernels. "
                     "bitsandbytes' CPU path dequantizes weights on every call"
                     + (f", and here the quantized baselines are slower than Base ({slower})" if slower else "")
                     + ". Speedups of structured pruning are those of a CPU.")
    items.append(f"**Scale.** The baseline has {x['n_params']:,} parameters. Effects that depend on size "
                 "(outlier features that LLM.int8() handles, redundancy among heads) can differ in models "
                 "thousands of times larger.")
    p = x["plateau"]
    if p:
        imp = p["improvement_pct"]
        items.append(f"**The baseline's training.** In the plateau check (a further {100 * p['fraction']:.0f} % of "
                     f"the training tokens at the final learning rate) held-out perplexity "
                     f"{'improved' if imp > 0 else 'got worse'} by {abs(imp):.2f} %; the check "
                     f"{'fails' if imp > p['threshold_pct'] else 'passes'} (it fails above an improvement of "
                     f"{p['threshold_pct']:.1f} %). Passing is a necessary, not a sufficient, sign of convergence.")
    spread = x["base_spread"]
    items.append("**Timing noise.** The same pass takes a different time every time it runs"
                 + (f": in this run Base's own passes spread by {100 * spread[0]:.0f}-{100 * spread[1]:.0f} % "
                    f"(max / min - 1 within a condition)" if spread else "")
                 + ". Differences inside the intervals, and ranks inside a tier, are not findings.")
    return "\n".join(f"- {i}" for i in items)


def references() -> str:
    return "\n".join(f"- [{key}] {html.escape(text)}" for key, text in REFERENCES)


def _cite(text: str) -> str:
    """[Key] and [Key1, Key2] as links to the bibliography entries."""
    keys = {k for k, _ in REFERENCES}

    def link(m):
        parts = [p.strip() for p in m.group(1).split(",")]
        if not all(p in keys for p in parts):
            return m.group(0)
        return "[" + ", ".join(f'<a href="#ref-{p}">{p}</a>' for p in parts) + "]"

    return re.sub(r"\[([A-Za-z]+\d{4}(?:, *[A-Za-z]+\d{4})*)\]", link, text)


_CODE_SPAN = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$\w])\$([^$\n]+?)\$(?![\w$])")


def typeset_math(text: str) -> str:
    """Markdown with `$$...$$` and `$...$` (outside code spans) replaced by MathML, converted at
    build time by latex2mathml: browsers render MathML natively, so the page needs no MathJax
    script from a CDN (it must work offline)."""
    from latex2mathml.converter import convert

    def display(m):
        return "\n\n" + convert(m.group(1).strip(), display="block") + "\n\n"

    def inline(m):
        return convert(m.group(1).strip())

    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = _INLINE_MATH.sub(inline, _DISPLAY_MATH.sub(display, parts[i]))
    return "".join(parts)


def _is_parameters(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return "parameters" in tags or "injected-parameters" in tags


def _figure_outputs(cell) -> list:
    return [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def _figure_html(number: int, filename: str, caption: str) -> str:
    text = html.escape(caption)
    return (f'<figure class="paper-figure" id="figure-{number}"><img src="{filename}" alt="{html.escape(caption, quote=True)}">'
            f'<figcaption><b>Figure {number}.</b> {text}</figcaption></figure>')


def _results_cells(nb_path: Path, counter: dict) -> list:
    """The cells of one executed notebook as they appear in the paper (see the module docstring):
    markdown (math typeset, the notebook's own title line dropped: the section heading replaces
    it), code folded into "Show code", outputs without stderr, each figure a `<figure>` with its
    numbered caption whose PNG is collected in `counter["files"]` (name -> bytes).
    Raises PaperError for a figure without a caption."""
    import base64

    import nbformat
    from nbformat.v4 import new_code_cell

    nb = nbformat.read(nb_path, as_version=4)
    out, titled = [], False
    files = counter.setdefault("files", {})
    for cell in nb.cells:
        if _is_parameters(cell) or "exercises" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "markdown":
            text = cell.source
            if not titled and text.lstrip().startswith("# "):  # the notebook's title: the section heading replaces it
                text = text.lstrip().split("\n", 1)[1] if "\n" in text.lstrip() else ""
            titled = True
            text = re.sub(r"^# ", "### ", re.sub(r"^## ", "#### ", text, flags=re.M), flags=re.M)
            if text.strip():
                out.append(_md(typeset_math(text)))
            continue
        if cell.cell_type != "code":
            continue
        if cell.source.strip():
            out.append(_md(f"<details class=\"code\"><summary>Show code</summary>\n\n<pre><code>"
                           f"{html.escape(cell.source)}</code></pre>\n\n</details>"))
        outputs = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        figures = _figure_outputs(cell)
        captions = cell.get("metadata", {}).get("captions") or (
            [cell["metadata"]["caption"]] if cell.get("metadata", {}).get("caption") else [])
        if figures and len(captions) != len(figures):
            raise PaperError(f"{nb_path.name}: a cell with {len(figures)} figure(s) carries {len(captions)} "
                             f"caption(s) (cell metadata 'caption' / 'captions'); every figure of the paper needs one")
        if not outputs:
            continue
        shown = new_code_cell(source="", outputs=[])
        shown.metadata = {}
        k = 0
        for o in outputs:
            if o in figures:
                if shown.outputs:
                    out.append(shown)
                    shown = new_code_cell(source="", outputs=[])
                    shown.metadata = {}
                counter["figure"] += 1
                n = counter["figure"]
                name = f"figure_{n:02d}.png"
                files[name] = base64.b64decode(o["data"]["image/png"])
                counter.setdefault("captions", []).append(captions[k])
                out.append(_md(_figure_html(n, name, captions[k])))
                k += 1
                continue
            shown.outputs.append(o)
        if shown.outputs:
            out.append(shown)
    return out


CSS = """
:root { color-scheme: light; }
body { max-width: 62rem; margin: 2rem auto; padding: 0 1.5rem; font-family: "DejaVu Serif", Georgia, serif;
       line-height: 1.5; color: #111; background: #fff; }
h1 { font-size: 1.9rem; line-height: 1.25; margin-bottom: 0.3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; }
h3 { margin-top: 1.8rem; }
.jp-InputPrompt, .jp-OutputPrompt, .jp-InputArea-prompt, .jp-OutputArea-prompt { display: none !important; }
.jp-Cell { margin: 0.4rem 0; }
.jp-OutputArea-output pre, pre { white-space: pre-wrap; font-family: "DejaVu Sans Mono", monospace; font-size: 0.8rem;
       background: #fafafa; padding: 0.4rem 0.6rem; border-left: 3px solid #ddd; overflow-x: auto; }
.jp-OutputArea-output { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-family: "DejaVu Sans", sans-serif; font-size: 0.8rem; margin: 0.5rem 0; }
.jp-RenderedHTMLCommon table, .jp-OutputArea-output table { display: block; overflow-x: auto; max-width: 100%; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
a.anchor-link { display: none; }
details.code { margin: 0.3em 0; font-size: 0.85em; color: #555; }
details.code summary { cursor: pointer; }
details.code pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
figure.paper-figure { margin: 1rem 0 1.6rem 0; break-inside: avoid; page-break-inside: avoid; }
figure.paper-figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure.paper-figure figcaption { font-size: 0.9em; margin: 0.4em 2em 0 2em; }
math[display="block"] { margin: 0.8rem 0; font-size: 1.15em; }
.byline { font-style: italic; color: #333; }
@media print {
  body { max-width: none; margin: 0; font-size: 10pt; }
  details.code { display: none; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  table, pre { break-inside: avoid; }
}
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""


def build_paper(study: str, out: str | Path | None = None, pdf: bool = True, run_id: str | None = None) -> Path:
    """Build the paper of one run of `study` (`run_id`, default the latest complete run); returns
    the path of its `index.html`.

    Reads the run's own folder `runs/<study>/<run_id>/` (its executed notebooks `NN_*.ipynb`,
    ranking.csv, findings.csv, plateau.json, baseline.json) and its rows of
    `results/<study>/measurements.csv`: title, notebooks and ranking come from one run. Writes `out` (default
    `paper/<study>/`), replacing what was there: `index.html` (self-contained: no script, style
    or font is loaded from the network, the objective is MathML), one PNG per figure, and with
    `pdf` the same page printed by headless Chromium as `paper.pdf` (`build_pdf`; skipped, with
    a message, where no Chromium is installed).

    Raises PaperError if the run is incomplete, its files are missing or a figure has no caption.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbformat.v4 import new_notebook

    run_id = resolve_run(study, run_id)
    order = list(SECTIONS)
    executed = sorted((paths.runs_dir(study) / run_id).glob("[0-9][0-9]_*.ipynb"),
                      key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name))
    if not executed:
        raise PaperError(f"no executed notebooks in {paths.shown(paths.runs_dir(study) / run_id)}: run the study first")
    x = facts(study, run_id)
    env = environment()
    merged = new_notebook()
    merged.metadata = nbformat.read(executed[0], as_version=4).metadata
    cells = [
        _md(f"# {TITLE}\n\n<p class=\"byline\">Study <code>{study}</code>, run <code>{x['run_id']}</code>; built "
            f"{time.strftime('%Y-%m-%d')} from commit <code>{env['git_commit']}</code>. Every number in this text is "
            f"computed from the run's results; the code of every cell is one click away.</p>"),
        _md("## Abstract\n\n" + abstract(x)),
        _md("## 1. Introduction\n\n" + _cite(INTRODUCTION)),
        _md("## 2. Methods\n\n" + _cite(model_paragraph(x)) + "\n\n" + _cite(TECHNIQUES) + "\n\n" + methods_facts(x)
            + "\n\n" + typeset_math(_cite(OBJECTIVE))),
        _md(naming_key()),
        _md("## 3. Results"),
    ]
    counter = {"figure": 0}
    for i, nb_path in enumerate(executed, 1):
        cells.append(_md(f"### 3.{i} {SECTIONS.get(nb_path.stem, nb_path.stem)}\n\n"
                         f"*From notebook `{nb_path.name}`.*"))
        cells += _results_cells(nb_path, counter)
    cells += [
        _md("## 4. Discussion: the seed papers' findings, checked\n\n" + discussion(x)),
        _md("## 5. Limitations\n\n" + limitations(x)),
        _md("## References\n\n" + "\n".join(f'<p id="ref-{k}">[{k}] {html.escape(t)}</p>' for k, t in REFERENCES)),
    ]
    merged.cells = cells
    for i, cell in enumerate(merged.cells):
        cell["id"] = f"p{i}"
    # the basic template: the cells' HTML alone (no CDN scripts, no MathJax, no require.js); the page is ours
    exporter = HTMLExporter(template_name="basic", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(merged)
    out = Path(out) if out else paths.repo_root() / "paper" / study
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, blob in counter.get("files", {}).items():
        (out / name).write_bytes(blob)
    index = out / "index.html"
    index.write_text(PAGE.format(title=html.escape(TITLE), css=CSS, body=body), encoding="utf-8")
    if pdf:
        try:
            print(f"pdf: {paths.shown(build_pdf(index))}")
        except PaperError as exc:
            print(f"pdf: not built ({exc})")
    return index


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps")


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable: `COMPSTUDY_CHROMIUM`, else the first of
    `CHROMIUM_NAMES` on the PATH; None when there is none."""
    import os

    found = os.environ.get("COMPSTUDY_CHROMIUM")
    if found:
        return found
    return next((p for p in (shutil.which(n) for n in CHROMIUM_NAMES) if p), None)


def build_pdf(index_html: str | Path, out: str | Path | None = None, timeout_s: float = 180) -> Path:
    """Print the built paper to PDF with headless Chromium (`--print-to-pdf`, no header or
    footer; each figure kept on the page of its caption by the page's print stylesheet, code
    folds left out), then save it again with compressed object streams (`compact_pdf`). Writes `out`
    (default `paper.pdf` beside `index.html`) and returns its path.

    Raises PaperError when no Chromium is installed (Debian: `apt-get install chromium`), when it
    fails or exceeds `timeout_s` seconds, or when it writes no PDF.
    """
    import os
    import subprocess
    import tempfile

    index_html = Path(index_html).resolve()
    out = Path(out) if out else index_html.with_name("paper.pdf")
    exe = chromium()
    if exe is None:
        raise PaperError("no Chromium found (install Debian's chromium, or set COMPSTUDY_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={out}", index_html.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                  env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired:
            raise PaperError(f"Chromium did not finish printing within {timeout_s:.0f} s") from None
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise PaperError(f"Chromium failed to print {index_html.name} (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-300:]}")
    return compact_pdf(out)


def compact_pdf(pdf: str | Path) -> Path:
    """Save `pdf` again, in place, with its objects in compressed object streams (PDF 1.5; pikepdf, that
    is qpdf): a lossless rewrite, the same pages, text, images and tagged structure tree (the tags screen
    readers read). Chromium writes each element of that tree as an uncompressed object of its own: the
    default study's 32-page paper went from 2.62 MB to 1.34 MB, with the same text (pdftotext), the
    same pixels in every image (pdfimages) and its 9,652 structure elements. Returns the path.

    Raises PaperError when the file is not a PDF pikepdf can read.
    """
    import os

    import pikepdf

    pdf = Path(pdf)
    partial = pdf.with_name(f".{pdf.name}.partial")
    try:
        with pikepdf.open(pdf) as document:
            document.save(partial, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True)
    except pikepdf.PdfError as exc:
        partial.unlink(missing_ok=True)
        raise PaperError(f"{pdf.name} is not a PDF pikepdf can read: {exc}") from None
    os.replace(partial, pdf)  # never a half-written paper.pdf
    return pdf


def structure(index_html: str | Path) -> dict:
    """The structure of a built paper, for comparing two builds: its section headings (h2/h3, with
    their numbers), the number of figures and of figure captions, and whether any image is inlined."""
    text = Path(index_html).read_text(encoding="utf-8")
    heads = [re.sub(r"<[^>]+>|¶", "", h).strip() for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", text, flags=re.S)]
    return {"headings": heads, "figures": len(re.findall(r'<img[^>]*src="figure_', text)),
            "captions": len(re.findall(r"<figcaption><b>Figure \d+\.", text)),
            "inlined_images": len(re.findall(r'src="data:image', text))}
