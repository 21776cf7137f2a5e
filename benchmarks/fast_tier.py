"""The fast test tier's time and what it covers (issue 25, item 7).

    .venv/bin/python benchmarks/fast_tier.py [--runs 2] [--coverage]

Runs the fast tier `--runs` times in a row, each time in one process (`pytest -m "not slow"`) and on two
workers (`pytest -m "not slow" -n 2 --no-loadscope-reorder`, what `make test-fast` runs where a process can
choose its CPUs: tests/conftest.py), with byte-code written as the Makefile does (so later runs read the
first one's .pyc files), and prints each run's wall seconds and test count, each beside the seconds a fixed pure-Python loop took
just before it (`reference_loop_s`, 20 million additions): these machines' speed changes from minute to
minute (the loop alone took 2.0 to 4.3 s in three runs in a row here), so a run's time is read against
it. With `--coverage` it then runs the tier once more
under coverage.py (`pip install coverage==7.17.5`, the `bench` extra) and prints, per module of
`lib/compstudy`, the share of its statements that the fast tier executes: every module must be
exercised, so a module at 0 % (or missing) fails the check. Coverage slows the run, so that run is
not timed. Writes benchmarks/results/fast_tier.json. Time nothing else meanwhile: two torch
processes on 2 cores slow each other.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTEST = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider"]
WORKERS = (0, 2)  # one process, and pytest-xdist's two workers (make test-fast)


def pytest_command(workers: int) -> list[str]:
    """The fast tier's command line in one process (`workers` 0) or on `workers` pytest-xdist workers."""
    return PYTEST + (["-n", str(workers), "--no-loadscope-reorder"] if workers else [])


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = ""  # as the Makefile runs it: empty means byte-code is written
    return env


def reference_loop() -> float:
    """Seconds a fixed pure-Python loop (20 million integer additions) takes now: the host's speed at
    the moment, to read a run's wall time against (lower is faster)."""
    start, total = time.perf_counter(), 0
    for i in range(20_000_000):
        total += i
    return round(time.perf_counter() - start, 2)


def timed_run(workers: int = 0) -> dict:
    """One fast-tier run on `workers` pytest-xdist workers (0: one process): wall seconds (float), the
    workers, the passed count, and pytest's last line.

    Raises RuntimeError if a test fails (a failing tier has no meaningful time)."""
    start = time.perf_counter()
    proc = subprocess.run(pytest_command(workers), cwd=ROOT, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode != 0:
        raise RuntimeError(f"the fast tier failed (exit {proc.returncode}): {last}")
    passed = int(re.search(r"(\d+) passed", last).group(1))
    return {"wall_s": round(wall, 1), "workers": workers, "passed": passed, "pytest": last.strip("= ")}


def coverage_by_module() -> dict[str, float]:
    """Per module of lib/compstudy: percent of its statements the fast tier executes (0-100).

    Raises ImportError naming the package when coverage.py is not installed."""
    try:
        import coverage  # noqa: F401
    except ImportError:
        raise ImportError("--coverage needs coverage.py: .venv/bin/pip install coverage==7.17.5 "
                          "(or pip install -e .[bench])") from None
    with tempfile.TemporaryDirectory() as tmp:
        data, report = Path(tmp) / ".coverage", Path(tmp) / "coverage.json"
        env = _env() | {"COVERAGE_FILE": str(data)}
        cmd = [sys.executable, "-m", "coverage", "run", f"--source={ROOT / 'lib' / 'compstudy'}", "-m", *PYTEST[2:]]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the fast tier failed under coverage: {proc.stdout[-500:]}{proc.stderr[-500:]}")
        subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(report)], cwd=ROOT, env=env,
                       check=True)
        files = json.loads(report.read_text())["files"]
    by_module = {}
    for path in sorted((ROOT / "lib" / "compstudy").glob("*.py")):
        entry = next((v for k, v in files.items() if Path(k).resolve() == path.resolve()), None)
        by_module[path.stem] = round(entry["summary"]["percent_covered"], 1) if entry else 0.0
    return by_module


def main(runs: int = 2, with_coverage: bool = False) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    result = {"commit": commit, "machine": f"{os.cpu_count()} logical CPUs, {platform.processor() or platform.machine()}",
              "command": 'pytest -m "not slow" in one process, and with -n 2 --no-loadscope-reorder (make test-fast); '
                         'byte-code written', "runs": []}
    for i in range(runs):
        for workers in WORKERS:
            loop = reference_loop()
            r = timed_run(workers) | {"reference_loop_s": loop}
            result["runs"].append(r)
            print(f"run {i + 1}, {workers or 'no'} workers: {r['wall_s']} s, {r['passed']} passed ({r['pytest']}); "
                  f"reference loop {loop} s", flush=True)
    if with_coverage:
        cov = coverage_by_module()
        result["coverage_percent_by_module"] = cov
        result["modules_not_exercised"] = [m for m, p in cov.items() if p == 0.0]
        for m, p in sorted(cov.items(), key=lambda kv: kv[1]):
            print(f"{p:5.1f} %  {m}")
        print(f"{len(cov)} modules, lowest {min(cov.values())} %, not exercised: {result['modules_not_exercised'] or 'none'}")
    out = HERE / "results" / "fast_tier.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out.relative_to(ROOT))
    if with_coverage and result["modules_not_exercised"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="timed runs in a row (default 2)")
    parser.add_argument("--coverage", action="store_true", help="then one run under coverage.py, per module")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    main(args.runs, args.coverage)
