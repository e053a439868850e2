"""Which hardware the geomedian and percentile kernels run on: the ``backend`` setting (``cpu``, ``gpu``, ``auto``).

The statistics plugins call :func:`geomedian_mads` and :func:`nearest_rank_percentiles` from here; they run the
numba CPU kernels (:mod:`eostats.kernels.geomedian`, :mod:`eostats.kernels.percentile`) or their CUDA twins
(:mod:`eostats.kernels.gpu_kernels`), whichever backend is active. The tile runner makes a backend active for a
tile with :func:`use_backend`, which resolves the configured name once:

* ``cpu``: the CPU kernels (the default: results do not depend on which node ran a tile);
* ``gpu``: the CUDA kernels; a node without a visible CUDA device stops the tile with :class:`BackendError`;
* ``auto``: the CUDA kernels when a device is visible, the CPU kernels otherwise.

Both backends implement the same semantics (masking, stopping rule, float32 DN scaling, medians); see
:mod:`eostats.kernels.gpu_kernels` for what can differ (float64 rounding, within the CPU kernel's own tolerance).

This module imports ``numba.cuda`` only when a GPU is asked for, so CPU-only installs never load it. numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported) counts as a device for ``backend: gpu`` only:
that is how the CUDA code path is tested without a GPU; ``auto`` never picks the simulator.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from eostats.kernels import geomedian as cpu_geomedian
from eostats.kernels import percentile as cpu_percentile

__all__ = [
    "BACKENDS",
    "BackendError",
    "active_backend",
    "cuda_simulated",
    "device_description",
    "geomedian_mads",
    "gpu_available",
    "nearest_rank_percentiles",
    "resolve_backend",
    "use_backend",
]

log = logging.getLogger("eostats.kernels.gpu")

BACKENDS = ("cpu", "gpu", "auto")
NO_DEVICE_MESSAGE = "backend: gpu requested but no CUDA device is visible; use backend: cpu or auto"

# the backend of the reductions running in this thread (the tile runner reduces in its main thread)
_ACTIVE: contextvars.ContextVar[str] = contextvars.ContextVar(
    "eostats_kernel_backend", default="cpu"
)


class BackendError(RuntimeError):
    """The configured backend cannot run here; the message is one line naming ``backend``."""


def cuda_simulated() -> bool:
    """True when numba runs CUDA kernels in its Python simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def gpu_available(*, allow_simulator: bool = False) -> bool:
    """A CUDA device is visible to numba (a driver, and at least one device). The simulator counts only with
    ``allow_simulator``. Never raises: a missing driver or CUDA library is "no device"."""
    if cuda_simulated():
        return allow_simulator
    try:
        from numba import cuda

        return bool(cuda.is_available()) and len(cuda.gpus) > 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means no usable device, whatever it raises
        return False


def device_description() -> str:
    """The device the GPU backend would use, in words (``"NVIDIA H100 80GB HBM3"``, ``"CUDA simulator"``)."""
    if cuda_simulated():
        return "CUDA simulator"
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def resolve_backend(requested: str | None) -> str:
    """``cpu``, ``gpu`` or ``auto`` (None = ``cpu``) → the backend to use here, ``"cpu"`` or ``"gpu"``.

    :raises BackendError: ``gpu`` without a visible CUDA device, or an unknown name.
    """
    name = "cpu" if requested is None else str(requested).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"backend: unknown value {requested!r}; allowed: {', '.join(BACKENDS)}")
    if name == "cpu":
        return "cpu"
    if name == "gpu":
        if not gpu_available(allow_simulator=True):
            raise BackendError(NO_DEVICE_MESSAGE)
        return "gpu"
    return "gpu" if gpu_available() else "cpu"


def active_backend() -> str:
    """The backend the kernels of this module run on in the current thread (``"cpu"`` unless
    :func:`use_backend` says otherwise)."""
    return _ACTIVE.get()


@contextmanager
def use_backend(requested: str | None) -> Iterator[str]:
    """Run the kernels called inside the ``with`` block on ``requested`` (resolved by :func:`resolve_backend`);
    yields the resolved backend, ``"cpu"`` or ``"gpu"``."""
    resolved = resolve_backend(requested)
    token = _ACTIVE.set(resolved)
    try:
        yield resolved
    finally:
        _ACTIVE.reset(token)


def describe(resolved: str) -> str:
    """The log wording of a resolved backend: ``"cpu"`` or ``"gpu (NVIDIA H100 ...)"``."""
    return f"gpu ({device_description()})" if resolved == "gpu" else "cpu"


def geomedian_mads(data: np.ndarray, **kwargs: Any) -> cpu_geomedian.GeomedianResult:
    """:func:`eostats.kernels.geomedian.geomedian_mads` on the active backend (same arguments, same result).

    ``start="geomad"`` (geomad's own float32 iteration, bit-exact with odc-algo) exists on the CPU only and
    always runs there.
    """
    if _ACTIVE.get() == "gpu" and kwargs.get("start", "mean") == "mean":
        from eostats.kernels.gpu_kernels import geomedian_mads_gpu

        kwargs.pop("start", None)
        kwargs.pop("block_width", None)
        return geomedian_mads_gpu(data, **kwargs)
    return cpu_geomedian.geomedian_mads(data, **kwargs)


def nearest_rank_percentiles(
    data: np.ndarray,
    quantiles: Sequence[float],
    *,
    nodata: float | int,
    time_axis: int = 0,
    min_valid: int = cpu_percentile.MIN_VALID,
) -> np.ndarray:
    """:func:`eostats.kernels.percentile.nearest_rank_percentiles` on the active backend (same arguments and
    result; values are picked, never computed, so both backends agree exactly)."""
    if _ACTIVE.get() == "gpu":
        from eostats.kernels.gpu_kernels import nearest_rank_percentiles_gpu

        return nearest_rank_percentiles_gpu(
            data, quantiles, nodata=nodata, time_axis=time_axis, min_valid=min_valid
        )
    return cpu_percentile.nearest_rank_percentiles(
        data, quantiles, nodata=nodata, time_axis=time_axis, min_valid=min_valid
    )
