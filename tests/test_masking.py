"""Tests for eostats.masking against scipy.ndimage with disks built here, and odc-algo."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from eostats.masking import (
    FMASK_CLASSES,
    ClassLookup,
    PackedLayout,
    class_slots,
    classify_packed,
    cleanup_depth,
    enum_to_bool,
    mask_cleanup,
    mask_cleanup_dask,
)

# ----------------------------------------------------------------------------------------------
# Independent reference: scipy binary morphology with an explicit disk, on a generously padded
# plane so the image edge behaves like "False continues outside"
# ----------------------------------------------------------------------------------------------


def disk(radius: float) -> np.ndarray:
    reach = int(np.floor(radius))
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    return dy**2 + dx**2 <= radius**2


def reference_2d(image: np.ndarray, ops) -> np.ndarray:
    margin = 1 + sum(2 * int(np.ceil(r)) for _, r in ops)
    plane = np.pad(image, margin, constant_values=False)
    for op, radius in ops:
        if radius == 0:
            continue
        fp = disk(radius)
        if op == "dilation":
            plane = ndimage.binary_dilation(plane, structure=fp)
        elif op == "erosion":
            plane = ndimage.binary_erosion(plane, structure=fp, border_value=0)
        elif op == "opening":
            plane = ndimage.binary_dilation(
                ndimage.binary_erosion(plane, structure=fp, border_value=0), structure=fp
            )
        elif op == "closing":
            plane = ndimage.binary_erosion(
                ndimage.binary_dilation(plane, structure=fp), structure=fp, border_value=0
            )
    return plane[margin:-margin, margin:-margin]


def reference(mask: np.ndarray, ops) -> np.ndarray:
    out = np.empty_like(mask)
    for index in np.ndindex(mask.shape[:-2]):
        out[index] = reference_2d(mask[index], ops)
    return out


def cloudy_mask(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 3) -> np.ndarray:
    """Blobs of various sizes plus isolated specks, touching the edges."""
    smooth = ndimage.gaussian_filter(
        rng.random(shape), sigma=(0,) * (len(shape) - 2) + (sigma,) * 2
    )
    return (smooth > np.quantile(smooth, 0.8)) | (rng.random(shape) < 0.02)


@pytest.fixture(scope="module")
def masks() -> np.ndarray:
    return cloudy_mask(np.random.default_rng(0), (3, 70, 61))


# ----------------------------------------------------------------------------------------------
# Single operations and chains
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["dilation", "erosion", "opening", "closing"])
@pytest.mark.parametrize("radius", [1, 2, 3, 5, 2.5])
def test_single_op_matches_scipy(masks, op, radius) -> None:
    np.testing.assert_array_equal(
        mask_cleanup(masks, [(op, radius)]), reference(masks, [(op, radius)])
    )


@pytest.mark.parametrize(
    "ops",
    [
        [("opening", 2), ("dilation", 5)],  # odc-stats' default cloud filter
        [("opening", 3), ("dilation", 6)],  # DEA gm-ls cloud filter
        [("closing", 3), ("erosion", 1), ("dilation", 2)],
        [("dilation", 2), ("erosion", 2)],  # a closing spelled out
        [("closing", 10), ("opening", 2), ("dilation", 2)],  # gm-ls-bitmask example
        [("opening", 0), ("dilation", 5)],  # pq's clear_0_5
    ],
)
def test_chains_match_scipy(masks, ops) -> None:
    np.testing.assert_array_equal(mask_cleanup(masks, ops), reference(masks, ops))


@pytest.mark.parametrize("radius", [7.5, 8, 9, 16.2, 31])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 63, 64, 65, 131])
def test_word_packed_rows_match_scipy(radius, width) -> None:
    """Rows are processed eight pixels to a 64-bit word: row widths around word edges, and horizontal steps of
    eight pixels or more (radius >= 8) that cross whole words, against the scipy reference."""
    mask = cloudy_mask(np.random.default_rng(int(width * 10 + radius)), (2, 45, width), sigma=1)
    for op in ("dilation", "opening", "closing"):
        np.testing.assert_array_equal(
            mask_cleanup(mask, [(op, radius)]), reference(mask, [(op, radius)])
        )


@pytest.mark.parametrize("width", [5, 64, 97])
def test_chains_deeper_than_a_word_match_scipy(width) -> None:
    """A chain whose context (70 pixels) is more than one 64-pixel word of margin, on masks touching every edge."""
    mask = cloudy_mask(np.random.default_rng(width), (2, 90, width), sigma=2)
    ops = [("closing", 20), ("dilation", 30)]
    assert cleanup_depth(ops) == 70
    np.testing.assert_array_equal(mask_cleanup(mask, ops), reference(mask, ops))


def test_large_radius_distance_transform_path() -> None:
    mask = cloudy_mask(np.random.default_rng(5), (50, 60), sigma=5)
    # the last chain mixes both paths: its radius-3 dilation runs on bit-packed planes
    for ops in (
        [("dilation", 33)],
        [("opening", 32)],
        [("closing", 32.5)],
        [("dilation", 33), ("opening", 3)],
    ):
        np.testing.assert_array_equal(mask_cleanup(mask, ops), reference(mask, ops))


@pytest.mark.parametrize("radius, size", [(1, 5), (2, 13), (2.5, 21), (3, 29), (5, 81)])
def test_structuring_element_is_the_euclidean_disk(radius, size) -> None:
    mask = np.zeros((21, 21), dtype=bool)
    mask[10, 10] = True
    grown = mask_cleanup(mask, [("dilation", radius)])
    dy, dx = np.nonzero(grown)
    assert grown.sum() == size
    assert ((dy - 10) ** 2 + (dx - 10) ** 2 <= radius**2).all()


def test_leading_axes_are_independent_images(masks) -> None:
    ops = [("opening", 2), ("dilation", 3)]
    stacked = np.stack([masks, ~masks])  # (2, 3, y, x)
    result = mask_cleanup(stacked, ops)
    assert result.shape == stacked.shape and result.dtype == bool
    for i in range(2):
        for t in range(3):
            np.testing.assert_array_equal(result[i, t], reference_2d(stacked[i, t], ops))
    np.testing.assert_array_equal(mask_cleanup(masks[0], ops), result[0, 0])


def test_radius_zero_is_a_no_op_and_input_untouched(masks) -> None:
    before = masks.copy()
    out = mask_cleanup(masks, [("opening", 0), ("dilation", 0)])
    np.testing.assert_array_equal(out, masks)
    assert out is not masks
    mask_cleanup(masks, [("closing", 3)])
    np.testing.assert_array_equal(masks, before)


def test_integer_masks_are_treated_as_bool() -> None:
    mask = np.zeros((9, 9), dtype=np.uint8)
    mask[4, 4] = 7
    out = mask_cleanup(mask, [("dilation", 1)])
    assert out.dtype == bool and out.sum() == 5


# ----------------------------------------------------------------------------------------------
# Edges: outside the array is False (fixes odc-stats Q12's numpy-path artefacts)
# ----------------------------------------------------------------------------------------------


def test_all_false_stays_false() -> None:
    empty = np.zeros((2, 30, 40), dtype=bool)
    for ops in (
        [("dilation", 5)],
        [("opening", 2), ("dilation", 5)],
        [("closing", 3)],
        [("dilation", 40)],  # distance-transform path
    ):
        assert not mask_cleanup(empty, ops).any()


def test_erosion_eats_from_the_edge() -> None:
    full = np.ones((12, 15), dtype=bool)
    eroded = mask_cleanup(full, [("erosion", 2)])
    expected = np.zeros_like(full)
    expected[2:-2, 2:-2] = True
    np.testing.assert_array_equal(eroded, expected)


def test_closing_keeps_masks_touching_the_edge() -> None:
    full = np.ones((12, 15), dtype=bool)
    np.testing.assert_array_equal(mask_cleanup(full, [("closing", 3)]), full)
    # an interior hole is filled; a notch in the edge is open to the False outside and stays
    mask = np.ones((12, 15), dtype=bool)
    mask[5, 7] = False
    mask[0, 3] = False
    expected = np.ones_like(mask)
    expected[0, 3] = False
    np.testing.assert_array_equal(mask_cleanup(mask, [("closing", 2)]), expected)


def test_opening_removes_small_blob_at_the_edge_keeps_large() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[0:3, 0:3] = True  # too small for a radius-2 disk (5 px wide)
    mask[10:20, 10:20] = True  # big enough, touching two edges
    opened = mask_cleanup(mask, [("opening", 2)])
    assert not opened[:5, :5].any()
    np.testing.assert_array_equal(opened[10:, 10:], reference_2d(mask, [("opening", 2)])[10:, 10:])
    assert opened[12:, 12:18].all() and opened[12:18, 12:].all()
    assert not opened[19, 19] and not opened[10, 10]  # corners are rounded off by the disk


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ops, pattern",
    [
        ([("dilate", 3)], r"'dilate'.*opening, closing, dilation, erosion"),
        ([("opening", 2), ("blur", 1)], r"'blur'"),
        ([("dilation", -1)], r"'dilation'.*-1"),
        ([("erosion", "2")], r"'erosion'"),
        ([("opening",)], r"pair"),
    ],
)
def test_bad_ops_raise(ops, pattern) -> None:
    mask = np.zeros((5, 5), dtype=bool)
    with pytest.raises(ValueError, match=pattern):
        mask_cleanup(mask, ops)
    with pytest.raises(ValueError, match=pattern):
        mask_cleanup_dask(da.from_array(mask), ops)


def test_yaml_style_lists_accepted(masks) -> None:
    ops = [["opening", 2], ["dilation", 3]]
    np.testing.assert_array_equal(mask_cleanup(masks, ops), reference(masks, ops))


def test_cleanup_depth_counts_two_radii_for_opening_and_closing() -> None:
    assert cleanup_depth([("opening", 2), ("dilation", 5)]) == 9
    assert cleanup_depth([("closing", 3), ("erosion", 1)]) == 7
    assert cleanup_depth([("dilation", 2.5)]) == 3
    assert cleanup_depth([]) == 0


# ----------------------------------------------------------------------------------------------
# Dask: chunk-independent and equal to numpy
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [(1, -1, -1), (1, 17, 13), (2, 7, 9), (3, 35, 61), (1, 70, 5)],
)
@pytest.mark.parametrize(
    "ops",
    [[("opening", 2), ("dilation", 5)], [("closing", 4), ("opening", 2)], [("erosion", 3)]],
)
def test_dask_equals_numpy_for_any_chunking(masks, chunks, ops) -> None:
    lazy = mask_cleanup_dask(da.from_array(masks, chunks=chunks), ops)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), reference(masks, ops))


def test_dask_depth_larger_than_array() -> None:
    mask = cloudy_mask(np.random.default_rng(2), (2, 12, 30))
    ops = [("closing", 5), ("dilation", 4)]  # 14 px of context > 12 rows
    out = mask_cleanup_dask(da.from_array(mask, chunks=(1, 6, 10)), ops).compute()
    np.testing.assert_array_equal(out, reference(mask, ops))


def test_dask_radius_zero_passthrough(masks) -> None:
    out = mask_cleanup_dask(da.from_array(masks, chunks=(1, 20, 20)), [("dilation", 0)])
    np.testing.assert_array_equal(out.compute(), masks)


# ----------------------------------------------------------------------------------------------
# odc-algo: its dask path, whole array in one chunk (where it does not depend on chunking)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ops",
    [
        [("opening", 2), ("dilation", 5)],
        [("opening", 3), ("dilation", 6)],
        [("closing", 3)],
        [("erosion", 2)],
        [("closing", 4), ("opening", 2)],
    ],
)
def test_matches_odc_algo_dask_path_in_one_chunk(ops) -> None:
    odc_algo = pytest.importorskip("odc.algo")
    mask = cloudy_mask(np.random.default_rng(11), (2, 80, 72))
    xx = xr.DataArray(
        da.from_array(mask, chunks=(1, -1, -1)),
        dims=("time", "y", "x"),
        coords={"y": np.arange(80.0), "x": np.arange(72.0)},
    )
    theirs = odc_algo.mask_cleanup(xx, ops).values
    ours = mask_cleanup(mask, ops)
    depth = cleanup_depth(ops)
    # interior pixels are the contract; on this data the edges agree too
    np.testing.assert_array_equal(
        ours[:, depth:-depth, depth:-depth], theirs[:, depth:-depth, depth:-depth]
    )
    np.testing.assert_array_equal(ours, theirs)


# ----------------------------------------------------------------------------------------------
# enum_to_bool
# ----------------------------------------------------------------------------------------------


def test_enum_to_bool_numpy() -> None:
    fmask = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    np.testing.assert_array_equal(
        enum_to_bool(fmask, ["cloud", "shadow"]), [[False, False, True], [True, False, False]]
    )
    np.testing.assert_array_equal(
        enum_to_bool(fmask, ["nodata", 5]), [[True, False, False], [False, False, True]]
    )
    assert not enum_to_bool(fmask, []).any()
    assert FMASK_CLASSES["water"] == 5


def test_enum_to_bool_custom_classes_and_lazy_arrays() -> None:
    scl = np.array([[0, 3, 8], [9, 10, 4]], dtype=np.uint8)
    classes = {"no data": 0, "cloud shadows": 3, "cloud medium probability": 8}
    expected = np.array([[False, True, True], [False, False, False]])
    lazy = enum_to_bool(da.from_array(scl, chunks=1), ["cloud shadows", 8], classes)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), expected)
    xx = xr.DataArray(scl, dims=("y", "x"))
    out = enum_to_bool(xx, ["cloud shadows", "cloud medium probability"], classes)
    assert isinstance(out, xr.DataArray) and out.dtype == bool
    np.testing.assert_array_equal(out.values, expected)


def test_enum_to_bool_unknown_class() -> None:
    with pytest.raises(ValueError, match="'cirrus'.*cloud"):
        enum_to_bool(np.zeros((2, 2), np.uint8), ["cirrus"])


def test_class_slots_index_the_unsigned_bit_pattern_and_drop_codes_out_of_range() -> None:
    assert class_slots([-1, 5, -32768, 70000], np.int16) == [65535, 5, 32768]
    assert class_slots([0, 255, 256, -1], np.uint8) == [0, 255]
    # the slot of each value reads it back: a table indexed by the band's unsigned view finds it
    band = np.array([-999, 3, -1], dtype=np.int16)
    table = np.zeros(2**16, dtype=bool)
    table[class_slots([-999, -1], np.int16)] = True
    np.testing.assert_array_equal(table[band.view(np.uint16)], [True, False, True])


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("n_others", [0, 1, 3, 8, 9, 40])
def test_classify_packed_by_values_or_by_table_sets_each_entrys_bits(
    bits: int, n_others: int
) -> None:
    """Up to eight values off the common entry are compared, more are looked up in the table: either way every
    plane holds bit k of each pixel's entry, ORed into what the plane held, nothing outside the mask touched."""
    rng = np.random.default_rng(bits * 100 + n_others)
    size = 2**bits
    table = np.full(size, 0b101, dtype=np.uint8)
    others = rng.choice(size, n_others, replace=False)
    table[others] = rng.choice(np.array([0, 1, 2, 3, 4, 6, 7], dtype=np.uint8), n_others)
    table[others[:1]] = 0b010  # at least one entry with a bit the common one lacks
    lookup = ClassLookup.of(table)
    assert (lookup.values is None) == (n_others > 8)
    unsigned = np.dtype(f"u{bits // 8}")
    ny, nx = 37, 150  # rows of three words, the last one partial
    values = rng.choice(np.r_[others, rng.integers(0, size, 20)], (ny, nx)).astype(unsigned)
    layout = PackedLayout(ny, nx, 3)
    before = rng.integers(0, 2**63, (3, *layout.shape), dtype=np.uint64)
    margin = np.ones(layout.shape, dtype=bool)
    margin[layout.row0 : layout.row0 + ny, layout.word0 : layout.word0 + layout.mask_words] = False
    before[:, ~margin] = 0
    before[1, layout.row0 + 5] = np.uint64(2**64 - 1)  # bits already set stay set
    planes = before.copy()
    classify_packed(values, lookup, planes, layout.row0, layout.word0)
    for k in range(3):
        expected = before[k] | layout.pack((table[values] >> k) & 1 == 1)
        np.testing.assert_array_equal(planes[k], expected, err_msg=f"plane {k}")
    with pytest.raises(TypeError, match="lookup of"):
        classify_packed(values.astype(np.uint32), lookup, planes, layout.row0, layout.word0)
