"""The ``backend`` setting and the CUDA kernels (eostats.kernels.gpu, eostats.kernels.gpu_kernels), without a GPU.

* Backend selection and fallback run in this process: ``cpu`` by default, ``auto`` falls back to the CPU where no
  device is visible, ``gpu`` stops with one line; the config key is validated; a tile run with ``auto`` says which
  backend it used and matches the CPU tile, one with ``gpu`` fails before writing anything.
* The CUDA kernels run in a child process under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM`` is read when numba
  is imported, so it cannot be switched on in this process without affecting every other test). The child gets
  small cubes (all-masked pixels, a single observation, nodata at every time position, identical and tied
  observations, int16 / uint16 / float32 data) and returns what the GPU code computed; this process checks it
  against values worked out here (counts, nearest-rank percentiles, single and identical observations) and
  against the CPU kernels.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from eostats.config import ConfigError, validate_config
from eostats.kernels import gpu
from eostats.kernels.geomedian import geomedian_mads, median_to_dn
from eostats.kernels.percentile import nearest_rank_percentiles

REPO = Path(__file__).resolve().parents[1]
F32 = np.float32
NODATA = -999
SCALE, OFFSET, EPS = 1e-4, -1e-4, 1e-5
QUANTILES = (0.1, 0.5, 0.9)


# --- backend selection, in this process ------------------------------------------------------------------------


def test_cpu_is_the_default_and_a_bad_value_is_one_line_naming_the_key():
    assert validate_config({"source": {"type": "sample"}})["backend"] == "cpu"
    with pytest.raises(ConfigError) as err:
        validate_config({"source": {"type": "sample"}, "backend": "cuda"})
    message = str(err.value)
    assert "'backend'" in message and "'cuda'" in message and "\n" not in message
    with pytest.raises(
        gpu.BackendError, match=r"^backend: unknown value 'tpu'; allowed: cpu, gpu, auto$"
    ):
        gpu.resolve_backend("tpu")


@pytest.fixture
def no_cuda_device(monkeypatch):
    """numba reports no usable CUDA driver, as on this CI machine (and on any CPU node)."""
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)


def test_without_a_device_auto_falls_back_to_cpu_and_gpu_stops_with_one_line(no_cuda_device):
    assert not gpu.cuda_simulated()
    assert gpu.gpu_available() is False
    assert gpu.resolve_backend(None) == "cpu"
    assert gpu.resolve_backend("cpu") == "cpu"
    assert gpu.resolve_backend("auto") == "cpu"
    assert gpu.resolve_backend(" AUTO ") == "cpu"
    with pytest.raises(gpu.BackendError) as err:
        gpu.resolve_backend("gpu")
    assert str(err.value) == (
        "backend: gpu requested but no CUDA device is visible; use backend: cpu or auto"
    )
    with pytest.raises(gpu.BackendError), gpu.use_backend("gpu"):
        pass
    assert gpu.active_backend() == "cpu"


def test_a_broken_cuda_install_counts_as_no_device(monkeypatch):
    from numba import cuda

    def broken():
        raise OSError("libcuda.so: cannot open shared object file")

    monkeypatch.setattr(cuda, "is_available", broken)
    assert gpu.gpu_available() is False
    assert gpu.resolve_backend("auto") == "cpu"


def test_auto_takes_a_visible_device(monkeypatch):
    """With a device (numba reports one), ``auto`` and ``gpu`` both resolve to the GPU, and only inside
    ``use_backend`` do the kernels of this module run there."""
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "gpus", ["a device"])
    assert gpu.resolve_backend("auto") == "gpu"
    calls = []
    monkeypatch.setattr(
        "eostats.kernels.gpu_kernels.nearest_rank_percentiles_gpu",
        lambda *a, **k: calls.append(k) or "from the gpu kernel",
    )
    data = np.array([[3], [1], [2]], np.int16)
    with gpu.use_backend("gpu") as backend:
        assert backend == gpu.active_backend() == "gpu"
        assert gpu.nearest_rank_percentiles(data, [0.5], nodata=NODATA) == "from the gpu kernel"
    assert gpu.active_backend() == "cpu"
    # outside the block: the CPU kernel (the median of 3, 1, 2 is 2)
    assert gpu.nearest_rank_percentiles(data, [0.5], nodata=NODATA).tolist() == [[2]]
    assert calls == [{"nodata": NODATA, "time_axis": 0, "min_valid": 3}]


def test_gpu_extra_and_image_pin_the_same_numba_cuda():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = extra["gpu"]
    assert pin.startswith("numba-cuda[cu12]==")
    dockerfile = (REPO / "Dockerfile.gpu").read_text()
    assert f'pip install "{pin}"' in dockerfile
    # the CPU install stays light: numba-cuda is not in the lock file the default image installs
    assert "numba-cuda" not in (REPO / "requirements.lock.txt").read_text()


# --- a tile through the runner, in this process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gm_tile(sample_catalog, tmp_path_factory):
    """A gm-ls task of the tiny sample on 128-pixel tiles: (cache path, task, results folder)."""
    from plugin_samples import GRID_30, build_task_cache, busiest_task

    folder = tmp_path_factory.mktemp("gpu_backend_tile")
    cache_path = folder / "cache.sqlite"
    cache = build_task_cache(sample_catalog, GRID_30, cache_path)
    return cache_path, busiest_task(cache), folder


def test_tile_runner_logs_the_backend_and_auto_falls_back_to_the_cpu_result(
    gm_tile, no_cuda_device, caplog
):
    from plugin_samples import GRID_30, make_run, run_task

    cache_path, task, folder = gm_tile
    bands = {}
    for backend in ("cpu", "auto"):
        run = make_run(folder / backend, GRID_30, "gm-ls", backend=backend)
        with caplog.at_level(logging.INFO, logger="eostats.tile"):
            caplog.clear()
            _, bands[backend] = run_task(run, cache_path, task)
        assert f"task {task}: kernels on cpu" in caplog.text
    assert set(bands["auto"]) == set(bands["cpu"])
    for name, (values, _) in bands["cpu"].items():
        np.testing.assert_array_equal(bands["auto"][name][0], values, err_msg=name)
    assert (bands["cpu"]["count"][0] > 0).any()


def test_tile_runner_with_gpu_and_no_device_fails_before_writing(gm_tile, no_cuda_device):
    from plugin_samples import GRID_30, make_run

    from eostats.tile import run_tile

    cache_path, task, folder = gm_tile
    run = make_run(folder / "gpu", GRID_30, "gm-ls", backend="gpu")
    with pytest.raises(gpu.BackendError, match="no CUDA device is visible"):
        run_tile(run, cache_path, task, threads=1)
    assert not Path(run.product.task_dir(task)).exists()
    assert not list((folder / "gpu").rglob("*.tif"))


# --- the CUDA kernels under the simulator, in a child process -------------------------------------------------


def geomedian_cube() -> np.ndarray:
    """int16 (band 3, time 10, y 5, x 6) reflectance DN with nodata -999 and the awkward pixels named below."""
    rng = np.random.default_rng(8)
    n_band, n_time, ny, nx = 3, 10, 5, 6
    centre = rng.integers(300, 3000, (n_band, 1, ny, nx))
    data = (centre + rng.integers(-400, 400, (n_band, n_time, ny, nx))).astype(np.int16)
    data[rng.random(data.shape) < 0.06] = NODATA  # one band missing drops the observation
    data[:, :, 0, 0] = NODATA  # every observation masked
    data[:, :-1, 0, 1] = NODATA  # a single observation, the last
    data[:, -1, 0, 1] = [812, 1490, 2207]
    # rows 1 and 3: one band missing at time t = pixel number mod 10, so every position is hit
    for pixel in range(2 * nx):
        row, col = (1, pixel) if pixel < nx else (3, pixel - nx)
        data[pixel % n_band, pixel % n_time, row, col] = NODATA
    data[:, :, 2, 0] = np.array([1234, 2345, 345])[:, None]  # all observations identical
    # ties: 5 observations on one point (the estimate lands on it: the Vardi–Zhang step) and 5 others
    data[:, :5, 2, 1] = np.array([1500, 1600, 1700])[:, None]
    data[:, 5:, 2, 1] = np.array(
        [[900, 2100, 1500, 1300, 1800], [1000, 2000, 1650, 1200, 1900], [800] * 5]
    )
    data[:, :2, 2, 2] = [[640, 2210], [930, 1795], [1200, 1420]]
    data[:, 2:, 2, 2] = NODATA  # two observations: even-count medians
    return data


#: one pixel (band 3, time 4) whose start, the mean, is an observation and the geometric median: the unit vectors
#: from (0, 0, 5) to the others, (-1, 0, 0), (1, 1, 0)/√2, (1, -1, 0)/√2, sum to length √2 - 1 < 1. Weiszfeld alone
#: would step off it (the Vardi–Zhang step stays: min(1, 1/r) = 1). Scale 1, offset 0: the mean is exact.
VZ_PIXEL = np.array([[0, -2, 1, 1], [0, 0, 1, -1], [5, 5, 5, 5]], dtype=np.float32).reshape(
    3, 4, 1, 1
)


def percentile_cube() -> np.ndarray:
    """int16 (time 9, y 4, x 5): ties, nodata at every time position, fewer than 3 valid values."""
    rng = np.random.default_rng(3)
    data = rng.integers(-50, 50, (9, 4, 5)).astype(np.int16)
    data[rng.random(data.shape) < 0.2] = NODATA
    for pixel in range(9):
        data[pixel, pixel // 5, pixel % 5] = NODATA
    data[:, 2, 0] = 7  # all tied
    data[:, 2, 1] = [1, 1, 2, 2, 2, 3, NODATA, NODATA, NODATA]
    data[:7, 2, 2] = NODATA  # two valid: nodata out
    data[:6, 2, 3] = NODATA  # three valid: a value
    data[6:, 2, 3] = [5, -3, 9]
    data[:, 3, 4] = NODATA
    return data


CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import xarray as xr
    from eostats.kernels import gpu, gpu_kernels
    from eostats.plugins import resolve_plugin
    from eostats.plugins.tools import nearest_rank_percentiles as plugin_percentiles

    inputs = np.load(sys.argv[1])
    # small blocks: the simulator runs every thread of a block as a Python thread, and several blocks per
    # launch exercise the edge threads that fall outside the array
    gpu_kernels.THREADS_PER_BLOCK = (4, 4)
    out, facts = {}, {}
    facts["simulated"] = gpu.cuda_simulated()
    facts["auto"] = gpu.resolve_backend("auto")
    facts["gpu"] = gpu.resolve_backend("gpu")
    facts["describe"] = gpu.describe("gpu")
    timings = {}
    for name, nodata in (("gm_int16", -999), ("gm_uint16", 0), ("gm_float32", None)):
        r = gpu_kernels.geomedian_mads_gpu(
            inputs[name], nodata=nodata, scale=1e-4, offset=-1e-4, eps=1e-5, timings=timings
        )
        for field in ("median", "emad", "smad", "bcmad", "count"):
            out[f"{name}.{field}"] = getattr(r, field)
    facts["timings"] = sorted(timings)
    vz = gpu_kernels.geomedian_mads_gpu(inputs["gm_vz"], nodata=None, scale=1.0, offset=0.0, eps=1e-5)
    out["gm_vz.median"], out["gm_vz.count"] = vz.median, vz.count
    for name, nodata in (("pc_int16", -999), ("pc_uint8", 255), ("pc_float32", float("nan"))):
        out[name] = gpu_kernels.nearest_rank_percentiles_gpu(inputs[name], [0.1, 0.5, 0.9], nodata=nodata)
    out["pc_bands_axis1"] = gpu_kernels.nearest_rank_percentiles_gpu(
        inputs["pc_bands"], [0.0, 0.25, 1.0], nodata=-999, time_axis=1, min_valid=1
    )

    # the plugins' path: the backend chosen around reduce decides which kernel runs
    calls = []
    real = gpu_kernels.geomedian_mads_gpu
    gpu_kernels.geomedian_mads_gpu = lambda *a, **k: calls.append(1) or real(*a, **k)
    # the GPU runs the per-pixel mean start whatever the config (geomad's warm start is sequential along a row)
    plugin = resolve_plugin("gm-generic", {"bands": ["a", "b", "c"], "start": "mean"})
    cube = inputs["gm_int16"]
    block = xr.Dataset(
        {b: xr.DataArray(cube[i], dims=("time", "y", "x"), attrs={"nodata": -999}) for i, b in enumerate("abc")}
    )
    for backend in ("cpu", "gpu"):
        with gpu.use_backend(backend):
            reduced = plugin.reduce(block)
            pcs = plugin_percentiles(inputs["pc_int16"], [0.1, 0.5, 0.9], -999)
        for var in reduced.data_vars:
            out[f"plugin_{backend}.{var}"] = reduced[var].values
        out[f"tools_{backend}"] = np.stack(pcs)
    facts["plugin_gpu_calls"] = len(calls)
    np.savez(sys.argv[2], **out)
    print(json.dumps(facts))
    """
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Inputs, and what the CUDA code computed from them under the simulator: (inputs, outputs, facts)."""
    folder = tmp_path_factory.mktemp("cudasim")
    cube = geomedian_cube()
    rng = np.random.default_rng(5)
    pcs = percentile_cube()
    as_float = pcs.astype(np.float32)
    as_float[pcs == NODATA] = np.nan
    as_uint8 = np.where(pcs == NODATA, 255, pcs + 60).astype(np.uint8)
    cube_u16 = np.where(cube == NODATA, 0, cube + 1000).astype(np.uint16)
    cube_f32 = np.where(cube == NODATA, np.nan, cube.astype(np.float32)).astype(np.float32)
    bands = rng.integers(0, 9, (2, 6, 3, 4)).astype(np.int16)
    bands[0, :5, 0, 0] = NODATA  # one valid value: min_valid 1 still takes it
    inputs = {
        "gm_int16": cube,
        "gm_uint16": cube_u16,
        "gm_float32": cube_f32,
        "gm_vz": VZ_PIXEL,
        "pc_int16": pcs,
        "pc_uint8": as_uint8,
        "pc_float32": as_float,
        "pc_bands": bands,
    }
    np.savez(folder / "in.npz", **inputs)
    (folder / "child.py").write_text(CHILD)
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, str(folder / "child.py"), str(folder / "in.npz"), str(folder / "out.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(folder / "out.npz") as npz:
        outputs = dict(npz)
    return inputs, outputs, facts


def test_gpu_geomedian_stays_on_an_observation_that_is_the_median(simulated):
    _, outputs, _ = simulated
    assert outputs["gm_vz.count"].tolist() == [[4]]
    assert outputs["gm_vz.median"][:, 0, 0].tolist() == [0.0, 0.0, 5.0]
    cpu = geomedian_mads(VZ_PIXEL, nodata=None, scale=1.0, offset=0.0, eps=EPS)
    assert cpu.median[:, 0, 0].tolist() == [0.0, 0.0, 5.0]


def test_simulator_is_a_device_for_gpu_but_never_for_auto(simulated):
    _, _, facts = simulated
    assert facts["simulated"] is True
    assert facts["gpu"] == "gpu" and facts["auto"] == "cpu"
    assert facts["describe"] == "gpu (CUDA simulator)"
    assert facts["timings"] == ["download", "kernel", "upload"]


def scaled(dn) -> np.ndarray:
    """odc-algo's DN → scaled reflectance in float32."""
    return np.asarray(dn).astype(F32) * F32(SCALE) + F32(OFFSET)


@pytest.mark.parametrize(
    "name, nodata", [("gm_int16", NODATA), ("gm_uint16", 0), ("gm_float32", None)]
)
def test_gpu_geomedian_counts_and_special_pixels(simulated, name, nodata):
    inputs, outputs, _ = simulated
    data = inputs[name]
    gm = {f: outputs[f"{name}.{f}"] for f in ("median", "emad", "smad", "bcmad", "count")}
    missing = np.isnan(data) if nodata is None else data == nodata
    expected_count = (~missing.any(axis=0)).sum(axis=0)
    assert gm["count"].dtype == np.uint16
    np.testing.assert_array_equal(gm["count"], expected_count)
    empty = expected_count == 0
    assert empty[0, 0] and empty.sum() == 1
    for field in ("emad", "smad", "bcmad"):
        assert np.isnan(gm[field][empty]).all() and not np.isnan(gm[field][~empty]).any(), field
    assert np.isnan(gm["median"][:, empty]).all() and not np.isnan(gm["median"][:, ~empty]).any()
    # a single observation, and identical observations: the geomedian is that point exactly, all MADs 0
    for (row, col), t in (((0, 1), -1), ((2, 0), 0)):
        np.testing.assert_array_equal(gm["median"][:, row, col], scaled(data[:, t, row, col]))
        assert gm["emad"][row, col] == 0 and gm["bcmad"][row, col] == 0, (row, col)
        assert gm["smad"][row, col] == pytest.approx(0, abs=1e-12)  # 1 - cos(0), rounded
    # ties: five of ten observations on one point. It is the geometric median (the unit vectors towards the
    # other five sum to less than its multiplicity 5); Weiszfeld slows down next to a data point, so the stopping
    # rule (a step shorter than eps) ends within a DN of it, not within eps
    np.testing.assert_allclose(gm["median"][:, 2, 1], scaled(data[:, 0, 2, 1]), rtol=0, atol=SCALE)
    # two observations: the median is their mean (the start, already optimal); EMAD half their distance in DN
    a, b = scaled(data[:, 0, 2, 2]).astype(float), scaled(data[:, 1, 2, 2]).astype(float)
    np.testing.assert_allclose(gm["median"][:, 2, 2], (a + b) / 2, rtol=0, atol=1e-6)
    assert gm["emad"][2, 2] == pytest.approx(np.linalg.norm(a - b) / 2 / SCALE, rel=1e-5)


@pytest.mark.parametrize(
    "name, nodata", [("gm_int16", NODATA), ("gm_uint16", 0), ("gm_float32", None)]
)
def test_gpu_geomedian_agrees_with_the_cpu_kernel(simulated, name, nodata):
    """Within the CPU kernel's tolerance: the scaled median within eps, DN within 1; count exact."""
    inputs, outputs, _ = simulated
    cpu = geomedian_mads(inputs[name], nodata=nodata, scale=SCALE, offset=OFFSET, eps=EPS)
    gm = {f: outputs[f"{name}.{f}"] for f in ("median", "emad", "smad", "bcmad", "count")}
    np.testing.assert_array_equal(gm["count"], cpu.count)
    np.testing.assert_allclose(gm["median"], cpu.median, rtol=0, atol=EPS, equal_nan=True)
    dtype = {"gm_int16": np.int16, "gm_uint16": np.uint16, "gm_float32": np.int16}[name]
    kwargs = {"scale": SCALE, "offset": OFFSET, "nodata": NODATA, "dtype": dtype}
    dn_gpu = median_to_dn(gm["median"], **kwargs).astype(int)
    dn_cpu = median_to_dn(cpu.median, **kwargs).astype(int)
    assert np.abs(dn_gpu - dn_cpu).max() <= 1
    np.testing.assert_allclose(gm["emad"], cpu.emad, rtol=1e-4, atol=0.05, equal_nan=True)  # DN
    for field in ("smad", "bcmad"):
        np.testing.assert_allclose(
            gm[field], getattr(cpu, field), rtol=1e-4, atol=1e-6, equal_nan=True
        )


def nearest_rank_reference(data, quantiles, nodata, min_valid=3, time_axis=0):
    """odc-algo's rule worked out pixel by pixel: sorted valid values, index round-half-even(q * (n - 1))."""
    moved = np.moveaxis(data, time_axis, -1)
    out = np.empty((*moved.shape[:-1], len(quantiles)), dtype=data.dtype)
    for index in np.ndindex(moved.shape[:-1]):
        series = moved[index]
        valid = ~np.isnan(series) if data.dtype.kind == "f" else series != nodata
        values = sorted(series[valid].tolist())
        for k, q in enumerate(quantiles):
            out[index + (k,)] = (
                values[int(np.round(q * (len(values) - 1)))] if len(values) >= min_valid else nodata
            )
    return np.moveaxis(out, -1, time_axis)


@pytest.mark.parametrize(
    "name, nodata", [("pc_int16", NODATA), ("pc_uint8", 255), ("pc_float32", np.nan)]
)
def test_gpu_percentiles_equal_the_nearest_rank_rule_and_the_cpu_kernel(simulated, name, nodata):
    inputs, outputs, _ = simulated
    data, got = inputs[name], outputs[name]
    expected = nearest_rank_reference(data, QUANTILES, nodata)
    assert got.dtype == data.dtype and got.shape == (3, *data.shape[1:])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, nearest_rank_percentiles(data, QUANTILES, nodata=nodata))
    if name == "pc_int16":
        assert got[:, 2, 0].tolist() == [7, 7, 7]
        # 1 1 2 2 2 3: ranks round(0.5) = 0, round(2.5) = 2 (half to even), round(4.5) = 4
        assert got[:, 2, 1].tolist() == [1, 2, 2]
        assert got[:, 2, 2].tolist() == [NODATA] * 3 and got[:, 3, 4].tolist() == [NODATA] * 3
        assert NODATA not in got[:, 2, 3]


def test_gpu_percentiles_along_another_axis(simulated):
    inputs, outputs, _ = simulated
    got = outputs["pc_bands_axis1"]
    expected = nearest_rank_reference(inputs["pc_bands"], (0.0, 0.25, 1.0), NODATA, 1, time_axis=1)
    assert got.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(got, expected)
    only = int(inputs["pc_bands"][0, 5, 0, 0])
    assert got[0, :, 0, 0].tolist() == [only] * 3


def test_plugins_use_the_backend_of_the_tile(simulated):
    """gm-generic's reduce and the plugins' percentile helper give the same outputs on both backends, and the
    GPU kernel really ran for the gpu one."""
    _, outputs, facts = simulated
    assert facts["plugin_gpu_calls"] == 1
    names = sorted(k.split(".", 1)[1] for k in outputs if k.startswith("plugin_cpu."))
    assert names == ["a", "b", "bcmad", "c", "count", "emad", "smad"]
    for var in ("a", "b", "c", "count"):
        np.testing.assert_array_equal(outputs[f"plugin_gpu.{var}"], outputs[f"plugin_cpu.{var}"])
    for var in ("emad", "smad", "bcmad"):
        np.testing.assert_allclose(
            outputs[f"plugin_gpu.{var}"], outputs[f"plugin_cpu.{var}"], rtol=1e-4, equal_nan=True
        )
    np.testing.assert_array_equal(outputs["tools_gpu"], outputs["tools_cpu"])


# --- the benchmark's GPU rows ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    gpu.gpu_available(), reason="a CUDA device is visible: the GPU rows are measured instead"
)
def test_benchmark_prints_a_no_gpu_row_without_a_device(tmp_path):
    sys.path.insert(0, str(REPO))  # the benchmarks package lives beside eostats
    from benchmarks.kernels import NO_GPU, gpu_percentile_figures
    from benchmarks.report import render_table

    stack = tmp_path / "stack.npy"
    np.save(stack, np.zeros((6, 3, 4, 4), np.int16))
    rows = gpu_percentile_figures(tmp_path, stack, 4, tmp_path / "no-reference.npy", cpu_wall_s=1.0)
    assert [(r.figure, r.ours, r.passed) for r in rows] == [("GPU percentiles", NO_GPU, None)]
    assert "| GPU percentiles | no GPU visible |" in render_table(rows)
    assert not (tmp_path / "pc_gpu_4.npy").exists()
