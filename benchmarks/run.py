"""Run the benchmarks and print the table: ``python -m benchmarks.run --quick`` or ``--full``.

``--quick`` (CI, under two minutes) proves that every benchmark runs and that the results agree with the
references; its timings are printed but mean little at such sizes. ``--full`` measures the figures of issue 5:
1024² x 6 bands x 40 observations for the kernels and a 1024-px tile with 40 observations for the I/O figures,
a 3200-px tile for memory, 10 000 and 50 000 tile jobs for planning, 1 000 000 items for the cache.
Each measurement runs in a fresh process; generated inputs are kept in ``--workdir`` and reused.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.measure import REPO, load_average
from benchmarks.report import Row, dump_json, render_table

FIGURES = ("geomedian", "percentiles", "clear_counts", "whole_tile", "memory", "planning", "cache")


@dataclass(frozen=True)
class Sizes:
    kernel_px: int
    kernel_obs: int
    tile_px: int
    tile_obs: int
    tile_scenes: int
    memory_px: int
    memory_obs: int
    memory_scenes: int
    memory_chunks: tuple[int, ...]
    planning_jobs: tuple[int, ...]
    cache_items: int
    rounds: int = (
        1  # alternating rounds of the 10 000-job planning figure (median-ratio round shown)
    )
    tile_rounds: int = 1  # alternating rounds of the tile figures (seconds each: more of them)
    extra: dict = field(default_factory=dict)


QUICK = Sizes(96, 24, 128, 8, 4, 128, 8, 4, (64,), (200,), 3_000)
FULL = Sizes(
    1024,
    40,
    1024,
    40,
    10,
    3200,
    40,
    10,
    (512, 2048),
    (10_000, 50_000),
    1_000_000,
    rounds=3,
    tile_rounds=5,
)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "commit": commit,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run(figures: list[str], sizes: Sizes, workdir: Path, threads: int, log=print) -> list[Row]:
    from benchmarks.cachebench import cache_figures
    from benchmarks.kernels import geomedian_figures, percentile_figures
    from benchmarks.planning import planning_figures
    from benchmarks.tiles import clear_count_figures, memory_figures, whole_tile_figures

    steps = {
        "geomedian": lambda: geomedian_figures(workdir, sizes.kernel_px, sizes.kernel_obs, threads),
        "percentiles": lambda: percentile_figures(
            workdir, sizes.kernel_px, sizes.kernel_obs, threads
        ),
        "clear_counts": lambda: clear_count_figures(
            workdir, sizes.tile_px, sizes.tile_obs, sizes.tile_scenes, threads, sizes.tile_rounds
        ),
        "whole_tile": lambda: whole_tile_figures(
            workdir, sizes.tile_px, sizes.tile_obs, sizes.tile_scenes, threads, sizes.tile_rounds
        ),
        "memory": lambda: memory_figures(
            workdir,
            sizes.memory_px,
            sizes.memory_obs,
            sizes.memory_scenes,
            threads,
            list(sizes.memory_chunks),
        ),
        "planning": lambda: planning_figures(workdir, list(sizes.planning_jobs), sizes.rounds),
        # the one-process reference path takes minutes at a million items: measured in quick mode only
        "cache": lambda: cache_figures(
            workdir, sizes.cache_items, threads, sequential=sizes.cache_items <= 100_000
        ),
    }
    rows: list[Row] = []
    for name in figures:
        t0 = time.perf_counter()
        load = load_average()[0]
        new = steps[name]()
        log(
            f"[{name}] {time.perf_counter() - t0:.0f} s, load average {load:.1f} → {load_average()[0]:.1f}"
        )
        log(
            render_table(new)
        )  # as it comes: a later failure or a cut-off run keeps what was measured
        rows += new
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="small sizes (CI): the benchmarks work and agree"
    )
    mode.add_argument(
        "--full", action="store_true", help="the sizes of issue 5 (long: generates GBs of inputs)"
    )
    parser.add_argument("--only", nargs="+", choices=FIGURES, help="run only these figures")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="inputs and outputs (default: benchmarks/results/<mode>/, git-ignored)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads per measured job (default 2)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    sizes = FULL if args.full else QUICK
    label = "full" if args.full else "quick"
    workdir = (args.workdir or REPO / "benchmarks" / "results" / label).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    figures = list(args.only or FIGURES)
    meta = {**machine(), "mode": label, "threads": args.threads, "load_before": load_average()}
    print(
        f"eostats benchmarks ({label}) on {meta['cpu']}, {meta['cores']} cores, commit {meta['commit']}",
        flush=True,
    )
    print(f"load average before: {' '.join(f'{v:.1f}' for v in meta['load_before'])}", flush=True)
    t0 = time.perf_counter()
    rows = run(figures, sizes, workdir, args.threads, log=lambda m: print(m, flush=True))
    meta["load_after"] = load_average()
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    print()
    print(render_table(rows))
    print()
    print(
        f"{meta['seconds']:.0f} s; load average before {meta['load_before'][0]:.1f}, after {meta['load_after'][0]:.1f} "
        f"(1-minute); CPU-s = user+system seconds of the measured process, all threads"
    )
    out = args.json or workdir / "results.json"
    out.write_text(dump_json(rows, meta))
    print(f"rows written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
