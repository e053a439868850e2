"""Per-job Slurm overhead of a finished run: time in the queue and in the job versus the rule's own compute time.

    python tests/slurm/measure_overhead.py SLURM_LOGDIR SLURMCTLD_LOG [RULE]

SLURM_LOGDIR is the plugin's log directory of the run (kept with --slurm-keep-successful-logs); each job's log names
the benchmark file of the job it executed, and the benchmark's `s` column is the rule's own wall time (script start to
end, inside the job). Job times come from slurmctld's log (tests/slurm/job_timeline.py). For each job of RULE (default
"tile"):
  queued  = sbatch accepted -> resources allocated  (an array task counts from the array's submission)
  ran     = allocated -> completed (the batch script: Snakemake start-ups, `srun`, the rule's script)
  compute = the benchmark's wall time
  overhead = ran - compute
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from job_timeline import parse_slurmctld_log  # noqa: E402


def benchmark_seconds(path: Path) -> float:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return float(rows[-1]["s"])


def job_rows(logdir: Path, ctld_log: Path, rule: str) -> list[dict]:
    jobs = parse_slurmctld_log(ctld_log)
    rows = []
    for log in sorted((logdir / f"rule_{rule}").rglob("*.log")):
        text = log.read_text(errors="replace")
        # the block of the Snakemake that srun ran inside the job is the one that executed the rule
        executed = re.findall(
            rf"^localrule {rule}:\n(?:\s+\w+: .*\n)*?\s+benchmark: (\S+)$", text, re.M
        )
        job = jobs.get(log.stem)
        if not executed or job is None or job.ran_s is None:
            continue
        compute = benchmark_seconds(Path(executed[-1]))
        rows.append(
            {
                "job": log.stem,
                "queued_s": job.queued_s,
                "ran_s": job.ran_s,
                "compute_s": compute,
                "overhead_s": job.ran_s - compute,
            }
        )
    return rows


def main(argv: list[str]) -> int:
    logdir, ctld_log = Path(argv[1]), Path(argv[2])
    rule = argv[3] if len(argv) > 3 else "tile"
    rows = job_rows(logdir, ctld_log, rule)
    print(f"{'job':>8} {'queued_s':>8} {'ran_s':>7} {'compute_s':>9} {'overhead_s':>10}")
    for r in rows:
        print(
            f"{r['job']:>8} {r['queued_s']:8.1f} {r['ran_s']:7.1f} {r['compute_s']:9.1f} {r['overhead_s']:10.1f}"
        )
    if rows:
        for key in ("queued_s", "ran_s", "compute_s", "overhead_s"):
            values = [r[key] for r in rows]
            print(
                f"{key:>10}: median {statistics.median(values):.1f}  min {min(values):.1f}  max {max(values):.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
