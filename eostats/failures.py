"""Failure records of tile jobs: eostats' equivalent of odc-stats' dead-letter queue.

A tile job that fails writes one JSON record (:class:`FailureRecord`) at :meth:`eostats.workflow.Run.failure_record_path`
(``<results>/logs/failures/<period>/x<X>_y<Y>.json``), atomically, and deletes it when the task later succeeds, so
the records present are exactly the tasks failed in their latest attempt. :func:`write_failures_file` gathers them
into one machine-readable file per run (``<results>/logs/failures.jsonl``, one record a line, sorted by task),
rewritten by the workflow's ``onsuccess``/``onerror`` handlers.

Record fields: ``task`` (odc-stats task id ``period/x/y``), ``dataset_ids`` (the task's datasets after exclusions),
``reason`` (one line), ``log`` (the job's log file), ``bad_datasets`` (``{"id", "asset", "href", "reason"}`` per
dataset found unusable; empty for failures not caused by one dataset, such as a time limit), ``time`` (UTC, ISO 8601).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eostats.fileio import write_json_atomic, write_text_atomic
from eostats.taskids import TaskId

log = logging.getLogger("eostats.failures")

BAD_DATASET_KEYS = ("id", "asset", "href", "reason")


@dataclass
class FailureRecord:
    """One failed task (see the module docstring for the fields)."""

    task: str
    dataset_ids: list[str]
    reason: str
    log: str
    bad_datasets: list[dict] = field(default_factory=list)
    time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailureRecord:
        return cls(
            task=str(data["task"]),
            dataset_ids=[str(i) for i in data.get("dataset_ids") or []],
            reason=str(data.get("reason", "")),
            log=str(data.get("log", "")),
            bad_datasets=[
                {k: entry.get(k) for k in BAD_DATASET_KEYS}
                for entry in data.get("bad_datasets") or []
            ],
            time=str(data.get("time", "")),
        )


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def make_failure_record(
    task: TaskId | str,
    dataset_ids: list[str],
    reason: str,
    log_path: str | Path | None,
    bad_datasets: list[dict] | None = None,
) -> FailureRecord:
    """A record stamped with the current UTC time (seconds)."""
    return FailureRecord(
        task=str(task),
        dataset_ids=sorted(str(i) for i in dataset_ids),
        reason=one_line(reason),
        log=str(log_path or ""),
        bad_datasets=[{k: entry.get(k) for k in BAD_DATASET_KEYS} for entry in bad_datasets or []],
        time=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )


def write_failure_record(run: Any, record: FailureRecord) -> Path:
    """Write ``record`` at its task's :meth:`~eostats.workflow.Run.failure_record_path`, atomically."""
    from eostats.taskids import parse_task_id

    path = Path(run.failure_record_path(parse_task_id(record.task)))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, record.to_dict(), sort_keys=True)


def clear_failure_record(run: Any, task: TaskId) -> bool:
    """Remove the task's failure record (the task succeeded); whether there was one."""
    path = Path(run.failure_record_path(task))
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def load_failures(run: Any) -> list[FailureRecord]:
    """Every failure record of the run, sorted by task id; an unreadable record is logged and left out."""
    root = Path(run.log_dir) / "failures"
    records = []
    for path in sorted(root.glob("*/x*_y*.json")) if root.is_dir() else []:
        try:
            records.append(FailureRecord.from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("failure record %s is unreadable, left out: %s", path, one_line(str(err)))
    return sorted(records, key=lambda r: r.task)


def failures_jsonl(records: list[FailureRecord]) -> str:
    """The records as JSON Lines (one compact object a line, keys sorted)."""
    return "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records)


def write_failures_file(run: Any) -> tuple[Path, int]:
    """Rewrite the run's failures file (:attr:`~eostats.workflow.Run.failures_file`) from its records, atomically;
    an empty file means no task failed. Returns its path and the number of failures."""
    records = load_failures(run)
    path = Path(run.failures_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, failures_jsonl(records))
    return path, len(records)
