"""Build a study's artifacts ahead of its notebooks, in parallel (issue 30): `build` plans the
artifact graph (`compstudy.plan`), builds every missing artifact parents first, wave by wave, on one
of three executors, and plans again after each wave (some keys are known only once a parent exists:
`plan`'s pending targets). The notebooks then find everything in the cache and only measure.

| executor | what runs a task | where |
|---|---|---|
| `local` | this process, one task after another (today's behaviour) | here |
| `ray` | a Ray Core task per artifact (`ray.remote`): one GPU each on GPU machines (Ray sets `CUDA_VISIBLE_DEVICES`, a fresh worker process per GPU task), else `threads` CPU threads each | a local Ray cluster, or `address`'s |
| `slurm` | one job array per wave through submitit, a job per artifact; `submitit`'s local executor (`cluster="local"`) runs the same jobs as subprocesses | a Slurm cluster |

A task is data (`Task`: the notebook, its resolved parameters, the target's name), so any process
can run it (`run_task`). Two tasks never build the same artifact at once: each cache key is claimed
first (`compstudy.step`), and a second worker waits for the first or takes over a claim gone stale.
A worker killed mid-build leaves no half artifact (`cache.build` writes into a temporary folder and
renames it into place after its checksums are written), so a retried task, or a rerun of `build`,
finishes the graph. Ray and submitit are optional extras: `pip install -e .[ray]`, `.[slurm]`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import paths, plan as plans

EXECUTORS = ("local", "ray", "slurm")
ENV_PREFIXES = ("COMPSTUDY_", "HF_", "CODECARBON_", "GPTQMODEL_")  # what a worker process must see as this one does


@dataclass(frozen=True)
class Task:
    """One target to build: the notebook `stem`, its resolved parameters `P` (`params.check`), and
    the target's `name` (`plan.Target.name`)."""

    stem: str
    P: dict
    name: str


@dataclass
class Report:
    """What a `build` did: the executor, waves (each a list of task names), every task's seconds
    and where it ran, the wall time, and the plan before and after."""

    executor: str
    waves: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    seconds: float = 0.0
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def run_task(task: Task, threads: int | None = None) -> dict:
    """Build `task`'s target in this process (`threads` torch threads when given); returns its
    name, seconds, pid and host. Raises what the build raises (a retry builds again: nothing
    half-built was published)."""
    import socket

    import torch

    if threads:
        torch.set_num_threads(int(threads))
    targets = {t.name: t for t in plans.notebook_targets(task.stem, task.P)}
    if task.name not in targets:
        raise KeyError(f"notebook {task.stem} has no target {task.name!r}; it has {sorted(targets)}")
    t0 = time.perf_counter()
    targets[task.name].build()
    return {"task": f"{task.stem}: {task.name}", "seconds": time.perf_counter() - t0, "pid": os.getpid(),
            "host": socket.gethostname(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def wave_tasks(graph: plans.Graph) -> list[Task]:
    """The tasks of the next wave: one per target that owns a missing node whose parents are cached
    (the node's `builder`, else the first target asking for it), each once."""
    study_params = graph.params
    out, seen = [], set()
    for node in graph.ready():
        stem, name = node.builder or [node.notebooks[0], node.targets[0]]
        if (stem, name) not in seen:
            seen.add((stem, name))
            out.append(Task(stem, study_params[stem], name))
    return out


def build(study, executor: str = "local", *, address: str | None = None, workers: int | None = None,
          threads: int | None = None, only: list[str] | None = None, gpus: bool | None = None,
          log=print, slurm_folder: str | Path | None = None, slurm_parameters: dict | None = None,
          ray_retries: int = 2) -> Report:
    """Build every missing artifact of a loaded study (`runner.load_study`), parents first.

    Args:
        executor: one of `EXECUTORS` (module docstring).
        address: Ray only: an existing cluster's address (`ray://...`, `auto`); None starts a local
            one with `workers` x `threads` CPUs.
        workers: tasks at once (local Ray cluster size; default: the machine's cores / threads).
        threads: torch threads per task (default: all cores / workers), so workers do not
            oversubscribe the cores.
        gpus: one GPU per task (default: when CUDA is available here).
        slurm_folder, slurm_parameters: submitit's log folder and `update_parameters` (partition,
            time, gpus_per_node, ...); `{"cluster": "local"}` runs the jobs as local subprocesses.
        ray_retries: Ray retries of a failed task (a worker killed mid-build, an exception).

    Raises ValueError for an unknown executor (before planning), RuntimeError naming the tasks
    that failed (their artifacts stay unbuilt; a rerun builds them), ImportError with the install
    command when the executor's extra is missing.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    cores = os.cpu_count() or 1
    workers = max(1, int(workers or (1 if executor == "local" else cores)))
    threads = max(1, int(threads or max(1, cores // workers)))
    if gpus is None:
        import torch

        gpus = torch.cuda.is_available()
    runner = {"local": _LocalRunner, "ray": _RayRunner, "slurm": _SlurmRunner}[executor](
        workers=workers, threads=threads, gpus=gpus, address=address, folder=slurm_folder,
        parameters=slurm_parameters or {}, retries=ray_retries)
    report = Report(executor)
    t0 = time.perf_counter()
    graph = _plan(study, only)
    report.before = graph.to_json()["counts"]
    log(f"build: {report.before['artifacts']} artifacts planned, {report.before['missing']} to build "
        f"({executor}, {workers} worker(s) x {threads} thread(s){', 1 GPU each' if gpus else ''})")
    try:
        while True:
            tasks = wave_tasks(graph)
            if not tasks:
                break
            log(f"  wave {len(report.waves) + 1}: {len(tasks)} task(s): {', '.join(t.name for t in tasks)[:200]}")
            results, failures = runner.run(tasks)
            report.waves.append([t.name for t in tasks])
            report.tasks += results
            if failures:
                raise RuntimeError(f"build: {len(failures)} task(s) failed: " + "; ".join(failures)
                                   + " (nothing half-built was published: run build again)")
            graph = _plan(study, only)
    finally:
        runner.close()
    report.seconds = time.perf_counter() - t0
    report.after = graph.to_json()["counts"]
    if graph.pending:
        raise RuntimeError(f"build: {len(graph.pending)} target(s) still pending after every wave: "
                           + "; ".join(f"{p.notebook}: {p.target} needs {p.needs}" for p in graph.pending))
    log(f"build: done in {report.seconds:.1f} s, {len(report.tasks)} task(s) in {len(report.waves)} wave(s); "
        f"{report.after['cached']} of {report.after['artifacts']} artifacts cached")
    return report


def _plan(study, only) -> plans.Graph:
    return plans.plan(study, only)


def _worker_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)} | {
        "COMPSTUDY_ROOT": str(paths.repo_root()), "COMPSTUDY_ARTIFACTS_DIR": str(paths.artifacts_dir()),
        "COMPSTUDY_DATA_DIR": str(paths.data_dir()), "COMPSTUDY_NO_PROGRESS": "1"}


class _LocalRunner:
    def __init__(self, threads, **_):
        self.threads = threads

    def run(self, tasks):
        results, failures = [], []
        for t in tasks:
            try:
                results.append(run_task(t, None))  # in-process: the process's own threads
            except Exception as exc:  # every task of the wave is tried; failures named together
                failures.append(f"{t.stem}: {t.name}: {type(exc).__name__}: {exc}")
        return results, failures

    def close(self):
        pass


class _RayRunner:
    def __init__(self, workers, threads, gpus, address, retries, **_):
        try:
            import ray
        except ImportError:
            raise ImportError("the ray executor needs Ray: pip install -e .[ray]") from None
        self.ray, self.threads, self.gpus = ray, threads, gpus
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = {"address": address} if address else {"num_cpus": workers * threads,
                                                           **({} if gpus else {"num_gpus": 0})}
            ray.init(**kwargs, runtime_env={"env_vars": _worker_env()}, include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True)
        options = {"num_gpus": 1, "num_cpus": threads, "max_calls": 1} if gpus else {"num_cpus": threads}
        self.remote = ray.remote(**options, max_retries=retries, retry_exceptions=True)(run_task)

    def run(self, tasks):
        refs = {self.remote.remote(t, self.threads): t for t in tasks}
        results, failures = [], []
        for ref, t in refs.items():
            try:
                results.append(self.ray.get(ref))
            except Exception as exc:
                failures.append(f"{t.stem}: {t.name}: {type(exc).__name__}: {str(exc)[-300:]}")
        return results, failures

    def close(self):
        if self.started:
            self.ray.shutdown()


class _SlurmRunner:
    def __init__(self, threads, gpus, folder, parameters, **_):
        try:
            import submitit
        except ImportError:
            raise ImportError("the slurm executor needs submitit: pip install -e .[slurm]") from None
        parameters = dict(parameters)
        cluster = parameters.pop("cluster", None)
        folder = Path(folder or paths.runs_dir() / "submitit")
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        defaults = {"cpus_per_task": threads, "timeout_min": 24 * 60, **({"gpus_per_node": 1} if gpus else {})}
        if cluster == "local":
            defaults = {"timeout_min": defaults["timeout_min"], **({"gpus_per_node": 1} if gpus else {})}
        self.executor.update_parameters(**{**defaults, **parameters})
        self.threads = threads
        os.environ.update(_worker_env())  # submitit's jobs inherit this process's environment

    def run(self, tasks):
        jobs = self.executor.map_array(run_task, tasks, [self.threads] * len(tasks))  # one job array per wave
        results, failures = [], []
        for job, t in zip(jobs, tasks):
            try:
                results.append(job.result())
            except Exception as exc:
                failures.append(f"{t.stem}: {t.name} (job {job.job_id}): {type(exc).__name__}: {str(exc)[-300:]}")
        return results, failures

    def close(self):
        pass


def list_schedule(graph_nodes: list[dict], workers: int) -> float:
    """Makespan (s) of list-scheduling `graph_nodes` (dicts with key, parents, seconds; parents
    first) on `workers` identical workers: whenever a worker is free it takes the ready node with
    the longest remaining path (critical-path priority). What `benchmarks/scale_out.py` uses to
    predict the speed-up of more workers from the measured costs."""
    import heapq

    by_key = {n["key"]: n for n in graph_nodes}
    children: dict[str, list] = {k: [] for k in by_key}
    for n in graph_nodes:
        for p in n["parents"]:
            if p in by_key:
                children[p].append(n["key"])
    tail: dict[str, float] = {}
    for n in reversed(graph_nodes):  # longest path from each node to the end
        tail[n["key"]] = n["seconds"] + max((tail[c] for c in children[n["key"]]), default=0.0)
    waiting = {k: sum(p in by_key for p in n["parents"]) for k, n in by_key.items()}
    ready = [(-tail[k], k) for k, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    running: list = []  # (finish time, key)
    now, free = 0.0, workers
    while ready or running:
        while ready and free:
            _, k = heapq.heappop(ready)
            heapq.heappush(running, (now + by_key[k]["seconds"], k))
            free -= 1
        now, k = heapq.heappop(running)
        free += 1
        for c in children[k]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-tail[c], c))
    return now if not math.isnan(now) else 0.0
