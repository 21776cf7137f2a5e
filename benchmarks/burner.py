"""A bounded CPU burner: one process that busy-loops on one core for `on_s` seconds of every
`period_s`, for at most `total_s` seconds, then stops by itself (a laptop's browser, indexer or chat
client, as issue 28 describes the load). Used by noise_limits.py and load_robustness.py.

    python benchmarks/burner.py --on 20 --period 60 --total 1800
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import contextmanager


def burn(on_s: float, period_s: float, total_s: float) -> None:
    end = time.monotonic() + total_s
    while time.monotonic() < end:
        start = time.monotonic()
        while time.monotonic() - start < on_s and time.monotonic() < end:
            pass  # one core fully busy
        time.sleep(max(0.0, min(period_s - on_s, end - time.monotonic())))


@contextmanager
def burning(on_s: float = 20, period_s: float = 60, total_s: float = 3600):
    """Run the burner in another process while the block runs (killed when it ends, and bounded by
    `total_s` in any case)."""
    proc = subprocess.Popen([sys.executable, __file__, "--on", str(on_s), "--period", str(period_s),
                             "--total", str(total_s)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--on", type=float, default=20)
    p.add_argument("--period", type=float, default=60)
    p.add_argument("--total", type=float, default=1800)
    a = p.parse_args()
    burn(a.on, a.period, a.total)
