"""gm-* plugins with `start: geomad` (odc-stats' own values): results must not depend on how the tile runner
cuts the tile, because blocks start where odc-stats' 400-column work chunks do."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from eostats.kernels.geomedian import geomedian_mads
from eostats.plugins import PluginConfigError, resolve_plugin
from eostats.tile import _blocks, _whole_tile_outputs

BANDS = ["red", "green", "blue"]


def _cube(seed: int = 3, n_time: int = 9, ny: int = 6, nx: int = 1000) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    data = rng.integers(200, 3000, size=(len(BANDS), n_time, ny, nx)).astype(np.int16)
    data[:, rng.random((n_time, ny, nx)) < 0.3] = -999
    return xr.Dataset(
        {
            b: xr.DataArray(data[i], dims=("time", "y", "x"), attrs={"nodata": -999})
            for i, b in enumerate(BANDS)
        }
    )


def test_blocks_start_at_multiples_of_the_alignment() -> None:
    starts = {xs.start for _, xs in _blocks((10, 3200), 1024, 400)}
    assert starts == {0, 800, 1600, 2400}
    assert {xs.start for _, xs in _blocks((10, 1000), 256, 400)} == {0, 400, 800}
    assert {xs.start for _, xs in _blocks((10, 1000), 512)} == {0, 512}
    # a tile no wider than the chunk size is one block column, whatever the alignment
    assert [(ys, xs) for ys, xs in _blocks((2048, 1024), 1024, 400)] == [
        (slice(0, 1024), slice(0, 1024)),
        (slice(1024, 2048), slice(0, 1024)),
    ]


def test_geomad_start_with_odc_stats_work_width_does_not_depend_on_chunking() -> None:
    plugin = resolve_plugin("gm-generic", {"bands": BANDS, "start": "geomad"})
    assert (plugin.start, plugin.work_width, plugin.column_alignment) == ("geomad", 400, 400)
    cube = _cube()
    whole = plugin.reduce(cube)
    # the tile cut into aligned column blocks, as the tile runner does with chunk_size 512
    parts = [
        plugin.reduce(cube.isel(x=xs)) for _, xs in _blocks((6, 1000), 512, plugin.column_alignment)
    ]
    for name in whole.data_vars:
        joined = np.concatenate([p[name].values for p in parts], axis=1)
        np.testing.assert_array_equal(joined, whole[name].values, err_msg=name)
    # and it is geomad's iteration over 400-column blocks of the whole row (the kernel's emulation)
    stack = np.stack([cube[b].values for b in BANDS])
    ref = geomedian_mads(
        stack, nodata=-999, scale=1e-4, offset=-1e-4, eps=1e-5, start="geomad", block_width=400
    )
    np.testing.assert_array_equal(whole["count"].values, ref.count)
    np.testing.assert_array_equal(whole["smad"].values, ref.smad)


def test_geomad_start_is_the_default_and_bad_values_are_named() -> None:
    plugin = resolve_plugin("gm-generic", {"bands": BANDS})
    assert (plugin.start, plugin.work_width, plugin.column_alignment) == ("geomad", 400, 400)
    mean = resolve_plugin("gm-generic", {"bands": BANDS, "start": "mean"})
    assert (mean.start, mean.column_alignment) == ("mean", 1)
    with pytest.raises(PluginConfigError, match="plugin_config.start must be 'geomad' or 'mean'"):
        resolve_plugin("gm-generic", {"bands": BANDS, "start": "zero"})


def test_a_one_block_tile_takes_its_reduction_in_the_measurements_dtypes() -> None:
    """A tile of one block keeps its reduction's arrays (no copy when the dtype is the measurement's), converts
    the others to the measurement's dtype, and a reduction of the wrong shape is an error naming the measurement."""
    from types import SimpleNamespace

    from eostats.plugins.base import Measurement

    plugin = SimpleNamespace(
        measurements=[Measurement("count", "uint16", 0), Measurement("mean", "float32", -1)]
    )
    count = np.arange(6, dtype=np.uint16).reshape(2, 3)
    mean = np.full((2, 3), 0.5, dtype=np.float64)
    outputs = _whole_tile_outputs(plugin, {"count": count, "mean": mean, "extra": count}, (2, 3))
    assert list(outputs) == ["count", "mean"]
    assert outputs["count"] is count
    assert outputs["mean"].dtype == np.float32 and (outputs["mean"] == 0.5).all()
    with pytest.raises(ValueError, match="measurement count: reduced to"):
        _whole_tile_outputs(plugin, {"count": count[:1], "mean": mean}, (2, 3))
