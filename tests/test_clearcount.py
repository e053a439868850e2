"""Clear counts summed on native pixels (eostats.kernels.clearcount) against a per-day numpy/scipy count, and the
tile reader's native counting against its observations reduced by the pq plugin."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage
from test_masking import reference_2d  # scipy morphology with explicit disks

from eostats.kernels.clearcount import ClearCounter, ClearCountRecipe, class_table, gather_counts
from eostats.masking import FMASK_CLASSES

CHAINS = {
    "2_5": [("opening", 2), ("dilation", 5)],
    "0_5": [("opening", 0), ("dilation", 5)],
    "c": [("closing", 3), ("erosion", 1)],
}


def expected_counts(days: list[list[np.ndarray]], nodata, erase, chains) -> dict[str, np.ndarray]:
    """Per day: data = any observation not nodata, erased = any observation erased; then summed."""
    shape = days[0][0].shape
    out = {
        name: np.zeros(shape, np.int64)
        for name in ["total", "clear", *map("clear_{}".format, chains)]
    }
    for observations in days:
        valid = np.logical_or.reduce([~np.isin(o, nodata) for o in observations])
        erased = np.logical_or.reduce(
            [np.isin(o, erase) & ~np.isin(o, nodata) for o in observations]
        )
        out["total"] += valid
        out["clear"] += valid & ~erased
        for name, chain in chains.items():
            out[f"clear_{name}"] += valid & ~reference_2d(erased, chain)
    return out


def random_day(rng: np.random.Generator, shape, n_obs: int, dtype=np.uint8) -> list[np.ndarray]:
    observations = []
    for _ in range(n_obs):
        smooth = ndimage.gaussian_filter(rng.random(shape), 2)
        classes = np.ones(shape, dtype)
        classes[smooth > np.quantile(smooth, 0.75)] = 2  # cloud
        classes[smooth < np.quantile(smooth, 0.1)] = 3  # shadow
        classes[rng.random(shape) < 0.01] = 2  # specks an opening removes
        classes[rng.random(shape) < 0.05] = 5  # water
        cut = rng.integers(0, shape[1])
        classes[:, cut:] = 0  # the scene's edge: nodata
        observations.append(classes)
    return observations


@pytest.mark.parametrize("shape", [(37, 64), (50, 131), (9, 7)])
def test_counts_equal_a_per_day_numpy_count(shape) -> None:
    rng = np.random.default_rng(shape[1])
    recipe = ClearCountRecipe("oa_fmask", (0,), (2, 3), CHAINS)
    days = [random_day(rng, shape, n_obs) for n_obs in (1, 2, 3, 1, 2)]
    # a cloud-free day between cloudy ones (nothing erased: the chains are skipped)
    days.insert(2, [np.where(np.isin(o, (2, 3)), 1, o) for o in random_day(rng, shape, 2)])
    counter = ClearCounter(recipe, shape, np.dtype("uint8"))
    for observations in days:
        for classes in observations:
            counter.add_observation(classes)
        counter.end_day()
    counter.end_day()  # a day without observations adds nothing
    got = counter.counts()
    assert list(got) == recipe.names == ["total", "clear", "clear_2_5", "clear_0_5", "clear_c"]
    for name, values in expected_counts(days, [0], [2, 3], CHAINS).items():
        assert got[name].dtype == np.uint16
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert got["total"].max() == 6
    if min(shape) > 10:  # room for clear pixels next to cloud that the buffer removes
        assert (got["clear_2_5"] < got["clear"]).any()


def test_more_than_255_days_and_gathered_counters() -> None:
    """uint8 counters go into the uint16 totals before they wrap; gather_counts sums two threads' counters (one past
    255 days) at each flat index of rows padded to row_stride, -1 giving 0."""
    rng = np.random.default_rng(3)
    shape = (6, 70)  # 70 px: rows padded to 128
    recipe = ClearCountRecipe("band", (0,), (2,), {"d": [("dilation", 1)]})
    days = [random_day(rng, shape, 1) for _ in range(300)]
    for i in range(
        0, 300, 3
    ):  # clear days: each row's first 64 pixels a whole word, its last 6 not
        days[i] = [np.ones(shape, dtype=np.uint8)]
    first, second = (ClearCounter(recipe, shape, np.dtype("uint8")) for _ in range(2))
    for i, observations in enumerate(days):
        counter = first if i < 280 else second
        counter.add_observation(observations[0])
        counter.end_day()
    got = first.counts()
    for name, values in expected_counts(days[:280], [0], [2], recipe.chains).items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    assert got["total"].max() > 255

    stride = ClearCounter.row_stride(shape[1])
    assert stride == 128
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    cols = cols[:, ::-1]  # every pixel, each row's columns reversed
    index = rows * stride + cols
    index[0, :3] = -1
    gathered = gather_counts([first, second], index)
    assert gathered.dtype == np.uint16 and gathered.shape == (3, *shape)
    with ThreadPoolExecutor(2) as pool:  # in runs of pixels on threads: the same counts
        np.testing.assert_array_equal(gather_counts([first, second], index, pool, 3), gathered)
    np.testing.assert_array_equal(gather_counts([first, second], index.astype(np.int32)), gathered)
    with pytest.raises(TypeError, match="int32 or int64"):
        gather_counts([first, second], index.astype(np.float64))
    expected = expected_counts(days, [0], [2], recipe.chains)
    for k, name in enumerate(recipe.names):
        want = expected[name][rows, cols]
        want[0, :3] = 0
        np.testing.assert_array_equal(gathered[k], want, err_msg=name)
    assert gathered[0].max() > 255


def test_class_table_for_signed_16_bit_bands_and_codes_out_of_range() -> None:
    recipe = ClearCountRecipe("scl", (-1, 0), (8, 9, 70000), {})
    table = class_table(recipe, np.dtype("int16"))
    assert table.size == 65536
    as_index = lambda v: int(np.array(v, np.int16).view(np.uint16))  # noqa: E731
    assert table[as_index(-1)] == table[as_index(0)] == 0  # nodata
    assert table[as_index(8)] == table[as_index(9)] == 3  # data, erased
    assert table[as_index(4)] == 1 and table[as_index(-5)] == 1  # data, not erased
    classes = np.array([[-1, 0, 8, 4, 9, 70 - 71]], np.int16)
    counter = ClearCounter(recipe, classes.shape, classes.dtype)
    counter.add_observation(classes)
    counter.end_day()
    got = counter.counts()
    np.testing.assert_array_equal(got["total"], [[0, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(got["clear"], [[0, 0, 0, 1, 0, 0]])
    with pytest.raises(TypeError, match="float32"):
        class_table(recipe, np.dtype("float32"))


def test_observation_of_another_shape_is_refused() -> None:
    counter = ClearCounter(ClearCountRecipe("b", (0,), (2,), {}), (4, 5), np.dtype("uint8"))
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        counter.add_observation(np.zeros((4, 6), np.uint8))


def test_pq_plugin_recipe_matches_its_configuration() -> None:
    from eostats.plugins import resolve_plugin

    plugin = resolve_plugin("pq", {"filters": {"x": [["opening", 1], ["dilation", 2]]}})
    recipe = plugin.clear_count_recipe
    assert recipe.band == "oa_fmask"
    assert recipe.nodata_codes == (FMASK_CLASSES["nodata"],)
    assert set(recipe.erase_codes) == {FMASK_CLASSES["cloud"], FMASK_CLASSES["shadow"]}
    assert recipe.names == [m.name for m in plugin.measurements]
    assert resolve_plugin("gm-ls", {}).clear_count_recipe is None


@pytest.mark.parametrize("n_counters", [1, 3])
def test_gathered_counters_in_pairs_and_alone(n_counters: int) -> None:
    """gather_counts sums the counters two to a pass: an odd count leaves one alone (set or added), with the same
    sum at every index as the per-day reference."""
    rng = np.random.default_rng(11 + n_counters)
    shape = (9, 150)  # rows of three words, the last partial
    recipe = ClearCountRecipe("band", (0,), (2, 3), {"d": [("dilation", 1.5)]})
    days = [random_day(rng, shape, 1) for _ in range(12)]
    days[4] = [np.ones(shape, dtype=np.uint8)]  # whole words
    counters = [ClearCounter(recipe, shape, np.dtype("uint8")) for _ in range(n_counters)]
    for i, observations in enumerate(days):
        counters[i % n_counters].add_observation(observations[0])
        counters[i % n_counters].end_day()
    stride = ClearCounter.row_stride(shape[1])
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    index = (rows * stride + cols).astype(np.int32)
    index[:, -2:] = -1
    gathered = gather_counts(counters, index)
    expected = expected_counts(days, [0], [2, 3], recipe.chains)
    for k, name in enumerate(recipe.names):
        want = expected[name].copy()
        want[:, -2:] = 0
        np.testing.assert_array_equal(gathered[k], want, err_msg=name)
