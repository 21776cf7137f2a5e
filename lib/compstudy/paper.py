"""The study as a paper: one HTML page built from a run's executed notebooks and results.

Built with nbconvert (already installed with papermill, works offline, no Node.js or Sphinx tool
chain) from one notebook that this module assembles:

- front matter written here, whose every number is computed from the run's files: the title,
  an abstract, an introduction, the methods (the measurement protocol with the run's own rounds
  and pass length, the objective typeset, the naming key read from `docs/glossary.md`), a
  discussion and the limitations (both generated from `findings.csv`, `ranking.csv`,
  `plateau.json` and the measurements: energy method, device, model size), and the references;
- one results section per executed notebook (`runs/<study>/NN_*.ipynb`): its Markdown and outputs,
  its code folded into a "Show code" block, its parameters cells and "Try this" exercises left
  out, every figure numbered and captioned from the caption its cell carries (cell metadata
  `caption`, or `captions` for a cell with several figures), stderr streams dropped.

Figures are written as PNG files next to `index.html` (nbconvert's `ExtractOutputPreprocessor`),
never inlined as base64, so that the committed paper of the default run stays small.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

from . import paths
from .provenance import environment

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

SECTIONS = {  # notebook stem -> results section title
    "00_baseline": "The baseline",
    "01_quantization": "Quantization",
    "02_distillation": "Knowledge distillation",
    "03_pruning": "Pruning",
    "04_hybrid": "Hybrids",
    "05_comparison": "Comparison: the objective, Pareto fronts, findings",
}


class PaperError(RuntimeError):
    """The paper cannot be built: a run's file is missing, or a figure has no caption."""


def _md(text: str):
    from nbformat.v4 import new_markdown_cell

    return new_markdown_cell(text.strip() + "\n")


def _pct(x: float) -> str:
    return f"{100 * (x - 1):+.1f} %"


def _load(study: str) -> dict:
    """The run's files the front matter is computed from. Raises PaperError naming a missing one."""
    import pandas as pd

    from . import results, runs

    folder = paths.results_dir(study)
    need = {"ranking": folder / "ranking.csv", "findings": folder / "findings.csv"}
    missing = [str(p) for p in need.values() if not p.exists()]
    if missing:
        raise PaperError(f"cannot build the paper of study {study!r}: {missing} missing; run the study "
                         f"(python -m compstudy run configs/{study}.yaml) first")
    measurements, run_id, _ = runs.select_run(results.load(study))
    plateau = folder / "plateau.json"
    return {"ranking": pd.read_csv(need["ranking"]), "findings": pd.read_csv(need["findings"]),
            "measurements": measurements, "run_id": run_id,
            "plateau": json.loads(plateau.read_text()) if plateau.exists() else None}


def facts(study: str) -> dict:
    """Every number the front matter states, computed from the run's files (`_load`): model size,
    corpora, rounds, tokens per pass, energy method, device, the ranked variants and tier 1,
    the best variant's ratios, the findings' verdict counts, the plateau check. Raises PaperError."""
    d = _load(study)
    m, r, f = d["measurements"], d["ranking"], d["findings"]
    base = m[m["variant"] == "Base"]
    main = m[m["notebook"].astype(str).str.match(r"^0[0-4]_[a-z]+$")]
    ranked = r[r["ranked"].astype(bool)].sort_values("rank")
    tier1 = ranked[ranked["tier"] == 1]
    best = ranked.iloc[0] if len(ranked) else None
    methods = sorted(set(m["energy_method"].astype(str))) if "energy_method" in m else []
    verdicts = f["verdict"].value_counts().to_dict()
    cpu = str(m["cpu"].iloc[0]) if "cpu" in m and len(m) else "unknown CPU"
    from . import score

    noise = score.timing_noise(main) if len(main) else None
    spread = noise["base_spread"].dropna() if noise is not None and len(noise) else []
    devices = sorted(set(m["device"].astype(str))) if "device" in m else []
    return {
        "study": study, "run_id": d["run_id"],
        "family": str(base["family"].iloc[0]) if len(base) and "family" in base else "",
        "n_params": int(base["n_params"].median()) if len(base) else 0,
        "datasets": sorted(set(main["dataset"].astype(str))),
        "n_variants": int(m["variant"].nunique()),
        "n_ranked": len(ranked), "tier1": list(tier1["variant"]),
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
    """The abstract: every number from `facts`."""
    s = [f"We apply quantization, knowledge distillation, pruning and their hybrids to one "
         f"{FAMILIES.get(x['family'], x['family'] or 'transformer')} language model of {x['n_params']:,} parameters and measure "
         f"{x['n_variants']} variants with one protocol: perplexity on {', '.join(x['datasets'])}, and runtime and "
         f"energy of a whole evaluation pass, timed in {x['rounds']} interleaved rounds against the baseline on "
         f"{', '.join(x['devices']) or 'this machine'} ({x['cpu']})."]
    if x["best"] is not None:
        b = x["best"]
        s.append(f"Ranked by the objective of Wallace et al. (opt = P_c^1.5 (0.5 T_c + 0.5 E_c)), {x['n_ranked']} "
                 f"variants are measured well enough to rank; {len(x['tier1'])} cannot be told apart from the best "
                 f"({', '.join(x['tier1'])}). The best, {b['variant']}, changes perplexity by {_pct(b['P_c'])} "
                 f"and runtime by {_pct(b['T_c'])} against the baseline.")
    v = x["findings"]
    s.append(f"Of the {x['n_findings']} findings of the seed papers checked, {v.get('agrees', 0)} agree with our "
             f"measurements, {v.get('disagrees', 0)} disagree and {v.get('cannot tell', 0)} cannot be decided "
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

METHODS = """
**Model and data.** The baseline and every variant are built by the notebooks' library
(`compstudy`) and cached by the hash of every parameter that produced them. The offline default
trains its own GPT-2-architecture model to its validation plateau on WikiText-2 [Merity2016] and
tinyshakespeare [Karpathy2015]; with a network, a pretrained GPT-2 [Radford2019] can be loaded
instead.

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
            f"in {x['rounds']} rounds.")


def naming_key() -> str:
    """The 'Variant names' section of docs/glossary.md (one source for the paper and the glossary)."""
    text = (paths.repo_root() / "docs" / "glossary.md").read_text(encoding="utf-8")
    start = text.index("## Variant names")
    return "**Naming key.**" + text[start + len("## Variant names"):]


def discussion(x: dict) -> str:
    """The findings of the seed papers as checked in this run, one sentence each (from findings.csv)."""
    lines = []
    for _, row in x["findings_table"].iterrows():
        why = f" {row['why']}" if isinstance(row.get("why"), str) and row["why"] else ""
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
        slower = ", ".join(f"{v} T_c = {t:.2f}" for v, t in quant.items() if t > 1)
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


def _is_parameters(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return "parameters" in tags or "injected-parameters" in tags


def _figure_outputs(cell) -> list:
    return [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def _results_cells(nb_path: Path, counter: dict) -> list:
    """The cells of one executed notebook as they appear in the paper (see the module docstring).
    Raises PaperError for a figure without a caption."""
    import nbformat
    from nbformat.v4 import new_code_cell

    nb = nbformat.read(nb_path, as_version=4)
    out = []
    for cell in nb.cells:
        if _is_parameters(cell) or "exercises" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "markdown":
            text = cell.source
            text = re.sub(r"^# ", "### ", re.sub(r"^## ", "#### ", text, flags=re.M), flags=re.M)
            out.append(_md(text))
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
            shown.outputs.append(o)
            if o in figures:
                counter["figure"] += 1
                counter.setdefault("captions", []).append(captions[k])
                out.append(shown)
                out.append(_md(f'<p class="caption"><b>Figure {counter["figure"]}.</b> {html.escape(captions[k])}</p>'))
                k += 1
                shown = new_code_cell(source="", outputs=[])
                shown.metadata = {}
        if shown.outputs:
            out.append(shown)
    return out


CSS = """
<style>
body { max-width: 60rem; margin: auto; }
.jp-InputArea, .jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
details.code { margin: 0.3em 0; font-size: 0.85em; color: #555; }
details.code pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
p.caption { font-size: 0.9em; margin: 0.2em 2em 1.5em 2em; }
</style>
"""


def build_paper(study: str, out: str | Path | None = None) -> Path:
    """Build the paper of `study`'s latest run; returns the path of its `index.html`.

    Reads `runs/<study>/NN_*.ipynb` (the executed notebooks) and `results/<study>/` (ranking.csv,
    findings.csv, plateau.json, measurements.csv). Writes `out` (default `paper/<study>/`):
    `index.html` and one PNG per figure, replacing what was there.

    Raises PaperError if the run's files are missing or a figure has no caption.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor
    from nbformat.v4 import new_notebook

    executed = sorted(paths.runs_dir(study).glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        raise PaperError(f"no executed notebooks in {paths.shown(paths.runs_dir(study))}: run the study first")
    x = facts(study)
    env = environment()
    merged = new_notebook()
    merged.metadata = nbformat.read(executed[0], as_version=4).metadata
    cells = [
        _md(CSS + f"# {TITLE}\n\n*Study `{study}`, run `{x['run_id']}`; built "
                  f"{time.strftime('%Y-%m-%d')} from commit `{env['git_commit']}`. Every number in this text is "
                  f"computed from the run's results; the code of every cell is one click away.*"),
        _md("## Abstract\n\n" + abstract(x)),
        _md("## 1. Introduction\n\n" + _cite(INTRODUCTION)),
        _md("## 2. Methods\n\n" + _cite(METHODS) + "\n\n" + methods_facts(x) + "\n\n" + _cite(OBJECTIVE)),
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
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.register_preprocessor(ExtractOutputPreprocessor(output_filename_template="figure_{cell_index}_{index}{extension}"),
                                   enabled=True)
    body, resources = exporter.from_notebook_node(merged, resources={"output_files_dir": "."})
    out = Path(out) if out else paths.repo_root() / "paper" / study
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, data in resources.get("outputs", {}).items():
        (out / Path(name).name).write_bytes(data)
    body = body.replace('src="./', 'src="')
    for caption in counter.get("captions", []):  # each figure's alt text is its caption
        body = body.replace('alt="No description has been provided for this image"',
                            f'alt="{html.escape(caption, quote=True)}"', 1)
    (out / "index.html").write_text(body, encoding="utf-8")
    return out / "index.html"


def structure(index_html: str | Path) -> dict:
    """The structure of a built paper, for comparing two builds: its section headings (h2/h3, with
    their numbers), the number of figures and of figure captions, and whether any image is inlined."""
    text = Path(index_html).read_text(encoding="utf-8")
    heads = [re.sub(r"<[^>]+>|¶", "", h).strip() for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", text, flags=re.S)]
    return {"headings": heads, "figures": len(re.findall(r'<img[^>]*src="figure_', text)),
            "captions": len(re.findall(r'<p class="caption"><b>Figure \d+\.', text)),
            "inlined_images": len(re.findall(r'src="data:image', text))}
