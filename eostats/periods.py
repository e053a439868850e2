"""Period labels, date-time ranges and odc-stats' time binning frequencies.

A period label is ``<start>--P<n><unit>`` with unit ``Y`` (years), ``M`` (months) or ``D`` (days).
Its canonical start form depends on the start and the unit, as in odc-stats task keys:

* ``YYYY`` when the unit is Y and the start is 1 January (``2015--P1Y``);
* ``YYYY-MM`` when the unit is Y or M and the start is the 1st (``2015-07--P1Y``, ``2015-12--P3M``);
* ``YYYY-MM-DD`` otherwise (``2013-03-21--P10D``).

:func:`parse_period` accepts any of the three start forms for any unit and returns the canonical
label, so ``2020-07-01--P1Y`` and ``2020-07--P1Y`` are the same period (odc-stats quirk Q2).

Times are naive UTC :class:`~datetime.datetime` objects (aware ones are converted to UTC).
A :class:`DateTimeRange` is inclusive: ``end`` is the last microsecond before ``start + n units``
(``2019-07--P1Y`` ends 2020-06-30T23:59:59.999999; odc-stats quirk Q1 is fixed). Adding months
or years clamps the day to the end of the month, so ``2019-01-31--P1M`` ends on
2019-02-27T23:59:59.999999 (the next month-long period starts 2019-02-28).

Binning (:meth:`PeriodBinning.labels`) works on the *local solar* time ``t_utc + utc_offset``,
where the offset is whole hours from the tile's longitude (:func:`solar_offset_hours`).
With a temporal range, data whose local time falls outside the range are dropped; unlike odc-stats
(quirk Q3) the same local time is used for the range test and for binning.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

__all__ = [
    "ALL_PLACEHOLDER",
    "FREQUENCIES",
    "DateTimeRange",
    "PeriodBinning",
    "finalize_all_label",
    "make_binning",
    "parse_period",
    "period_label",
    "solar_offset_hours",
]

ALL_PLACEHOLDER = "all"
"""Label returned by ``all`` binning without a temporal range, before :func:`finalize_all_label`."""

FREQUENCIES: tuple[str, ...] = (
    "annual",
    "annual-fy",
    "semiannual",
    "seasonal",
    "quarterly",
    "monthly",
    "3month-seasons",
    "rolling-3months",
    "rolling-3years",
    "nov-mar",
    "apr-oct",
    "all",
)
_FREQUENCY_ALIASES = {"quartely": "quarterly"}  # odc-stats' own spelling
_NEEDS_RANGE = ("3month-seasons", "rolling-3months", "rolling-3years")

_PERIOD_RE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2}))?)?--P(?P<n>\d+)(?P<unit>[YMD])$",
    re.IGNORECASE,
)
_ONE_MICROSECOND = timedelta(microseconds=1)


def _add_months(t: datetime, months: int) -> datetime:
    """``t`` plus whole months, the day clamped to the length of the target month."""
    index = t.year * 12 + (t.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(t.day, calendar.monthrange(year, month)[1])
    return t.replace(year=year, month=month, day=day)


def _add(t: datetime, n: int, unit: str) -> datetime:
    if unit == "Y":
        return _add_months(t, 12 * n)
    if unit == "M":
        return _add_months(t, n)
    return t + timedelta(days=n)


def period_label(start: datetime, n: int, unit: str) -> str:
    """Canonical label of the period of ``n`` ``unit`` (Y, M or D) starting at midnight ``start``."""
    unit = unit.upper()
    if unit not in ("Y", "M", "D") or n < 1:
        raise ValueError(f"period needs n >= 1 and unit Y, M or D, got n={n}, unit={unit!r}")
    if unit == "Y" and start.month == 1 and start.day == 1:
        head = f"{start.year:04d}"
    elif unit in ("Y", "M") and start.day == 1:
        head = f"{start.year:04d}-{start.month:02d}"
    else:
        head = f"{start.year:04d}-{start.month:02d}-{start.day:02d}"
    return f"{head}--P{n}{unit}"


@dataclass(frozen=True)
class DateTimeRange:
    """Inclusive range ``[start, end]`` of naive UTC datetimes, with its period label.

    Build one with :func:`parse_period` or :meth:`from_start`; ``end`` is the microsecond before
    the next period starts.
    """

    start: datetime
    end: datetime
    label: str

    @classmethod
    def from_start(cls, start: datetime, n: int, unit: str) -> DateTimeRange:
        """The period of ``n`` ``unit`` (Y, M or D) starting at ``start`` (midnight)."""
        label = period_label(start, n, unit)
        return cls(start, _add(start, n, unit.upper()) - _ONE_MICROSECOND, label)

    def __contains__(self, t: datetime) -> bool:
        return self.start <= _naive_utc(t) <= self.end

    def __str__(self) -> str:
        return self.label


def parse_period(label: str) -> DateTimeRange:
    """Parse ``YYYY[-MM[-DD]]--P<n><Y|M|D>`` (case-insensitive) into a :class:`DateTimeRange`.

    The returned label is canonical (see the module docstring). Raises ValueError naming the text.
    """
    match = _PERIOD_RE.match(label.strip()) if isinstance(label, str) else None
    if match is None:
        raise ValueError(
            f"bad period {label!r}: expected YYYY[-MM[-DD]]--P<n><Y|M|D>, e.g. 2015--P1Y, "
            "2015-07--P1Y, 2013-03-21--P10D"
        )
    try:
        start = datetime(int(match["year"]), int(match["month"] or 1), int(match["day"] or 1))
    except ValueError as err:
        raise ValueError(f"bad period {label!r}: {err}") from None
    n = int(match["n"])
    if n < 1:
        raise ValueError(f"bad period {label!r}: the duration must be at least 1")
    return DateTimeRange.from_start(start, n, match["unit"].upper())


def solar_offset_hours(lon: float, rule: str = "round") -> int:
    """Whole-hour offset from UTC to local solar time at longitude ``lon`` (degrees east).

    ``rule="round"``: ``floor(lon * 24 / 360 + 0.5)``, rounding to the nearest hour (halves up).
    ``rule="odc-stats"``: ``int(lon / 15 + 0.5)``, odc-stats' formula, which truncates towards
    zero and so is about an hour too large west of Greenwich (quirk Q4); for compatibility only.
    """
    if rule == "round":
        return math.floor(lon * 24 / 360 + 0.5)
    if rule == "odc-stats":
        return int(lon / 15 + 0.5)
    raise ValueError(f"unknown solar offset rule {rule!r}; allowed: 'round', 'odc-stats'")


def finalize_all_label(years_seen: Iterable[int]) -> str:
    """Label of the ``all`` bin without a range: ``{min_year}--P{max_year - min_year + 1}Y``.

    ``years_seen`` are the local-time years of every binned dataset over the whole run (odc-stats
    uses UTC years here, quirk Q3). Raises ValueError when there are none.
    """
    years = [int(y) for y in years_seen]
    if not years:
        raise ValueError("cannot label the 'all' period: no datasets were binned")
    first, last = min(years), max(years)
    return f"{first:04d}--P{last - first + 1}Y"


def _naive_utc(t: datetime) -> datetime:
    if t.tzinfo is not None:
        return t.astimezone(UTC).replace(tzinfo=None)
    return t


# Season rules: month of the local time -> (months back to the season start, season length).
def _season_rule(start_months: tuple[int, ...], length: int) -> dict[int, tuple[int, int]]:
    rule = {}
    for month in range(1, 13):
        back = min((month - s) % 12 for s in start_months)
        if back < length:
            rule[month] = (back, length)
    return rule


_SEASON_RULES: dict[str, dict[int, tuple[int, int]]] = {
    "semiannual": _season_rule((1, 7), 6),
    "seasonal": _season_rule((12, 3, 6, 9), 3),
    "quarterly": _season_rule((1, 4, 7, 10), 3),
    "monthly": _season_rule(tuple(range(1, 13)), 1),
    "nov-mar": _season_rule((11,), 5),
    "apr-oct": _season_rule((4,), 7),
}


@dataclass(frozen=True)
class PeriodBinning:
    """How datasets are grouped in time; build it with :func:`make_binning`.

    ``frequency`` is one of :data:`FREQUENCIES` (``quartely`` is stored as ``quarterly``).
    A temporal range alone is stored as ``all`` with that range (one bin equal to the range);
    years alone as ``annual`` with ``years``. ``make_binning(**binning.to_dict())`` rebuilds it.
    """

    frequency: str
    temporal_range: DateTimeRange | None = None
    years: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        freq = _FREQUENCY_ALIASES.get(self.frequency, self.frequency)
        if freq not in FREQUENCIES:
            raise ValueError(
                f"unknown frequency {self.frequency!r}; allowed: {', '.join(FREQUENCIES)} "
                "(and 'quartely', odc-stats' spelling of 'quarterly')"
            )
        object.__setattr__(self, "frequency", freq)
        if self.years is not None:
            if freq != "annual":
                raise ValueError(
                    f"years can only be used with the 'annual' frequency, not {freq!r}"
                )
            if self.temporal_range is not None:
                raise ValueError("give either a temporal range or years, not both")
            if not self.years:
                raise ValueError("years must not be empty")
            object.__setattr__(self, "years", tuple(sorted({int(y) for y in self.years})))
        if freq in _NEEDS_RANGE:
            if self.temporal_range is None:
                raise ValueError(f"frequency {freq!r} needs a temporal range, e.g. 2015--P5Y")
            if freq != "3month-seasons" and not self.windows():
                raise ValueError(
                    f"temporal range {self.temporal_range.label} is shorter than one "
                    f"{freq!r} window"
                )

    def labels(self, t_utc: datetime, utc_offset_hours: int) -> list[str]:
        """Labels of the bins that hold a dataset observed at ``t_utc`` on a tile at the offset.

        ``t_utc`` is UTC (naive, or aware and then converted); ``utc_offset_hours`` is the
        tile's solar offset. ``[]`` when the local time is outside the temporal range, the years
        or the season. Only rolling frequencies can return several labels. ``all`` without a
        range returns ``["all"]`` (:data:`ALL_PLACEHOLDER`); see :func:`finalize_all_label`.
        """
        local = _naive_utc(t_utc) + timedelta(hours=utc_offset_hours)
        if self.temporal_range is not None and local not in self.temporal_range:
            return []
        freq = self.frequency
        if freq == "annual":
            if self.years is not None and local.year not in self.years:
                return []
            return [f"{local.year:04d}--P1Y"]
        if freq == "annual-fy":
            year = local.year if local.month >= 7 else local.year - 1
            return [f"{year:04d}-07--P1Y"]
        if freq == "all":
            return [self.temporal_range.label if self.temporal_range else ALL_PLACEHOLDER]
        if freq in ("rolling-3months", "rolling-3years"):
            return [w.label for w in self.windows() if w.start <= local <= w.end]
        back_length = self._season_rule.get(local.month)
        if back_length is None:
            return []
        back, length = back_length
        season_start = _add_months(datetime(local.year, local.month, 1), -back)
        return [period_label(season_start, length, "M")]

    def windows(self) -> tuple[DateTimeRange, ...]:
        """The overlapping windows of a rolling frequency (empty for other frequencies)."""
        return self._windows

    def to_dict(self) -> dict[str, object]:
        """JSON-able form; ``make_binning(**d)`` rebuilds an equal binning."""
        return {
            "frequency": self.frequency,
            "temporal_range": self.temporal_range.label if self.temporal_range else None,
            "years": list(self.years) if self.years is not None else None,
        }

    @cached_property
    def _windows(self) -> tuple[DateTimeRange, ...]:
        if self.frequency == "rolling-3months" and self.temporal_range is not None:
            return _rolling_windows(self.temporal_range, 3, "M")
        if self.frequency == "rolling-3years" and self.temporal_range is not None:
            return _rolling_windows(self.temporal_range, 3, "Y")
        return ()

    @cached_property
    def _season_rule(self) -> dict[int, tuple[int, int]]:
        if self.frequency == "3month-seasons" and self.temporal_range is not None:
            return _anchored_seasons(self.temporal_range.start.month)
        return _SEASON_RULES.get(self.frequency, {})


def _anchored_seasons(anchor_month: int) -> dict[int, tuple[int, int]]:
    starts = tuple((anchor_month - 1 + 3 * k) % 12 + 1 for k in range(4))
    return _season_rule(starts, 3)


def _rolling_windows(temporal_range: DateTimeRange, n: int, unit: str) -> tuple[DateTimeRange, ...]:
    """Windows of ``n`` ``unit`` starting at the range start and every step of one ``unit``.

    Windows that would end after the range are not created (as in odc-stats).
    """
    windows = []
    step = 0
    while True:
        start = _add(temporal_range.start, step, unit)
        window = DateTimeRange.from_start(start, n, unit)
        if window.end > temporal_range.end:
            break
        windows.append(window)
        step += 1
    return tuple(windows)


def make_binning(
    frequency: str | None = None,
    temporal_range: DateTimeRange | str | None = None,
    years: Iterable[int] | None = None,
) -> PeriodBinning:
    """Build a :class:`PeriodBinning` from odc-stats-style options.

    * ``frequency``: one of :data:`FREQUENCIES`, case-insensitive (``quartely`` is accepted for
      ``quarterly``); ``3month-seasons``, ``rolling-3months`` and ``rolling-3years`` need
      ``temporal_range``.
    * ``temporal_range``: a :class:`DateTimeRange` or a period label. Alone it makes one bin equal
      to the range (stored as frequency ``all``); with a frequency it drops data whose local time
      is outside it.
    * ``years``: alone or with ``annual``, annual bins for these years only.

    Nothing given means ``annual``. Raises ValueError naming the bad option.
    """
    if isinstance(temporal_range, str):
        temporal_range = parse_period(temporal_range)
    year_tuple = None if years is None else tuple(int(y) for y in years)
    if frequency is None:
        frequency = "all" if temporal_range is not None and year_tuple is None else "annual"
    elif isinstance(frequency, str):
        frequency = frequency.strip().lower()
    return PeriodBinning(frequency, temporal_range, year_tuple)
