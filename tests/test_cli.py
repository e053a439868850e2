"""`eostats run --dryrun`, every task-selector form, `publish-tasks --dryrun` and the one-line user errors.

The expected plan is worked out here from the sample's STAC items with pyproj and shapely (tile membership by
interior intersection, annual bins in local solar time, UTC days counted as odc-stats' dry-run does), not with the
cache code under test. Nothing here computes a tile: every command runs in-process with click's runner.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import shapely
import yaml
from click.testing import CliRunner
from pyproj import Transformer

from eostats.cache import build_cache
from eostats.cli import main
from eostats.grids import parse_grid
from eostats.periods import make_binning
from eostats.sources import read_items

GRID = {"crs": "EPSG:3577", "resolution": 30, "tile_size": 512, "origin": [-2688000, -5472000]}
TILE_M = 512 * 30.0
ORIGIN = (-2688000.0, -5472000.0)
PQ_PRODUCT, PQ_VERSION = "pq_ls_annual", "0-1-0"  # the pq plugin's defaults


# --------------------------------------------------------------------------------------------
# independent reference: tasks, their datasets and UTC days, from the items themselves


def reference_plan(catalog: Path) -> dict[tuple[str, int, int], tuple[int, int]]:
    """{(period, x, y): (distinct UTC dates, datasets)} for annual bins of the test grid."""
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3577", always_xy=True)
    to_lonlat = Transformer.from_crs("EPSG:3577", "EPSG:4326", always_xy=True)
    members: dict[tuple[str, int, int], list[datetime]] = defaultdict(list)
    for line in (catalog.parent / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        assert item["geometry"]["type"] == "Polygon"
        lon, lat = zip(*item["geometry"]["coordinates"][0], strict=True)
        xs, ys = to_albers.transform(lon, lat)
        footprint = shapely.Polygon(zip(xs, ys, strict=True))
        t_utc = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
        minx, miny, maxx, maxy = footprint.bounds
        for ix in range(
            math.floor((minx - ORIGIN[0]) / TILE_M), math.floor((maxx - ORIGIN[0]) / TILE_M) + 1
        ):
            for iy in range(
                math.floor((miny - ORIGIN[1]) / TILE_M), math.floor((maxy - ORIGIN[1]) / TILE_M) + 1
            ):
                x0, y0 = ORIGIN[0] + ix * TILE_M, ORIGIN[1] + iy * TILE_M
                tile = shapely.box(x0, y0, x0 + TILE_M, y0 + TILE_M)
                if not (footprint.intersects(tile) and not footprint.touches(tile)):
                    continue
                centre_lon, _ = to_lonlat.transform(x0 + TILE_M / 2, y0 + TILE_M / 2)
                local = t_utc + timedelta(hours=math.floor(centre_lon / 15 + 0.5))
                members[(f"{local.year}--P1Y", ix, iy)].append(t_utc)
    return {key: (len({t.date() for t in times}), len(times)) for key, times in members.items()}


def stac_path(results: Path, period: str, x: int, y: int) -> str:
    return (
        f"{results}/{PQ_PRODUCT}/{PQ_VERSION}/x{x:02d}/y{y:02d}/{period}/"
        f"{PQ_PRODUCT}_x{x:02d}y{y:02d}_{period}_final.stac-item.json"
    )


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cache_file(sample_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tasks.sqlite"
    source = {"type": "stac_catalog", "path": str(sample_catalog)}
    build_cache(read_items(source), parse_grid(GRID), make_binning("annual"), path, source, {})
    return path


@pytest.fixture(scope="module")
def plan(sample_catalog: Path) -> dict[tuple[str, int, int], tuple[int, int]]:
    expected = reference_plan(sample_catalog)
    assert len(expected) == 8  # the tiny sample: 4 tiles x 2 years
    return expected


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    config = {"results": str(tmp_path / "results"), "grid": GRID, "plugin": "pq", "chunk_size": 256}
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def dry_run(cache: Path, config: Path, *extra: str) -> list[str]:
    result = invoke("run", cache, "--config", config, "--dryrun", *extra)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


# --------------------------------------------------------------------------------------------
# dry run


def test_dry_run_prints_odc_stats_plan_line_per_task(cache_file, config_file, plan):
    results = config_file.parent / "results"
    lines = dry_run(cache_file, config_file)
    expected = [
        f"{x}/{y}/{period} days={days:03d} ds={nds:04d} {stac_path(results, period, x, y)} (new)"
        for (period, x, y), (days, nds) in sorted(plan.items())
    ]
    assert lines == expected
    # the sample puts a scene at 23:5x UTC on 31 Dec 2020, local 1 Jan 2021: 2021 has two scenes that day
    assert {line.split(" ")[1] for line in lines if "2021--P1Y" in line} == {"days=005"}
    assert {line.split(" ")[2] for line in lines if "2021--P1Y" in line} == {"ds=0007"}
    assert not (results).exists()  # nothing computed, nothing written


def test_dry_run_flags_skip_and_recompute_for_existing_outputs(cache_file, config_file, plan):
    results = config_file.parent / "results"
    done = stac_path(results, "2021--P1Y", 276, 97)
    Path(done).parent.mkdir(parents=True)
    Path(done).write_text("{}")
    flags = {
        line.split(" ")[0]: line.rsplit(" ", 1)[1] for line in dry_run(cache_file, config_file)
    }
    assert flags.pop("276/97/2021--P1Y") == "(skip)"
    assert set(flags.values()) == {"(new)"}
    flags = {
        line.split(" ")[0]: line.rsplit(" ", 1)[1]
        for line in dry_run(cache_file, config_file, "--overwrite")
    }
    assert flags.pop("276/97/2021--P1Y") == "(recompute)"
    assert set(flags.values()) == {"(new)"}


SORTED = [
    ("2020--P1Y", 275, 97),
    ("2020--P1Y", 275, 98),
    ("2020--P1Y", 276, 97),
    ("2020--P1Y", 276, 98),
] + [
    ("2021--P1Y", 275, 97),
    ("2021--P1Y", 275, 98),
    ("2021--P1Y", 276, 97),
    ("2021--P1Y", 276, 98),
]


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["2021--P1Y/276/97"], [SORTED[6]]),
        (["2021--P1Y,+276,+097"], [SORTED[6]]),
        (["x+276/y+097/2021--P1Y"], [SORTED[6]]),
        (["2021--P1Y_x276_y97"], [SORTED[6]]),
        (["3"], [SORTED[3]]),
        (["+3"], [SORTED[3]]),
        (["::3"], SORTED[::3]),
        (["1:3"], SORTED[1:3]),
        (["-2:"], SORTED[-2:]),
        (["::-1"], SORTED[::-1]),
        (["7", "2020--P1Y/275/97", "7", "1:3"], [SORTED[7], SORTED[0], SORTED[1], SORTED[2]]),
    ],
)
def test_every_task_selector_form(cache_file, config_file, selectors, expected):
    lines = dry_run(cache_file, config_file, *selectors)
    chosen = []
    for line in lines:
        x, y, period = line.split(" ")[0].split("/")
        chosen.append((period, int(x), int(y)))
    assert chosen == expected


def test_config_tasks_key_selects_when_no_task_arguments(cache_file, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"results": str(tmp_path), "grid": GRID, "plugin": "pq", "tasks": ["-1:", 0]}
        )
    )
    lines = dry_run(cache_file, config)
    assert [line.split(" ")[0] for line in lines] == ["276/98/2021--P1Y", "275/97/2020--P1Y"]


def test_options_override_config_keys(cache_file, config_file, tmp_path):
    # --location (file:// and templates), --plugin, inline --config, odc-stats runner keys in the config
    lines = dry_run(
        cache_file,
        config_file,
        "0",
        "--location",
        f"file://{tmp_path}/out/{{product}}/v{{version}}",
    )
    assert lines[0].endswith(
        f" {tmp_path}/out/{PQ_PRODUCT}/v{PQ_VERSION}/x275/y97/2020--P1Y/"
        f"{PQ_PRODUCT}_x275y97_2020--P1Y_final.stac-item.json (new)"
    )
    inline = json.dumps(
        {
            "results": str(tmp_path),
            "grid": GRID,
            "plugin": "pq",
            "job_queue_max_lease": 60,
            "threads": 1,
            "product": {"name": "my_pq", "version": "2.0.1"},
        }
    )
    result = invoke("run", cache_file, "0", "--config", inline, "--dryrun")
    assert result.exit_code == 0, result.output
    assert (
        f"{tmp_path}/my_pq/2-0-1/x275/y97/2020--P1Y/my_pq_x275y97_2020--P1Y_final.stac-item.json"
        in result.stdout
    )
    result = invoke(
        "run", cache_file, "0", "--config", config_file, "--plugin", "gm-ls", "--dryrun"
    )
    assert "/gm_ls_annual/" in result.stdout


# --------------------------------------------------------------------------------------------
# user errors: one line, exit code 1, no traceback


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2030--P1Y/1/1"], "task 2030--P1Y/01/01 is not in the cache"),
        (["-1"], "task index '-1' is negative; use the slice '-1:'"),
        (["99"], "task index 99 is out of range: there are 8 tasks"),
        (["foo/1/2"], "'foo' is not a period label"),
        (["--from-sqs", "q"], "--dryrun cannot be combined with --from-sqs"),
        (["--plugin", "nope.Plugin"], "cannot import plugin 'nope.Plugin'"),
        (["--resolution", "7"], "resolution 7 does not divide the tile size"),
        (["--dryrn"], "bad task selector '--dryrn'"),
    ],
)
def test_bad_input_is_one_line_naming_it(cache_file, config_file, args, message):
    result = invoke("run", cache_file, "--config", config_file, "--dryrun", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_and_cache_errors_name_the_culprit(cache_file, tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("plugin: pq\nfrobnicate: 3\n")
    result = invoke("run", cache_file, "--config", bad_key, "--dryrun")
    assert result.exit_code == 1 and "'frobnicate'" in result.stderr
    result = invoke("run", tmp_path / "missing.sqlite", "--dryrun")
    assert (
        result.exit_code == 1
        and f"dataset cache {tmp_path}/missing.sqlite does not exist" in result.stderr
    )
    result = invoke("run", cache_file, "--config", tmp_path / "nowhere.yaml", "--dryrun")
    assert (
        result.exit_code == 1 and f"config {tmp_path}/nowhere.yaml does not exist" in result.stderr
    )
    other_grid = tmp_path / "au30.yaml"
    other_grid.write_text("grid: au_30\nplugin: pq\n")
    result = invoke("run", cache_file, "--config", other_grid, "--dryrun")
    assert result.exit_code == 1 and "grid 'au_30' has other tiles than the grid" in result.stderr
    for result in (invoke("run", "--from-sqs", "q", cache_file), invoke("run")):
        assert result.exit_code == 1 and "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# publish-tasks --dryrun, GeoJSON filter


def test_publish_tasks_dryrun_prints_ids_and_needs_no_queue(cache_file):
    result = invoke("publish-tasks", cache_file, "no-such-queue", "--dryrun")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{p}/{x:+04d}/{y:+04d}" for p, x, y in SORTED]
    result = invoke(
        "publish-tasks", cache_file, "no-such-queue", "2021--P1Y/275/98", "-1:", "--dryrun"
    )
    assert result.stdout.splitlines() == ["2021--P1Y/+275/+098", "2021--P1Y/+276/+098"]


def test_publish_tasks_geojson_filter_keeps_tiles_meeting_the_first_feature(cache_file, tmp_path):
    # a small square inside tile (276, 98), in the grid's own CRS, and a second feature that must be ignored
    x0, y0 = ORIGIN[0] + 276 * TILE_M + 1000, ORIGIN[1] + 98 * TILE_M + 1000
    square = [[x0, y0], [x0 + 500, y0], [x0 + 500, y0 + 500], [x0, y0 + 500], [x0, y0]]
    far = [[0, 0], [1, 0], [1, 1], [0, 0]]
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:3577"}},
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [square]},
            },
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [far]},
            },
        ],
    }
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(doc))
    result = invoke("publish-tasks", cache_file, "q", "--dryrun", "--geojson-filter", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["2020--P1Y/+276/+098", "2021--P1Y/+276/+098"]


def test_where_results_prints_the_run_paths(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"results": str(tmp_path / "r"), "run_name": "demo", "plugin": "pq"})
    )
    result = invoke("where-results", "--configfile", config)
    assert result.exit_code == 0, result.output
    assert f"{tmp_path}/r/tasks/demo.sqlite" in result.stdout
    assert f"{tmp_path}/r/{PQ_PRODUCT}/{PQ_VERSION}/x{{x}}/y{{y}}/{{period}}/" in result.stdout


def test_k8s_queue_worker_example_parses_and_its_liveness_probe_reads_the_heartbeat(tmp_path):
    manifest = Path(__file__).resolve().parents[1] / "examples" / "k8s" / "queue-workers-job.yaml"
    job = yaml.safe_load(manifest.read_text())
    assert job["kind"] == "Job" and job["spec"]["parallelism"] >= 2
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["eostats"]
    ctx = main.commands["run"].make_context(
        "run", list(container["args"][1:])
    )  # every option exists
    heartbeat = ctx.params["heartbeat_filepath"]
    assert ctx.params["from_sqs"] and ctx.params["max_processing_time"] > 0
    assert not any("SECRET" in e["name"] or "ACCESS_KEY" in e["name"] for e in container["env"])

    probe = list(container["livenessProbe"]["exec"]["command"])
    probe[0] = sys.executable
    probe[-1] = probe[-1].replace(heartbeat, str(tmp_path / "heartbeat"))
    (tmp_path / "heartbeat").write_text("2026-01-01T00:00:00+00:00\n")
    assert subprocess.run(probe).returncode == 0  # fresh
    old = (tmp_path / "heartbeat").stat().st_mtime - 600
    os.utime(tmp_path / "heartbeat", (old, old))
    assert subprocess.run(probe).returncode == 1  # ten minutes without a poll: the pod is restarted
