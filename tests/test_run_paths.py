"""Where a run's targets live (eostats.workflow.Run): odc-stats' layout and Snakemake patterns that match it."""

from __future__ import annotations

import re

import pytest

from eostats.config import validate_config
from eostats.taskids import TaskId
from eostats.workflow import INDEX_REGEX, PERIOD_REGEX, Run


def make_run(**overrides) -> Run:
    return Run(validate_config({"results": "out", "run_name": "r1", **overrides}))


def pattern_to_regex(pattern: str) -> re.Pattern:
    regex = re.escape(pattern)
    for name, sub in (("period", PERIOD_REGEX), ("x", INDEX_REGEX), ("y", INDEX_REGEX)):
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>{sub})")
    return re.compile(regex + "$")


@pytest.mark.parametrize(
    ("product", "task", "tile_dir"),
    [
        (
            {"name": "ga_ls_gm", "version": "3.0.1"},
            TaskId("2015--P1Y", 49, 24),
            "out/ga_ls_gm/3-0-1/x49/y24/2015--P1Y",
        ),
        (
            {"name": "p", "version": "1.0"},
            TaskId("2020-07--P1Y", 3, -2),
            "out/p/1-0/x03/y-2/2020-07--P1Y",
        ),
        (
            {"name": "de_af", "version": "1.0.0", "region_code_format": "x{x:03d}y{y:03d}"},
            TaskId("2021--P1Y", 123, 5),
            "out/de_af/1-0-0/x123/y005/2021--P1Y",
        ),
    ],
)
def test_tile_dirs_follow_odc_stats_layout_and_match_the_rule_pattern(product, task, tile_dir):
    run = make_run(product=product)
    assert run.tile_dir(task) == tile_dir
    match = pattern_to_regex(run.tile_dir_pattern).match(tile_dir)
    assert match, (run.tile_dir_pattern, tile_dir)
    assert (match["period"], int(match["x"]), int(match["y"])) == (task.period, task.x, task.y)


def test_run_file_names():
    run = make_run(product={"name": "prod", "short_name": "pr", "version": "0.1.0"}, plugin="pq")
    assert str(run.cache) == "out/tasks/r1.sqlite"
    assert str(run.task_csv) == "out/tasks/r1.csv"
    assert str(run.period_geojson("2020--P1Y")) == "out/tasks/r1-2020--P1Y.geojson"
    assert [p.name for p in run.mosaic_paths("2020--P1Y")] == [
        f"pr_2020--P1Y_mosaic_{b}.tif" for b in ("total", "clear", "clear_2_5", "clear_0_5")
    ]
    single = make_run(plugin="pq", mosaic={"per_band": False})
    assert [p.name for p in single.mosaic_paths("2020--P1Y")] == [
        "pq_ls_annual_2020--P1Y_mosaic.tif"
    ]


def test_task_csv_is_read_and_subset_by_selectors(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(
        '"T","X","Y","datasets","days"\n'
        '"2020--P1Y", +0275, +0097,    3,    2\n'
        '"2020--P1Y", +0276, +0097,    1,    1\n'
        '"2021--P1Y", +0275, +0097,    4,    4\n'
    )
    every = make_run().read_task_csv(csv_path)
    assert every == [
        TaskId("2020--P1Y", 275, 97),
        TaskId("2020--P1Y", 276, 97),
        TaskId("2021--P1Y", 275, 97),
    ]
    subset = make_run(tasks=["2021--P1Y/275/97", 0]).read_task_csv(csv_path)
    assert subset == [TaskId("2021--P1Y", 275, 97), TaskId("2020--P1Y", 275, 97)]
    with pytest.raises(ValueError, match="2019--P1Y/1/1"):
        make_run(tasks=["2019--P1Y/1/1"]).read_task_csv(csv_path)
