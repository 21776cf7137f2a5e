"""The study's artifact graph, known before any notebook runs (issue 30): every artifact a config's
notebooks build (kind, cache key, parents, the notebooks that need it), which are cached, and an
estimate of each build's cost; written as JSON for the executors (`compstudy.executors`).

What a notebook builds is defined once, here, and the notebooks call the same functions:
`quantization_configs` (01), `distillation_names` (02), `pruning_names`, `dose_names` and
`experiments.sweep_points` (03), the grid, `experiments.minitron` and the controls (04),
`scale.plan` (06). A notebook's *targets* (`notebook_targets`) are those builds as calls of the
library; `plan` runs them under `step.planning()`, where `cached_step` builds nothing and records
each artifact instead (its key is the SHA-256 of its parameters, its parents' keys among them).

Some keys cannot be known before a parent exists: a from-scratch control takes its shape from the
built model it copies, the Minitron width recipes are sized by the depth variant's parameter
count, the plateau check keys on whether the baseline saved its optimizer. Those targets are
*pending* on the artifact they need (`PlanPending`); the executors build in waves and plan again
after each, so every target is reached.

    graph = plan.plan(study)               # study = runner.load_study("configs/default.yaml")
    graph.missing()                        # nodes to build, parents first
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import baseline, cache, experiments, params, pipeline, quantize, scale, step
from .surgery import percent_text

PLAN_VERSION = 1


# ---- what each notebook builds (the notebooks call these too)

def quantization_configs(P) -> tuple[dict, str]:
    """01's quantized variants: {"Base<suffix>": QuantConfig} of `P.variants`, without dynamic int8
    on CUDA (CPU-only) and without bf16 on a CPU that only emulates it (`skip_emulated_bf16`), and a
    note saying what was left out and why ("" when nothing)."""
    from .models import resolve_device
    from .train import supports_bf16

    configs = {f"Base{name}": quantize.QuantConfig.from_name(name) for name in P["variants"]}
    note = ""
    if resolve_device(P["device"]) != "cpu":
        configs = {k: c for k, c in configs.items() if c.method != "dynamic-int8"}  # CPU-only method
    elif P["skip_emulated_bf16"] and not supports_bf16("cpu") and any(c.method == "bf16" for c in configs.values()):
        # without AVX512-BF16 / AMX, bf16 matmuls are emulated: a pass took 19 s against 0.9 s in fp32 on the
        # study's 2-core CPU, which measures the emulation, not bf16
        configs = {k: c for k, c in configs.items() if c.method != "bf16"}
        note = "bf16 left out: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 in /proc/cpuinfo)"
    return configs, note


def distillation_names(P, defaults) -> tuple[list[str], str]:
    """02's students (`Distil` and, with `controls`, its no-teacher and random-init controls) and
    their equal-training control (`Base+ft<N>`)."""
    names = ["Distil"]
    if P["controls"]:  # the same student without its teacher (-noKD), and from random weights (-rand)
        names += ["Distil-noKD"] + (["Distil-rand", "Distil-rand-noKD"] if defaults.distill.init == "teacher" else [])
    return names, pipeline.control_name("Distil", defaults)


def pruning_names(P) -> tuple[list[str], str | None]:
    """03's structured variants (AH<keep> of `head_keep`, MLP, Depth, Emb; each `+ft` when
    `finetune_tokens`) and the equal-training control of the fine-tuned ones."""
    names = [f"AH{percent_text(k)}" for k in P["head_keep"]] + [f"MLP{percent_text(P['mlp_keep'])}",
                                                               f"Depth{percent_text(P['depth_keep'])}"]
    names += [f"Emb{percent_text(P['embedding_keep'])}"] if P["embedding_keep"] else []
    names += [f"{n}+ft" for n in names] if P["finetune_tokens"] else []
    defaults = pipeline.step_defaults(P, finetune_tokens=P["finetune_tokens"])
    control = pipeline.control_name(f"{names[0]}+ft", defaults) if P["finetune_tokens"] else None
    return names, control


def dose_names(P) -> list[str]:
    """03's structured dose-response points (`dose_heads`, `dose_depth`, `dose_mlp`)."""
    return ([f"AH{percent_text(k)}" for k in P["dose_heads"]] + [f"Depth{percent_text(k)}" for k in P["dose_depth"]]
            + [f"MLP{percent_text(k)}" for k in P["dose_mlp"]])


# ---- targets: a notebook's builds as calls of the library

@dataclass
class Target:
    """One build a notebook asks for: `name` (a variant name, or `baseline`, `plateau`, ...) and
    `build()`, the library call that builds it (every missing prefix included) and returns it."""

    notebook: str
    name: str
    build: Callable[[], object]


def _corpora(P) -> tuple:
    return tuple(baseline.BaselineConfig.from_params(P).train_corpora)


def _pipelines(stem: str, P, base_of, names, defaults) -> list[Target]:
    """A target per pipeline prefix of every name (`Distil`, `Distil+90`, `Distil+90+4b`), and the
    shape then the scratch model for `Scratch-` names: each target adds one artifact to its parent's."""
    out, seen = [], set()
    for name in names:
        p = pipeline.Pipeline.from_name(name, defaults)
        shape = pipeline.Pipeline(p.steps)
        chain = [pipeline.Pipeline(shape.steps[:i]) for i in range(1, len(shape.steps) + 1)]
        chain += [p] if p.scratch else []
        for q in chain:
            if q.name in seen:
                continue
            seen.add(q.name)
            out.append(Target(stem, q.name, lambda q=q: pipeline.build(base_of(), q, _corpora(P), device=P["device"],
                                                                     progress=False, defaults=defaults)))
    return out


def notebook_targets(stem: str, P: dict) -> list[Target]:
    """What notebook `stem` builds, given its resolved parameters `P` (`params.check`), as targets.
    Notebooks that build nothing (05) have none."""
    config = baseline.BaselineConfig.from_params(P) if "n_layer" in P else None
    base_of = (lambda: baseline.get_baseline(config, progress=False)) if config else None
    if stem == "00_baseline":
        return [Target(stem, "baseline", base_of),
                Target(stem, "plateau", lambda: baseline.plateau_check(config, P["plateau_fraction"],
                                                                       P["plateau_threshold_pct"], progress=False))]
    if stem == "01_quantization":
        names = list(quantization_configs(P)[0]) + [f"Base{s}" for s in P["bits_sweep"]]
        return _pipelines(stem, P, base_of, dict.fromkeys(names), pipeline.StepDefaults())
    if stem == "02_distillation":
        defaults = pipeline.step_defaults(P)
        names, control = distillation_names(P, defaults)
        return _pipelines(stem, P, base_of, [*names, control], defaults)
    if stem == "03_pruning":
        defaults = pipeline.step_defaults(P, finetune_tokens=P["finetune_tokens"])
        names, control = pruning_names(P)
        out = _pipelines(stem, P, base_of, [*names, *([control] if control else []), *dose_names(P)], defaults)
        for name, cfg in experiments.sweep_points(P["sparsities"], P["magnitude_scopes"], P["finetune_tokens"],
                                                  defaults.prune, P["wanda_sweep"]).items():
            out.append(Target(stem, f"sweep {name}", lambda cfg=cfg: experiments.sweep_artifact(
                base_of(), cfg, _corpora(P), device=P["device"], finetuning=defaults.finetune)))
        return out
    if stem == "04_hybrid":
        defaults = pipeline.step_defaults(P, kd_tokens=P["kd_tokens"], kd_lr=P["kd_lr"],
                                          finetune_tokens=P["target_finetune_tokens"])
        grid = pipeline.paper_grid(P["grid_bases"], P["grid_heads"], P["grid_quants"])
        names = pipeline.with_controls(grid, defaults)
        try:  # the width recipes are sized by the depth variant: known once it is built (or keyed, while planning)
            with step.planning():
                names += experiments.minitron_names(base_of(), defaults, _corpora(P), depth_keep=P["minitron_depth_keep"],
                                                    widths=P["minitron_widths"], target_shape=P["target_shape"],
                                                    device=P["device"])[0]
        except step.PlanPending as wait:
            depth = f"Depth{percent_text(P['minitron_depth_keep'])}"
            names += [depth]
            return _pipelines(stem, P, base_of, dict.fromkeys(names), defaults) + [
                Target(stem, "Minitron width recipes", lambda key=wait.key: _pending(key))]
        return _pipelines(stem, P, base_of, dict.fromkeys(names), defaults)
    if stem == "06_scale":
        defaults = pipeline.step_defaults(P)
        out = []
        for point in scale.plan(config, P["sizes"], P["size_tokens"], P["token_budgets"]):
            point_base = lambda c=point.config: baseline.get_baseline(c, progress=False)  # noqa: E731
            out.append(Target(stem, f"{point.key}: baseline", point_base))
            for t in _pipelines(stem, P, point_base, P["techniques"], defaults):
                out.append(Target(stem, f"{point.key}: {t.name}", t.build))
        return out
    return []


def _pending(key: str):
    raise step.PlanPending(key)


# ---- the plan

@dataclass
class Node:
    """One artifact: cache `key`, `kind`, `parents` (keys), `cached`, the `notebooks` and target
    names that need it, and the estimated build seconds (`estimate_s`, with how it was estimated)."""

    key: str
    kind: str
    parents: list
    cached: bool
    notebooks: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    estimate_s: float = math.nan
    estimate: str = ""
    build_s: float = math.nan  # measured, from the recipe, once built
    builder: list = field(default_factory=list)  # [notebook, target]: the target whose own artifact this is


@dataclass
class Pending:
    """A target whose remaining artifacts cannot be keyed yet: it needs artifact `needs` built."""

    notebook: str
    target: str
    needs: str


@dataclass
class Graph:
    """A study's plan: `nodes` (key -> Node, parents before children), `pending` targets, and the
    study it was made for."""

    study: str
    config: str
    nodes: dict
    pending: list
    made: float = field(default_factory=time.time)
    params: dict = field(default_factory=dict)  # notebook stem -> its resolved parameters (the tasks carry them)

    def missing(self) -> list[Node]:
        """The nodes not cached, parents first."""
        return [n for n in self.nodes.values() if not n.cached]

    def ready(self) -> list[Node]:
        """The missing nodes whose parents are all cached: the next wave."""
        return [n for n in self.missing() if all(self.nodes[p].cached for p in n.parents if p in self.nodes)]

    def waves(self) -> list[list[Node]]:
        """The missing nodes in waves: each wave's parents all in earlier waves or cached."""
        done = {k for k, n in self.nodes.items() if n.cached}
        left = self.missing()
        out = []
        while left:
            wave = [n for n in left if all(p in done or p not in self.nodes for p in n.parents)]
            if not wave:  # a cycle cannot happen (keys hash their parents'); guard anyway
                raise RuntimeError(f"plan: no buildable node among {[n.key for n in left]}")
            out.append(wave)
            done |= {n.key for n in wave}
            left = [n for n in left if n.key not in done]
        return out

    def critical_path(self, cost=lambda n: n.estimate_s) -> tuple[float, list[str]]:
        """The longest chain of `cost` through the missing nodes (seconds, keys): no number of
        workers builds the graph faster."""
        best: dict[str, tuple[float, list[str]]] = {}
        for n in self.nodes.values():  # parents come first
            if n.cached:
                continue
            before = max((best[p] for p in n.parents if p in best), default=(0.0, []), key=lambda b: b[0])
            c = cost(n)
            best[n.key] = (before[0] + (0.0 if math.isnan(c) else c), [*before[1], n.key])
        return max(best.values(), default=(0.0, []), key=lambda b: b[0])

    def to_json(self) -> dict:
        return {"version": PLAN_VERSION, "study": self.study, "config": self.config, "made": self.made,
                "nodes": [asdict(n) for n in self.nodes.values()], "pending": [asdict(p) for p in self.pending],
                "counts": {"artifacts": len(self.nodes), "cached": sum(n.cached for n in self.nodes.values()),
                           "missing": len(self.missing()), "pending_targets": len(self.pending)}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, default=str) + "\n")
        return path


def study_notebooks(study) -> list[tuple[str, dict]]:
    """(stem, resolved parameters) of every notebook of a loaded study (`runner.load_study`)."""
    out = []
    for nb in study.notebooks:
        stem = nb.path.stem
        if not params.known(stem):
            continue
        shared = nb.parameters.get("shared", {})
        own = {k: v for k, v in nb.parameters.items() if k not in ("shared", "study")}
        out.append((stem, params.check(stem, shared, own)))
    return out


def plan(study, only: list[str] | None = None) -> Graph:
    """The artifact graph of a loaded study (`runner.load_study`): every target of every notebook
    (`notebook_targets`; of `only`'s notebooks when given) planned under `step.planning()`.

    Raises whatever a target raises other than `step.PlanPending` (a bad name, a missing corpus):
    the same errors the notebooks would raise, before anything is built.
    """
    nodes: dict[str, Node] = {}
    pending: list[Pending] = []
    for stem, P in study_notebooks(study):
        if only and stem not in only:
            continue
        for target in notebook_targets(stem, P):
            with step.planning() as recorded:
                try:
                    target.build()
                except step.PlanPending as wait:
                    pending.append(Pending(stem, target.name, wait.key))
            for key, rec in recorded.items():
                node = nodes.setdefault(key, Node(key, rec.kind, rec.parents, rec.cached))
                if stem not in node.notebooks:
                    node.notebooks.append(stem)
                if target.name not in node.targets:
                    node.targets.append(target.name)
            if recorded and not (pending and pending[-1].target == target.name and pending[-1].notebook == stem):
                last = nodes[list(recorded)[-1]]  # the target's own artifact: the last it asked for
                last.builder = last.builder or [stem, target.name]
    for node in nodes.values():
        node.estimate_s, node.estimate = estimate(node, nodes)
        if node.cached:
            node.build_s = float(cache.read_recipe(node.key).get("cost", {}).get("seconds", math.nan))
    return Graph(study.name, str(study.config_path or ""), _parents_first(nodes), pending,
                 params={stem: P for stem, P in study_notebooks(study) if not only or stem in only})


def _parents_first(nodes: dict) -> dict:
    out: dict = {}

    def visit(key):
        if key in out or key not in nodes:
            return
        for p in nodes[key].parents:
            visit(p)
        out[key] = nodes[key]

    for key in nodes:
        visit(key)
    return out


def estimate(node: Node, nodes: dict) -> tuple[float, str]:
    """Estimated build seconds of `node`: its own recorded cost when cached; else the median recorded
    cost of cached artifacts of the same kind (in this cache); else NaN ("unknown"). What it was
    estimated from, in words."""
    if node.cached:
        return float(cache.read_recipe(node.key).get("cost", {}).get("seconds", math.nan)), "its own build"
    same = sorted(float(cache.read_recipe(n.key).get("cost", {}).get("seconds", math.nan))
                  for n in nodes.values() if n.cached and n.kind == node.kind)
    same = [s for s in same if not math.isnan(s)]
    if same:
        return same[len(same) // 2], f"median of {len(same)} cached {node.kind} artifact(s)"
    return math.nan, "unknown (no cached artifact of this kind)"


def describe(graph: Graph) -> list[str]:
    """The plan as lines for the terminal: counts, then one line per node (parents first)."""
    c = graph.to_json()["counts"]
    total = sum(n.estimate_s for n in graph.missing() if not math.isnan(n.estimate_s))
    crit, _ = graph.critical_path()
    lines = [f"study {graph.study!r}: {c['artifacts']} artifacts, {c['cached']} cached, {c['missing']} to build"
             + (f" (estimated {total:,.0f} s of work, critical path {crit:,.0f} s)" if total else "")
             + (f"; {c['pending_targets']} target(s) pending on an artifact not built yet" if c["pending_targets"] else "")]
    for n in graph.nodes.values():
        est = "" if n.cached or math.isnan(n.estimate_s) else f"  ~{n.estimate_s:,.0f} s"
        lines.append(f"  {'cached ' if n.cached else 'missing'} {n.key:<40} {', '.join(n.notebooks):<28} "
                     f"{', '.join(n.targets)[:60]}{est}")
    for p in graph.pending:
        lines.append(f"  pending {p.notebook}: {p.target} (needs {p.needs})")
    return lines
