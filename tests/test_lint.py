"""The code base stays clean: ruff on the package, scripts and tests; snakefmt on the Snakefile and rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff_is_clean():
    folders = [d for d in ("eostats", "scripts", "tests", "benchmarks") if (REPO / d).is_dir()]
    proc = run(str(BIN / "ruff"), "check", *folders)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = run(str(BIN / "snakefmt"), "--check", "Snakefile", "rules")
    assert proc.returncode == 0, proc.stdout + proc.stderr
