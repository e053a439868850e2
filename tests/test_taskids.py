"""Tests for eostats.taskids: TaskId, the task-id parser and odc-stats' task selectors."""

from __future__ import annotations

import re

import pytest

from eostats.taskids import TASK_SLUG_PATTERN, TaskId, parse_task_id, select_tasks


def test_str_renders_like_odc_stats() -> None:
    assert str(TaskId("2015--P1Y", 41, 13)) == "2015--P1Y/41/13"
    assert str(TaskId("2015--P1Y", 4, 3)) == "2015--P1Y/04/03"
    assert str(TaskId("2015--P1Y", -3, 123)) == "2015--P1Y/-3/123"
    assert str(TaskId("2020-07--P1Y", 0, -12)) == "2020-07--P1Y/00/-12"


def test_ordering_is_period_then_x_then_y() -> None:
    tasks = [
        TaskId("2016--P1Y", 1, 1),
        TaskId("2015--P1Y", 2, 0),
        TaskId("2015--P1Y", -1, 5),
        TaskId("2015--P1Y", 2, -1),
        TaskId("2015-07--P1Y", 0, 0),
    ]
    assert sorted(tasks) == [
        TaskId("2015--P1Y", -1, 5),
        TaskId("2015--P1Y", 2, -1),
        TaskId("2015--P1Y", 2, 0),
        TaskId("2015-07--P1Y", 0, 0),  # after 2015--P1Y: "-" sorts before "0"
        TaskId("2016--P1Y", 1, 1),
    ]


def test_slug_is_file_name_safe_and_parses_back() -> None:
    for task in [TaskId("2015--P1Y", 49, 24), TaskId("2013-03-21--P10D", -3, -120)]:
        slug = task.slug
        assert re.fullmatch(r"[0-9A-Za-z_-]+", slug)
        assert re.fullmatch(TASK_SLUG_PATTERN, slug)
        assert parse_task_id(slug) == task
    assert TaskId("2015--P1Y", 49, -3).slug == "2015--P1Y_x49_y-3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015--P1Y/41/13", TaskId("2015--P1Y", 41, 13)),
        ("2015--P1Y,+041,+013", TaskId("2015--P1Y", 41, 13)),
        ("2019--P1Y,+003,-004", TaskId("2019--P1Y", 3, -4)),
        ("2019--P1Y/3/-4", TaskId("2019--P1Y", 3, -4)),
        ("x+041/y+013/2015--P1Y", TaskId("2015--P1Y", 41, 13)),
        ("x+003/y-004/2019--P1Y", TaskId("2019--P1Y", 3, -4)),
        ("41/13/2015--P1Y", TaskId("2015--P1Y", 41, 13)),
        ("2015--P1Y/x41/y13", TaskId("2015--P1Y", 41, 13)),
        ("y13/x41/2015--P1Y", TaskId("2015--P1Y", 41, 13)),
        ("2015--P1Y,y013,x041", TaskId("2015--P1Y", 41, 13)),
        (" 2015--P1Y / 41 / 13 ", TaskId("2015--P1Y", 41, 13)),
        ("2015--P1Y_x41_y13", TaskId("2015--P1Y", 41, 13)),
        ("2013-03-21--P10D/0/0", TaskId("2013-03-21--P10D", 0, 0)),
        # The period is stored canonically, so the day form matches odc-stats' task key (Q7).
        ("2020-07-01--P1Y/1/2", TaskId("2020-07--P1Y", 1, 2)),
        ("2015-01--P1Y/1/2", TaskId("2015--P1Y", 1, 2)),
    ],
)
def test_parse_task_id(text: str, expected: TaskId) -> None:
    assert parse_task_id(text) == expected


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("foo/1/2", "'foo' is not a period label"),  # odc-stats accepts this (Q7)
        ("2015--P1Y/1", "expected period/x/y"),
        ("2015--P1Y/1/2/3", "expected period/x/y"),
        ("2015--P1Y", "expected period/x/y"),
        ("2015--P1Y/a/2", "'a' is not a tile index"),
        ("2015--P1Y/1.5/2", "'1.5' is not a tile index"),
        ("1/2/3", "'3' is not a period label"),
        ("2015--P1Y/y1/y2", "prefixes are mixed up"),
        ("2015--P1Y/1/x2", "prefixes are mixed up"),
    ],
)
def test_parse_task_id_errors_name_the_text(text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"bad task id {text!r}") + ".*" + pattern):
        parse_task_id(text)


# --- select_tasks ----------------------------------------------------------------------------------

# Deliberately unsorted; the sorted order is SORTED below (written by hand).
TASKS = [
    TaskId("2016--P1Y", 41, 13),
    TaskId("2015--P1Y", 42, 13),
    TaskId("2015--P1Y", 41, 14),
    TaskId("2015--P1Y", 41, 13),
    TaskId("2016--P1Y", 40, 20),
    TaskId("2015--P1Y", -2, 13),
]
SORTED = [
    TaskId("2015--P1Y", -2, 13),
    TaskId("2015--P1Y", 41, 13),
    TaskId("2015--P1Y", 41, 14),
    TaskId("2015--P1Y", 42, 13),
    TaskId("2016--P1Y", 40, 20),
    TaskId("2016--P1Y", 41, 13),
]


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["2015--P1Y/41/13"], [SORTED[1]]),
        (["x+041/y+014/2015--P1Y", "2016--P1Y,+040,+020"], [SORTED[2], SORTED[4]]),
        (["2015--P1Y/-2/13"], [SORTED[0]]),
        (["0"], [SORTED[0]]),
        (["5"], [SORTED[5]]),
        (["+1", " 2"], [SORTED[1], SORTED[2]]),
        (["::2"], [SORTED[0], SORTED[2], SORTED[4]]),
        (["1::2"], [SORTED[1], SORTED[3], SORTED[5]]),
        (["-2:"], [SORTED[4], SORTED[5]]),
        (["1:3"], [SORTED[1], SORTED[2]]),
        ([":2"], [SORTED[0], SORTED[1]]),
        (["::-1"], SORTED[::-1]),
        (["10:"], []),
        (["4:100"], [SORTED[4], SORTED[5]]),
        ([], []),
        # Selector order is kept; a task chosen twice appears once, at its first position.
        (["3", "0", "3"], [SORTED[3], SORTED[0]]),
        (["2016--P1Y/41/13", "-1:", "0:2"], [SORTED[5], SORTED[0], SORTED[1]]),
    ],
)
def test_select_tasks(selectors: list[str], expected: list[TaskId]) -> None:
    assert select_tasks(selectors, TASKS) == expected


@pytest.mark.parametrize(
    ("selector", "pattern"),
    [
        ("2015--P1Y/41/15", "task 2015--P1Y/41/15 is not in the cache"),
        ("2017--P1Y,+041,+013", "task 2017--P1Y/41/13 is not in the cache"),
        ("-1", "task index '-1' is negative; use the slice '-1:'"),
        ("-3", "task index '-3' is negative; use the slice '-3:-2'"),
        ("6", "task index 6 is out of range: there are 6 tasks \\(indices 0 to 5\\)"),
        ("1e3", "bad task selector '1e3'"),
        ("abc", "bad task selector 'abc'"),
        ("1:2:3:4", "bad task slice '1:2:3:4'"),
        ("a:", "bad task slice 'a:'"),
        ("::0", "the step must not be zero"),
        ("foo/1/2", "'foo' is not a period label"),
    ],
)
def test_select_tasks_errors(selector: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        select_tasks(["0", selector], TASKS)


def test_index_into_empty_task_list() -> None:
    with pytest.raises(ValueError, match="out of range: there are 0 tasks"):
        select_tasks(["0"], [])
    assert select_tasks([":"], []) == []
