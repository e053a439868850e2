"""Full-history tiles: the period label, which period tiles feed a tile, the config checks, and the block-wise
sums of wofs-summary-fh over hand-made annual COGs (values worked out here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eostats.config import ConfigError, validate_config
from eostats.fileio import write_json_atomic
from eostats.fullhistory import (
    compute_full_history,
    full_history_period,
    full_history_run,
    full_history_tasks,
    period_inputs,
)
from eostats.taskids import TaskId
from eostats.workflow import Run

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 4, "origin": [0, 0]}


def test_period_label_spans_the_periods_as_odc_stats_all():
    assert full_history_period(["2021--P1Y", "2019--P1Y", "2020--P1Y"]) == "2019--P3Y"
    assert (
        full_history_period(["2020-07--P1Y", "2021-07--P1Y"]) == "2020-07--P2Y"
    )  # financial years
    assert full_history_period(["2021-03--P1M", "2021-05--P1M"]) == "2021-03--P3M"
    assert full_history_period(["2020--P1Y"], "1986--P38Y") == "1986--P38Y"
    with pytest.raises(ValueError):
        full_history_period(["2020--P1Y"], "1986-P38Y")


def test_inputs_are_the_tiles_own_periods_inside_the_full_period():
    tasks = [
        TaskId("2019--P1Y", 1, 2),
        TaskId("2020--P1Y", 1, 2),
        TaskId("2021--P1Y", 1, 2),
        TaskId("2020--P1Y", 3, 2),
    ]
    assert period_inputs(tasks, "2020--P2Y", 1, 2) == [tasks[1], tasks[2]]
    assert period_inputs(tasks, "2020--P2Y", 3, 2) == [tasks[3]]
    assert full_history_tasks(tasks, "2020--P2Y") == [
        TaskId("2020--P2Y", 1, 2),
        TaskId("2020--P2Y", 3, 2),
    ]
    assert full_history_tasks(tasks, "2019--P1Y") == [TaskId("2019--P1Y", 1, 2)]


def run_of(tmp_path, **config) -> Run:
    base = {
        "results": str(tmp_path),
        "grid": GRID,
        "plugin": "wofs-summary",
        "product": {"name": "wo_annual", "version": "1.0.0"},
        "full_history": {"product": {"name": "wo_fh", "version": "1.0.0"}},
        "chunk_size": 64,
    }
    return Run(validate_config({**base, **config}))


def test_full_history_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="full_history.product"):
        full_history_run(
            run_of(tmp_path, full_history={"product": {"name": "wo_annual", "version": "1.0.0"}})
        )
    with pytest.raises(ConfigError, match="full_history.plugin.*count_wet"):
        full_history_run(run_of(tmp_path, plugin="pq", product={"name": "pq"}))
    assert full_history_run(run_of(tmp_path, full_history=None)) is None


def write_annual_tile(run: Run, task: TaskId, wet: np.ndarray, clear: np.ndarray) -> str:
    """An annual tile as wofs-summary writes it (the tile writer itself), returns its STAC item's path."""
    from eostats.tile import write_tile

    geobox = run.grid.tile_geobox(task.x, task.y)
    coords = {"y": geobox.coords["y"].values, "x": geobox.coords["x"].values}
    frequency = np.where(clear > 0, wet / np.maximum(clear, 1), np.nan).astype(np.float32)
    data = xr.Dataset(
        {
            "count_wet": (("y", "x"), wet.astype(np.int16)),
            "count_clear": (("y", "x"), clear.astype(np.int16)),
            "frequency": (("y", "x"), frequency),
        },
        coords=coords,
    )
    write_tile(run, task, data, [f"source-{task.period}"])
    return run.tile_item(task)


def test_sums_over_hand_made_annual_tiles(tmp_path):
    run = run_of(tmp_path, chunk_size=64)
    fh = full_history_run(run)
    n = 4
    # 2020: pixel (0, 0) never observed; 2021: pixel (0, 0) and (0, 1) never observed
    wet20 = np.full((n, n), 1)
    clear20 = np.full((n, n), 3)
    wet20[0, 0] = clear20[0, 0] = -999
    wet21 = np.full((n, n), 2)
    clear21 = np.full((n, n), 2)
    wet21[0, :2] = clear21[0, :2] = -999
    clear21[3, 3] = 0  # observed, never clear
    wet21[3, 3] = 0
    items = [
        write_annual_tile(run, TaskId("2020--P1Y", 5, 6), wet20, clear20),
        write_annual_tile(run, TaskId("2021--P1Y", 5, 6), wet21, clear21),
    ]
    data, sources = compute_full_history(fh, TaskId("2020--P2Y", 5, 6), items)
    assert sources == [json.loads(Path(p).read_text())["id"] for p in items]
    wet, clear, freq = (data[b].values for b in ("count_wet", "count_clear", "frequency"))
    assert wet[0, 0] == clear[0, 0] == -999 and np.isnan(freq[0, 0])  # never observed in any year
    assert (wet[0, 1], clear[0, 1]) == (1, 3) and freq[0, 1] == np.float32(1 / 3)  # 2020 only
    assert (wet[1, 1], clear[1, 1]) == (3, 5) and freq[1, 1] == np.float32(3 / 5)
    assert (wet[3, 3], clear[3, 3]) == (1, 3)
    assert wet.dtype == np.int16 and freq.dtype == np.float32


def test_a_period_tile_without_the_band_is_named(tmp_path):
    run = run_of(tmp_path)
    fh = full_history_run(run)
    item = tmp_path / "item.stac-item.json"
    write_json_atomic(item, {"id": "x", "assets": {"count_wet": {"href": "a.tif"}}, "links": []})
    with pytest.raises(ValueError, match=f"{item}.*count_clear"):
        compute_full_history(fh, TaskId("2020--P1Y", 0, 0), [item])
