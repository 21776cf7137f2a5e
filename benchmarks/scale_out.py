"""How fast does the default study's artifact graph build, in sequence and in parallel? (issue 30)

    .venv/bin/python benchmarks/scale_out.py [CONFIG]

Builds every artifact of CONFIG (default configs/default.yaml) twice, each time into an empty
artifact folder: `python -m compstudy build` in local mode (one process, its torch threads) and on a
2-worker local Ray cluster (1 torch thread per worker, so that the two do not oversubscribe the 2
cores). Records both wall times, every artifact's measured build seconds (the build log of the
local run), the graph's critical path against its total work, and the speed-up that 4, 8 and 16
workers would reach by list-scheduling the measured costs on the measured graph
(`executors.list_schedule`, critical-path priority; an ideal cluster: no start-up, no data
movement). Writes benchmarks/results/scale_out.json. Time nothing else meanwhile.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _build(config: Path, executor: str, folder: Path, **kwargs) -> tuple[float, dict, list]:
    from compstudy import executors, plan, runner, step

    os.environ["COMPSTUDY_ARTIFACTS_DIR"] = str(folder)
    study = runner.load_study(config)
    t0 = time.perf_counter()
    report = executors.build(study, executor, **kwargs)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in step.build_log_path().read_text().splitlines()]
    graph = plan.plan(study)
    return wall, {"report": report.to_json(), "graph": graph}, log


def main(config: str = "configs/default.yaml") -> dict:
    from compstudy import executors, provenance

    config = (ROOT / config).resolve()
    env = provenance.environment()
    out = {"config": str(config.relative_to(ROOT)), "commit": env["git_commit"], "cpu": env["cpu"],
           "cores": os.cpu_count()}
    scratch = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        local_wall, local, local_log = _build(config, "local", scratch / "local")
        print(f"local: {local_wall:.1f} s, {len(local_log)} artifacts built", flush=True)
        ray_wall, ray_run, ray_log = _build(config, "ray", scratch / "ray", workers=2, threads=1)
        print(f"ray (2 workers x 1 thread): {ray_wall:.1f} s, {len(ray_log)} artifacts built", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    graph = local["graph"]
    seconds = {e["key"]: e["seconds"] for e in local_log}
    nodes = [{"key": k, "kind": n.kind, "parents": [p for p in n.parents if p in graph.nodes],
              "seconds": seconds.get(k, 0.0), "notebooks": n.notebooks, "targets": n.targets[:4]}
             for k, n in graph.nodes.items()]
    total = sum(n["seconds"] for n in nodes)
    critical, path = _critical(nodes)
    out.update({
        "local": {"wall_s": round(local_wall, 1), "waves": len(local["report"]["waves"]), "artifacts": len(local_log),
                  "threads": __import__("torch").get_num_threads()},
        "ray_2_workers_1_thread": {"wall_s": round(ray_wall, 1), "waves": len(ray_run["report"]["waves"]),
                                   "artifacts": len(ray_log), "workers_seen": len({(e["host"], e["pid"]) for e in ray_log}),
                                   "speed_up_vs_local": round(local_wall / ray_wall, 3)},
        "total_work_s": round(total, 1), "critical_path_s": round(critical, 1),
        "critical_path": [next(n["targets"][0] for n in nodes if n["key"] == k) for k in path],
        "bound_speed_up": round(total / critical, 2) if critical else None,
        "list_schedule": {str(w): {"makespan_s": round(executors.list_schedule(nodes, w), 1),
                                   "speed_up": round(total / executors.list_schedule(nodes, w), 2)}
                          for w in (1, 2, 4, 8, 16)},
        "artifacts": sorted(({"key": n["key"], "kind": n["kind"], "seconds": round(n["seconds"], 2),
                              "needed_by": n["targets"]} for n in nodes), key=lambda n: -n["seconds"]),
        "note": ("artifact seconds are the local build's (its process threads), from the build log "
                 "(<artifacts>/.build-log.jsonl): build, save, verify; list-scheduling assumes identical workers, "
                 "no start-up and no data movement"),
    })
    path_out = HERE / "results" / "scale_out.json"
    path_out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "artifacts"}, indent=1))
    return out


def _critical(nodes: list[dict]) -> tuple[float, list[str]]:
    best: dict[str, tuple[float, list[str]]] = {}
    for n in nodes:  # parents first
        before = max((best[p] for p in n["parents"] if p in best), default=(0.0, []), key=lambda b: b[0])
        best[n["key"]] = (before[0] + n["seconds"], [*before[1], n["key"]])
    return max(best.values(), default=(0.0, []), key=lambda b: b[0])


if __name__ == "__main__":
    main(*sys.argv[1:])
