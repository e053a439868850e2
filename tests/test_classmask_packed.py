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


def test_bad_planes_and_any_kept_of_a_window() -> None:
    """The early mask's parts: erasing with the planes of ``bad`` is ``erase``, and ``any_kept`` of a window is
    whether the xarray mask keeps one of its pixels, for windows of one pixel, across 64-pixel words, along the
    edges, inside an erased region and around it."""
    rng = np.random.default_rng(11)
    mask = ClassMask.from_config(
        mask_band="fmask",
        mask_classes=FMASK,
        nodata_classes=["nodata"],
        cloud_filters={"cloud": [["opening", 1], ["dilation", 2]], "shadow": []},
        contiguity_band="contiguity",
    )
    shape = (2, 90, 150)
    classes = observations(rng, shape, "uint8", [0, 1, 2, 3, 4, 5])
    classes[0, 30:60, 50:130] = 0  # an erased region across words
    contiguity = (rng.random(shape) > 0.02).astype(np.uint8)
    ds = xr.Dataset(
        {"fmask": (("time", "y", "x"), classes), "contiguity": (("time", "y", "x"), contiguity)}
    )
    expected = mask.bad(ds).values
    packed = PackedClassMask(mask.nodata_codes, mask.cloud_filters, classes.dtype, shape[1:])
    planes = packed.bad(classes, contiguity)
    red = rng.integers(1, 3000, shape).astype(np.int16)
    packed.erase_bad(planes, [(red, -999)])
    np.testing.assert_array_equal(red == -999, expected)

    windows = [(slice(y, y + 1), slice(x, x + 1)) for y, x in rng.integers(0, 90, (200, 2))]
    windows += [(slice(30, 60), slice(50, 130)), (slice(29, 60), slice(50, 130))]
    windows += [(slice(30, 60), slice(50, 131)), (slice(0, 90), slice(0, 150))]
    for _ in range(300):
        y0, x0 = int(rng.integers(0, 89)), int(rng.integers(0, 149))
        windows.append(
            (slice(y0, int(rng.integers(y0 + 1, 91))), slice(x0, int(rng.integers(x0 + 1, 151))))
        )
    answers = []
    for t in range(shape[0]):
        for ys, xs in windows:
            got = packed.any_kept(planes[t], ys, xs)
            assert got == bool((~expected[t, ys, xs]).any()), (t, ys, xs)
            answers.append(got)
    assert 0.1 < np.mean(answers) < 0.99  # both answers, many times
