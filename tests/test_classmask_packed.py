"""PackedClassMask (bad pixels on bit-packed planes, bands erased in place) against ClassMask.bad and erase, the
xarray definition: same pixels erased, for fmask- and SCL-like classes, chains of every operation, unchained
filters, a contiguity band, 16-bit and signed classes, widths around a 64-pixel word and edges of the window."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from eostats.kernels.classmask import PackedClassMask
from eostats.plugins.tools import ClassMask, erase

FMASK = {"nodata": 0, "valid": 1, "cloud": 2, "shadow": 3, "snow": 4, "water": 5}


def observations(rng: np.random.Generator, shape, dtype, codes) -> np.ndarray:
    """Blobs of each class (clouds and shadows in clumps, so that morphology matters) over a valid background."""
    t, ny, nx = shape
    classes = np.full(shape, codes[1], dtype=dtype)
    for code in codes:
        seeds = rng.random(shape) < 0.01
        grown = (
            seeds
            | np.roll(seeds, 1, axis=1)
            | np.roll(seeds, 1, axis=2)
            | np.roll(seeds, -2, axis=2)
        )
        classes[grown] = code
    classes[:, :, :3] = codes[0]  # nodata along an edge
    return classes


@pytest.mark.parametrize(
    ("dtype", "nx", "filters", "contiguity"),
    [
        (
            "uint8",
            130,
            {"cloud": [("opening", 3), ("dilation", 6)], "shadow": [("dilation", 6)]},
            True,
        ),
        ("uint8", 64, {"cloud,shadow": [("closing", 2), ("erosion", 1)], "snow": []}, False),
        ("uint8", 63, {"cloud": [("dilation", 1)]}, True),
        (
            "uint16",
            200,
            {"cloud": [("opening", 0), ("dilation", 5)], "water": [("dilation", 2)]},
            False,
        ),
        ("int16", 97, {"cloud": [("dilation", 3)], "shadow": []}, True),
    ],
)
def test_packed_mask_erases_what_the_class_mask_erases(dtype, nx, filters, contiguity) -> None:
    rng = np.random.default_rng(nx)
    mask = ClassMask.from_config(
        mask_band="fmask",
        mask_classes=FMASK,
        nodata_classes=["nodata"],
        cloud_filters={k: [list(op) for op in v] for k, v in filters.items()},
        contiguity_band="contiguity" if contiguity else None,
    )
    shape = (3, 70, nx)
    classes = observations(rng, shape, dtype, [0, 1, 2, 3, 4, 5])
    if np.dtype(dtype).itemsize == 2:
        classes[0, 10:12, 10:14] = 300  # a class beyond one byte: not bad
    bands = {
        "red": rng.integers(1, 3000, shape).astype(np.int16),
        "nir": rng.integers(1, 3000, shape).astype(np.uint16),
    }
    data = {"fmask": classes, **bands}
    if contiguity:
        data["contiguity"] = (rng.random(shape) > 0.05).astype(np.uint8)
    ds = xr.Dataset({k: (("time", "y", "x"), v) for k, v in data.items()})
    bad = mask.bad(ds)
    expected = {
        name: erase(ds[name], bad, nodata).values for name, nodata in (("red", -999), ("nir", 0))
    }
    assert 0.05 < float(bad.mean()) < 0.9  # both kinds of pixel

    assert PackedClassMask.supports(mask.cloud_filters, classes.dtype)
    packed = PackedClassMask(mask.nodata_codes, mask.cloud_filters, classes.dtype, shape[1:])
    red, nir = bands["red"].copy(), bands["nir"].copy()
    packed.erase(classes, data.get("contiguity"), [(red, -999), (nir, 0)])
    np.testing.assert_array_equal(red, expected["red"])
    np.testing.assert_array_equal(nir, expected["nir"])


def test_packed_mask_supports_only_what_it_can_do() -> None:
    chain = [("dilation", 3)]
    assert PackedClassMask.supports([([2], chain)], np.dtype("uint8"))
    assert not PackedClassMask.supports([([2], chain)], np.dtype("int32"))
    assert not PackedClassMask.supports([([2], [("dilation", 40)])], np.dtype("uint8"))
    assert not PackedClassMask.supports([([k], chain) for k in range(8)], np.dtype("uint8"))
    assert PackedClassMask.supports([([2], chain)], np.dtype("uint8"), np.dtype("bool"))
    assert not PackedClassMask.supports([([2], chain)], np.dtype("uint8"), np.dtype("float32"))
