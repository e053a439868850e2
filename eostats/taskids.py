"""Task ids ``(period, x, y)`` and odc-stats' task-selector syntax.

Forms accepted by :func:`parse_task_id` (one parser for all of them):

* ``2015--P1Y/41/13`` and ``2015--P1Y,+041,+013``: period, x, y separated by ``/`` or ``,``;
* ``x+041/y+013/2015--P1Y``: x, y, period;
* ``2015--P1Y_x41_y13``: the :attr:`TaskId.slug` form (separator ``_``).

Indices may carry a sign, zero padding and an ``x``/``y`` prefix, in either order of the parts;
with both prefixes, ``y13/x41/2015--P1Y`` also works. The period must be a valid period label
(:func:`eostats.periods.parse_period`, so ``foo/1/2`` is rejected, unlike odc-stats, quirk Q7) and
is stored in canonical form (``2020-07-01--P1Y`` becomes ``2020-07--P1Y``).

:func:`select_tasks` takes odc-stats' selectors: a triplet (must be a task in the list), a
zero-based index, or a Python slice over the tasks sorted by ``(period, x, y)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from eostats.periods import parse_period

__all__ = ["TASK_SLUG_PATTERN", "TaskId", "parse_task_id", "select_tasks"]

TASK_SLUG_PATTERN = r"\d{4}(?:-\d{2}){0,2}--P\d+[YMD]_x-?\d+_y-?\d+"
"""Regular expression matching :attr:`TaskId.slug` (e.g. for a Snakemake wildcard constraint)."""

_INDEX_RE = re.compile(r"^(?P<axis>[xy]?)(?P<value>[+-]?\d+)$", re.IGNORECASE)
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(
    frozen=True, order=True, slots=True
)  # slots: a 50 000-task plan holds hundreds of thousands
class TaskId:
    """One task: a period label and a tile index, ordered by ``(period, x, y)``.

    ``period`` sorts as text, as in odc-stats, so tasks group by period and then by x, y.
    """

    period: str
    x: int
    y: int

    def __str__(self) -> str:
        """odc-stats' rendering ``period/xx/yy`` (``%02d``, so -3 is ``-3``)."""
        return f"{self.period}/{self.x:02d}/{self.y:02d}"

    @property
    def slug(self) -> str:
        """File-name and Snakemake-wildcard safe form, e.g. ``2015--P1Y_x49_y-3``.

        Only ``[0-9A-Za-z_-]`` characters, no ``/``; :func:`parse_task_id` reads it back and
        :data:`TASK_SLUG_PATTERN` matches it.
        """
        return f"{self.period}_x{self.x}_y{self.y}"


def _parse_index(text: str, full: str) -> tuple[str, int]:
    match = _INDEX_RE.match(text.strip())
    if match is None:
        raise ValueError(f"bad task id {full!r}: {text!r} is not a tile index")
    return match["axis"].lower(), int(match["value"])


def parse_task_id(text: str) -> TaskId:
    """Parse one task id in any form listed in the module docstring.

    Raises ValueError naming ``text`` when it has not three parts, an index is not an integer,
    the period is not a valid period label, or prefixes contradict the order.
    """
    if not isinstance(text, str):
        raise ValueError(f"bad task id {text!r}: expected text")
    separator = next((sep for sep in ("/", ",", "_") if sep in text), None)
    parts = text.split(separator) if separator else [text]
    if len(parts) != 3:
        raise ValueError(
            f"bad task id {text!r}: expected period/x/y, period,x,y or x/y/period "
            "(e.g. 2015--P1Y/41/13)"
        )
    first_is_index = _INDEX_RE.match(parts[0].strip()) is not None
    if first_is_index:
        period_text, index_texts = parts[2], parts[:2]
    else:
        period_text, index_texts = parts[0], parts[1:]
    try:
        period = parse_period(period_text.strip()).label
    except ValueError:
        raise ValueError(
            f"bad task id {text!r}: {period_text.strip()!r} is not a period label "
            "(e.g. 2015--P1Y, 2015-07--P1Y)"
        ) from None
    (axis_a, a), (axis_b, b) = (_parse_index(t, text) for t in index_texts)
    if (axis_a, axis_b) == ("y", "x"):
        a, b = b, a
    elif (axis_a and axis_a != "x") or (axis_b and axis_b != "y"):
        raise ValueError(f"bad task id {text!r}: x/y prefixes are mixed up")
    return TaskId(period, a, b)


def _parse_slice(selector: str) -> slice:
    parts = selector.split(":")
    if len(parts) > 3 or not all(_INT_RE.match(p.strip()) or not p.strip() for p in parts):
        raise ValueError(f"bad task slice {selector!r}: expected start:stop[:step] integers")
    values = [int(p) if p.strip() else None for p in parts]
    if len(values) == 3 and values[2] == 0:
        raise ValueError(f"bad task slice {selector!r}: the step must not be zero")
    return slice(*values)


def select_tasks(selectors: Sequence[str], tasks: Sequence[TaskId]) -> list[TaskId]:
    """Tasks chosen by odc-stats-style selectors, in selector order, without duplicates.

    ``tasks`` is sorted by ``(period, x, y)`` first. Each selector is

    * a triplet (any :func:`parse_task_id` form), which must be one of ``tasks``;
    * a zero-based index (``"3"``, ``"+3"``, ``" 3"``); negative indices are refused, as in
      odc-stats (use the slice ``-1:`` for the last task);
    * a Python slice ``start:stop[:step]`` over the sorted tasks (``::10``, ``-2:``, ``1:5``,
      ``::-1``); a slice past the end selects nothing.

    A task chosen twice is kept at its first position (odc-stats keeps duplicates and would run
    the task twice). Raises ValueError naming the selector.
    """
    ordered = sorted(tasks)
    known = set(ordered)
    chosen: dict[TaskId, None] = {}
    for selector in selectors:
        if not isinstance(selector, str):
            raise ValueError(f"bad task selector {selector!r}: expected text")
        text = selector.strip()
        if any(sep in text for sep in ("/", ",", "_")):
            task = parse_task_id(text)
            if task not in known:
                raise ValueError(f"task {task} is not in the cache (selector {selector!r})")
            picked = [task]
        elif ":" in text:
            picked = ordered[_parse_slice(text)]
        elif _INT_RE.match(text):
            index = int(text)
            if index < 0:
                as_slice = f"{index}:{index + 1 if index < -1 else ''}"
                raise ValueError(
                    f"task index {selector!r} is negative; use the slice {as_slice!r} instead"
                )
            if index >= len(ordered):
                valid = f"indices 0 to {len(ordered) - 1}" if ordered else "no valid index"
                raise ValueError(
                    f"task index {index} is out of range: there are {len(ordered)} tasks ({valid})"
                )
            picked = [ordered[index]]
        else:
            raise ValueError(
                f"bad task selector {selector!r}: expected a task id (2015--P1Y/41/13), "
                "an index (3) or a slice (::10)"
            )
        for task in picked:
            chosen.setdefault(task, None)
    return list(chosen)
