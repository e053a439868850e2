"""Measuring one piece of work in a fresh process: wall time, CPU time of every thread, peak resident memory.

Every measurement runs in its own Python process (``python -m benchmarks.child``), so that its peak RSS
(``ru_maxrss``) belongs to that work alone and imports, JIT compilation and caches of one method cannot help or
hurt another. Inside the child, :class:`Stopwatch` brackets only the measured call.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCHMARK-RESULT "


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Stopwatch:
    """Wall and CPU seconds of a ``with`` block; ``rss_before_mb`` is the resident memory when it started."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_before_mb: float = 0.0

    def __enter__(self) -> Stopwatch:
        self.rss_before_mb = current_rss_mb()
        self._cpu = cpu_seconds()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = cpu_seconds() - self._cpu

    def as_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "rss_before_mb": self.rss_before_mb}


def child_env(threads: int) -> dict[str, str]:
    """Environment of a measured process: ``threads`` threads for numba, BLAS and numexpr, repo on the path."""
    env = dict(os.environ)
    env.update(
        {
            "NUMBA_NUM_THREADS": str(threads),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMEXPR_MAX_THREADS": str(threads),
            "NUMEXPR_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def run_child(
    function: str, threads: int = 2, timeout: float | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Run ``benchmarks.<function>(**kwargs)`` (``"module:function"``) in a fresh process; return its dict.

    The child adds ``peak_rss_mb`` (its whole life) to what the function returns. A failure raises
    RuntimeError with the tail of the child's output.
    """
    cmd = [sys.executable, "-m", "benchmarks.child", function, json.dumps(kwargs)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=child_env(threads),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-5000:]).strip()
    raise RuntimeError(f"benchmark child {function} failed (exit {proc.returncode}):\n{tail}")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
