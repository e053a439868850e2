"""Clear-observation counts summed on a native pixel grid, 64 pixels to a machine word.

A pq-style count is, per pixel, a sum over solar days of 0/1 masks (data present, not erased, not erased after a
morphological cleaning). With nearest resampling every day's masks are gathered from the same native pixels, and
a sum of gathered values is the gathered sum: the counts can be summed on the native grid and reprojected once,
instead of reprojecting four masks per day and summing on the tile. This module does the per-day work there:

* the class band of each observation is classified through a lookup table straight into bit-packed planes
  (:class:`eostats.masking.PackedLayout`); a day's observations are ORed into the same planes (odc-stats' fuse of
  boolean masks),
* the day's erased plane is cleaned by each filter's chain on the packed words
  (:class:`eostats.masking.PackedMorphology`),
* the day's planes are added to uint8 counters 8 pixels per word operation (each byte of a word spread to 8 bytes
  by a table), which go into uint16 totals every 255 days. A word of 64 set pixels (the common case: clear land,
  data everywhere) adds one to a counter of its word instead: one byte written, not a cache line of counters.

Counts are of native pixels of the window the accumulator was made for; the caller reprojects them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numba
import numpy as np

from eostats.masking import (
    ClassLookup,
    PackedLayout,
    PackedMorphology,
    class_slots,
    classify_packed,
    cleanup_depth,
    validate_ops,
)

__all__ = ["ClearCountRecipe", "ClearCounter", "class_table", "gather_counts"]

_VALID, _ERASED = 1, 2  # bits of the class table: planes 0 and 1 of classify_packed
_MAX_UINT8_DAYS = 255


@dataclass(frozen=True)
class ClearCountRecipe:
    """What a clear count needs from its plugin: the class band, which of its codes are nodata and which are
    erased, and the cleaning chains of the filtered counts (``name → [(operation, radius in native pixels)]``).

    The counts are ``total`` (days with data), ``clear`` (data, not erased) and ``clear_<name>`` per chain (data,
    not in the erased mask cleaned by the chain).
    """

    band: str
    nodata_codes: tuple[int, ...]
    erase_codes: tuple[int, ...]
    chains: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return ["total", "clear"] + [f"clear_{name}" for name in self.chains]

    @property
    def depth(self) -> int:
        """Native pixels of context the cleanest filtered count depends on."""
        return max((cleanup_depth(chain) for chain in self.chains.values()), default=0)


def class_table(recipe: ClearCountRecipe, dtype: np.dtype) -> np.ndarray:
    """uint8 lookup table over every value of an 8- or 16-bit integer ``dtype`` (indexed by the value's unsigned
    bit pattern): bit 0 set where the value is data (not a nodata code), bit 1 where it is data and erased."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        raise TypeError(f"class band must be an 8- or 16-bit integer, got {dtype}")
    table = np.full(2 ** (8 * dtype.itemsize), _VALID, dtype=np.uint8)
    table[class_slots(recipe.erase_codes, dtype)] |= _ERASED
    table[class_slots(recipe.nodata_codes, dtype)] = 0
    return table


class ClearCounter:
    """Counts of one native window, accumulated day by day (not thread-safe: one per thread).

    :param recipe: what to count.
    :param shape: ``(ny, nx)`` of the native window (its pixels, in its own CRS).
    :param dtype: dtype of the class band.

    For each solar day call :meth:`add_observation` with each of the day's class arrays, then :meth:`end_day`.
    :meth:`counts` returns the uint16 counts; :func:`gather_counts` sums counters of the same window onto another
    grid.

    The counts are kept in rows of :meth:`row_stride` pixels (the window's width rounded up to whole words).
    """

    @staticmethod
    def row_stride(width: int) -> int:
        """Pixels to a row of the counts of a window ``width`` pixels wide."""
        return PackedLayout(1, int(width), 0).mask_words * 64

    def __init__(self, recipe: ClearCountRecipe, shape: tuple[int, int], dtype: np.dtype) -> None:
        self.recipe = recipe
        self.chains = [validate_ops(chain) for chain in recipe.chains.values()]
        self.layout = PackedLayout(int(shape[0]), int(shape[1]), recipe.depth)
        self.lookup = ClassLookup.of(class_table(recipe, dtype))
        self._unsigned = np.dtype(f"u{np.dtype(dtype).itemsize}")
        # planes 0 and 1 of the class table's bits
        self._planes = np.zeros((2, *self.layout.shape), dtype=np.uint64)
        self._valid, self._erased = self._planes
        self._cleaning = self.layout.zeros()
        self._morphology = PackedMorphology(self.layout.shape)
        self._observed = False
        n = len(recipe.names)
        ny = self.layout.ny
        self._small = np.zeros((n, ny, self.layout.mask_words * 64), dtype=np.uint8)
        # days each word of 64 pixels was set whole, added to its pixels' counts when they are read
        self._whole = np.zeros((n, ny, self.layout.mask_words), dtype=np.uint8)
        self._small_days = 0
        self._totals: np.ndarray | None = None  # after 255 days only

    def add_observation(self, classes: np.ndarray) -> None:
        """One observation of the current day: its class band on the window, ``(ny, nx)``."""
        if classes.shape != (self.layout.ny, self.layout.nx):
            raise ValueError(
                f"observation of shape {classes.shape} on a counter of {self.layout.ny, self.layout.nx}"
            )
        values = np.ascontiguousarray(classes).view(self._unsigned)
        lay = self.layout
        classify_packed(values, self.lookup, self._planes, lay.row0, lay.word0)
        self._observed = True

    def end_day(self) -> None:
        """Clean the day's erased mask by each chain and add the day to the counts (a day with no observation
        adds nothing)."""
        if not self._observed:
            return
        lay = self.layout
        window = (lay.row0, lay.word0)
        small = self._small.view(np.uint64)
        whole = self._whole
        _add_bits(self._valid, None, small[0], whole[0], *window)
        _add_bits(self._valid, self._erased, small[1], whole[1], *window)
        # a day with nothing erased stays so under every chain (each operation keeps an empty plane empty)
        anything_erased = bool(self._erased.any())
        for k, chain in enumerate(self.chains):
            cleaned = self._erased
            if chain and anything_erased:
                np.copyto(self._cleaning, self._erased)
                cleaned = self._morphology.cleanup(self._cleaning, chain)
            _add_bits(self._valid, cleaned, small[2 + k], whole[2 + k], *window)
        self._planes[...] = 0
        self._observed = False
        self._small_days += 1
        if self._small_days == _MAX_UINT8_DAYS:
            self._flush()

    def _flush(self) -> None:
        if self._totals is None:
            self._totals = np.zeros(self._small.shape, dtype=np.uint16)
        self._totals += self._small_counts()
        self._small[...] = 0
        self._whole[...] = 0
        self._small_days = 0

    def _small_counts(self) -> np.ndarray:
        """The counts since the last flush, uint8 ``(count, ny, row_stride)``."""
        return self._small + np.repeat(self._whole, 64, axis=-1)

    def stacked(self) -> np.ndarray:
        """Every count, uint16 ``(count, ny, nx)``, in the order of :attr:`ClearCountRecipe.names`."""
        nx = self.layout.nx
        small = self._small_counts()[:, :, :nx]
        return small.astype(np.uint16) if self._totals is None else self._totals[:, :, :nx] + small

    def counts(self) -> dict[str, np.ndarray]:
        """``{name: uint16 (ny, nx)}`` for :attr:`ClearCountRecipe.names`, in that order."""
        stack = self.stacked()
        return {name: stack[k] for k, name in enumerate(self.recipe.names)}


def gather_counts(
    counters: Sequence[ClearCounter],
    index: np.ndarray,
    pool: Executor | None = None,
    parts: int = 1,
) -> np.ndarray:
    """The sum of ``counters``' counts (one recipe and window) on another grid: uint16 ``(count, ny, nx)``, pixel
    ``(y, x)`` the counts at the flat index ``index[y, x]`` (int32 or int64, in rows of :meth:`ClearCounter.row_stride`
    pixels; -1 gives 0), e.g. :func:`eostats.kernels.warp.nearest_index`. One pass over the grid for all the
    counters (another for any that went past 255 days), without summing them on their own grid first; in
    ``parts`` runs of pixels when given a ``pool``: the first in this thread, the others on the pool's."""
    if not counters:
        raise ValueError("no counters to gather")
    n = len(counters[0].recipe.names)
    if index.dtype not in (np.int32, np.int64):
        raise TypeError(f"flat indices must be int32 or int64, got {index.dtype}")
    flat = np.ascontiguousarray(index).ravel()
    out = np.empty((n, flat.size), dtype=np.uint16)
    smalls = tuple(_flat(c._small) for c in counters)
    wholes = tuple(_flat(c._whole) for c in counters)
    totals = [_flat(c._totals) for c in counters if c._totals is not None]

    def gather(start: int, stop: int) -> None:
        run = flat[start:stop]
        for k in range(n):
            into = out[k, start:stop]
            # two counters per pass (a kernel per pair is 2x faster than one looping over a tuple of them)
            for m in range(0, len(counters), 2):
                both = m + 1 < len(counters)
                second = m + 1 if both else m
                _gather_pair(
                    smalls[m][k],
                    wholes[m][k],
                    smalls[second][k],
                    wholes[second][k],
                    both,
                    m > 0,
                    run,
                    into,
                )
        for total in totals:
            _gather_add(total, run, out[:, start:stop])

    n_runs = max(1, int(parts)) if pool is not None else 1
    runs = list(itertools.pairwise(np.linspace(0, flat.size, n_runs + 1).astype(int).tolist()))
    # the first run in this thread, the others on the pool's
    others = [pool.submit(gather, *run) for run in runs[1:]]
    gather(*runs[0])
    for job in others:
        job.result()
    return out.reshape(n, *index.shape)


def _flat(counts: np.ndarray) -> np.ndarray:
    """``(count, rows, row_stride)`` as ``(count, rows x row_stride)``."""
    return counts.reshape(counts.shape[0], -1)


@numba.njit(cache=True, nogil=True)
def _gather_pair(first, first_whole, second, second_whole, both, add, index, out):
    """out (n,) = (or += when ``add``) the counts of ``first`` (m,) and, when ``both``, of ``second`` at ``index``
    (n,), each with its whole-word counts (m / 64,); 0 at -1."""
    for i in range(index.size):
        c = index[i]
        value = 0
        if c >= 0:
            value = first[c] + first_whole[c >> 6]
            if both:
                value += second[c] + second_whole[c >> 6]
        if add:
            out[i] += value
        else:
            out[i] = value


@numba.njit(cache=True, nogil=True)
def _gather_add(src, index, out):
    """out (k, n) += src (k, m) at ``index`` (n,), skipping -1."""
    n_planes = src.shape[0]
    for i in range(index.size):
        c = index[i]
        if c >= 0:
            for k in range(n_planes):
                out[k, i] += src[k, c]


def _spread_table() -> np.ndarray:
    """uint64 per byte value: byte ``j`` of the word is bit ``j`` of the value (8 pixels → 8 counters)."""
    values = np.arange(256, dtype=np.uint64)
    table = np.zeros(256, dtype=np.uint64)
    for j in range(8):
        table |= ((values >> np.uint64(j)) & np.uint64(1)) << np.uint64(8 * j)
    return table


_SPREAD = _spread_table()


@numba.njit(cache=True, nogil=True)
def _add_bits_kernel(plane, minus, use_minus, counters, whole, row0, word0, spread):
    ny, n_words = whole.shape
    every = ~np.uint64(0)
    for y in range(ny):
        src = plane[row0 + y, word0:]
        sub = minus[row0 + y, word0:] if use_minus else src
        out = counters[y]
        whole_row = whole[y]
        for i in range(n_words):
            w = src[i] & ~sub[i] if use_minus else src[i]
            if w == 0:
                continue
            if w == every:
                whole_row[i] += 1
                continue
            for b in range(8):
                out[8 * i + b] += spread[(w >> np.uint64(8 * b)) & np.uint64(255)]


def _add_bits(
    plane: np.ndarray,
    minus: np.ndarray | None,
    counters: np.ndarray,
    whole: np.ndarray,
    row0: int,
    word0: int,
) -> None:
    """``counters`` (uint8 per pixel, viewed as uint64 ``(ny, 8 words)``) += the mask's bits of ``plane`` (and not
    of ``minus``); a word with all 64 bits set adds one to ``whole`` (uint8 per word, ``(ny, words)``) instead."""
    use_minus = minus is not None
    _add_bits_kernel(
        plane, minus if use_minus else plane, use_minus, counters, whole, row0, word0, _SPREAD
    )
