"""One row of the benchmark table, and the table itself."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    """A figure: our value, the reference value (None when there is none), the target and whether it is met.

    ``ratio`` is ours / reference for numbers; ``passed`` is None for informational rows.
    """

    figure: str
    ours: Any
    reference: Any
    target: str
    passed: bool | None
    note: str = ""
    unit: str = ""

    @property
    def ratio(self) -> float | None:
        numbers = (int, float)
        if isinstance(self.ours, bool) or isinstance(self.reference, bool):
            return None
        if (
            isinstance(self.ours, numbers)
            and isinstance(self.reference, numbers)
            and self.reference
        ):
            return self.ours / self.reference
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "frac" and isinstance(value, float):
        return f"{100 * value:.3f} %"
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{text} {unit}".strip() if unit not in ("frac",) else text
    if isinstance(value, int):
        return f"{value:,} {unit}".strip()
    return str(value)


def render_table(rows: list[Row]) -> str:
    """A Markdown table: figure | ours | reference | ratio | target | pass | note."""
    header = ["figure", "ours", "reference", "ratio", "target", "pass", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ratio = row.ratio
        verdict = {True: "PASS", False: "FAIL", None: "info"}[row.passed]
        cells = [
            row.figure,
            _fmt(row.ours, row.unit),
            _fmt(row.reference, row.unit),
            "-" if ratio is None else f"{ratio:.3f}",
            row.target,
            verdict,
            row.note,
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def dump_json(rows: list[Row], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=1, default=str)
