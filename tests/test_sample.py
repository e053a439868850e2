"""Tests of the synthetic sample collection (eostats.sample).

Reference values are computed here from the files themselves (plain json, rasterio, pyproj,
shapely), never through eostats.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

import eostats.sample as sample_mod
from eostats.sample import SampleSpec, generate_sample_collection, plan_scenes

REFLECTANCE = [
    "nbart_blue",
    "nbart_green",
    "nbart_red",
    "nbart_nir",
    "nbart_swir_1",
    "nbart_swir_2",
]
ALL_BANDS = [*REFLECTANCE, "oa_fmask", "oa_nbart_contiguity"]
# Default tile grid: EPSG:3577, 30 m, 512 px tiles.
TILE_M = 512 * 30.0
ORIGIN_X, ORIGIN_Y = -2688000.0, -5472000.0


def load_items(catalog: Path) -> list[dict]:
    """Item JSONs of the catalog, read straight from disk (layout collection/item/item.json)."""
    docs = []
    for path in sorted(catalog.parent.glob("*/*/*.json")):
        doc = json.loads(path.read_text())
        doc["_dir"] = path.parent
        docs.append(doc)
    return docs


def parse_time(doc: dict) -> datetime:
    return datetime.strptime(doc["properties"]["datetime"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )


def read_band(doc: dict, band: str, window: Window | None = None) -> np.ndarray:
    with rasterio.open(doc["_dir"] / doc["assets"][band]["href"]) as src:
        return src.read(1, window=window)


def pixel_centres(doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre coordinates (x, y) in the item's CRS, from proj:transform."""
    h, w = doc["properties"]["proj:shape"]
    t = Affine(*doc["properties"]["proj:transform"][:6])
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    return t.c + cols * t.a, t.f + rows * t.e


def footprint_in(doc: dict, crs: str) -> shapely.Polygon:
    """Item geometry (EPSG:4326) transformed to ``crs``, densified first."""
    geom = shapely.segmentize(shapely.geometry.shape(doc["geometry"]), 0.001)
    to = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(to.transform(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def items(sample_catalog: Path) -> list[dict]:
    docs = load_items(sample_catalog)
    assert len(docs) == 10
    return docs


def test_layout_ids_and_properties(sample_catalog: Path, items: list[dict]) -> None:
    root = sample_catalog.parent
    assert (root / "items.ndjson").is_file() and (root / "items.json").is_file()
    for doc in items:
        props = doc["properties"]
        m = re.fullmatch(r"sample_ls_(\d{3})(\d{3})_(\d{8})", doc["id"])
        assert m, doc["id"]
        assert int(m[1]) == props["landsat:wrs_path"] and int(m[2]) == props["landsat:wrs_row"]
        assert props["odc:region_code"] == m[1] + m[2]
        assert m[3] == parse_time(doc).strftime("%Y%m%d")
        assert props["platform"] == "landsat-8" and props["instrument"] == "OLI_TIRS"
        assert props["proj:code"] in {"EPSG:32755", "EPSG:32756"}
        assert doc["collection"] == "sample_ls_ard_3"
        assert set(doc["assets"]) == set(ALL_BANDS)
        for asset in doc["assets"].values():
            assert asset["href"].startswith("./")  # relative, self-contained
    # path 90 is the western path, in zone 55; path 89 was put in zone 56
    zones = {d["properties"]["landsat:wrs_path"]: d["properties"]["proj:code"] for d in items}
    assert zones == {90: "EPSG:32755", 89: "EPSG:32756"}


def test_acquisition_times(items: list[dict]) -> None:
    times = [parse_time(d) for d in items]
    assert all(t.hour == 23 and t.minute >= 50 for t in times)
    assert {t.year for t in times} == {2020, 2021}
    new_year = [t for t in times if t.date().isoformat() == "2020-12-31"]
    assert len(new_year) == 1
    # local (AEST, UTC+10) date is already 2021
    assert (new_year[0] + timedelta(hours=10)).date().isoformat() == "2021-01-01"

    # two rows of one path on one day, ~24 s apart, overlapping
    by_pass: dict[tuple, list[dict]] = {}
    for d in items:
        key = (d["properties"]["landsat:wrs_path"], parse_time(d).date())
        by_pass.setdefault(key, []).append(d)
    pairs = [v for v in by_pass.values() if len(v) == 2]
    assert len(pairs) == 2
    for north, south in (
        sorted(p, key=lambda d: d["properties"]["landsat:wrs_row"]) for p in pairs
    ):
        assert (north["properties"]["landsat:wrs_row"], south["properties"]["landsat:wrs_row"]) == (
            84,
            85,
        )
        dt = (parse_time(south) - parse_time(north)).total_seconds()
        assert 15 <= dt <= 40
        a = shapely.geometry.shape(north["geometry"])
        b = shapely.geometry.shape(south["geometry"])
        assert a.intersection(b).area > 0.05 * min(a.area, b.area)
        assert a.centroid.y > b.centroid.y  # row 84 is north of row 85


def test_cogs_match_item_metadata(items: list[dict]) -> None:
    for doc in items[:4]:
        props = doc["properties"]
        for band in ALL_BANDS:
            info = doc["assets"][band]["raster:bands"][0]
            with rasterio.open(doc["_dir"] / doc["assets"][band]["href"]) as src:
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
                assert src.compression.name == "deflate"
                assert src.block_shapes == [(512, 512)]
                assert src.dtypes[0] == info["data_type"]
                assert src.nodata == info["nodata"]
                assert src.descriptions == (band,)
                assert src.crs.to_epsg() == int(props["proj:code"].split(":")[1])
                assert list(src.transform)[:6] == props["proj:transform"][:6]
                assert [src.height, src.width] == props["proj:shape"]
                assert src.res == (30.0, 30.0)
        assert doc["assets"]["nbart_red"]["raster:bands"][0]["nodata"] == -999
        assert doc["assets"]["oa_fmask"]["raster:bands"][0]["nodata"] == 0


def test_fmask_codes_contiguity_and_cloud_cover(items: list[dict]) -> None:
    seen: set[int] = set()
    for doc in items:
        fmask = read_band(doc, "oa_fmask")
        contiguity = read_band(doc, "oa_nbart_contiguity")
        bands = np.stack([read_band(doc, b) for b in REFLECTANCE])
        codes = set(np.unique(fmask).tolist())
        assert codes <= {0, 1, 2, 3, 4, 5}
        seen |= codes
        assert set(np.unique(contiguity).tolist()) <= {0, 1}
        np.testing.assert_array_equal(contiguity == 1, (bands != -999).all(axis=0))
        assert not (contiguity == 1)[fmask == 0].any()
        assert (fmask[0] == 0).all() and (fmask[-1] == 0).all()  # nodata collar
        valid = fmask != 0
        # band edges differ by a few pixels along-track: some valid fmask pixels lack a band
        assert 0 < np.count_nonzero(valid & (contiguity == 0)) < 0.05 * valid.sum()
        cloud_pct = 100 * np.count_nonzero(fmask == 2) / np.count_nonzero(valid)
        assert doc["properties"]["eo:cloud_cover"] == pytest.approx(cloud_pct, abs=0.01)
    assert {0, 1, 2, 3, 5} <= seen
    covers = sorted(d["properties"]["eo:cloud_cover"] for d in items)
    assert covers[0] < 1 and covers[-1] > 85  # some clear, some almost fully cloudy


def test_clouds_are_bright_blobs_with_shadows(items: list[dict]) -> None:
    dx, dy = SampleSpec.tiny().shadow_offset_m  # shadow minus cloud, metres east/north
    col_shift, row_shift = round(dx / 30), round(-dy / 30)
    partly = [d for d in items if 5 < d["properties"]["eo:cloud_cover"] < 80]
    assert partly
    for doc in partly:
        fmask = read_band(doc, "oa_fmask")
        blue = read_band(doc, "nbart_blue")
        nir = read_band(doc, "nbart_nir")
        cloud, shadow, clear = fmask == 2, fmask == 3, fmask == 1
        assert shadow.sum() > 50
        # every shadow pixel sees its cloud up-sun, unless that spot is outside the scene
        rows, cols = np.nonzero(shadow)
        src_r, src_c = rows - row_shift, cols - col_shift
        inside = (src_r >= 0) & (src_r < fmask.shape[0]) & (src_c >= 0) & (src_c < fmask.shape[1])
        assert np.isin(fmask[src_r[inside], src_c[inside]], [0, 2]).all()
        # coherent blobs: most cloud pixels have four cloudy neighbours
        core = cloud[1:-1, 1:-1] & cloud[:-2, 1:-1] & cloud[2:, 1:-1] & cloud[1:-1, :-2]
        core &= cloud[1:-1, 2:]
        assert core.sum() > 0.7 * cloud.sum()
        assert blue[cloud].mean() > 3000 > 1500 > blue[clear].mean()
        assert nir[shadow].mean() < 0.6 * nir[clear].mean()


def test_water_is_dark_and_stays_in_place(items: list[dict]) -> None:
    clear = [
        d
        for d in items
        if d["properties"]["eo:cloud_cover"] < 1 and d["properties"]["landsat:wrs_path"] == 90
    ]
    assert len(clear) >= 2
    water_sets = []
    for doc in clear[:2]:
        fmask = read_band(doc, "oa_fmask")
        red, nir = read_band(doc, "nbart_red"), read_band(doc, "nbart_nir")
        water, land = fmask == 5, fmask == 1
        assert water.sum() > 20
        assert nir[water].mean() < 500 and nir[land].mean() > 1500
        ndvi = (nir.astype(float) - red) / (nir.astype(float) + red)
        assert ndvi[water].mean() < 0 < 0.2 < ndvi[land].mean()
        x, y = pixel_centres(doc)
        water_sets.append(
            {"water": set(zip(x[water].round(), y[water].round(), strict=True)),
             "valid": set(zip(x[fmask > 0].round(), y[fmask > 0].round(), strict=True))}
        )  # fmt: skip
    # same CRS, grids aligned: the same ground pixels are water on both dates
    both = water_sets[0]["valid"] & water_sets[1]["valid"]
    w0, w1 = water_sets[0]["water"] & both, water_sets[1]["water"] & both
    assert len(w0 & w1) > 0.95 * max(len(w0), len(w1))


def test_footprints_are_tilted_and_match_pixels(items: list[dict]) -> None:
    for doc in items:
        geom = shapely.geometry.shape(doc["geometry"])
        assert geom.area < 0.8 * shapely.envelope(geom).area  # not a lon/lat-aligned box
        crs = doc["properties"]["proj:code"]
        local = footprint_in(doc, crs)
        rect = shapely.minimum_rotated_rectangle(local)
        (x0, y0), (x1, y1) = list(rect.exterior.coords)[:2]
        angle = math.degrees(math.atan2(x1 - x0, y1 - y0)) % 90
        assert min(abs(angle - 13), abs(angle - 77)) < 1.0  # 13 degrees off grid north
        assert local.area == pytest.approx(rect.area, rel=1e-3)  # a rectangle
        fmask = read_band(doc, "oa_fmask")
        x, y = pixel_centres(doc)
        inside = shapely.contains_xy(local.buffer(1.0), x, y)
        deep_inside = shapely.contains_xy(local.buffer(-30.0), x, y)
        assert not (fmask[~inside] > 0).any()
        assert (fmask[deep_inside] > 0).all()


def test_footprints_cross_default_tile_edges(items: list[dict]) -> None:
    crossed_x, crossed_y = set(), set()
    for doc in items:
        xmin, ymin, xmax, ymax = footprint_in(doc, "EPSG:3577").bounds
        edges_x = {k for k in range(-400, 400) if xmin < ORIGIN_X + k * TILE_M < xmax}
        edges_y = {k for k in range(-400, 400) if ymin < ORIGIN_Y + k * TILE_M < ymax}
        assert edges_x or edges_y, doc["id"]
        crossed_x |= edges_x
        crossed_y |= edges_y
    assert crossed_x == {276} and crossed_y == {98}


def test_default_spec_plan_covers_a_block_of_tiles() -> None:
    plans = plan_scenes(SampleSpec())
    assert len(plans) >= 2 * 2 * 8
    assert {p.acquired.year for p in plans} == {2020, 2021}
    to_3577 = {
        e: Transformer.from_crs(f"EPSG:{e}", "EPSG:3577", always_xy=True)
        for e in {p.epsg for p in plans}
    }
    tiles = set()
    for p in plans:
        # raster corners -> EPSG:3577 -> tile indices (floor)
        h, w = p.shape
        xs = [p.x0, p.x0 + 30 * w]
        ys = [p.y0 - 30 * h, p.y0]
        for x in xs:
            for y in ys:
                X, Y = to_3577[p.epsg].transform(x, y)
                tiles.add(
                    (math.floor((X - ORIGIN_X) / TILE_M), math.floor((Y - ORIGIN_Y) / TILE_M))
                )
    xs_t = {t[0] for t in tiles}
    ys_t = {t[1] for t in tiles}
    assert 2 <= len(xs_t) <= 4 and 2 <= len(ys_t) <= 4
    assert {274, 275, 276} <= xs_t and {97, 98, 99} <= ys_t
    assert len([p for p in plans if p.acquired.strftime("%Y-%m-%d") == "2020-12-31"]) == 1


def test_phenology_peaks_in_spring(tmp_path: Path) -> None:
    spec = SampleSpec.tiny(paths=(90,), years=(2020,), dates_per_year=8, cloud_fraction=0.1)
    docs = load_items(generate_sample_collection(tmp_path / "s", spec))

    def least_cloudy(months: set[int]) -> dict:
        return min(
            (d for d in docs if parse_time(d).month in months),
            key=lambda d: d["properties"]["eo:cloud_cover"],
        )

    # NDVI of ground pixels clear on both dates: spring (Sep-Nov) above autumn (Mar-May)
    ndvi = []
    for doc in (least_cloudy({9, 10, 11}), least_cloudy({3, 4, 5})):
        assert doc["properties"]["eo:cloud_cover"] < 30
        fmask = read_band(doc, "oa_fmask")
        red, nir = (read_band(doc, b).astype(float) for b in ("nbart_red", "nbart_nir"))
        x, y = pixel_centres(doc)
        ok = fmask == 1
        keys = zip(x[ok].round(), y[ok].round(), strict=True)
        ndvi.append(dict(zip(keys, ((nir - red) / (nir + red))[ok], strict=True)))
    common = sorted(set(ndvi[0]) & set(ndvi[1]))
    assert len(common) > 5000
    spring = np.array([ndvi[0][k] for k in common])
    autumn = np.array([ndvi[1][k] for k in common])
    assert spring.mean() - autumn.mean() > 0.05
    assert np.mean(spring > autumn) > 0.6


def test_deterministic_for_a_seed(sample_catalog: Path, tmp_path: Path) -> None:
    again = generate_sample_collection(tmp_path / "again", SampleSpec.tiny())

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(again.parent) == digests(sample_catalog.parent)
    other = generate_sample_collection(
        tmp_path / "other", SampleSpec.tiny(seed=7, paths=(90,), years=(2020,))
    )
    doc = load_items(other)[0]
    mine = next(d for d in load_items(sample_catalog) if d["id"] == doc["id"])
    assert not np.array_equal(read_band(doc, "nbart_red"), read_band(mine, "nbart_red"))


def test_generation_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SampleSpec.tiny(paths=(90,), years=(2020,), dates_per_year=1)
    out = tmp_path / "coll"
    real_write = sample_mod._write_cog
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sample_mod, "_write_cog", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_sample_collection(out, spec)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp dir is left

    # an existing collection is replaced as a whole
    monkeypatch.setattr(sample_mod, "_write_cog", real_write)
    out.mkdir()
    (out / "stale.txt").write_text("old")
    catalog = generate_sample_collection(out, spec)
    assert catalog == out / "catalog.json"
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coll"]
    assert len(load_items(catalog)) == 1


def test_spec_from_mapping_and_validation(tmp_path: Path) -> None:
    spec = SampleSpec.from_mapping(
        {"years": [2021], "path_epsg": {"89": 32755}, "bbox": [149.0, -35.4, 149.1, -35.3]}
    )
    assert spec.years == (2021,)
    assert spec.path_epsg == ((89, 32755),)
    assert spec.bbox == (149.0, -35.4, 149.1, -35.3)
    with pytest.raises(ValueError, match="colour"):
        SampleSpec.from_mapping({"colour": "red"})
    with pytest.raises(ValueError, match="bbox"):
        SampleSpec(bbox=(149.2, -35.4, 149.1, -35.3))
    with pytest.raises(ValueError, match="dates_per_year"):
        SampleSpec(dates_per_year=0)
    # a mapping works as the spec argument
    catalog = generate_sample_collection(
        tmp_path / "m",
        {**SampleSpec.tiny(paths=(89,), years=(2021,), dates_per_year=1).to_dict()},
    )
    (doc,) = load_items(catalog)
    assert doc["properties"]["proj:code"] == "EPSG:32756"
    assert parse_time(doc).year == 2021


def test_odc_stac_loads_native_pixels_exactly(sample_catalog: Path) -> None:
    import odc.stac
    from odc.geo.geobox import GeoBox

    items = list(pystac.Catalog.from_file(str(sample_catalog)).get_items(recursive=True))
    item = next(i for i in items if 5 < i.properties["eo:cloud_cover"] < 80)
    doc = item.to_dict()
    doc["_dir"] = Path(item.get_self_href()).parent
    props = item.properties
    gbox = GeoBox(
        tuple(props["proj:shape"]), Affine(*props["proj:transform"][:6]), props["proj:code"]
    )
    sub = gbox[20:120, 30:140]
    ds = odc.stac.load([item], bands=["nbart_red", "nbart_swir_2", "oa_fmask"], geobox=sub)
    window = Window(30, 20, 110, 100)
    for band in ("nbart_red", "nbart_swir_2", "oa_fmask"):
        assert ds[band].dtype == read_band(doc, band).dtype
        np.testing.assert_array_equal(ds[band].values[0], read_band(doc, band, window))

    md = odc.stac.extract_collection_metadata(item)
    assert md.meta.bands[("nbart_red", 1)].nodata == -999
    assert md.meta.bands[("nbart_red", 1)].data_type == "int16"
    assert md.meta.bands[("oa_fmask", 1)].data_type == "uint8"
    assert md.has_proj


def test_odc_stac_loads_onto_a_default_grid_tile(sample_catalog: Path) -> None:
    import odc.stac
    from datacube.metadata import stac2ds
    from odc.geo.geobox import GeoBox

    items = list(pystac.Catalog.from_file(str(sample_catalog)).get_items(recursive=True))
    # tile x=276, y=98 of the default grid, built by hand: top-left corner, 30 m, 512 px
    left, top = ORIGIN_X + 276 * TILE_M, ORIGIN_Y + 99 * TILE_M
    tile = GeoBox((512, 512), Affine(30, 0, left, 0, -30, top), "EPSG:3577")
    ds = odc.stac.load(items, bands=["nbart_nir", "oa_fmask"], geobox=tile, groupby="id")
    assert ds.sizes["time"] == len(items)
    assert set(np.unique(ds.oa_fmask.values).tolist()) <= {0, 1, 2, 3, 4, 5}

    # nearest-neighbour reprojection of one zone-56 scene, checked with rasterio + pyproj
    item = next(i for i in items if i.properties["proj:code"] == "EPSG:32756")
    loaded = odc.stac.load([item], bands=["nbart_nir"], geobox=tile).nbart_nir.values[0]
    props = item.properties
    t = Affine(*props["proj:transform"][:6])
    cols, rows = np.meshgrid(np.arange(512) + 0.5, np.arange(512) + 0.5)
    X, Y = left + cols * 30, top - rows * 30
    x, y = Transformer.from_crs("EPSG:3577", props["proj:code"], always_xy=True).transform(X, Y)
    c = np.floor((x - t.c) / t.a).astype(int)
    r = np.floor((y - t.f) / t.e).astype(int)
    h, w = props["proj:shape"]
    ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    with rasterio.open(item.assets["nbart_nir"].get_absolute_href()) as src:
        native = src.read(1)
    expected = np.full((512, 512), -999, np.int16)
    expected[ok] = native[r[ok], c[ok]]
    assert np.count_nonzero(loaded != -999) > 10_000
    assert np.mean(loaded == expected) > 0.999

    # datacube's STAC -> Dataset conversion understands the assets too
    dss = list(stac2ds(items))
    assert len(dss) == len(items)
    measurements = dss[0].product.measurements
    assert measurements["nbart_red"].nodata == -999
    assert measurements["oa_fmask"].dtype == "uint8"
