"""Bad pixels of an enumerated class band (fmask, SCL) worked out on bit-packed planes, and erased in place.

:class:`eostats.plugins.tools.ClassMask` defines bad = class in the nodata codes ∪ (contiguity = 0) ∪ ⋃ over its
cloud filters of cleanup(class in the filter's codes, the filter's chain). On a tile block's decoded observations
the xarray version makes a boolean array per term and per morphological step and then a filled copy per band;
here each observation's class band is looked up once into bit-packed planes (one for the unbuffered terms, one
per filter with a chain), each filter plane is cleaned by :class:`eostats.masking.PackedMorphology`, the planes
are ORed, and the bands' pixels under set bits are overwritten with their nodata. Same result, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from eostats.masking import (
    _EDT_MIN_RADIUS,
    ClassLookup,
    PackedLayout,
    PackedMorphology,
    class_slots,
    classify_packed,
    cleanup_depth,
    validate_ops,
)

__all__ = ["PackedClassMask"]

_MAX_PLANES = 8  # one bit of the lookup table per plane


class PackedClassMask:
    """A class mask's recipe, ready for :meth:`erase` on ``(time, y, x)`` stacks of one window shape.

    :param nodata_codes: classes that are no data.
    :param filters: ``(codes, chain)`` per cloud filter: the codes' pixels, cleaned by ``chain`` (validated
        ``(operation, radius)`` pairs, radii in native pixels; an empty chain leaves them as they are).
    :param dtype: the class band's dtype (8- or 16-bit integer).
    :param shape: ``(ny, nx)`` of the window.
    """

    def __init__(
        self,
        nodata_codes: Sequence[int],
        filters: Sequence[tuple[Sequence[int], Sequence[tuple[str, float]]]],
        dtype: np.dtype,
        shape: tuple[int, int],
    ) -> None:
        dtype = np.dtype(dtype)
        self.chains = [validate_ops(chain) for _, chain in filters if chain]
        depth = max((cleanup_depth(chain) for chain in self.chains), default=0)
        self.layout = PackedLayout(int(shape[0]), int(shape[1]), depth)
        self._unsigned = np.dtype(f"u{dtype.itemsize}")
        table = np.zeros(2 ** (8 * dtype.itemsize), dtype=np.uint8)
        table[class_slots(nodata_codes, dtype)] |= 1
        plane = 1
        for codes, chain in filters:
            # unbuffered filters are plain bad classes; each chained one gets its own plane
            table[class_slots(codes, dtype)] |= 1 << plane if chain else 1
            plane += 1 if chain else 0
        self.lookup = ClassLookup.of(table)
        self.planes = np.zeros((plane, *self.layout.shape), dtype=np.uint64)
        self._morphology = PackedMorphology(self.layout.shape)

    @staticmethod
    def supports(
        filters: Sequence[tuple[Sequence[int], Sequence[tuple[str, float]]]],
        dtype: np.dtype,
        contiguity_dtype: np.dtype | None = None,
    ) -> bool:
        """Whether these filters, this class dtype and this contiguity dtype (None: no contiguity band) can be
        worked on packed planes (8/16-bit classes and contiguity, at most seven chained filters, radii the packed
        morphology takes)."""
        dtype = np.dtype(dtype)
        chained = [chain for _, chain in filters if chain]
        contiguity = np.dtype(contiguity_dtype) if contiguity_dtype is not None else None
        return (
            dtype.kind in "iu"
            and dtype.itemsize <= 2
            and (contiguity is None or (contiguity.kind in "iub" and contiguity.itemsize <= 2))
            and len(chained) < _MAX_PLANES
            and all(radius < _EDT_MIN_RADIUS for chain in chained for _, radius in chain)
        )

    def erase(
        self,
        classes: np.ndarray,
        contiguity: np.ndarray | None,
        bands: Sequence[tuple[np.ndarray, object]],
    ) -> None:
        """For each observation ``t`` of ``classes`` (``(time, y, x)``): every ``(values, nodata)`` of ``bands``
        (C-contiguous ``(time, y, x)`` arrays, overwritten) gets ``nodata`` where the observation is bad.
        ``contiguity``: the contiguity band (bad where 0), or None."""
        self.erase_bad(self.bad(classes, contiguity), bands)

    def bad(self, classes: np.ndarray, contiguity: np.ndarray | None) -> np.ndarray:
        """The bad pixels of every observation of ``classes`` (``(time, y, x)``) as bit-packed planes: uint64
        ``(time, *layout.shape)``, pixel ``(y, x)`` at :attr:`layout`'s place. ``contiguity`` as in :meth:`erase`."""
        lay = self.layout
        if classes.shape[1:] != (lay.ny, lay.nx):
            raise ValueError(f"classes of shape {classes.shape} for a {lay.ny, lay.nx} window")
        if contiguity is not None:
            # bad where 0: looked up like the classes, by the unsigned bit pattern (bool as uint8)
            contiguity = contiguity.view(f"u{contiguity.dtype.itemsize}")
            zero_table = np.zeros(2 ** (8 * contiguity.dtype.itemsize), dtype=np.uint8)
            zero_table[0] = 1
            zero = ClassLookup.of(zero_table)
        out = np.empty((classes.shape[0], *lay.shape), dtype=np.uint64)
        for t in range(classes.shape[0]):
            self.planes[...] = 0
            values = np.ascontiguousarray(classes[t]).view(self._unsigned)
            classify_packed(values, self.lookup, self.planes, lay.row0, lay.word0)
            if contiguity is not None:
                flags = np.ascontiguousarray(contiguity[t])
                classify_packed(flags, zero, self.planes[:1], lay.row0, lay.word0)
            bad = out[t]
            bad[...] = self.planes[0]
            for k, chain in enumerate(self.chains, start=1):
                np.bitwise_or(bad, self._morphology.cleanup(self.planes[k], chain), out=bad)
        return out

    def erase_bad(self, bad: np.ndarray, bands: Sequence[tuple[np.ndarray, object]]) -> None:
        """:meth:`erase` with the planes of :meth:`bad` worked out already."""
        lay = self.layout
        for t in range(bad.shape[0]):
            for values_t, nodata in ((v[t], nodata) for v, nodata in bands):
                _erase_bits(values_t, bad[t], lay.row0, lay.word0, values_t.dtype.type(nodata))

    def any_kept(self, bad_t: np.ndarray, ys: slice, xs: slice) -> bool:
        """Whether any pixel of the window ``[ys, xs]`` (bounded slices of the layout's ``(ny, nx)``) is not set in
        ``bad_t``, one observation's plane of :meth:`bad`."""
        lay = self.layout
        return _any_clear(
            bad_t, lay.row0 + ys.start, lay.row0 + ys.stop, xs.start, xs.stop, lay.word0
        )


@numba.njit(cache=True, nogil=True)
def _erase_bits(values, plane, row0, word0, fill):
    """``values`` (``(ny, nx)``) = ``fill`` where the plane's bit is set (bits beyond ``nx`` ignored)."""
    ny, nx = values.shape
    n_words = (nx + 63) // 64
    full = ~np.uint64(0)
    for y in range(ny):
        words = plane[row0 + y]
        row = values[y]
        for i in range(n_words):
            word = words[word0 + i]
            if word == 0:
                continue
            x0 = 64 * i
            x1 = min(x0 + 64, nx)
            if word == full:
                row[x0:x1] = fill
                continue
            for x in range(x0, x1):
                if (word >> np.uint64(x - x0)) & np.uint64(1):
                    row[x] = fill


@numba.njit(cache=True, nogil=True)
def _any_clear(plane, row_start, row_stop, x0, x1, word0):
    """Whether a bit of columns ``[x0, x1)`` of plane rows ``[row_start, row_stop)`` is clear."""
    if x1 <= x0 or row_stop <= row_start:
        return False
    first, last = x0 // 64, (x1 - 1) // 64
    full = ~np.uint64(0)
    for r in range(row_start, row_stop):
        words = plane[r]
        for i in range(first, last + 1):
            lo = x0 - 64 * i if i == first else 0
            hi = x1 - 64 * i if i == last else 64
            wanted = (
                full
                if hi - lo == 64
                else ((np.uint64(1) << np.uint64(hi - lo)) - np.uint64(1)) << np.uint64(lo)
            )
            if (~words[word0 + i]) & wanted:
                return True
    return False
