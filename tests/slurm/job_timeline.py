"""Per-job timeline of a Slurm cluster without accounting, read from slurmctld's log.

With no slurmdbd there is no `sacct`, and `squeue` forgets a job MinJobAge after it ends; slurmctld's log (at
`SlurmctldDebug=info`) keeps every submission, start and completion. Times are the controller's local wall clock,
millisecond resolution.

    python tests/slurm/job_timeline.py BASE/log/slurmctld.log      # one line per job and a summary
"""

from __future__ import annotations

import re
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = r"^\[(?P<t>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] "
# a job id as slurmctld prints it: "17", or an array task "9_3(12)" (array job 9, task 3, own job id 12)
_JOB = r"JobId=(?P<job>\d+(?:_\d+\(\d+\))?)"
_SUBMIT = re.compile(_STAMP + r"_slurm_rpc_submit_batch_job: JobId=(?P<job>\d+) ")
# the main scheduler logs "sched: Allocate", the backfill scheduler "_start_job: Started"
_ALLOCATE = re.compile(
    _STAMP + r"sched: Allocate " + _JOB + r" .*#CPUs=(?P<cpus>\d+) Partition=(?P<part>\S+)"
)
_BACKFILL = re.compile(
    _STAMP + r"sched/backfill: _start_job: Started " + _JOB + r" in (?P<part>\S+)"
)
_EXIT = re.compile(_STAMP + r"_job_complete: " + _JOB + r" WEXITSTATUS (?P<rc>\d+)")
_DONE = re.compile(_STAMP + r"_job_complete: " + _JOB + r" done")


@dataclass
class SlurmJob:
    """One job, or one task of an array job, as slurmctld logged it."""

    job_id: str  # "17", or "9_3" for task 3 of array job 9
    array_job_id: int | None  # 9 for "9_3"; None for a plain job
    submitted: datetime | None = (
        None  # sbatch accepted (for an array task: the whole array's submission)
    )
    started: datetime | None = None  # resources allocated, batch script launched
    ended: datetime | None = None  # job completed
    exit_code: int | None = None
    cpus: int | None = None
    partition: str | None = None

    @property
    def queued_s(self) -> float | None:
        """Seconds from submission to start."""
        if self.submitted and self.started:
            return (self.started - self.submitted).total_seconds()
        return None

    @property
    def ran_s(self) -> float | None:
        """Seconds from start to completion."""
        if self.started and self.ended:
            return (self.ended - self.started).total_seconds()
        return None


def _job_key(raw: str) -> tuple[str, int | None]:
    """ "9_3(12)" -> ("9_3", 9); "17" -> ("17", None)."""
    match = re.fullmatch(r"(\d+)_(\d+)\(\d+\)", raw)
    if match:
        return f"{match[1]}_{match[2]}", int(match[1])
    return raw, None


def parse_slurmctld_log(path: Path) -> dict[str, SlurmJob]:
    """Every job and array task in the log, keyed by "17" / "9_3", in order of first appearance."""
    jobs: dict[str, SlurmJob] = {}
    submitted: dict[int, datetime] = {}

    def job(raw: str) -> SlurmJob:
        key, array_id = _job_key(raw)
        if key not in jobs:
            jobs[key] = SlurmJob(key, array_id)
            parent = array_id if array_id is not None else int(key)
            jobs[key].submitted = submitted.get(parent)
        return jobs[key]

    for line in Path(path).read_text(errors="replace").splitlines():
        if m := _SUBMIT.match(line):
            when = datetime.fromisoformat(m["t"])
            submitted[int(m["job"])] = when
            continue
        if m := _ALLOCATE.match(line) or _BACKFILL.match(line):
            j = job(m["job"])
            j.started = j.started or datetime.fromisoformat(m["t"])
            j.partition = m["part"]
            j.cpus = int(m["cpus"]) if "cpus" in m.groupdict() else j.cpus
        elif m := _EXIT.match(line):
            job(m["job"]).exit_code = int(m["rc"])
        elif m := _DONE.match(line):
            job(m["job"]).ended = datetime.fromisoformat(m["t"])
    # an array whose tasks never started still shows up as its submission
    for array_id, when in submitted.items():
        if str(array_id) not in jobs and not any(j.array_job_id == array_id for j in jobs.values()):
            jobs[str(array_id)] = SlurmJob(str(array_id), None, submitted=when)
    return jobs


def submissions(path: Path) -> list[int]:
    """Job ids of every sbatch slurmctld accepted (an array counts once), in order."""
    return [
        int(m["job"])
        for line in Path(path).read_text(errors="replace").splitlines()
        if (m := _SUBMIT.match(line))
    ]


def main(argv: list[str]) -> int:
    jobs = parse_slurmctld_log(Path(argv[1]))
    print(f"{'job':>8} {'cpus':>4} {'partition':>10} {'queued_s':>8} {'ran_s':>7} {'rc':>3}")
    for j in jobs.values():
        queued = f"{j.queued_s:.1f}" if j.queued_s is not None else "-"
        ran = f"{j.ran_s:.1f}" if j.ran_s is not None else "-"
        print(
            f"{j.job_id:>8} {j.cpus or '-':>4} {j.partition or '-':>10} {queued:>8} {ran:>7} {j.exit_code if j.exit_code is not None else '-':>3}"
        )
    ran = [j.ran_s for j in jobs.values() if j.ran_s is not None]
    if ran:
        print(
            f"{len(ran)} jobs ran: median {statistics.median(ran):.1f} s, min {min(ran):.1f} s, max {max(ran):.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
