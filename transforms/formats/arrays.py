"""ArrayReaders (``--stats``): numeric arrays of HDF5, NetCDF, FITS and DICOM files, slab by slab.

Each ``open_<format>_arrays(source, fileobj)`` is an :data:`~transforms.formats.base.OpenArraysFn`:
it reads through the already open, counted ``fileobj`` (never by path, never a whole array at
once) and yields an :class:`~transforms.formats.base.ArrayReader` whose ``read(ref, slab)``
returns the values of one hyperslab as the format's library returns them by default:

* HDF5 (h5py): every dataset of a numeric type (bool, integers, floats; not enums, compounds,
  strings, references, complex), one ref per path (a dataset with two names is read twice).
  Values as stored: HDF5 has no missing-value convention. Virtual datasets and datasets with
  external storage are left out; a dataset whose filter is not available raises
  :class:`ArrayUnreadable` when read.
* NetCDF (NetCDF-4 through h5py, classic CDF-1/2/5 through offsets in the header): every
  variable of a numeric netCDF type, masked and scaled exactly as netCDF4-python does by
  default (see :class:`_CFValues`); slabs of a variable shorter than its unlimited dimension
  read fill values beyond the data written, as netCDF-C does.
* FITS: PRIMARY (NAXIS > 0) and IMAGE HDUs, values as astropy's ``hdu.data`` (BSCALE/BZERO
  applied with astropy's dtypes, BLANK -> NaN); BLANK also counts as missing for the
  pseudo-unsigned images astropy leaves unscaled. Compressed images and tables: no stats.
* DICOM: the pixel array of pydicom's default ``pixel_array`` (stored values, no rescale;
  YBR converted to RGB), shape ``(frames, rows, columns[, samples])``, read frame by frame.
  A transfer syntax without an installed decoder raises :class:`ArrayUnreadable`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import mmap
import struct
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from transforms.checksums import aligned_buffer, read_exactly
from transforms.formats.base import ArrayRef, Extraction, Slab, Source, format_error
from transforms.stats import is_numeric


class ArrayUnreadable(Exception):
    """An array that exists but cannot be read here (missing decoder or filter): null stats."""


def _slices(slab: Slab) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in slab)


def _first_byte(offset: int, shape: tuple[int, ...], itemsize: int, slab: Slab) -> int:
    """Where ``slab`` starts in a C-order array of ``shape`` stored at ``offset``."""
    index = sum(lo * math.prod(shape[i + 1:]) for i, (lo, _) in enumerate(slab))
    return offset + index * itemsize


def _read_into(fileobj: IO[bytes], offset: int, out: memoryview) -> None:
    """Fill ``out`` (bytes) from ``offset``: one read call unless the file returns less. The
    caller leaves ``out`` as it is until its next read (see
    :class:`transforms.checksums.DigestingReader`, whose ``read_at`` digests it meanwhile)."""
    read_at = getattr(fileobj, "read_at", None)
    if read_at is not None:
        read_at(offset, out)
    else:
        read_exactly(fileobj, offset, out)


def _read_into_zero_past(fileobj: IO[bytes], offset: int, out: memoryview, end: int | None) -> None:
    """:func:`_read_into`; with ``end`` (the file's size), bytes past it read as zeros, as
    netCDF-C reads a classic file cut short in its data (ncdump prints them as 0)."""
    have = out.nbytes if end is None else min(out.nbytes, max(0, end - offset))
    if have:
        _read_into(fileobj, offset, out[:have])
    if have < out.nbytes:
        out[have:] = bytes(out.nbytes - have)


def _read_exact(fileobj: IO[bytes], offset: int, nbytes: int, end: int | None = None) -> np.ndarray:
    """``nbytes`` at ``offset``, as a uint8 array (no zero-filled buffer first); ``end``: see
    :func:`_read_into_zero_past`."""
    buf = np.empty(nbytes, np.uint8)
    _read_into_zero_past(fileobj, offset, memoryview(buf), end)
    return buf


def _runs(shape: tuple[int, ...], slab: Slab) -> Iterator[tuple[int, int]]:
    """``(first element, element count)`` of each run of consecutive elements of ``slab`` in a
    C-order array of ``shape`` (non-empty), in order: one run for slabs planned on a contiguous
    array."""
    partial = [i for i, ((lo, hi), n) in enumerate(zip(slab, shape, strict=True)) if hi - lo != n]
    k = max(partial, default=0)  # runs: axes after k whole, axis k a range, axes before k one index
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    run = (slab[k][1] - slab[k][0]) * strides[k]
    for index in itertools.product(*(range(lo, hi) for lo, hi in slab[:k])):
        yield sum(i * s for i, s in zip(index, strides, strict=False)) + slab[k][0] * strides[k], run


def _read_contiguous(fileobj: IO[bytes], offset: int, dtype: np.dtype, shape: tuple[int, ...],
                     slab: Slab, end: int | None = None) -> np.ndarray:
    """A hyperslab of a C-order array stored contiguously at ``offset``, read straight into
    the result: one read per run of consecutive elements (a single read for slabs planned on
    a contiguous array); ``end``: see :func:`_read_into_zero_past`."""
    out = np.empty(tuple(hi - lo for lo, hi in slab), dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    if not shape:
        _read_into_zero_past(fileobj, offset, view, end)
        return out
    done = 0
    for first, count in _runs(shape, slab):
        nbytes = count * dtype.itemsize
        _read_into_zero_past(fileobj, offset + first * dtype.itemsize, view[done:done + nbytes], end)
        done += nbytes
    return out


# --- HDF5 --------------------------------------------------------------------------------------


def _h5_numeric(dtype: np.dtype) -> bool:
    import h5py

    return is_numeric(dtype) and h5py.check_enum_dtype(dtype) is None


def _h5_unreadable(ds: Any) -> str | None:
    """Why a dataset cannot be read here (a filter libhdf5 does not have), or None."""
    from h5py import h5z

    dcpl = ds.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        code, flags, _, name = dcpl.get_filter(i)
        if h5z.filter_avail(code) or flags & h5z.FLAG_OPTIONAL and _skipped_in_every_chunk(ds, i):
            continue
        label = name.decode("ascii", "replace") if name else ""
        return f"HDF5 filter {code} {label}".strip() + " is not available"
    return None


def _skipped_in_every_chunk(ds: Any, i: int) -> bool:
    """Whether the writer skipped the dataset's (optional) filter ``i`` in every stored chunk
    (it was not available when the chunk was written): reading then does not need it."""
    dsid = ds.id
    return all(dsid.get_chunk_info(k).filter_mask >> i & 1 for k in range(dsid.get_num_chunks()))


def _h5_walk(group: Any, prefix: str, seen: tuple[Any, ...]) -> Iterator[tuple[str, Any]]:
    """(path, dataset) for every path to a dataset, depth-first in name order (bytewise, as
    the hdf5 table's rows); hard links back to an enclosing group are not followed.

    Through h5py's low-level API: its ``Group.get(getlink=True)`` and ``Group[name]`` took
    most of the time of a small file's statistics (about 0.2 ms a member)."""
    import h5py
    from h5py import h5i, h5l, h5o

    gid = group.id
    for raw in sorted(gid):
        if gid.links.get_info(raw).type != h5l.TYPE_HARD:
            continue  # soft, external and user-defined links are not followed
        path = f"{prefix}/{raw.decode('utf-8', 'surrogateescape')}"
        try:
            obj = h5o.open(gid, raw)
        except (KeyError, OSError, ValueError, TypeError) as exc:
            # e.g. an integer with more than half its bits unused: HDF5 2.x refuses to open it;
            # a read that failed on the way (a connection reset) fails the file, to be retried
            _raise_if_transient(exc)
            yield path, Unopenable(f"libhdf5 cannot open it: {format_error(exc)}")
            continue
        kind = h5i.get_type(obj)
        if kind == h5i.DATASET:
            yield path, h5py.Dataset(obj)
        elif kind == h5i.GROUP:
            sub = h5py.Group(obj)
            identity = _h5_identity(sub)
            if identity not in seen:
                yield from _h5_walk(sub, path, (*seen, identity))


def _raise_if_transient(exc: BaseException) -> None:
    """Re-raise an error a retry may cure (faults.classify, as for a remote file): only what
    is about the file's content becomes a ``stats_unreadable`` entry."""
    from transforms.faults import classify

    if classify(exc, remote=True) == "transient":
        raise exc


@dataclasses.dataclass(frozen=True)
class Unopenable:
    """An object :func:`_h5_walk` found but libhdf5 cannot open, and why."""

    reason: str


def _h5_identity(obj: Any) -> tuple[int, ...]:
    from h5py import h5g

    return tuple(h5g.get_objinfo(obj.id).objno)


_PAGE = mmap.PAGESIZE
#: Largest piece :class:`_H5Stored` reads at once (a chunk is read whole whatever its size).
MAX_PIECE_BYTES = 8 << 20


class _H5Stored:
    """The values of an HDF5 dataset stored without filters, read straight from the file.

    h5py reads through the file-object driver into HDF5's own buffer, then copies into the
    result. Without filters the stored bytes are the values, so :meth:`pieces` reads each
    stored chunk (or run of a contiguous dataset) with one ``readinto`` into one reused buffer:
    one copy instead of two. Statistics need every value once, in any order, so a slab comes
    back as pieces (a chunk's part inside the slab) rather than assembled.
    """

    def __init__(self, ds: Any, fileobj: IO[bytes], dtype: np.dtype, chunks: tuple[int, ...] | None,
                 offset: int | None) -> None:
        self._ds, self._f, self.dtype = ds, fileobj, dtype
        self._chunks, self._offset = chunks, offset
        self._buffer = self._other = np.empty(0, np.uint8)

    @classmethod
    def of(cls, ds: Any, fileobj: IO[bytes]) -> _H5Stored | None:
        """The direct reader of ``ds``, or None where h5py must read (filters, compact or
        virtual layout, types whose stored bytes numpy cannot view as they are)."""
        from h5py import h5d, h5t

        if not _numpy_can_hold(ds):
            return None
        dtype = ds.dtype
        if dtype.kind not in "iuf" or dtype.itemsize > 8 or dtype.names or dtype.subdtype or not ds.shape:
            return None
        # the stored bytes are numpy's only for the type numpy's dtype maps to: not for the
        # types h5py reads converted (bfloat16 or another float layout as float32/64, integers
        # of reduced precision or with a bit offset, bitfields, enums)
        if not ds.id.get_type().equal(h5t.py_create(dtype)):
            return None
        dcpl = ds.id.get_create_plist()
        if dcpl.get_nfilters() or dcpl.get_external_count():
            return None
        layout = dcpl.get_layout()
        if layout == h5d.CHUNKED:
            return cls(ds, fileobj, dtype, tuple(ds.chunks), None)
        if layout == h5d.CONTIGUOUS:
            # never written: h5py returns the fill value. get_offset() is None then, except in
            # a file with a user block, where libhdf5 adds the block's size to the undefined
            # address (it wraps to size - 1): the storage size tells
            if not ds.id.get_storage_size():
                return None
            offset = ds.id.get_offset()
            return None if offset is None else cls(ds, fileobj, dtype, None, offset)
        return None

    def _read(self, offset: int, nbytes: int) -> np.ndarray:
        # The copy from the page cache runs at full speed when the buffer sits at the file
        # offset's place in its page, or a little before it; a little after it (1-32 bytes),
        # several times slower. The start is kept 64-byte aligned for numpy. Reading through
        # a DigestingReader, two buffers take turns: one is hashed while the next is read.
        shift = (offset % _PAGE) & ~63
        if hasattr(self._f, "read_at"):
            self._buffer, self._other = self._other, self._buffer
        if self._buffer.size < shift + nbytes:
            self._buffer = np.frombuffer(aligned_buffer(nbytes + _PAGE), np.uint8)
        view = self._buffer[shift:shift + nbytes]
        _read_into(self._f, offset, memoryview(view))
        return view.view(self.dtype)

    def offset(self, slab: Slab) -> int | None:
        """Where the stored bytes of ``slab`` start (its first chunk's), None if unwritten."""
        if self._chunks is None:
            return _first_byte(self._offset, self._ds.shape, self.dtype.itemsize, slab)
        origin = tuple(lo // c * c for (lo, _), c in zip(slab, self._chunks, strict=True))
        return self._ds.id.get_chunk_info_by_coord(origin).byte_offset

    def pieces(self, slab: Slab) -> Iterator[np.ndarray]:
        """Every value of ``slab`` exactly once, in pieces; each piece is valid only until
        the next one is asked for (they share one buffer)."""
        if self._chunks is None:
            yield from self._contiguous(slab)
            return
        chunks, itemsize = self._chunks, self.dtype.itemsize
        nbytes = math.prod(chunks) * itemsize
        grid = [range(lo // c, -(-hi // c)) for (lo, hi), c in zip(slab, chunks, strict=True)]
        for index in itertools.product(*grid):
            origin = tuple(i * c for i, c in zip(index, chunks, strict=True))
            inside = tuple(slice(max(lo, o) - o, min(hi, o + c) - o)
                           for (lo, hi), o, c in zip(slab, origin, chunks, strict=True))
            info = self._ds.id.get_chunk_info_by_coord(origin)
            if info.byte_offset is None or info.size != nbytes:  # unwritten: the fill value
                yield self._ds[tuple(slice(o + s.start, o + s.stop) for o, s in zip(origin, inside, strict=True))]
                continue
            yield self._read(info.byte_offset, nbytes).reshape(chunks)[inside]

    def _contiguous(self, slab: Slab) -> Iterator[np.ndarray]:
        """A contiguous dataset: each run of consecutive elements, in pieces of at most
        MAX_PIECE_BYTES."""
        itemsize = self.dtype.itemsize
        step = max(1, MAX_PIECE_BYTES // itemsize)
        for first, run in _runs(self._ds.shape, slab):
            for lo in range(first, first + run, step):
                n = min(step, first + run - lo)
                yield self._read(self._offset + lo * itemsize, n * itemsize)


def _stored_offset(stored: _H5Stored | None, slab: Slab) -> int | None:
    """``offset`` of the HDF5 and NetCDF-4 readers: the direct reader's, if the array has one."""
    return stored.offset(slab) if stored is not None and slab else None


class _HDF5Reader:
    def __init__(self, f: Any, fileobj: IO[bytes] | None = None) -> None:
        self._f = f
        self._fileobj = fileobj
        self._datasets: dict[str, Any] = {}
        self._stored: dict[str, _H5Stored | None] = {}
        self._unreadable: dict[str, str] = {}
        self._null: set[str] = set()  # datasets with a null dataspace

    def arrays(self) -> list[ArrayRef]:
        refs = []
        for path, ds in _h5_walk(self._f, "", (_h5_identity(self._f),)):
            if isinstance(ds, Unopenable):
                name = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                self._unreadable[path] = ds.reason
                refs.append(ArrayRef(table="hdf5", key=(("object_path", name),), shape=(), itemsize=0, locator=path))
                continue
            try:
                dtype = ds.dtype
            except (TypeError, ValueError):  # a type h5py cannot map (e.g. H5T_TIME)
                continue
            if not _h5_numeric(dtype) or ds.is_virtual:
                continue
            # the row's object_path: invalid UTF-8 backslash-escaped (h5py gives surrogates)
            name = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            key = (("object_path", name),)
            if ds.shape is None:  # a null dataspace: no element, as a dataset of shape (0,)
                self._null.add(path)
                refs.append(ArrayRef(table="hdf5", key=key, shape=(0,), itemsize=dtype.itemsize,
                                     locator=path))
                continue
            if ds.id.get_create_plist().get_external_count():
                continue
            reason = _h5_unreadable(ds)
            if reason:
                self._unreadable[path] = reason
            self._datasets[path] = ds
            self._stored[path] = _H5Stored.of(ds, self._fileobj) if self._fileobj is not None else None
            refs.append(ArrayRef(table="hdf5", key=key, shape=ds.shape,
                                 itemsize=dtype.itemsize, chunks=ds.chunks, locator=path))
        return refs

    def read(self, ref: ArrayRef, slab: Slab) -> np.ndarray:
        if ref.locator in self._unreadable:
            raise ArrayUnreadable(self._unreadable[ref.locator])
        if ref.locator in self._null:
            return np.empty(0, np.uint8)
        return np.asarray(self._datasets[ref.locator][_slices(slab)])

    def offset(self, ref: ArrayRef, slab: Slab) -> int | None:
        """Where the stored bytes of ``slab`` start, None where h5py reads them."""
        return _stored_offset(self._stored.get(ref.locator), slab)

    def pieces(self, ref: ArrayRef, slab: Slab) -> Iterator[np.ndarray]:
        """The values of ``slab`` in pieces (see :class:`_H5Stored`), for statistics."""
        stored = self._stored.get(ref.locator)
        if stored is None or ref.locator in self._unreadable or not slab:
            yield self.read(ref, slab)
            return
        yield from stored.pieces(slab)


@contextlib.contextmanager
def open_hdf5_arrays(source: Source, fileobj: IO[bytes]) -> Iterator[_HDF5Reader]:
    """The numeric datasets of an HDF5 file, read through h5py's file-object driver."""
    import h5py

    with h5py.File(fileobj, "r", locking=False) as f:
        yield _HDF5Reader(f, fileobj)


# --- NetCDF: masking and scaling as netCDF4-python -----------------------------------------------

#: netCDF-C's default fill values (netcdf.h NC_FILL_*), as netCDF4.default_fillvals.
DEFAULT_FILLVALS = {
    "i1": -127, "u1": 255, "i2": -32767, "u2": 65535, "i4": -2147483647, "u4": 4294967295,
    "i8": -9223372036854775806, "u8": 18446744073709551614,
    "f4": 9.969209968386869e36, "f8": 9.969209968386869e36,
}
#: netCDF numeric types -> numpy dtypes (classic names as ncdump declares them).
_NC_NUMERIC = {"byte": "i1", "ubyte": "u1", "short": "i2", "ushort": "u2", "int": "i4",
               "uint": "u4", "int64": "i8", "uint64": "u8", "float": "f4", "double": "f8"}


def _attr(value: Any) -> Any:
    """An attribute value as netCDF4-python's getncattr returns it: a numpy scalar for one
    value, else an array (strings stay strings)."""
    if isinstance(value, bytes):  # h5py reads netCDF char attributes as bytes
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind in "SUO":
        return value
    return arr.reshape(-1)[0] if arr.size == 1 else arr


def _safecast(value: Any, dtype: np.dtype) -> bool:
    """netCDF4-python's _check_safecast: the attribute converts to the variable's type exactly."""
    if value is None:
        return False
    att = np.array(value)
    try:
        atta = np.array(att, dtype)
    except (ValueError, OverflowError, TypeError):
        return False
    try:
        return bool(((att == atta) | (np.isnan(att) & np.isnan(atta))).all())
    except TypeError:
        try:
            return bool((att == atta).all())
        except Exception:  # noqa: BLE001 - incomparable: not safe, as netCDF4-python says
            return False


def _numeric_scalar(value: Any) -> bool:
    """One number (netCDF4-python unpacks only when ``float(scale_factor)`` works: an
    attribute of several values, or none, is not used)."""
    return value is not None and not isinstance(value, (str, bytes)) and \
        np.asarray(value).dtype.kind in "biuf" and np.asarray(value).size == 1


def _one(value: Any) -> bool:
    """An attribute of exactly one value (``_FillValue``, ``valid_min``, ``valid_max``: one of
    several values, or none, is ignored; netCDF4-python fails on them)."""
    return value is not None and np.asarray(value).size == 1


#: The attributes :class:`_CFValues` reads (the NetCDF-4 reader reads only these, by name:
#: reading every attribute of every variable through h5py took a third of a small file's
#: statistics).
CF_ATTRIBUTES = ("_Unsigned", "missing_value", "_FillValue", "valid_range", "valid_min", "valid_max",
                 "scale_factor", "add_offset")


class _CFValues:
    """netCDF4-python's default auto mask and scale (Variable._toma and __getitem__).

    After an ``_Unsigned = "true"`` view of signed integers as unsigned: masked where the value
    equals ``missing_value`` (any of its values; NaN matches NaN), equals ``_FillValue`` (NaN
    matches NaN) or, without ``_FillValue``, equals the type's default fill value (not for byte
    types when the variable's fill mode is off), and where it is below ``valid_min``/above
    ``valid_max`` (or outside a two-value ``valid_range``, which takes precedence). Attributes
    that do not convert exactly to the variable's type are ignored. Then, when scale_factor
    and/or add_offset are numeric: ``data * scale_factor + add_offset`` (only when not the
    identity; both present as identity: cast to scale_factor's dtype), numpy's type rules with
    the attributes' own types (e.g. int16 * float32 -> float32).
    """

    def __init__(self, dtype: np.dtype, attrs: dict[str, Any], no_fill: bool) -> None:
        self.dtype = dtype = np.dtype(dtype).newbyteorder("=")
        unsigned = isinstance(attrs.get("_Unsigned"), str) and attrs["_Unsigned"] in ("true", "True")
        self.view = np.dtype(f"u{dtype.itemsize}") if unsigned and dtype.kind == "i" else None

        def typed(value: Any) -> np.ndarray:
            arr = np.array(value, dtype)
            return arr.view(self.view) if self.view is not None else arr

        self.missing = None
        if _safecast(attrs.get("missing_value"), dtype):
            self.missing = typed(attrs["missing_value"]).reshape(-1)
        self.fill = None
        self.default_fill = None
        if _one(attrs.get("_FillValue")) and _safecast(attrs.get("_FillValue"), dtype):
            self.fill = typed(attrs["_FillValue"]).reshape(-1)[0]
        elif not no_fill or dtype.str[1:] not in ("u1", "i1"):
            self.default_fill = np.array(DEFAULT_FILLVALS[dtype.str[1:]], dtype)
        self.valid_min = self.valid_max = None
        valid_range = attrs.get("valid_range")
        if _safecast(valid_range, dtype) and np.asarray(valid_range).size == 2:
            bounds = np.asarray(valid_range).reshape(-1)
            self.valid_min, self.valid_max = typed(bounds[0]), typed(bounds[1])
        else:
            if _one(attrs.get("valid_min")) and _safecast(attrs.get("valid_min"), dtype):
                self.valid_min = typed(attrs["valid_min"]).reshape(-1)[0]
            if _one(attrs.get("valid_max")) and _safecast(attrs.get("valid_max"), dtype):
                self.valid_max = typed(attrs["valid_max"]).reshape(-1)[0]
        scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
        self.scale = scale if _numeric_scalar(scale) else None
        self.offset = offset if _numeric_scalar(offset) else None
        if (scale is not None and self.scale is None) or \
                (offset is not None and self.offset is None):
            self.scale = self.offset = None  # a non-numeric attribute: netCDF4 does not unpack
        #: What netCDF-C returns where nothing was written (beyond a variable's records).
        self.unwritten = np.array(attrs["_FillValue"] if self.fill is not None
                                  else DEFAULT_FILLVALS[dtype.str[1:]], dtype)
        #: Unscaled floats masked only where equal to one value (or NaN): that value (NaN for
        #: none), which the statistics kernel takes as missing without a mask; else None.
        self.kernel_missing: float | None = None
        if dtype.kind == "f" and self.view is None and self.valid_min is None and self.valid_max is None \
                and self.scale is None and self.offset is None:
            fill = self.fill if self.fill is not None else self.default_fill
            values = [*([] if self.missing is None else self.missing), *([] if fill is None else [fill])]
            finite = {float(v) for v in values if not np.isnan(v)}
            if len(finite) <= 1:
                self.kernel_missing = finite.pop() if finite else math.nan

    def for_stats(self, data: np.ndarray) -> Any:
        """:meth:`apply` for statistics: where only one value (or NaN) is masked and nothing
        is scaled, the values with that value (:class:`transforms.stats.WithMissing`), for the
        kernel to skip in its pass instead of a mask made in three."""
        if self.kernel_missing is not None and data.dtype == self.dtype:
            from transforms.stats import WithMissing

            return WithMissing(data, self.kernel_missing)
        return self.apply(data)

    def apply(self, data: np.ndarray) -> Any:
        data = np.asarray(data)
        if data.dtype != self.dtype:
            data = data.astype(self.dtype)
        if self.view is not None:
            data = data.view(self.view)
        conditions: list[Any] = []  # functions of data giving the masked elements
        if self.missing is not None:
            conditions += [np.isnan if _isnan(m) else (lambda d, m=m: d == m)
                           for m in self.missing]
        if self.fill is not None:
            conditions.append(np.isnan if _isnan(self.fill) else lambda d: d == self.fill)
        elif self.default_fill is not None:
            conditions.append(lambda d: d == self.default_fill)
        if self.valid_min is not None:
            conditions.append(lambda d: d < self.valid_min)
        if self.valid_max is not None:
            conditions.append(lambda d: d > self.valid_max)
        mask = None
        for condition in conditions:
            hit = condition(data)
            if mask is None:
                mask = np.asarray(hit)
            else:
                mask |= hit
        masked = mask is not None and bool(mask.any())
        values: Any = np.ma.masked_array(data, mask=mask) if masked else data
        scale, offset = self.scale, self.offset
        if scale is not None and offset is not None:
            if offset != 0.0 or scale != 1.0:
                values = values * scale + offset
            else:
                values = values.astype(np.asarray(scale).dtype)
        elif scale is not None and scale != 1.0:
            values = values * scale
        elif offset is not None and offset != 0.0:
            values = values + offset
        return values


def _isnan(value: Any) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False


def _pad_unwritten(cf: _CFValues, slab: Slab, extent: tuple[int, ...],
                   read: Any) -> np.ndarray:
    """The raw values of ``slab``: ``read(part)`` where data was written (inside ``extent``),
    the fill value netCDF-C returns beyond it."""
    inside = tuple((lo, min(hi, n)) for (lo, hi), n in zip(slab, extent, strict=True))
    if inside == tuple(slab):
        return read(slab)
    out = np.full(tuple(hi - lo for lo, hi in slab), cf.unwritten, cf.dtype)
    if all(hi > lo for lo, hi in inside):
        out[tuple(slice(0, hi - lo) for lo, hi in inside)] = read(inside)
    return out


def _numpy_can_hold(ds: Any) -> bool:
    """Whether h5py has a numpy dtype for the dataset's type (not for 24- or 40-bit integers)."""
    try:
        ds.dtype  # noqa: B018 - h5py maps the type on access
    except (TypeError, ValueError):
        return False
    return True


def _h5_read_as(ds: Any, slab: Slab, dtype: np.dtype) -> np.ndarray:
    """The values of ``slab`` converted by HDF5 to ``dtype``, the native type netCDF-C reads
    them as (a float16 or bfloat16 as float32, a 24-bit integer as int32), where numpy has no
    dtype for the stored type or h5py's is not the netCDF type."""
    out = np.empty(tuple(hi - lo for lo, hi in slab), dtype)
    if out.size:
        ds.read_direct(out, _slices(slab) if slab else None)
    return out


class _NetCDF4Reader:
    def __init__(self, f: Any, size: int, fileobj: IO[bytes] | None = None) -> None:
        self._f = f
        self._size = size
        self._fileobj = fileobj
        self._vars: dict[tuple[str, str], tuple[Any, _CFValues, tuple[int, ...]]] = {}
        self._stored: dict[tuple[str, str], _H5Stored | None] = {}
        self._unreadable: dict[tuple[str, str], str] = {}
        self._convert: dict[tuple[str, str], bool] = {}

    def arrays(self) -> list[ArrayRef]:
        from transforms.formats import netcdf

        backend = netcdf._H5pyBackend(self._f.id, self._size)
        root = netcdf.read_netcdf4_model(backend, attributes=False)
        refs = []
        for group, name, reason in backend.unopenable:  # not in the model: no statistics, the reason
            key = (group, name.removeprefix(netcdf.NON_COORD_PREFIX))
            self._unreadable[key] = f"libhdf5 cannot open it: {reason}"
            refs.append(ArrayRef(table="netcdf", key=(("group", key[0]), ("variable", key[1])),
                                 shape=(), itemsize=0, locator=key))
        for group in root.walk():
            h5group = self._f[group.path]
            for var in group.vars:
                code = _NC_NUMERIC.get(var.nctype)
                if code is None:
                    continue
                name = netcdf.NON_COORD_PREFIX + var.name
                key = (group.path, var.name)
                try:
                    ds = h5group[name] if name in h5group else h5group[var.name]
                    # typed as netCDF-C types them (a float16 scale_factor is a float)
                    attrs = _typed_attrs(*netcdf.read_netcdf4_attributes(backend, ds.id, CF_ATTRIBUTES))
                    # netCDF-C's fill mode (hdf5open.c get_fill_info): off unless the dataset has
                    # a user-defined HDF5 fill value, whatever its fill time
                    cf = _CFValues(np.dtype(code), attrs, var.storage["no_fill"])
                except (KeyError, OSError, ValueError, TypeError, IndexError) as exc:  # this variable only
                    _raise_if_transient(exc)
                    self._unreadable[key] = f"cannot be read for statistics: {format_error(exc)}"
                    refs.append(ArrayRef(table="netcdf", key=(("group", group.path), ("variable", var.name)),
                                         shape=(), itemsize=0, locator=key))
                    continue
                shape = tuple(d.size for d in var.dims)
                reason = _h5_unreadable(ds)  # a filter libhdf5 does not have (zstd, bzip2...)
                if reason:
                    self._unreadable[key] = reason
                self._vars[key] = (ds, cf, tuple(ds.shape))
                self._stored[key] = _H5Stored.of(ds, self._fileobj) if self._fileobj is not None else None
                # h5py's dtype is not the netCDF type (float16, 24-bit integers): HDF5 converts
                self._convert[key] = not _numpy_can_hold(ds) or ds.dtype.newbyteorder("=") != cf.dtype
                refs.append(ArrayRef(table="netcdf", key=(("group", group.path),
                                                          ("variable", var.name)),
                                     shape=shape, itemsize=cf.dtype.itemsize, chunks=ds.chunks,
                                     locator=key))
        return refs

    def read(self, ref: ArrayRef, slab: Slab) -> Any:
        if ref.locator in self._unreadable:
            raise ArrayUnreadable(self._unreadable[ref.locator])
        ds, cf, extent = self._vars[ref.locator]
        if self._convert[ref.locator]:  # read converted by HDF5 to the netCDF type
            return cf.apply(_pad_unwritten(cf, slab, extent, lambda part: _h5_read_as(ds, part, cf.dtype)))
        if not slab:
            return cf.apply(ds[()])
        return cf.apply(_pad_unwritten(cf, slab, extent, lambda part: ds[_slices(part)]))

    def offset(self, ref: ArrayRef, slab: Slab) -> int | None:
        """Where the stored bytes of ``slab`` start, None where h5py reads them."""
        return _stored_offset(self._stored.get(ref.locator), slab)

    def pieces(self, ref: ArrayRef, slab: Slab) -> Iterator[Any]:
        """The values of ``slab`` in pieces, masked and scaled (see :class:`_H5Stored`)."""
        if ref.locator in self._unreadable:
            raise ArrayUnreadable(self._unreadable[ref.locator])
        _, cf, extent = self._vars[ref.locator]
        stored = self._stored.get(ref.locator)
        if stored is None or not slab or any(hi > n for (_, hi), n in zip(slab, extent, strict=True)):
            yield self.read(ref, slab)
            return
        for piece in stored.pieces(slab):
            yield cf.for_stats(piece)


class _ClassicReader:
    def __init__(self, source: Source, fileobj: IO[bytes]) -> None:
        self._source = source
        self._f = fileobj
        self._vars: dict[str, tuple[int, np.dtype, tuple[int, ...], int | None, _CFValues]] = {}
        self._unreadable: dict[str, str] = {}

    def arrays(self) -> list[ArrayRef]:
        from transforms.formats import netcdf

        out = Extraction(format="netcdf")
        head = self._source.head
        magic = bytes(head[:4]) if len(head) >= 4 else _magic(self._f)
        netcdf._extract_classic(self._source, out, magic[3])  # the catalog's own header parser
        meta = out.metadata["variables"]["/"]
        rows = out.rows.get(netcdf.TABLE, [])
        records = [row for row in rows if meta[row["variable"]]["record"]]
        # record size: every record variable's padded size; one record variable is unpadded
        sizes = {row["variable"]: math.prod(row["shape"][1:]) * np.dtype(row["dtype"]).itemsize
                 for row in records}
        recsize = sum(-(-n // 4) * 4 for n in sizes.values())
        if records and recsize == -(-sizes[records[0]["variable"]] // 4) * 4:
            recsize = sizes[records[0]["variable"]]
        refs = []
        for row in rows:
            name = row["variable"]
            info = meta[name]
            code = _NC_NUMERIC.get(info["type"])
            if code is None:
                continue
            dtype = np.dtype(">" + code)
            attrs = _typed_attrs(json.loads(row["attributes"]), info["attribute_types"])
            try:
                cf = _CFValues(dtype, attrs, no_fill=False)  # classic files: fill mode is on
            except (ValueError, TypeError, IndexError) as exc:  # this variable's statistics only
                self._unreadable[name] = f"cannot be read for statistics: {format_error(exc)}"
                refs.append(ArrayRef(table="netcdf", key=(("group", "/"), ("variable", name)),
                                     shape=(), itemsize=0, locator=name))
                continue
            shape = tuple(row["shape"])
            stride = recsize if info["record"] else None
            self._vars[name] = (info["begin"], dtype, shape, stride, cf)
            chunks = (1, *shape[1:]) if info["record"] else None
            refs.append(ArrayRef(table="netcdf", key=(("group", "/"), ("variable", name)),
                                 shape=shape, itemsize=dtype.itemsize, chunks=chunks,
                                 locator=name))
        return refs

    def offset(self, ref: ArrayRef, slab: Slab) -> int | None:
        """Where ``slab`` starts in the file (a record variable's: its first record's)."""
        if ref.locator in self._unreadable:
            return None
        begin, dtype, shape, recsize, _ = self._vars[ref.locator]
        if not slab:
            return begin
        if recsize is None:
            return _first_byte(begin, shape, dtype.itemsize, slab)
        return _first_byte(begin + slab[0][0] * recsize, shape[1:], dtype.itemsize, slab[1:])

    def read(self, ref: ArrayRef, slab: Slab) -> Any:
        if ref.locator in self._unreadable:
            raise ArrayUnreadable(self._unreadable[ref.locator])
        begin, dtype, shape, recsize, cf = self._vars[ref.locator]
        if recsize is None:
            return cf.apply(_read_contiguous(self._f, begin, dtype, shape, slab, self._source.size))
        (r0, r1), sub = slab[0], slab[1:]
        record_shape = shape[1:]
        nbytes = math.prod(record_shape) * dtype.itemsize
        whole = all(hi - lo == n for (lo, hi), n in zip(sub, record_shape, strict=True))
        if whole and nbytes >= _RECORD_READ_BYTES and 2 * nbytes < recsize:
            # whole records, large, of a variable among others: one read per record (a run of
            # records would read the other variables' records too, each of them again)
            data = np.empty((r1 - r0, *record_shape), dtype)
            view = memoryview(data.reshape(-1).view(np.uint8))
            for i, r in enumerate(range(r0, r1)):
                _read_into_zero_past(self._f, begin + r * recsize, view[i * nbytes:(i + 1) * nbytes],
                                     self._source.size)
        elif whole:
            # whole records: read runs of records (at most the slab's size, or one record)
            per = max(1, ((r1 - r0) * nbytes) // max(recsize, 1))
            pieces = []
            for a in range(r0, r1, per):
                b = min(r1, a + per)
                raw = _read_exact(self._f, begin + a * recsize, (b - a - 1) * recsize + nbytes, self._source.size)
                pieces.append(np.ndarray((b - a, *record_shape), dtype, raw,
                                         strides=(recsize, *_c_strides(record_shape, dtype))))
            data = np.concatenate(pieces)
        else:
            data = np.stack([_read_contiguous(self._f, begin + r * recsize, dtype, record_shape,
                                              sub, self._source.size) for r in range(r0, r1)])
        return cf.apply(data)


#: A classic record variable's records of at least this size are read one by one (runs of
#: records, gaps included, below it: fewer, larger reads).
_RECORD_READ_BYTES = 64 * 1024


def _c_strides(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    return tuple(math.prod(shape[i + 1:]) * dtype.itemsize for i in range(len(shape)))


def _magic(fileobj: IO[bytes]) -> bytes:
    fileobj.seek(0)
    return fileobj.read(4)


def _typed_attrs(values: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """Attribute values as in the netcdf rows (JSON values, with their netCDF type names) as
    numpy values of their netCDF types, as netCDF4-python returns them."""
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    attrs = {}
    for name, value in values.items():
        code = _NC_NUMERIC.get(types.get(name, ""))
        if code is None:
            attrs[name] = value
            continue
        items = value if isinstance(value, list) else [value]
        attrs[name] = _attr(np.array([special.get(v, v) if isinstance(v, str) else v
                                      for v in items], code))
    return attrs


@contextlib.contextmanager
def open_netcdf_arrays(source: Source, fileobj: IO[bytes]) -> Iterator[Any]:
    """The numeric variables of a NetCDF file (classic or NetCDF-4), masked and scaled."""
    from transforms.formats import netcdf

    head = bytes(source.head[:4]) if len(source.head) >= 4 else _magic(fileobj)
    if head in netcdf.CLASSIC_MAGIC:
        yield _ClassicReader(source, fileobj)
        return
    import h5py

    with h5py.File(fileobj, "r", locking=False) as f:
        yield _NetCDF4Reader(f, source.size, fileobj)


# --- FITS ----------------------------------------------------------------------------------------

_FITS_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class _FITSImage:
    """astropy's scaling of one image HDU (ImageHDU._get_scaled_image_data)."""

    def __init__(self, header: Any) -> None:
        self.bitpix = int(header["BITPIX"])
        self.raw = np.dtype(_FITS_DTYPES[self.bitpix])
        self.bscale = header.get("BSCALE", 1)
        self.bzero = header.get("BZERO", 0)
        blank = header.get("BLANK") if self.bitpix > 0 else None
        self.blank = blank if isinstance(blank, int) and not isinstance(blank, bool) else None
        self.pseudo = None  # astropy's unsigned (or signed byte) reading of BZERO offsets
        if self.bscale == 1:
            if self.bitpix == 8 and self.bzero == -128:
                self.pseudo = np.dtype("i1")
            elif self.bitpix in (16, 32, 64) and self.bzero == 1 << (self.bitpix - 1):
                self.pseudo = np.dtype(f"u{self.bitpix // 8}")
        #: the dtype of scaled values (astropy's _dtype_for_bitpix), when not pseudo-unsigned
        if self.bitpix < 0:
            self.out = self.raw.newbyteorder("=")
        else:
            self.out = np.dtype("f8" if self.bitpix > 16 else "f4")

    def apply(self, raw: np.ndarray) -> Any:
        if self.bzero == 0 and self.bscale == 1 and self.blank is None:
            return raw
        if self.pseudo is not None:
            data = _pseudo_unsigned(raw, self.pseudo, self.bzero)
            if self.blank is not None:  # astropy keeps BLANK here; it is still missing
                return np.ma.masked_array(data, mask=raw == self.blank)
            return data
        data = np.array(raw, dtype=self.out)
        if self.bscale != 1:
            np.multiply(data, self.bscale, data)
        if self.bzero != 0:
            data += self.bzero
        if self.blank is not None:
            data[raw == self.blank] = np.nan
        return data


def _fits_number(value: Any) -> bool:
    """A BSCALE or BZERO value that scales data: an integer, a finite real (``T`` is 1, as in
    astropy and cfitsio)."""
    return isinstance(value, int) or isinstance(value, float) and math.isfinite(value)


def _pseudo_unsigned(raw: np.ndarray, dtype: np.dtype, bzero: int) -> np.ndarray:
    if dtype.kind == "u":  # flip the sign bit: raw + 2**(bits-1) as unsigned
        signed = raw.astype(raw.dtype.newbyteorder("="))
        return signed.view(dtype) ^ dtype.type(1 << (8 * dtype.itemsize - 1))
    return (raw.astype(np.int16) + bzero).astype(dtype)


class _FITSReader:
    def __init__(self, fileobj: IO[bytes], size: int) -> None:
        self._f = fileobj
        self._size = size
        self._hdus: dict[int, tuple[int, tuple[int, ...], _FITSImage]] = {}
        self._unreadable: dict[int, str] = {}

    def arrays(self) -> list[ArrayRef]:
        """The image HDUs, found by the header walk of the extractor (bytes after the last HDU,
        FITS 4.0 3.5 "special records", end it there as they end the ``fits`` rows)."""
        from transforms.formats import fits

        refs = []
        for hdu in fits.walk(self._f, self._size):
            index, info = hdu.index, hdu.info
            key = (("hdu_index", index),)
            if info["type"] == "COMPRESSED_IMAGE":  # its data are tiles in a binary table
                self._unreadable[index] = "tile-compressed image: statistics are not computed for it"
                refs.append(ArrayRef(table="fits", key=key, shape=(), itemsize=0, locator=index))
            elif info["type"] in ("PRIMARY", "IMAGE") and info["naxis"] and info["bitpix"] in _FITS_DTYPES:
                shape = tuple(info["shape"][::-1])  # NAXISn..NAXIS1: C order
                scaling = [k for k in ("BSCALE", "BZERO") if not _fits_number(hdu.values.get(k, 0))]
                if scaling:  # astropy cannot scale the data either (cfitsio ignores the keyword)
                    self._unreadable[index] = " and ".join(
                        f"{k} is not a number ({'no value' if hdu.values[k] is None else repr(hdu.values[k])})"
                        for k in scaling)
                    refs.append(ArrayRef(table="fits", key=key, shape=(), itemsize=0, locator=index))
                    continue
                image = _FITSImage(hdu.values)
                self._hdus[index] = (hdu.data_offset, shape, image)
                refs.append(ArrayRef(table="fits", key=key, shape=shape,
                                     itemsize=image.raw.itemsize, locator=index))
        return refs

    def offset(self, ref: ArrayRef, slab: Slab) -> int | None:
        """Where ``slab`` starts in the file."""
        if ref.locator in self._unreadable:
            return None
        offset, shape, image = self._hdus[ref.locator]
        return _first_byte(offset, shape, image.raw.itemsize, slab)

    def read(self, ref: ArrayRef, slab: Slab) -> Any:
        if ref.locator in self._unreadable:
            raise ArrayUnreadable(self._unreadable[ref.locator])
        offset, shape, image = self._hdus[ref.locator]
        return image.apply(_read_contiguous(self._f, offset, image.raw, shape, slab))


@contextlib.contextmanager
def open_fits_arrays(source: Source, fileobj: IO[bytes]) -> Iterator[_FITSReader]:
    """The image HDUs of a FITS file: headers parsed as the extractor parses them, data by
    offset."""
    yield _FITSReader(fileobj, source.size)


# --- DICOM ---------------------------------------------------------------------------------------


#: (group, element) of Pixel Data, Float Pixel Data and Double Float Pixel Data.
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}


#: A DICOM file that pydicom's frame iterator cannot read from the file (a deflated data set,
#: a data set in the other VR mode than its transfer syntax says) is decoded from the whole
#: data set in memory, up to this size; above it, its statistics are not computed.
MAX_DICOM_IN_MEMORY_BYTES = 256 << 20
#: Errors of a pixel-data decoder that are about the file, not the decoding: they fail the file.
_NOT_DECODING = (EOFError, MemoryError, TimeoutError, FileNotFoundError, PermissionError)


class _DICOMReader:
    def __init__(self, fileobj: IO[bytes], size: int = 0, remote: bool = False) -> None:
        self._f = fileobj
        self._size = size
        self._remote = remote
        self._unreadable: str | None = None
        self._read_whole = False  # frames from the data set read whole (MAX_DICOM_IN_MEMORY_BYTES)
        self._dataset: Any = None  # that data set, once read
        self._pixel_array = False  # frames cut from the data set's whole pixel_array (1-bit)
        self._pixels: np.ndarray | None = None  # that array, once decoded
        self._inferred: Any = None  # the transfer syntax of a data set without file meta
        self._bits_stored = 0  # Bits Stored: the bits of each pixel cell that hold its value

    def arrays(self) -> list[ArrayRef]:
        import pydicom
        from pydicom.pixels import get_decoder

        self._f.seek(0)
        ds = pydicom.dcmread(self._f, stop_before_pixels=True, force=True)
        # dcmread stops at the pixel data element (or reads to the end when there is none), in
        # the file or, for a deflated data set, in the inflated copy (ds.buffer)
        stream = ds.buffer if getattr(ds, "buffer", None) is not None else self._f
        tag = stream.read(4)
        self._f.seek(0)
        if len(tag) < 4 or not {struct.unpack("<HH", tag), struct.unpack(">HH", tag)} & \
                _PIXEL_TAGS or "Rows" not in ds or "Columns" not in ds:
            return []
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            shape = (frames, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
            bits = int(ds.get("BitsAllocated", 8) or 8)
            itemsize = max(1, bits // 8)
            self._bits_stored = int(ds.get("BitsStored", bits) or bits)
        except (TypeError, ValueError) as exc:  # e.g. NumberOfFrames '1A': pydicom cannot decode either
            self._unreadable = f"the pixel data's description cannot be read: {type(exc).__name__}: {exc}"
            return [ArrayRef(table="dicom", key=(), shape=(), itemsize=0, locator=None)]
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        if syntax is None:  # no file meta (ACR-NEMA style): the encoding the data set was read in
            from transforms.formats.dicom import _INFERRED_SYNTAX

            implicit, little = ds.original_encoding
            self._inferred = _INFERRED_SYNTAX[implicit is not False, little is not False]
        if syntax is not None:
            try:
                decoder = get_decoder(syntax)
            except NotImplementedError:
                self._unreadable = f"no pixel data decoder for transfer syntax {syntax}"
            else:
                if not decoder.is_available:
                    self._unreadable = (f"no installed decoder for {syntax.name} "
                                        "(pydicom needs e.g. pylibjpeg or gdcm)")
            from transforms.formats.dicom import written_implicit_vr

            written = written_implicit_vr(ds)
            try:
                declared = syntax.is_implicit_VR
            except ValueError:  # not a transfer syntax UID
                declared = None
            if stream is not self._f or None not in (written, declared) and written != declared:
                self._read_whole = True
                if self._size > MAX_DICOM_IN_MEMORY_BYTES and not self._unreadable:
                    self._unreadable = (f"{'deflated' if stream is not self._f else 'VR mode not as declared'}: "
                                        f"decoded in memory only up to {MAX_DICOM_IN_MEMORY_BYTES >> 20} MiB")
        if bits == 1 and frames > 1 and math.prod(shape[1:]) % 8:
            # 1-bit frames that do not end on a byte: pydicom's frame iterator cannot split them,
            # its pixel_array of the whole data set can (decoded in memory, bounded)
            self._pixel_array = True
            if math.prod(shape) > MAX_DICOM_IN_MEMORY_BYTES and not self._unreadable:
                self._unreadable = ("1-bit frames not on byte boundaries: decoded in memory only up "
                                    f"to {MAX_DICOM_IN_MEMORY_BYTES >> 20} MiB")
        return [ArrayRef(table="dicom", key=(), shape=shape, itemsize=itemsize,
                         chunks=(1, *shape[1:]), locator=None)]

    def read(self, ref: ArrayRef, slab: Slab) -> np.ndarray:
        from pydicom.pixels import iter_pixels

        if self._unreadable:
            raise ArrayUnreadable(self._unreadable)
        (f0, f1), rest = slab[0], _slices(slab[1:])
        self._f.seek(0)
        try:
            if (self._read_whole or self._pixel_array) and self._dataset is None:
                import pydicom

                self._dataset = pydicom.dcmread(self._f, force=True)
                if self._inferred is not None:
                    self._dataset.file_meta = pydicom.dataset.FileMetaDataset()
                    self._dataset.file_meta.TransferSyntaxUID = self._inferred
            if self._pixel_array:
                if self._pixels is None:
                    self._pixels = self._dataset.pixel_array.reshape(ref.shape)
                frames = [frame[rest] for frame in self._pixels[f0:f1]]
            else:
                given = {} if self._inferred is None or self._read_whole else {"transfer_syntax_uid": self._inferred}
                frames = [frame.reshape(ref.shape[1:])[rest] for frame in
                          iter_pixels(self._dataset if self._read_whole else self._f, indices=range(f0, f1), **given)]
        except _NOT_DECODING:
            raise
        except Exception as exc:  # the decoder failed on these pixels: the file's metadata stands
            from transforms.faults import classify

            if classify(exc, self._remote) == "transient":
                raise
            raise ArrayUnreadable(f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from exc
        self._f.seek(0)
        return _stored_bits(np.stack(frames), self._bits_stored)


def _stored_bits(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Integer pixels cut to their Bits Stored (PS3.5 8.1.1): the bits above masked off, or,
    for signed pixels, the sign extended from the highest stored bit. pydicom does this for
    native and JPEG data, not for JPEG-LS and JPEG 2000 (a 12-bit JPEG-LS image of precision 16
    kept its high bits: 0..4095 for -2048..2047); where it did, this changes nothing."""
    width = pixels.dtype.itemsize * 8
    if pixels.dtype.kind not in "iu" or not 0 < bits_stored < width:
        return pixels
    if pixels.dtype.kind == "u":
        np.bitwise_and(pixels, pixels.dtype.type((1 << bits_stored) - 1), out=pixels)
    else:
        np.left_shift(pixels, width - bits_stored, out=pixels)
        np.right_shift(pixels, width - bits_stored, out=pixels)
    return pixels


@contextlib.contextmanager
def open_dicom_arrays(source: Source, fileobj: IO[bytes]) -> Iterator[_DICOMReader]:
    """The pixel array of a DICOM file, frame by frame through pydicom."""
    from transforms.faults import is_remote

    yield _DICOMReader(fileobj, source.size, is_remote(source.url))
