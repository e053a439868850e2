"""One band of a GeoTIFF for the reading threads: opened once per thread, windows decoded into given arrays.

A tile job opens every scene file of its task once (40 files for a pq tile of 40 observations). Through rasterio
an open costs ~0.7 ms of CPU, most of it holding the GIL (Python objects, the file's CRS identified through
PROJ): ~25 times GDAL's own open of a COG (~0.03 ms measured here), and a quarter of the time it then takes to
decode the tile's window of a fmask band. Local files are therefore opened and read through GDAL's C API with
ctypes (which releases the GIL for each call), in the libgdal rasterio itself is linked against: the same GDAL
build, block cache, configuration options and error handler. Files behind a URL (S3, HTTP) are opened with
rasterio, which sets up their credentials; so is every file where that library cannot be reached
(:func:`direct_gdal_available`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import struct
import threading
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

_GDAL_OF_RASTER = 0x02
_GDAL_OF_VERBOSE_ERROR = 0x40  # a failed open reports why (CPLGetLastErrorMsg)
_GF_READ = 0
_CE_WARNING = 2
_CE_FAILURE = 3

log = logging.getLogger(__name__)

#: GDAL data type names (GDALGetDataTypeName) as numpy dtypes; complex types are not read
_NUMPY_DTYPES = {
    "Byte": "uint8",
    "Int8": "int8",
    "UInt16": "uint16",
    "Int16": "int16",
    "UInt32": "uint32",
    "Int32": "int32",
    "UInt64": "uint64",
    "Int64": "int64",
    "Float16": "float16",
    "Float32": "float32",
    "Float64": "float64",
}


class RasterFileError(Exception):
    """A file GDAL cannot open or read; the message is GDAL's own."""


class RasterFile(Protocol):
    """Band 1 of an open raster file: its grid (``transform`` of the file's CRS, ``crs_wkt``), pixel type and
    nodata, and :meth:`read` of a window into an array. One thread uses it at a time."""

    href: str
    driver: str
    width: int
    height: int
    transform: Affine
    dtype: np.dtype
    nodata: float | None
    block_shape: tuple[int, int]

    @property
    def crs_wkt(self) -> str:
        """The file's CRS as GDAL reads it, WKT ("" where it has none)."""

    @property
    def geokeys_epsg(self) -> int | None:
        """The EPSG code the file's GeoTIFF keys name (:func:`geokeys_epsg`), None where not known that way."""

    def read(self, rows: slice, cols: slice, out: np.ndarray) -> np.ndarray: ...

    def rasterio_band(self) -> Any: ...

    def close(self) -> None: ...


def open_raster(href: str) -> RasterFile:
    """Band 1 of the file at ``href``: through GDAL's C API for a local path, through rasterio for a URL (or where
    GDAL's library cannot be reached). Raises :class:`RasterFileError` with GDAL's message."""
    if "://" not in href and direct_gdal_available():
        return GdalRasterFile(href)
    return RasterioRasterFile(href)


# ------------------------------------------------------------------------------------------------------------------
# GDAL's C API


_ErrorHandler = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)


@_ErrorHandler
def _log_gdal_message(level: int, number: int, message: bytes | None) -> None:
    """GDAL's warnings to this module's log (as rasterio logs them); failures are raised with their message, and
    GDAL's default handler would print both to stderr."""
    if level == _CE_WARNING:
        log.warning("GDAL: %s", (message or b"").decode("utf-8", "replace"))


class _Gdal:
    """The GDAL functions this module calls, typed, from the libgdal rasterio's extension modules load."""

    def __init__(self, library: ctypes.CDLL) -> None:
        p, i, d, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
        pint = ctypes.POINTER(ctypes.c_int)

        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(library, name)
            f.restype, f.argtypes = restype, list(argtypes)
            return f

        self.version = fn("GDALVersionInfo", s, s)
        self.open = fn("GDALOpenEx", p, s, ctypes.c_uint, p, p, p)
        self.close = fn("GDALClose", i, p)
        self.driver = fn("GDALGetDatasetDriver", p, p)
        self.driver_name = fn("GDALGetDriverShortName", s, p)
        self.x_size = fn("GDALGetRasterXSize", i, p)
        self.y_size = fn("GDALGetRasterYSize", i, p)
        self.band_count = fn("GDALGetRasterCount", i, p)
        self.band = fn("GDALGetRasterBand", p, p, i)
        self.projection = fn("GDALGetProjectionRef", s, p)
        self.geo_transform = fn("GDALGetGeoTransform", i, p, ctypes.POINTER(d))
        self.data_type = fn("GDALGetRasterDataType", i, p)
        self.type_name = fn("GDALGetDataTypeName", s, i)
        self.block_size = fn("GDALGetBlockSize", None, p, pint, pint)
        self.nodata = fn("GDALGetRasterNoDataValue", d, p, pint)
        self.raster_io = fn(
            "GDALRasterIOEx",
            i,
            p,  # band
            i,  # GF_Read
            i,  # x offset
            i,  # y offset
            i,  # x size
            i,  # y size
            p,  # buffer
            i,  # buffer x size
            i,  # buffer y size
            i,  # buffer data type
            ctypes.c_int64,  # pixel spacing, bytes
            ctypes.c_int64,  # line spacing, bytes
            p,  # extra arguments (none: nearest, no progress)
        )
        self.metadata_item = fn("GDALGetMetadataItem", s, p, s, s)
        # zlib streams, with libdeflate where GDAL is built with it (rasterio's wheels are)
        self.inflate = fn(
            "CPLZLibInflate",
            p,
            p,
            ctypes.c_size_t,
            p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        )
        self.error_reset = fn("CPLErrorReset", None)
        self.last_error = fn("CPLGetLastErrorMsg", s)
        self.push_handler = fn("CPLPushErrorHandler", None, _ErrorHandler)
        self.pop_handler = fn("CPLPopErrorHandler", None)
        fn("GDALAllRegister", None)()  # what rasterio does when its first environment starts

    def begin(self) -> None:
        """Before a call: this thread's GDAL messages go to :func:`_log_gdal_message`, the last error cleared."""
        self.push_handler(_log_gdal_message)
        self.error_reset()

    def end(self) -> None:
        self.pop_handler()

    def error(self, fallback: str) -> RasterFileError:
        """This thread's last GDAL error (which names the file), or ``fallback`` where GDAL gave no message."""
        message = (self.last_error() or b"").decode("utf-8", "replace").strip()
        return RasterFileError(message or fallback)


@functools.cache
def _gdal() -> _Gdal | None:
    """GDAL's C API from the library rasterio's ``_base`` extension is linked against (dlsym searches a library's
    dependencies), or None where that is not possible (a platform whose loader does not, a stripped build)."""
    import rasterio._base

    try:
        gdal = _Gdal(ctypes.CDLL(rasterio._base.__file__))
    except (OSError, AttributeError):
        return None
    # the same library rasterio uses, not another GDAL on the system
    if gdal.version(b"RELEASE_NAME").decode() != rasterio.__gdal_version__:
        return None
    return gdal


def direct_gdal_available() -> bool:
    """Whether local files are read through GDAL's C API (else through rasterio)."""
    return _gdal() is not None


_thread_buffers = threading.local()


def _block_buffer(nbytes: int) -> np.ndarray:
    """This thread's scratch block of at least ``nbytes`` (one per thread, not per open file: a gm-ls tile keeps
    hundreds of files open)."""
    buffer = getattr(_thread_buffers, "block", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = _thread_buffers.block = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes]


class GdalRasterFile:
    """Band 1 of a local raster file, through GDAL's C API (see the module docstring)."""

    def __init__(self, href: str) -> None:
        gdal = _gdal()
        if gdal is None:
            raise RasterFileError("GDAL's C API is not reachable through rasterio here")
        self._gdal = gdal
        self.href = href
        self._rasterio: Any = None
        gdal.begin()
        try:
            self._handle = gdal.open(
                os.fsencode(href), _GDAL_OF_RASTER | _GDAL_OF_VERBOSE_ERROR, None, None, None
            )
            if not self._handle:
                raise gdal.error(f"{href}: GDAL cannot open it")
        finally:
            gdal.end()
        try:
            if gdal.band_count(self._handle) < 1:
                raise RasterFileError(f"{href}: the file has no raster band")
            self.driver = gdal.driver_name(gdal.driver(self._handle)).decode()
            self.width = gdal.x_size(self._handle)
            self.height = gdal.y_size(self._handle)
            # GDAL's default (0, 1, 0, 0, 0, 1) where the file has none
            geo = (ctypes.c_double * 6)(0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
            gdal.geo_transform(self._handle, geo)
            self.transform = Affine.from_gdal(*geo)
            self._band = gdal.band(self._handle, 1)
            self._data_type = gdal.data_type(self._band)
            name = (gdal.type_name(self._data_type) or b"").decode()
            if name not in _NUMPY_DTYPES:
                raise RasterFileError(f"{href}: unsupported pixel type {name or self._data_type}")
            self.dtype = np.dtype(_NUMPY_DTYPES[name])
            self.nodata = self._read_nodata()
            bw, bh = ctypes.c_int(), ctypes.c_int()
            gdal.block_size(self._band, ctypes.byref(bw), ctypes.byref(bh))
            self.block_shape = (bh.value, bw.value)
        except BaseException:
            self.close()
            raise

    @functools.cached_property
    def crs_wkt(self) -> str:
        # GDAL builds the CRS from the GeoKeys through PROJ on first asking: ~0.5 ms per file, 7-16 ms on a
        # thread's first file (its PROJ context and database)
        gdal = self._gdal
        gdal.begin()
        try:
            return (gdal.projection(self._handle) or b"").decode()
        finally:
            gdal.end()

    @functools.cached_property
    def geokeys_epsg(self) -> int | None:
        return geokeys_epsg(self.href)

    def _read_nodata(self) -> float | None:
        # as a double for every pixel type, as rasterio reads it
        found = ctypes.c_int()
        value = self._gdal.nodata(self._band, ctypes.byref(found))
        return value if found.value else None

    def read(self, rows: slice, cols: slice, out: np.ndarray) -> np.ndarray:
        """Decode file pixels ``[rows, cols]`` (inside the file) into ``out`` (that shape, the file's dtype; rows
        may be strided, pixels adjacent)."""
        r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
        if not (0 <= r0 < r1 <= self.height and 0 <= c0 < c1 <= self.width):
            raise ValueError(f"window rows {r0}:{r1}, columns {c0}:{c1} outside {self.href}")
        if out.shape != (r1 - r0, c1 - c0) or out.dtype != self.dtype:
            raise ValueError(
                f"out is {out.dtype}{out.shape}, not {self.dtype}({r1 - r0}, {c1 - c0})"
            )
        if out.strides[1] != out.itemsize:
            raise ValueError("out's pixels must be adjacent in memory")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        edge = self._edge_row
        if edge is None or r1 <= edge:
            return self._raster_io(r0, r1, c0, c1, out)
        if r0 < edge:
            self._raster_io(r0, edge, c0, c1, out[: edge - r0])
        self._read_edge_blocks(max(r0, edge), r1, c0, c1, out[max(r0, edge) - r0 :])
        return out

    def _raster_io(self, r0: int, r1: int, c0: int, c1: int, out: np.ndarray) -> np.ndarray:
        gdal = self._gdal
        gdal.begin()
        try:
            status = gdal.raster_io(
                self._band,
                _GF_READ,
                c0,
                r0,
                c1 - c0,
                r1 - r0,
                out.ctypes.data,
                c1 - c0,
                r1 - r0,
                self._data_type,
                out.itemsize,
                out.strides[0],
                None,
            )
            if status >= _CE_FAILURE:
                raise gdal.error(f"{self.href}: GDAL cannot read rows {r0}:{r1}, columns {c0}:{c1}")
        finally:
            gdal.end()
        return out

    # -- the last, partial row of blocks ------------------------------------------------------------------------
    # GDAL asks libtiff for only the rows inside the raster of a block of the last block row (a partial block may be
    # encoded short, GDAL ticket 1179), and libtiff then inflates it with zlib's streaming decoder instead of
    # libdeflate, which it uses for whole blocks only: 0.36 ms for such a 512² uint8 block against 0.10 for a whole
    # one (measured here; a pq tile of the benchmark has 120 of its 480 blocks there). Those blocks of a DEFLATE
    # file without predictor are inflated here whole, through GDAL's own zlib inflate (libdeflate), from the bytes
    # GDAL locates (its TIFF metadata); any other case, and any block that does not inflate to the rows needed,
    # is read by GDAL.

    @functools.cached_property
    def _edge_row(self) -> int | None:
        """First file row of the partial last row of blocks when those blocks are inflated here, else None."""
        bh = self.block_shape[0]
        if self.height % bh == 0:
            return None
        gdal = self._gdal

        def item(handle: Any, name: str, domain: bytes = b"IMAGE_STRUCTURE") -> str | None:
            value = gdal.metadata_item(handle, name.encode(), domain)
            return value.decode() if value is not None else None

        plain_deflate = (
            item(self._handle, "COMPRESSION") == "DEFLATE"
            and item(self._handle, "PREDICTOR") in (None, "1")
            and item(self._band, "NBITS") is None
            and (gdal.band_count(self._handle) == 1 or item(self._handle, "INTERLEAVE") == "BAND")
            and item(self._band, "BLOCK_OFFSET_0_0", b"TIFF") is not None
        )
        return self.height // bh * bh if plain_deflate else None

    def _read_edge_blocks(self, r0: int, r1: int, c0: int, c1: int, out: np.ndarray) -> None:
        """Rows ``r0:r1`` (all in the last row of blocks), columns ``c0:c1``, into ``out``."""
        bh, bw = self.block_shape
        block_row = r0 // bh
        top = block_row * bh
        # opened for the call only: a gm-ls tile's threads keep hundreds of files open in GDAL already
        try:
            fd = os.open(self.href, os.O_RDONLY)
        except OSError:  # a GDAL virtual path (/vsizip/...): GDAL reads it
            self._raster_io(r0, r1, c0, c1, out)
            return
        try:
            order = {b"II": "<", b"MM": ">"}.get(os.pread(fd, 2, 0))  # the TIFF's byte order
            for block_col in range(c0 // bw, (c1 - 1) // bw + 1):
                xa, xb = max(c0, block_col * bw), min(c1, (block_col + 1) * bw)
                pixels = (
                    self._inflated_block(fd, order, block_row, block_col, r1 - top)
                    if order
                    else None
                )
                if pixels is None:
                    self._raster_io(r0, r1, xa, xb, out[:, xa - c0 : xb - c0])
                    continue
                x0 = block_col * bw
                out[:, xa - c0 : xb - c0] = pixels[r0 - top : r1 - top, xa - x0 : xb - x0]
        finally:
            os.close(fd)

    def _inflated_block(
        self, fd: int, order: str, block_row: int, block_col: int, rows: int
    ) -> np.ndarray | None:
        """The block's first ``rows`` rows (or more), ``(n, block width)``, read from ``fd`` (``order``: the file's
        byte order, ``<`` or ``>``): a view of this thread's scratch block, valid until its next inflate. None where it cannot be inflated here (a sparse
        block, a short read, a stream that does not inflate to those rows)."""
        gdal = self._gdal
        where = f"{block_col}_{block_row}"
        offset = gdal.metadata_item(self._band, f"BLOCK_OFFSET_{where}".encode(), b"TIFF")
        size = gdal.metadata_item(self._band, f"BLOCK_SIZE_{where}".encode(), b"TIFF")
        if not offset or not size or int(offset) <= 0 or int(size) <= 0:
            return None
        raw = os.pread(fd, int(size), int(offset))
        produced = ctypes.c_size_t()
        bh, bw = self.block_shape
        block = _block_buffer(bh * bw * self.dtype.itemsize)
        if len(raw) != int(size) or not gdal.inflate(
            raw, len(raw), block.ctypes.data, block.nbytes, ctypes.byref(produced)
        ):
            return None
        row_bytes = bw * self.dtype.itemsize
        if produced.value < rows * row_bytes:
            return None
        n = produced.value // row_bytes
        return block[: n * row_bytes].view(self.dtype.newbyteorder(order)).reshape(n, bw)

    def rasterio_band(self) -> Any:
        """The band as rasterio's ``Band`` (for ``rasterio.warp.reproject``), the file opened by rasterio once."""
        if self._rasterio is None:
            self._rasterio = _rasterio_open(self.href)
        return rasterio.band(self._rasterio, 1)

    def close(self) -> None:
        if self._handle:
            self._gdal.close(self._handle)
            self._handle = None
        if self._rasterio is not None:
            self._rasterio.close()
            self._rasterio = None


# ------------------------------------------------------------------------------------------------------------------
# rasterio


def _rasterio_open(href: str) -> Any:
    try:
        return rasterio.open(href)
    except (rasterio.errors.RasterioError, CPLE_BaseError) as err:
        raise RasterFileError(one_line_message(err)) from None


def one_line_message(err: BaseException) -> str:
    """An exception's message on one line, with GDAL's own message when rasterio only says "see previous"."""
    text = " ".join(str(err).split()) or type(err).__name__
    if err.__cause__ is not None and "previous exception" in text:
        text = f"{text.rstrip('.')}: {one_line_message(err.__cause__)}"
    return text


class RasterioRasterFile:
    """Band 1 of a raster file opened by rasterio (URLs, with their credentials)."""

    def __init__(self, href: str) -> None:
        self.href = href
        self._src = _rasterio_open(href)
        src = self._src
        try:
            if src.count < 1:
                raise RasterFileError(f"{href}: the file has no raster band")
            self.driver = src.driver
            self.width, self.height = src.width, src.height
            self.transform = src.transform
            self.crs_wkt = src.crs.to_wkt() if src.crs else ""
            self.geokeys_epsg = None  # known through rasterio's CRS
            self.dtype = np.dtype(src.dtypes[0])
            self.nodata = src.nodata
            self.block_shape = tuple(src.block_shapes[0])
        except BaseException:
            src.close()
            raise

    def read(self, rows: slice, cols: slice, out: np.ndarray) -> np.ndarray:
        """As :meth:`GdalRasterFile.read`."""
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        try:
            return self._src.read(1, window=window, out=out)
        except (rasterio.errors.RasterioError, CPLE_BaseError) as err:
            raise RasterFileError(one_line_message(err)) from None

    def rasterio_band(self) -> Any:
        return rasterio.band(self._src, 1)

    def close(self) -> None:
        self._src.close()


# ------------------------------------------------------------------------------------------------------------------
# GeoTIFF keys

_GEO_KEY_DIRECTORY_TAG = 34735
_TIFF_SHORT = 3
_GT_MODEL_TYPE_KEY = 1024
_GEOGRAPHIC_TYPE_KEY = 2048
_PROJECTED_CS_TYPE_KEY = 3072
_MODEL_PROJECTED, _MODEL_GEOGRAPHIC = 1, 2
_USER_DEFINED = 32767
_HEAD_BYTES = 16384  # a COG's header: its IFDs and their tag data come first


def geokeys_epsg(path: str) -> int | None:
    """The EPSG code of the CRS a local GeoTIFF's keys name: ProjectedCSTypeGeoKey of a projected model,
    GeographicTypeGeoKey of a geographic one, read from the first IFD (classic or BigTIFF). None where the keys
    define the CRS otherwise (user-defined parameters), name none, the file is not a TIFF, or a sidecar
    ``.aux.xml`` could override the file's CRS in GDAL; GDAL's own reading is then the authority.

    GDAL reads such a file's CRS as that EPSG code's (building it through PROJ: ~0.5 ms a file); reading the
    code costs ~20 us."""
    if os.path.exists(path + ".aux.xml"):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)

            def data(offset: int, size: int) -> bytes:
                if offset + size <= len(head):
                    return head[offset : offset + size]
                f.seek(offset)
                return f.read(size)

            keys = _geokey_directory(head, data)
    except (OSError, struct.error, ValueError):
        return None
    if keys is None:
        return None
    model = keys.get(_GT_MODEL_TYPE_KEY)
    code = {
        _MODEL_PROJECTED: keys.get(_PROJECTED_CS_TYPE_KEY),
        _MODEL_GEOGRAPHIC: keys.get(_GEOGRAPHIC_TYPE_KEY),
    }.get(model)
    return code if code is not None and 0 < code < _USER_DEFINED else None


def _geokey_directory(head: bytes, data: Any) -> dict[int, int] | None:
    """The first IFD's GeoKeys held in the directory itself (SHORT values), ``{key: value}``."""
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None:
        return None
    (version,) = struct.unpack_from(order + "H", head, 2)
    if version == 42:
        (ifd,) = struct.unpack_from(order + "I", head, 4)
        count_format, entry_format, inline = "H", "HHII", 4
    elif version == 43:  # BigTIFF
        (ifd,) = struct.unpack_from(order + "Q", head, 8)
        count_format, entry_format, inline = "Q", "HHQQ", 8
    else:
        return None
    count_size = struct.calcsize(order + count_format)
    entry_size = struct.calcsize(order + entry_format)
    (entries,) = struct.unpack(order + count_format, data(ifd, count_size))
    table = data(ifd + count_size, entries * entry_size)
    for k in range(entries):
        tag, kind, count, value = struct.unpack_from(order + entry_format, table, k * entry_size)
        if tag != _GEO_KEY_DIRECTORY_TAG:
            continue
        if kind != _TIFF_SHORT or count < 4:
            return None
        raw = (
            table[k * entry_size + entry_size - inline :][: count * 2]
            if count * 2 <= inline
            else data(value, count * 2)
        )
        shorts = struct.unpack(order + f"{count}H", raw)
        n_keys = min(shorts[3], (count - 4) // 4)
        return {
            shorts[4 + 4 * i]: shorts[7 + 4 * i]
            for i in range(n_keys)
            if shorts[5 + 4 * i] == 0  # the value is the entry's own (not in another tag)
        }
    return None
