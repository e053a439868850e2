"""odc-stats' other commands on the ``eostats`` command line (registered on :data:`eostats.cli.main`).

``eostats save-tasks [OUTPUT]``
    find datasets in an Open Data Cube index and write the dataset cache, the task CSV and one GeoJSON per period
    (:func:`eostats.odc_index.build_datacube_cache`, the function the Snakemake cache rule calls). Names as
    odc-stats derives them: ``{input_products}_{period}.db`` (``{input_products}_all.db`` without a time range),
    ``.csv`` and ``-{period}.geojson`` beside it. The ``.db`` file is this project's SQLite cache.
``eostats generate-cache INPUT_GLOB LOCATION``
    a cache from a glob of STAC item JSON files (local or ``s3://``), written as ``LOCATION/{product}.db``, so one
    product's outputs feed the next without indexing. The grid defaults to the one the items were made on
    (their ``odc:region_code`` and pixel grid).
``eostats generate-mosaic INPUT_GLOB OUTPUT``
    one multi-band overview COG of the tiles whose STAC items match the glob (:func:`eostats.mosaic.build_mosaic`).
``eostats locate-grids GRID_SHAPE EXTENT_SHAPE [CSV_PATH]``
    the ``x,y`` of every grid feature (a tile GeoJSON or shapefile with ``region_code``) that intersects the extent.
``eostats import-cache FILE.db [OUTPUT]``
    an odc-stats (odc-dscache LMDB) cache → this project's SQLite cache (:mod:`eostats.dscache_import`).
``eostats stac-to-eo3 SOURCE OUT_DIR``
    eo3 product definitions and dataset documents of a STAC source, to index it with ``datacube``.
``eostats output-product --config CFG [OUTPUT]``
    the eo3 product definition of a run's outputs (``datacube product add`` it before indexing the outputs).
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from eostats.cli import fail, main, read_yaml_option

#: save-tasks settings read from --config (odc-stats' keys and this project's)
SAVE_TASKS_CONFIG_KEYS = (
    "grid",
    "frequency",
    "temporal_range",
    "years",
    "tiles",
    "input_products",
    "gqa",
    "dataset_filter",
    "ignore_time",
    "optional_products",
    "overwrite",
    "complevel",
    "solar_offset_rule",
    "exclude_datasets",
    "source",
)


def odc_stats_short(label: str) -> str:
    """odc-stats' ``DateTimeRange.short`` of a period label: the form its file names use.

    A year-long period starting on 1 January is ``2020--P1Y``; months starting on day 1 are ``2020-05--P1M``;
    anything else spells the start day: ``2020-07--P1Y`` → ``2020-07-01--P1Y`` (quirk Q2).
    """
    from eostats.periods import parse_period

    period = parse_period(label)
    match = re.search(r"--P(\d+)([YMD])$", label)
    if not match:
        raise ValueError(f"not a period label: {label!r}")
    n, unit = match.groups()
    start = period.start
    if unit == "Y" and (start.month, start.day) == (1, 1):
        head = f"{start:%Y}"
    elif unit == "M" and start.day == 1:
        head = f"{start:%Y-%m}"
    else:
        head = f"{start:%Y-%m-%d}"
    return f"{head}--P{n}{unit}"


def save_tasks_base(input_products: str, temporal_range: str | None) -> str:
    """odc-stats' default output name (without ``.db``): ``{products}_{range.short}`` or ``{products}_all``."""
    return f"{input_products}_{odc_stats_short(temporal_range) if temporal_range else 'all'}"


def _strip_db(path: str) -> str:
    return path[: -len(".db")] if path.endswith(".db") else path


def write_task_lists(cache_path: Path, base: str) -> list[Path]:
    """``{base}.csv`` and ``{base}-{period}.geojson`` of a cache; returns the paths written."""
    from eostats.cache import DatasetCache
    from eostats.tasklists import periods, write_period_geojson, write_task_csv

    with DatasetCache.open(cache_path) as cache:
        written = [write_task_csv(cache, Path(f"{base}.csv"))]
        for period in periods(cache):
            written.append(write_period_geojson(cache, period, Path(f"{base}-{period}.geojson")))
    return written


@main.command("save-tasks")
@click.argument("output", required=False, default="")
@click.option("--grid", help="Named grid (au_30, global_10, ...) or 'epsg:XXXX;res;shape'.")
@click.option("--year", type=int, help="Shortcut for --temporal-range YEAR--P1Y.")
@click.option("--temporal-range", help="Period such as 2020--P1Y, 2014-07--P1Y, 2020-05--P1M.")
@click.option(
    "--frequency", help="annual (default), annual-fy, semiannual, seasonal, quartely, monthly, ..."
)
@click.option("-E", "--env", help="datacube environment name.")
@click.option(
    "-z",
    "complevel",
    type=int,
    help="odc-stats' zstd level; accepted, unused (the cache compresses with zstd level 1 and a trained dictionary).",
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing cache.")
@click.option("--tiles", help="Tile index range 'x0:x1,y0:y1' (half-open).")
@click.option("--gqa", type=float, help="Keep datasets with gqa:iterative_mean_xy <= GQA.")
@click.option(
    "--dataset-filter",
    help='Extra datacube search terms as JSON, e.g. {"dataset_maturity": "final"}.',
)
@click.option("--ignore-time", multiple=True, help="Product without meaningful time (repeatable).")
@click.option(
    "--optional-products",
    multiple=True,
    help="Product that may be missing from a fused group (repeatable).",
)
@click.option(
    "--config", "config_value", help="YAML file or inline YAML (odc-stats' or this project's keys)."
)
@click.option("--input-products", help="Product expression: a, a+b (fuse), a-b-c (union).")
def save_tasks_command(
    output: str,
    grid: str | None,
    year: int | None,
    temporal_range: str | None,
    frequency: str | None,
    env: str | None,
    complevel: int | None,
    overwrite: bool | None,
    tiles: str | None,
    gqa: float | None,
    dataset_filter: str | None,
    ignore_time: tuple[str, ...],
    optional_products: tuple[str, ...],
    config_value: str | None,
    input_products: str | None,
) -> None:
    """Find datasets in the datacube index and write the dataset cache OUTPUT, its CSV and GeoJSON task lists."""
    from eostats.grids import parse_grid
    from eostats.odc_index import DatacubeSourceError, build_datacube_cache, merge_save_tasks_keys
    from eostats.periods import make_binning

    raw = read_yaml_option(config_value, "config") if config_value else {}
    cfg = {k: raw[k] for k in SAVE_TASKS_CONFIG_KEYS if k in raw}
    options = {
        "grid": grid,
        "frequency": frequency,
        "tiles": tiles,
        "input_products": input_products,
        "gqa": gqa,
        "dataset_filter": dataset_filter,
        "ignore_time": list(ignore_time) or None,
        "optional_products": list(optional_products) or None,
        "overwrite": overwrite,
    }
    cfg.update({k: v for k, v in options.items() if v is not None})
    if year is not None and temporal_range:
        fail("give --year or --temporal-range, not both")
    if year is not None:
        cfg["temporal_range"] = f"{year:04d}--P1Y"
        cfg.pop("years", None)
    elif temporal_range:
        cfg["temporal_range"] = temporal_range
        cfg.pop("years", None)
    if not cfg.get("grid"):
        fail("no grid: give --grid (or grid in --config)")
    source = dict(cfg.get("source") or {"type": "datacube"})
    if source.get("type", "datacube") != "datacube":
        fail(
            f"save-tasks reads a datacube index; the config's source type is {source.get('type')!r}"
        )
    source["type"] = "datacube"
    if env:
        source["env"] = env
    source = merge_save_tasks_keys(source, cfg)
    products = source.get("input_products")
    if not products:
        fail("no input products: give --input-products (or input_products in --config)")
    try:
        tile_grid = parse_grid(cfg["grid"])
        binning = make_binning(cfg.get("frequency"), cfg.get("temporal_range"), cfg.get("years"))
    except ValueError as err:
        fail(str(err))

    products_text = products if isinstance(products, str) else "-".join(products)
    try:
        base = (
            _strip_db(output)
            if output
            else save_tasks_base(products_text, cfg.get("temporal_range"))
        )
    except ValueError as err:
        fail(str(err))
    cache_path = Path(f"{base}.db")
    if cache_path.exists() and not cfg.get("overwrite"):
        fail(f"{cache_path} exists (use --overwrite to replace it)")
    settings = {
        "solar_offset_rule": cfg.get("solar_offset_rule") or "round",
        "tiles": cfg.get("tiles"),
        "exclude_datasets": list(cfg.get("exclude_datasets") or []),
    }
    click.echo(
        yaml.safe_dump(
            {"source": source, "grid": cfg["grid"], **binning.to_dict(), **settings}
        ).rstrip()
    )
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = build_datacube_cache(source, tile_grid, binning, cache_path, settings)
    except (DatacubeSourceError, ValueError) as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    if summary.n_datasets == 0:
        cache_path.unlink(missing_ok=True)
        click.echo("found no datasets")
        return
    written = write_task_lists(cache_path, base)
    click.echo(f"{cache_path}: {summary}")
    for path in written:
        click.echo(f"wrote {path}")


# --------------------------------------------------------------------------------------------
# globs of STAC items


def expand_glob(pattern: str) -> list[str]:
    """Files matching a glob: local (``**`` recurses) or ``s3://bucket/prefix/*/…`` (listed with boto3), sorted."""
    if not pattern.startswith("s3://"):
        return sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    import boto3

    bucket, _, key_glob = pattern[len("s3://") :].partition("/")
    prefix = re.split(r"[*?\[]", key_glob, maxsplit=1)[0]
    client = boto3.client("s3")
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if fnmatch.fnmatchcase(obj["Key"], key_glob):
                found.append(f"s3://{bucket}/{obj['Key']}")
    return sorted(found)


def _read_json(href: str) -> dict:
    if href.startswith("s3://"):
        import boto3

        bucket, _, key = href[len("s3://") :].partition("/")
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return json.loads(body)
    return json.loads(Path(href).read_text())


def read_stac_glob(pattern: str) -> Iterator[dict]:
    """STAC items of every file matching ``pattern``, hrefs made absolute against each file's location."""
    from eostats.sources import _checked, _dirname

    for href in expand_glob(pattern):
        location = href if href.startswith("s3://") else str(Path(href).absolute())
        yield _checked(
            _read_json(href), where=location, base=_dirname(location), self_href=location
        )


_REGION = re.compile(r"x([-+]?\d+)y([-+]?\d+)")


def grid_of_items(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The tile grid that stats outputs were made on, from an item's region code and pixel grid (a grid mapping).

    The item must carry ``odc:region_code`` (``x49y24``), ``proj:code``/``proj:epsg``, ``proj:transform`` and
    ``proj:shape`` (north-up): tile (x, y) spans ``shape × resolution`` CRS units, so the origin is the tile's
    lower-left corner minus x (y) tile sizes.
    """
    for item in items:
        props = item.get("properties") or {}
        match = _REGION.fullmatch(str(props.get("odc:region_code") or ""))
        code = props.get("proj:code") or (
            f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None
        )
        transform, shape = props.get("proj:transform"), props.get("proj:shape")
        if not (match and code and transform and shape):
            continue
        x, y = int(match.group(1)), int(match.group(2))
        res = float(transform[0])
        tile_w, tile_h = shape[1] * res, shape[0] * abs(float(transform[4]))
        left, top = float(transform[2]), float(transform[5])
        return {
            "crs": code,
            "resolution": res,
            "tile_size": [int(shape[0]), int(shape[1])],
            "origin": [left - x * tile_w, top - tile_h - y * tile_h],
        }
    raise ValueError(
        "no item carries odc:region_code with proj:code, proj:transform and proj:shape: give --grid"
    )


def pixel_grid_footprint(item: dict) -> dict:
    """``item`` with its geometry replaced by its pixel grid's extent shrunk by half a pixel (EPSG:4326).

    A tile output's own footprint, rounded to 1e-9 degree and reprojected, reaches a hair into the neighbouring
    tiles; half a pixel inwards it belongs to its own tile only. Items without ``proj:`` fields are unchanged.
    """
    from odc.geo.geom import box

    props = item.get("properties") or {}
    code = props.get("proj:code") or (
        f"EPSG:{props['proj:epsg']}" if props.get("proj:epsg") else None
    )
    transform, shape = props.get("proj:transform"), props.get("proj:shape")
    if not (code and transform and shape) or transform[1] or transform[3]:
        return item
    res_x, res_y = float(transform[0]), abs(float(transform[4]))
    left, top = float(transform[2]), float(transform[5])
    right, bottom = left + shape[1] * res_x, top - shape[0] * res_y
    inner = box(left + res_x / 2, bottom + res_y / 2, right - res_x / 2, top - res_y / 2, code)
    return {**item, "geometry": inner.to_crs("EPSG:4326").json}


@main.command("generate-cache")
@click.argument("input_glob")
@click.argument("location")
@click.option("--grid", help="Tile grid (default: the grid the items were made on).")
@click.option(
    "--frequency", help="Time binning (default annual; 'all' for one multi-year task per tile)."
)
@click.option("--year", type=int)
@click.option("--temporal-range")
@click.option("--tiles", help="Tile index range 'x0:x1,y0:y1' (half-open).")
@click.option("-v", "--verbose", count=True, help="Accepted for odc-stats compatibility.")
def generate_cache_command(
    input_glob: str,
    location: str,
    grid: str | None,
    frequency: str | None,
    year: int | None,
    temporal_range: str | None,
    tiles: str | None,
    verbose: int,
) -> None:
    """A dataset cache LOCATION/{product}.db from the STAC item JSONs matching INPUT_GLOB (no index needed)."""
    from eostats.cache import build_cache
    from eostats.grids import parse_grid
    from eostats.periods import make_binning

    if year is not None and temporal_range:
        fail("give --year or --temporal-range, not both")
    items = [pixel_grid_footprint(item) for item in read_stac_glob(input_glob)]
    if not items:
        fail(f"no STAC item matches {input_glob}")
    products = sorted(
        {
            str(it.get("collection") or (it.get("properties") or {}).get("odc:product") or "")
            for it in items
        }
    )
    product = "-".join(p for p in products if p) or "stac_items"
    try:
        tile_grid = parse_grid(grid) if grid else parse_grid(grid_of_items(items))
        binning = make_binning(
            frequency, f"{year:04d}--P1Y" if year is not None else temporal_range
        )
    except ValueError as err:
        fail(str(err))
    out = Path(location) / f"{product}.db"
    out.parent.mkdir(parents=True, exist_ok=True)
    source = {"type": "stac_glob", "glob": input_glob}
    summary = build_cache(iter(items), tile_grid, binning, out, source, {"tiles": tiles})
    write_task_lists(out, _strip_db(str(out)))
    click.echo(f"{out}: {summary}")


@main.command("generate-mosaic")
@click.argument("input_glob")
@click.argument("output")
@click.option("--bands", help="Comma-separated bands (default: every asset of the first item).")
@click.option(
    "--resampling", default="average", show_default=True, help="Resampling of reads and overviews."
)
@click.option(
    "--resolution",
    type=float,
    default=120,
    show_default=True,
    help="Mosaic pixel size (CRS units).",
)
@click.option(
    "--per-band", is_flag=True, help="One COG per band in OUTPUT (a directory) instead of one file."
)
@click.option("-v", "--verbose", count=True, help="Accepted for odc-stats compatibility.")
def generate_mosaic_command(
    input_glob: str,
    output: str,
    bands: str | None,
    resampling: str,
    resolution: float,
    per_band: bool,
    verbose: int,
) -> None:
    """A low-resolution overview COG OUTPUT of the tiles whose STAC items match INPUT_GLOB."""
    from eostats.mosaic import build_mosaic

    paths = expand_glob(input_glob)
    if not paths:
        fail(f"no STAC item matches {input_glob}")
    if any(p.startswith("s3://") for p in paths):
        fail(
            "generate-mosaic reads local STAC items; copy them locally or use the workflow's mosaic rule"
        )
    if bands:
        band_list = [b.strip() for b in bands.split(",") if b.strip()]
    else:
        band_list = [
            k
            for k, a in json.loads(Path(paths[0]).read_text())["assets"].items()
            if "data" in a.get("roles", ["data"])
        ]
    try:
        written = build_mosaic(
            paths,
            band_list,
            output,
            resolution=resolution,
            per_band=per_band,
            resampling=resampling,
        )
    except ValueError as err:
        fail(str(err))
    for path in written:
        click.echo(f"wrote {path}")


@main.command("locate-grids")
@click.argument("grid_shape")
@click.argument("extent_shape")
@click.argument("csv_path", required=False)
@click.option(
    "--attr-filter", help="Attribute filter on the extent features, e.g. \"FEAT_CODE != 'sea'\"."
)
def locate_grids_command(
    grid_shape: str, extent_shape: str, csv_path: str | None, attr_filter: str | None
) -> None:
    """Write x,y of every GRID_SHAPE feature (with a region_code such as x49y24) that intersects EXTENT_SHAPE."""
    import geopandas as gpd

    try:
        grid = gpd.read_file(grid_shape)
        extent = gpd.read_file(extent_shape)
    except Exception as err:
        fail(f"cannot read {grid_shape} or {extent_shape}: {err}")
    if attr_filter:
        try:
            extent = extent.query(attr_filter)
        except Exception as err:
            fail(f"--attr-filter {attr_filter!r}: {err}")
    if "region_code" not in grid.columns:
        fail(f"{grid_shape} has no region_code attribute")
    if extent.crs is not None and grid.crs is not None and extent.crs != grid.crs:
        extent = extent.to_crs(grid.crs)
    area = extent.geometry.union_all() if len(extent) else None
    rows = []
    if area is not None:
        for code, geom in zip(grid["region_code"], grid.geometry, strict=True):
            if geom is not None and geom.intersects(area):
                numbers = re.findall(r"[-+]?\d+", str(code))
                if len(numbers) >= 2:
                    rows.append((int(numbers[0]), int(numbers[1])))
    out = Path(csv_path) if csv_path else Path(tempfile.gettempdir()) / "extent_grids.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(sorted(set(rows)))
    click.echo(f"{len(set(rows))} tile(s) written to {out}")


@main.command("import-cache")
@click.argument("filedb")
@click.argument("output", required=False)
@click.option("--grid", help="Grid name in the cache when it holds several.")
@click.option(
    "--frequency", help="Time binning when the cache does not record it (default: from task names)."
)
@click.option("--temporal-range")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail when the recomputed tasks differ from the cache's task groups.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
def import_cache_command(
    filedb: str,
    output: str | None,
    grid: str | None,
    frequency: str | None,
    temporal_range: str | None,
    strict: bool,
    overwrite: bool,
) -> None:
    """Turn the odc-stats dataset cache FILEDB (LMDB) into this project's SQLite cache OUTPUT (default FILEDB.sqlite)."""
    from eostats.dscache_import import DscacheImportError, import_dscache

    out = Path(output) if output else Path(_strip_db(filedb) + ".sqlite")
    if out.exists() and not overwrite:
        fail(f"{out} exists (use --overwrite to replace it)")
    try:
        report = import_dscache(
            filedb,
            out,
            grid_name=grid,
            frequency=frequency,
            temporal_range=temporal_range,
            strict=strict,
        )
    except (DscacheImportError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    write_task_lists(out, str(out.with_suffix("")))
    click.echo(str(report))


@main.command("stac-to-eo3")
@click.argument("source")
@click.argument("out_dir")
def stac_to_eo3_command(source: str, out_dir: str) -> None:
    """eo3 product definitions and dataset documents of the STAC items of SOURCE (catalog.json, items .json or
    .ndjson file, or a glob of item files), written to OUT_DIR for `datacube product add` / `datacube dataset add`."""
    from eostats.eo3 import write_eo3_from_stac
    from eostats.sources import read_items

    if any(c in source for c in "*?["):
        items: Any = read_stac_glob(source)
    elif source.endswith(".ndjson") or source.endswith(".ndjson.gz"):
        items = read_items({"type": "ndjson", "path": source})
    else:
        try:
            kind = json.loads(Path(source).read_text()).get("type")
        except (OSError, ValueError) as err:
            fail(f"cannot read {source}: {err}")
        items = read_items(
            {
                "type": "item_collection" if kind == "FeatureCollection" else "stac_catalog",
                "path": source,
            }
        )
    products, datasets = write_eo3_from_stac(items, out_dir)
    for path in products:
        click.echo(f"product: {path}")
    click.echo(f"{len(datasets)} dataset document(s) in {out_dir}")


@main.command("output-product")
@click.argument("output", required=False)
@click.option(
    "--config", "config_value", required=True, help="The run config (YAML file or inline YAML)."
)
def output_product_command(output: str | None, config_value: str) -> None:
    """The eo3 product definition of the outputs of the run CONFIG, to OUTPUT (default: standard output).

    `datacube product add` it, then `datacube dataset add` the tiles' .odc-metadata.yaml files (written with
    apply_eodatasets3: true or `eostats run --apply_eodatasets3`).
    """
    from eostats.cli import RunOptions, check_run
    from eostats.eo3 import dump_yaml, output_product_definition
    from eostats.workflow import Run

    run = Run(RunOptions.from_cli(config_value).validated())
    check_run(run)
    text = dump_yaml(output_product_definition(run.product, run.plugin.measurements))
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)
