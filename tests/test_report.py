"""The run report end to end: a small geomedian run with `--keep-going` where one tile fails for real (a scene of
its went missing), then `snakemake run_report --report report.html --report-after-run`; the self-contained HTML is
taken apart and its images and tables checked against the run's own files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from eostats.cache import DatasetCache
from eostats.report import NO_DATA, STATUS_COLOURS, colour_ramp, png_bytes
from eostats.sample import SampleSpec
from eostats.taskids import parse_task_id

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}

pytestmark = [pytest.mark.workflow, pytest.mark.xdist_group("workflow")]

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
DONE = ["2021--P1Y/275/97", "2021--P1Y/276/97"]
FAILED = "2020--P1Y/275/98"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += [
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(REPO / "profiles" / "local"),
    ]
    cmd += ["--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=workdir)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def decode_png(data: bytes) -> np.ndarray:
    """(rows, cols, bands) through GDAL's PNG driver: a decoder independent of the report's encoder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG has no georeferencing
        with MemoryFile(data) as mem, mem.open() as src:
            assert src.driver == "PNG"
            return np.moveaxis(src.read(), 0, -1)


def embedded_files(report_html: str) -> dict[str, tuple[str, bytes]]:
    """The files embedded in Snakemake's self-contained report: {path under results/report: (mime, bytes)}."""
    found = {}
    entry = re.compile(
        r'"(?P<path>[^"]*results/report/[^"]+)": \{"name": "[^"]+", "filename": "[^"]+".*?'
        r'"data_uri": "data:(?P<mime>[^;]+);charset=utf8;filename=[^;]+;base64,(?P<b64>[^"]+)"',
        re.S,
    )
    for match in entry.finditer(report_html):
        key = match["path"].split("results/report/", 1)[1]
        found[key] = (match["mime"], base64.b64decode(match["b64"]))
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    config = {
        "results": "results",
        "run_name": "rep",
        "source": {"type": "sample", "sample": SampleSpec.tiny().to_dict()},
        "grid": GRID,
        "frequency": "annual",
        "plugin": "gm-ls",
        "tasks": [*DONE, FAILED],
        "resources": {
            "tile": {"threads": 1, "mem_mb": 2000},
            "mosaic": {"threads": 1, "mem_mb": 1000},
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    results = workdir / "results"
    snakemake(workdir, "results/tasks/rep.csv")
    # one scene of the failing task (and of no task that must succeed) goes missing: that tile fails for real
    cache = DatasetCache.open(results / "tasks" / "rep.sqlite")
    kept = {i for task in DONE for i in cache.dataset_ids(parse_task_id(task))}
    bad = sorted(set(cache.dataset_ids(parse_task_id(FAILED))) - kept)[0]
    next(results.glob(f"sample/*/{bad}/{bad}_oa_fmask.tif")).unlink()
    failed_run = snakemake(workdir, "--keep-going", check=False)
    assert failed_run.returncode != 0
    assert (results / "logs" / "failures" / "2020--P1Y" / "x275_y98.json").is_file()
    proc = snakemake(workdir, "run_report", "--report", "report.html", "--report-after-run")
    html_text = (workdir / "report.html").read_text()
    again = snakemake(workdir, "run_report", "-n")
    return {
        "workdir": workdir,
        "results": results,
        "bad_dataset": bad,
        "files": embedded_files(html_text),
        "log": proc.stdout + proc.stderr,
        "again": again.stdout + again.stderr,
    }


def test_report_embeds_every_file_of_the_run_report(report):
    names = sorted(report["files"])
    bands = ["nbart_nir", "nbart_swir_1", "nbart_swir_2", "sdev", "edev", "bcdev", "count"]
    for period in ("2020--P1Y", "2021--P1Y"):
        assert f"maps/{period}/observations.png" in names
        assert f"maps/{period}/status.png" in names
        assert f"tables/{period}/tiles.html" in names
        for name in ["rgb", *bands]:
            assert f"quicklooks/{period}/{name}.png" in names
    assert "failures/failures.html" in names
    assert all(
        mime == "image/png" for path, (mime, _) in report["files"].items() if path.endswith(".png")
    )


def status_cells(png: bytes) -> dict[tuple[int, int], tuple[int, ...]]:
    """The colour at the centre of each tile's cell: the task list has x 275..276 and y 97..98, so a 2 x 2 grid of
    64-pixel cells, x to the right and y upwards."""
    image = decode_png(png)
    assert image.shape == (128, 128, 3)
    assert tuple(int(v) for v in image[63, 10]) == (255, 255, 255), "a white gap between cells"
    return {
        (x, y): tuple(int(v) for v in image[(98 - y) * 64 + 32, (x - 275) * 64 + 32])
        for x in (275, 276)
        for y in (97, 98)
    }


def test_status_map_colours_each_tile_by_status(report):
    done, failed, skipped = (STATUS_COLOURS[s] for s in ("done", "failed", "skipped"))
    # skipped: in the task list, not chosen by `tasks`
    assert status_cells(report["files"]["maps/2021--P1Y/status.png"][1]) == {
        (275, 97): done,
        (276, 97): done,
        (275, 98): skipped,
        (276, 98): skipped,
    }
    assert status_cells(report["files"]["maps/2020--P1Y/status.png"][1]) == {
        (275, 97): skipped,
        (276, 97): skipped,
        (275, 98): failed,
        (276, 98): skipped,
    }


def test_observation_map_follows_the_task_lists_days(report):
    image = decode_png(report["files"]["maps/2021--P1Y/observations.png"][1])
    csv_rows = (report["results"] / "tasks" / "rep.csv").read_text().splitlines()[1:]
    days = {
        (int(r.split(",")[1]), int(r.split(",")[2])): int(r.split(",")[4])
        for r in csv_rows
        if r.startswith('"2021')
    }
    most = max(int(r.split(",")[4]) for r in csv_rows)
    for (x, y), n in days.items():
        pixel = image[(98 - y) * 64 + 32, (x - 275) * 64 + 32]
        # the ramp runs from none (dark blue) to the run's most days (yellow)
        expected = colour_ramp(np.array([n]), 0, most)[0]
        assert tuple(pixel) == tuple(expected), (x, y, n)
    assert most > 0


def test_true_colour_quicklook_is_the_red_green_blue_mosaics_scaled(report):
    image = decode_png(report["files"]["quicklooks/2021--P1Y/rgb.png"][1])
    mosaics = report["results"] / "gm_ls_annual" / "0-1-0" / "mosaics" / "2021--P1Y"
    channels = []
    for band in ("nbart_red", "nbart_green", "nbart_blue"):
        with rasterio.open(mosaics / f"gm_ls_annual_2021--P1Y_mosaic_{band}.tif") as src:
            channels.append(src.read(1))
            nodata = src.nodata
    assert image.shape == (*channels[0].shape, 3), "under the 512 px limit: full size"
    red = channels[0].astype(np.int64)
    valid = red != nodata
    assert valid.sum() > 500, "the sample covers part of the tile"
    # odc-stats' preview scaling with clamp (1, 3000): (v - 1) * 255 // 2999, clipped
    for got, band in zip(np.moveaxis(image, -1, 0), channels, strict=True):
        want = (np.clip(band.astype(np.int64), 1, 3000) - 1) * 255 // 2999
        assert np.array_equal(got[valid], want[valid])
    assert (image[~valid] == NO_DATA).all()
    assert image[valid].std() > 5, "not a blank image"


def test_count_quicklook_is_a_colour_ramp_from_zero(report):
    image = decode_png(report["files"]["quicklooks/2021--P1Y/count.png"][1])
    path = (
        report["results"]
        / "gm_ls_annual"
        / "0-1-0"
        / "mosaics"
        / "2021--P1Y"
        / "gm_ls_annual_2021--P1Y_mosaic_count.tif"
    )
    with rasterio.open(path) as src:
        count = src.read(1).astype(float)
        nodata = src.nodata
    valid = count != nodata if nodata is not None else np.ones(count.shape, bool)
    high = np.percentile(count[valid], 98)
    expected = colour_ramp(np.where(valid, count, np.nan), 0, high)
    assert np.array_equal(image, expected)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 2, "not a blank image"


def test_the_period_without_mosaic_gets_a_grey_placeholder(report):
    # a tile of 2020 failed: its mosaic (which needs every tile of the period) was not made
    assert not list(report["results"].glob("gm_ls_annual/0-1-0/mosaics/2020--P1Y/*.tif"))
    image = decode_png(report["files"]["quicklooks/2020--P1Y/rgb.png"][1])
    assert (image == NO_DATA).all()


def last_event(log: Path, name: str) -> dict:
    lines = [line for line in log.read_text().splitlines() if f'"{name}"' in line]
    return json.loads(lines[-1][lines[-1].index("{") :])


def table_rows(page: str) -> dict[str, tuple[str, list[str]]]:
    """{task: (status, cells)} of a tiles page."""
    rows = {}
    for match in re.finditer(
        r"<tr class='tile' data-task='([^']+)' data-status='([^']+)'>(.*?)</tr>", page
    ):
        rows[match[1]] = (match[2], re.findall(r"<td[^>]*>(.*?)</td>", match[3]))
    return rows


def test_tiles_table_has_each_tiles_status_time_and_memory(report):
    rows = table_rows(report["files"]["tables/2021--P1Y/tiles.html"][1].decode())
    assert {task: status for task, (status, _) in rows.items()} == {
        "2021--P1Y/275/97": "done",
        "2021--P1Y/276/97": "done",
        "2021--P1Y/275/98": "skipped",
        "2021--P1Y/276/98": "skipped",
    }
    for task in DONE:
        _period, x, y = task.split("/")
        event = last_event(
            report["results"] / "logs" / "tile" / "2021--P1Y" / f"x{x}_y{y}.log", "tile_done"
        )
        cells = rows[task][1]
        assert int(cells[4]) == event["observations"]
        assert float(cells[5]) == pytest.approx(event["seconds"]["total"], abs=0.05)
        assert float(cells[6]) == pytest.approx(event["peak_rss_mb"], abs=0.05)
        assert float(cells[5]) > 0 and float(cells[6]) > 50
    page = report["files"]["tables/2021--P1Y/tiles.html"][1].decode()
    assert "Mosaic job: wall time" in page, "from the mosaic's benchmark file"
    # the failed tile: its failed attempt's time and memory, and the reason
    rows_2020 = table_rows(report["files"]["tables/2020--P1Y/tiles.html"][1].decode())
    status, cells = rows_2020[FAILED]
    event = last_event(
        report["results"] / "logs" / "tile" / "2020--P1Y" / "x275_y98.log", "tile_failed"
    )
    assert status == "failed"
    assert float(cells[5]) == pytest.approx(event["seconds"]["total"], abs=0.05)
    assert report["bad_dataset"] in cells[7]


def test_failures_page_lists_the_failure_record(report):
    page = report["files"]["failures/failures.html"][1].decode()
    assert "1 task(s) failed" in page
    row = re.search(rf"<tr class='failure' data-task='{re.escape(FAILED)}'>(.*?)</tr>", page).group(
        1
    )
    task, reason, bad, log, _time = re.findall(r"<td[^>]*>(.*?)</td>", row)
    bad_id = report["bad_dataset"]
    assert task == FAILED
    assert bad_id in reason and "oa_fmask" in reason and "missing" in reason
    assert bad.startswith(f"{bad_id} (oa_fmask): missing")
    assert log.endswith("logs/tile/2020--P1Y/x275_y98.log")


def test_report_rule_runs_again_only_when_the_run_changed(report):
    assert "Nothing to be done" in report["again"], report["again"][-2000:]


def test_png_encoder_round_trips_through_gdal():
    rng = np.random.default_rng(1)
    for channels in (3, 4):
        image = rng.integers(0, 256, size=(7, 5, channels), dtype=np.uint8)
        assert np.array_equal(decode_png(png_bytes(image)), image)
