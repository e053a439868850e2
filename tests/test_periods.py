"""Tests for eostats.periods: period labels, DateTimeRange, every frequency, solar offsets.

Expected labels and range ends are written out by hand from odc-stats' conventions
(odc-stats.md §2.5) with the documented fixes (docs/quirks.md: Q1, Q3, Q4, Q5).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from eostats.periods import (
    ALL_PLACEHOLDER,
    DateTimeRange,
    finalize_all_label,
    make_binning,
    parse_period,
    solar_offset_hours,
)

T = datetime
LAST_US = (23, 59, 59, 999_999)

# --- DateTimeRange ---------------------------------------------------------------------------------

PERIODS = [
    # text, canonical label, start, inclusive end
    ("2015--P1Y", "2015--P1Y", T(2015, 1, 1), T(2015, 12, 31, *LAST_US)),
    ("2015--P3Y", "2015--P3Y", T(2015, 1, 1), T(2017, 12, 31, *LAST_US)),
    ("2019-07--P1Y", "2019-07--P1Y", T(2019, 7, 1), T(2020, 6, 30, *LAST_US)),
    ("2020-07--P1Y", "2020-07--P1Y", T(2020, 7, 1), T(2021, 6, 30, *LAST_US)),
    ("2020-07-01--P1Y", "2020-07--P1Y", T(2020, 7, 1), T(2021, 6, 30, *LAST_US)),
    ("2015-01--P1Y", "2015--P1Y", T(2015, 1, 1), T(2015, 12, 31, *LAST_US)),
    ("2015-01--P6M", "2015-01--P6M", T(2015, 1, 1), T(2015, 6, 30, *LAST_US)),
    ("2015-12--P3M", "2015-12--P3M", T(2015, 12, 1), T(2016, 2, 29, *LAST_US)),
    ("2015-11--P5M", "2015-11--P5M", T(2015, 11, 1), T(2016, 3, 31, *LAST_US)),
    ("2015-04--P7M", "2015-04--P7M", T(2015, 4, 1), T(2015, 10, 31, *LAST_US)),
    ("2015-03--P1M", "2015-03--P1M", T(2015, 3, 1), T(2015, 3, 31, *LAST_US)),
    ("2015--P1M", "2015-01--P1M", T(2015, 1, 1), T(2015, 1, 31, *LAST_US)),
    ("2013-03-21--P10D", "2013-03-21--P10D", T(2013, 3, 21), T(2013, 3, 30, *LAST_US)),
    ("2015-03--P10D", "2015-03-01--P10D", T(2015, 3, 1), T(2015, 3, 10, *LAST_US)),
    ("2020-01-15--P3M", "2020-01-15--P3M", T(2020, 1, 15), T(2020, 4, 14, *LAST_US)),
    # Month arithmetic clamps the day: the next month-long period would start on 28 February.
    ("2019-01-31--P1M", "2019-01-31--P1M", T(2019, 1, 31), T(2019, 2, 27, *LAST_US)),
    ("2020-02-29--P1Y", "2020-02-29--P1Y", T(2020, 2, 29), T(2021, 2, 27, *LAST_US)),
    ("2015--p1y", "2015--P1Y", T(2015, 1, 1), T(2015, 12, 31, *LAST_US)),
    (" 2016--P01Y ", "2016--P1Y", T(2016, 1, 1), T(2016, 12, 31, *LAST_US)),
]


@pytest.mark.parametrize(("text", "label", "start", "end"), PERIODS)
def test_parse_period(text: str, label: str, start: datetime, end: datetime) -> None:
    period = parse_period(text)
    assert period == DateTimeRange(start, end, label)
    assert str(period) == label
    assert start in period
    assert end in period
    assert start - timedelta(microseconds=1) not in period
    assert end + timedelta(microseconds=1) not in period


def test_fy_end_is_30_june_unlike_odc_stats_q1() -> None:
    """odc-stats ends 2019-07--P1Y on 29 June and 2020-07--P1Y on 1 July (quirk Q1)."""
    fy2019, fy2020 = parse_period("2019-07--P1Y"), parse_period("2020-07--P1Y")
    assert T(2020, 6, 30, 12) in fy2019
    assert T(2021, 7, 1, 12) not in fy2020
    assert fy2019.end + timedelta(microseconds=1) == fy2020.start


def test_contains_converts_aware_datetimes_to_utc() -> None:
    period = parse_period("2020--P1Y")
    assert T(2021, 1, 1, 9, tzinfo=timezone(timedelta(hours=10))) in period  # 23:00Z on 31 Dec
    assert T(2021, 1, 1, 11, tzinfo=timezone(timedelta(hours=10))) not in period


def test_from_start() -> None:
    assert DateTimeRange.from_start(T(2019, 7, 1), 1, "Y") == parse_period("2019-07--P1Y")
    assert DateTimeRange.from_start(T(2013, 3, 21), 10, "d").label == "2013-03-21--P10D"


@pytest.mark.parametrize(
    "text",
    ["2015", "foo", "2015--P0Y", "2015-13--P1M", "2015-02-30--P1D", "2015--P1W", "15--P1Y", ""],
)
def test_bad_period_names_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=f"bad period '{text}'"):
        parse_period(text)


# --- solar offset ----------------------------------------------------------------------------------


def nearest_hour(lon: float) -> int:
    """Independent reference: the whole hour closest to lon/15, halves going east."""
    return min(range(-12, 13), key=lambda h: (abs(lon / 15 - h), -h))


@pytest.mark.parametrize(
    ("lon", "rounded", "odc_stats"),
    [
        (0.0, 0, 0),
        (151.2, 10, 10),
        (7.5, 1, 1),
        (-7.5, 0, 0),
        (-7.4, 0, 0),
        (-7.6, -1, 0),
        (-75.0, -5, -4),  # quirk Q4: odc-stats truncates towards zero west of Greenwich
        (-80.0, -5, -4),
        (-82.5, -5, -5),  # int(-5.0): exact halves west happen to agree
        (179.9, 12, 12),
        (-179.9, -12, -11),
    ],
)
def test_solar_offset(lon: float, rounded: int, odc_stats: int) -> None:
    assert nearest_hour(lon) == rounded
    assert solar_offset_hours(lon) == rounded
    assert solar_offset_hours(lon, rule="round") == rounded
    assert solar_offset_hours(lon, rule="odc-stats") == odc_stats


def test_solar_offset_matches_nearest_hour_everywhere() -> None:
    rng = random.Random(7)
    for lon in [rng.uniform(-180, 180) for _ in range(2000)]:
        assert solar_offset_hours(lon) == nearest_hour(lon), lon


def test_unknown_solar_rule() -> None:
    with pytest.raises(ValueError, match="unknown solar offset rule 'floor'"):
        solar_offset_hours(10.0, rule="floor")


# --- binning ---------------------------------------------------------------------------------------

# frequency, temporal range, years, UTC time, offset hours, expected labels
CASES = [
    ("annual", None, None, T(2020, 6, 15), 0, ["2020--P1Y"]),
    # Solar-day edge cases: the local date decides.
    ("annual", None, None, T(2020, 12, 31, 23, 55), 10, ["2021--P1Y"]),
    ("annual", None, None, T(2021, 1, 1, 2, 0), -5, ["2020--P1Y"]),
    ("annual", None, None, T(2020, 12, 31, 13, 59, 59), 10, ["2020--P1Y"]),
    ("annual", None, None, T(2020, 12, 31, 14, 0), 10, ["2021--P1Y"]),
    ("annual-fy", None, None, T(2020, 6, 30, 23, 59), 0, ["2019-07--P1Y"]),
    ("annual-fy", None, None, T(2020, 7, 1), 0, ["2020-07--P1Y"]),
    ("annual-fy", None, None, T(2020, 6, 30, 14), 10, ["2020-07--P1Y"]),
    ("annual-fy", None, None, T(2021, 1, 15), 0, ["2020-07--P1Y"]),
    ("annual-fy", None, None, T(2021, 7, 1, 3), -5, ["2020-07--P1Y"]),
    ("semiannual", None, None, T(2015, 3, 3), 0, ["2015-01--P6M"]),
    ("semiannual", None, None, T(2015, 6, 30, 23), 0, ["2015-01--P6M"]),
    ("semiannual", None, None, T(2015, 6, 30, 23), 2, ["2015-07--P6M"]),
    ("semiannual", None, None, T(2015, 12, 31), 0, ["2015-07--P6M"]),
    # DJF carries December's year (quirk Q6, kept).
    ("seasonal", None, None, T(2015, 12, 10), 0, ["2015-12--P3M"]),
    ("seasonal", None, None, T(2016, 1, 10), 0, ["2015-12--P3M"]),
    ("seasonal", None, None, T(2016, 2, 29, 12), 0, ["2015-12--P3M"]),
    ("seasonal", None, None, T(2016, 3, 1), 0, ["2016-03--P3M"]),
    ("seasonal", None, None, T(2015, 5, 31), 0, ["2015-03--P3M"]),
    ("seasonal", None, None, T(2015, 6, 1), 0, ["2015-06--P3M"]),
    ("seasonal", None, None, T(2015, 8, 31), 0, ["2015-06--P3M"]),
    ("seasonal", None, None, T(2015, 9, 1), 0, ["2015-09--P3M"]),
    ("seasonal", None, None, T(2015, 11, 30, 12), 0, ["2015-09--P3M"]),
    ("seasonal", None, None, T(2015, 11, 30, 20), 10, ["2015-12--P3M"]),
    ("seasonal", None, None, T(2016, 3, 1, 2), -5, ["2015-12--P3M"]),
    ("quarterly", None, None, T(2015, 1, 1), 0, ["2015-01--P3M"]),
    ("quarterly", None, None, T(2015, 3, 31), 0, ["2015-01--P3M"]),
    ("quarterly", None, None, T(2015, 4, 1), 0, ["2015-04--P3M"]),
    ("quarterly", None, None, T(2015, 9, 30), 0, ["2015-07--P3M"]),
    ("quarterly", None, None, T(2015, 12, 31), 0, ["2015-10--P3M"]),
    ("quartely", None, None, T(2015, 8, 1), 0, ["2015-07--P3M"]),
    ("quartely", None, None, T(2015, 10, 1), 0, ["2015-10--P3M"]),
    ("monthly", None, None, T(2015, 3, 15), 0, ["2015-03--P1M"]),
    ("monthly", None, None, T(2015, 3, 31, 22), 3, ["2015-04--P1M"]),
    ("monthly", None, None, T(2015, 12, 31, 22), 3, ["2016-01--P1M"]),
    ("nov-mar", None, None, T(2015, 11, 1), 0, ["2015-11--P5M"]),
    ("nov-mar", None, None, T(2015, 12, 31), 0, ["2015-11--P5M"]),
    ("nov-mar", None, None, T(2016, 1, 1), 0, ["2015-11--P5M"]),
    ("nov-mar", None, None, T(2016, 3, 31), 0, ["2015-11--P5M"]),
    ("nov-mar", None, None, T(2016, 4, 1), 0, []),
    ("nov-mar", None, None, T(2016, 10, 31), 0, []),
    ("apr-oct", None, None, T(2015, 4, 1), 0, ["2015-04--P7M"]),
    ("apr-oct", None, None, T(2015, 10, 31), 0, ["2015-04--P7M"]),
    ("apr-oct", None, None, T(2015, 3, 31), 0, []),
    ("apr-oct", None, None, T(2015, 11, 1), 0, []),
    ("apr-oct", None, None, T(2015, 3, 31, 20), 10, ["2015-04--P7M"]),
    ("all", None, None, T(2001, 5, 5), 0, [ALL_PLACEHOLDER]),
    ("all", "2019-07--P1Y", None, T(2019, 7, 1), 0, ["2019-07--P1Y"]),
    ("all", "2019-07--P1Y", None, T(2020, 6, 30, 23, 59, 59), 0, ["2019-07--P1Y"]),
    ("all", "2019-07--P1Y", None, T(2020, 7, 1), 0, []),
    # Quirk Q3: the local day is in range, so eostats bins it (odc-stats gives it no task).
    ("all", "2020--P1Y", None, T(2019, 12, 31, 14), 10, ["2020--P1Y"]),
    ("all", "2020--P1Y", None, T(2021, 1, 1, 4, 59), -5, ["2020--P1Y"]),
    ("all", "2020--P1Y", None, T(2020, 12, 31, 14), 10, []),
    # A temporal range alone: one bin equal to the range.
    (None, "2013-03-21--P10D", None, T(2013, 3, 21), 0, ["2013-03-21--P10D"]),
    (None, "2013-03-21--P10D", None, T(2013, 3, 30, 23), 0, ["2013-03-21--P10D"]),
    (None, "2013-03-21--P10D", None, T(2013, 3, 31), 0, []),
    (None, "2013-03-21--P10D", None, T(2013, 3, 20, 23), 2, ["2013-03-21--P10D"]),
    (None, "2014-07--P1Y", None, T(2015, 2, 1), 0, ["2014-07--P1Y"]),
    # A list of years: annual bins for those years only (local years).
    (None, None, [2015, 2017], T(2015, 5, 1), 0, ["2015--P1Y"]),
    (None, None, [2015, 2017], T(2016, 5, 1), 0, []),
    (None, None, [2015, 2017], T(2017, 12, 31, 20), 5, []),
    (None, None, [2015, 2017], T(2014, 12, 31, 20), 5, ["2015--P1Y"]),
    ("annual", None, [2016], T(2016, 5, 1), 0, ["2016--P1Y"]),
    # A frequency with a temporal range: local times outside the range are dropped.
    ("annual", "2015--P2Y", None, T(2014, 12, 31, 20), 5, ["2015--P1Y"]),
    ("annual", "2015--P2Y", None, T(2016, 12, 31, 20), 5, []),
    ("seasonal", "2015-03--P6M", None, T(2015, 9, 1), 0, []),
    ("seasonal", "2015-03--P6M", None, T(2015, 8, 31), 0, ["2015-06--P3M"]),
    # 3month-seasons: seasons anchored at the range's start month (February here).
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 2, 1), 0, ["2020-02--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 4, 30), 0, ["2020-02--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 5, 1), 0, ["2020-05--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 10, 31), 0, ["2020-08--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 11, 1), 0, ["2020-11--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2021, 1, 31), 0, ["2020-11--P3M"]),
    ("3month-seasons", "2020-02--P1Y", None, T(2021, 2, 1), 0, []),
    ("3month-seasons", "2020-02--P1Y", None, T(2020, 1, 31), 0, []),
    ("3month-seasons", "2019-12--P2Y", None, T(2020, 2, 15), 0, ["2019-12--P3M"]),
    # rolling-3months: every window that holds the local time.
    ("rolling-3months", "2020--P1Y", None, T(2020, 1, 10), 0, ["2020-01--P3M"]),
    (
        "rolling-3months",
        "2020--P1Y",
        None,
        T(2020, 3, 10),
        0,
        ["2020-01--P3M", "2020-02--P3M", "2020-03--P3M"],
    ),
    ("rolling-3months", "2020--P1Y", None, T(2020, 11, 10), 0, ["2020-09--P3M", "2020-10--P3M"]),
    ("rolling-3months", "2020--P1Y", None, T(2020, 12, 10), 0, ["2020-10--P3M"]),
    ("rolling-3months", "2020--P1Y", None, T(2021, 1, 1), 0, []),
    # Quirk Q5 fixed: a mid-month range start shows in the labels.
    ("rolling-3months", "2020-01-15--P1Y", None, T(2020, 1, 20), 0, ["2020-01-15--P3M"]),
    (
        "rolling-3months",
        "2020-01-15--P1Y",
        None,
        T(2020, 4, 14, 23),
        0,
        ["2020-01-15--P3M", "2020-02-15--P3M", "2020-03-15--P3M"],
    ),
    (
        "rolling-3months",
        "2020-01-15--P1Y",
        None,
        T(2020, 4, 15),
        0,
        ["2020-02-15--P3M", "2020-03-15--P3M", "2020-04-15--P3M"],
    ),
    ("rolling-3years", "2015--P6Y", None, T(2015, 6, 1), 0, ["2015--P3Y"]),
    (
        "rolling-3years",
        "2015--P6Y",
        None,
        T(2017, 6, 1),
        0,
        ["2015--P3Y", "2016--P3Y", "2017--P3Y"],
    ),
    ("rolling-3years", "2015--P6Y", None, T(2019, 6, 1), 0, ["2017--P3Y", "2018--P3Y"]),
    ("rolling-3years", "2015--P6Y", None, T(2020, 6, 1), 0, ["2018--P3Y"]),
    ("rolling-3years", "2015--P6Y", None, T(2014, 12, 31, 20), 5, ["2015--P3Y"]),
    ("rolling-3years", "2015-07--P4Y", None, T(2018, 7, 1), 0, ["2016-07--P3Y"]),
    (
        "rolling-3years",
        "2015-07--P4Y",
        None,
        T(2018, 6, 30),
        0,
        ["2015-07--P3Y", "2016-07--P3Y"],
    ),
]


@pytest.mark.parametrize(
    ("frequency", "temporal_range", "years", "t_utc", "offset", "labels"), CASES
)
def test_labels(frequency, temporal_range, years, t_utc, offset, labels) -> None:
    binning = make_binning(frequency=frequency, temporal_range=temporal_range, years=years)
    assert binning.labels(t_utc, offset) == labels


def test_every_frequency_is_covered_by_the_table() -> None:
    covered = {c[0] for c in CASES}
    assert covered >= {
        "annual",
        "annual-fy",
        "semiannual",
        "seasonal",
        "quarterly",
        "quartely",
        "monthly",
        "3month-seasons",
        "rolling-3months",
        "rolling-3years",
        "nov-mar",
        "apr-oct",
        "all",
        None,
    }


def test_aware_times_are_converted_to_utc() -> None:
    binning = make_binning("annual")
    assert binning.labels(T(2020, 12, 31, 23, 55, tzinfo=UTC), 10) == ["2021--P1Y"]
    eastern = T(2021, 1, 1, 9, 55, tzinfo=timezone(timedelta(hours=10)))  # 2020-12-31T23:55Z
    assert binning.labels(eastern, 0) == ["2020--P1Y"]


def test_rolling_windows() -> None:
    months = make_binning("rolling-3months", "2020--P1Y").windows()
    assert [w.label for w in months] == [f"2020-{m:02d}--P3M" for m in range(1, 11)]
    assert months[-1].end == T(2020, 12, 31, *LAST_US)
    years = make_binning("rolling-3years", "2015--P6Y").windows()
    assert [w.label for w in years] == ["2015--P3Y", "2016--P3Y", "2017--P3Y", "2018--P3Y"]
    assert make_binning("annual").windows() == ()


def test_every_label_covers_its_local_time() -> None:
    """Each label parses to a range holding the dataset's local time (the content matches the label)."""
    rng = random.Random(11)
    specs = [
        ("annual", None),
        ("annual-fy", None),
        ("semiannual", None),
        ("seasonal", None),
        ("quarterly", None),
        ("monthly", None),
        ("nov-mar", None),
        ("apr-oct", None),
        ("3month-seasons", "2018-05--P4Y"),
        ("rolling-3months", "2018-01-31--P3Y"),
        ("rolling-3years", "2018-03-10--P5Y"),
        ("all", "2018-02-03--P100D"),
    ]
    for frequency, temporal_range in specs:
        binning = make_binning(frequency, temporal_range)
        for _ in range(300):
            t = T(2018, 1, 1) + timedelta(seconds=rng.uniform(0, 5 * 365 * 86400))
            offset = rng.randint(-12, 12)
            for label in binning.labels(t, offset):
                assert t + timedelta(hours=offset) in parse_period(label), (frequency, t, label)


def test_finalize_all_label() -> None:
    assert finalize_all_label([2016, 2015, 2019, 2015]) == "2015--P5Y"
    assert finalize_all_label(iter([2020])) == "2020--P1Y"
    assert parse_period(finalize_all_label([2015, 2019])).end == T(2019, 12, 31, *LAST_US)
    with pytest.raises(ValueError, match="no datasets"):
        finalize_all_label([])


def test_make_binning_normalises() -> None:
    assert make_binning().frequency == "annual"
    assert make_binning("Quartely").frequency == "quarterly"
    assert make_binning(temporal_range="2015--P1Y").frequency == "all"
    by_years = make_binning(years=[2017, 2015, 2017])
    assert (by_years.frequency, by_years.years) == ("annual", (2015, 2017))
    assert make_binning(temporal_range=parse_period("2015--P1Y")) == make_binning(
        temporal_range="2015--P1Y"
    )


@pytest.mark.parametrize(
    ("frequency", "temporal_range", "years"),
    [
        ("annual", None, None),
        ("quartely", None, None),
        ("rolling-3months", "2020-01-15--P1Y", None),
        ("all", None, None),
        (None, "2014-07--P1Y", None),
        (None, None, [2016, 2014]),
    ],
)
def test_to_dict_round_trip(frequency, temporal_range, years) -> None:
    binning = make_binning(frequency, temporal_range, years)
    assert make_binning(**binning.to_dict()) == binning


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"frequency": "weekly"}, "unknown frequency 'weekly'; allowed: annual, annual-fy"),
        ({"frequency": "3month-seasons"}, "'3month-seasons' needs a temporal range"),
        ({"frequency": "rolling-3months"}, "'rolling-3months' needs a temporal range"),
        ({"frequency": "rolling-3years"}, "'rolling-3years' needs a temporal range"),
        (
            {"frequency": "rolling-3years", "temporal_range": "2015--P2Y"},
            "shorter than one 'rolling-3years' window",
        ),
        ({"frequency": "seasonal", "years": [2015]}, "years can only be used"),
        ({"temporal_range": "2015--P1Y", "years": [2015]}, "either a temporal range or years"),
        ({"years": []}, "years must not be empty"),
        ({"temporal_range": "2015-P1Y"}, "bad period '2015-P1Y'"),
    ],
)
def test_make_binning_errors(kwargs, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make_binning(**kwargs)
