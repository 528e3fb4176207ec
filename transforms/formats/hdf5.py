"""HDF5: one ``hdf5`` row per group, dataset, named datatype and link, read from metadata only.

Two readers fill the same rows. The fast one parses HDF5 metadata in pure Python from a few
block reads (superblock, object headers, symbol tables, link and attribute messages, dense
storage in fractal heaps and v2 B-trees, global heaps of variable-length strings): on NeXus-like
files it is about 10x faster than ``visititems`` + ``dict(obj.attrs)``, whose cost is per-call
overhead of libhdf5 and h5py (tens of microseconds per attribute). Datatype messages are still
decoded by libhdf5 (``H5Tdecode``, cached), so ``dtype`` strings and value conversions are h5py's
by construction. Whatever the fast reader does not implement (references and variable-length
sequences in attribute values, strings inside compounds other than NUL-padded ones, time and
non-IEEE types, shared-message tables, huge heap objects, old layout messages...) hands the
file to the second reader, h5py's low-level API (``h5o``/``h5l``/``h5a``), which reads it from
the start; both produce identical rows, which the tests check on every fixture and on random
files. Both walk every *path* themselves (``visititems`` visits each object once, the contract
wants one row per name).

Encodings (documented in the README):

* Rows come depth-first, links in name order (as ``h5dump`` prints them). Every path through
  hard links gets a row: an object with two names has two rows and a group with two names is
  walked under both; a hard link back to an ancestor group (a cycle) gets its row and is not
  followed. Soft and external links are never followed.
* ``object_path``: absolute path of the link (``/entry/data``); names are UTF-8, invalid bytes
  are backslash-escaped.
* ``kind``: ``group``, ``dataset``, ``datatype`` (committed datatype), ``soft_link``,
  ``external_link``; a link of a user-defined class is ``user_link``.
* ``link_target``: soft link: the target path as stored; external link:
  ``"<file>:<object path>"``, both as stored (the object path is normally absolute, so a
  reader splits at the last ``":/"``); user-defined link: ``"class:<id>"``; null for objects.
* ``shape``: ``[]`` for scalar dataspaces, null for null dataspaces and non-datasets.
* ``dtype``: numpy's ``str(dtype)`` as h5py maps the HDF5 type (``float32``, ``>f4``, ``|S5``,
  ``object`` for variable-length strings/sequences and references, ``[('a', '<i4'), ...]``
  for compounds, ``int8`` for enums, ``bool`` for h5py booleans); null when h5py has no numpy
  equivalent (e.g. ``H5T_TIME``), with the reason in ``files.metadata.read_errors``.
* ``chunks``: chunk shape for chunked layouts, null otherwise.
* ``compression``: the filters of the pipeline that are not shuffle/fletcher32, in pipeline
  order, joined with ``+``: ``gzip``, ``lzf``, ``szip``, ``nbit``, ``scaleoffset``, or
  ``filter:<id>`` for third-party filters (``filter:32001`` is Blosc); null when none.
* ``attributes``: JSON object, attribute name to value, null for links. Numbers, booleans and
  strings keep their JSON type; arrays are (nested) lists; fixed and variable-length strings
  are decoded as UTF-8 (trailing NULs dropped; bytes that are not UTF-8 become
  ``{"base64": ...}``); opaque values are ``{"base64": ...}``; compounds are objects keyed by
  field name; complex numbers ``{"real", "imag"}``; enums their member name (h5py booleans
  ``true``/``false``); object and region references a path of the referenced object (HDF5
  picks one when it has several names; ``"<ref>"`` when it cannot be resolved, null for a null
  reference); numpy datetimes (h5py's tagged opaque type) ISO strings; long doubles floats;
  variable-length sequences lists; attributes in name order; NaN/Inf the strings
  ``"NaN"``/``"Infinity"``/``"-Infinity"``; null-dataspace (empty) attributes null. An attribute
  that cannot be read gets the value ``{"error": "Type: message"}`` and is listed in
  ``files.metadata.read_errors``; the file stays ``ok``. An attribute stored in more than
  :data:`MAX_ATTRIBUTE_BYTES` (64 KiB) is left out as ``{"omitted_bytes": <size>}`` (for
  variable-length strings the stored size is 16 bytes per string, whatever its length); one
  whose dataspace claims more bytes than its message holds is an ``{"error": ...}`` (nothing
  of the claimed size is allocated). A dimension or chunk size beyond 2^63 - 1 (the int64
  columns) makes the file corrupt, as it does for h5dump.

``files.metadata``: ``superblock_version``, ``userblock_size``, ``attributes`` (root
attributes, same encoding), ``counts`` (rows per kind), ``objects`` (distinct objects),
``read_errors`` (only when some attribute or datatype could not be read) and ``truncated``
(only when the path limit :data:`MAX_ROWS` was hit). ``format_version`` is
``"HDF5 superblock v<N>"``.

Errors: a truncated or corrupt file raises (``OSError``); so does any read failure of the file
object (a network error), even inside an attribute read, rather than being mistaken for one
unreadable attribute. A file the fast reader finds inconsistent fails there and is not handed
to libhdf5, which can loop forever or crash on some damaged structures (both seen when fuzzing);
a damaged global heap only costs the variable-length strings stored in it (``{"error": ...}``
values, as libhdf5 reports them, with other wording). The fast reader does not verify the
checksums of version-2 structures, nor read structures it does not need (free lists), so some
damaged files libhdf5 rejects are read.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5fd, h5l, h5o, h5p, h5r, h5s, h5t

from transforms.formats.arrays import open_hdf5_arrays
from transforms.formats.base import (
    REMOTE_BLOCK_SIZE,
    Extraction,
    Extractor,
    SchemaTables,
    Source,
    dumps,
    format_error,
)
from transforms.formats.netcdf import shortest_float32

#: Attributes whose stored value is larger than this are left out: their value in
#: ``attributes`` is ``{"omitted_bytes": <size>}``. 64 KiB is also what HDF5 keeps in an object
#: header (compact storage); anything larger is an array that belongs in a dataset.
MAX_ATTRIBUTE_BYTES = 64 * 1024

#: Limit on rows per file. Only reached by files whose hard links fan out into an exponential
#: number of paths; the walk stops there and ``files.metadata.truncated`` is set.
MAX_ROWS = 1_000_000

_FILTER_NAMES = {1: "gzip", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
_NOT_COMPRESSION = {2, 3}  # shuffle, fletcher32

_GROUP = "group"
_DATASET = "dataset"
_DATATYPE = "datatype"


# --- attribute values --------------------------------------------------------------------


def _text(raw: Any) -> Any:
    """A string value: bytes decoded as UTF-8 (NULs stripped), else base64."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (bytes, np.bytes_)):
        raw = bytes(raw).rstrip(b"\x00")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    return None if raw is None else str(raw)


def _name(raw: bytes) -> str:
    """A link or attribute name: UTF-8, invalid bytes backslash-escaped."""
    return raw.decode("utf-8", "backslashreplace")


def _opaque(raw: Any) -> Any:
    return {"base64": base64.b64encode(bytes(raw)).decode("ascii")}


def _ref_name(ref: Any, loc: Any) -> Any:
    if not ref:
        return None  # null reference
    try:
        name = h5r.get_name(ref, loc)
    except (OSError, ValueError, KeyError, RuntimeError):
        return "<ref>"
    return "<ref>" if name is None else _text(name)


def _nested(arr: np.ndarray, conv: Callable[[Any], Any]) -> Any:
    """Apply ``conv`` to every element, keeping the array's nesting as lists."""
    if arr.ndim == 0:
        return conv(arr[()])
    if arr.ndim == 1:
        return [conv(v) for v in arr]
    return [_nested(sub, conv) for sub in arr]


def _converter(dtype: np.dtype, loc: Any, refs: list[bool]) -> Callable[[Any], Any] | None:
    """Element -> JSON-able value for ``dtype``; None when ``tolist()`` already does it.

    ``refs`` gets a True when the converter resolves references through ``loc`` (and so
    belongs to one file).
    """
    if dtype.names is not None:
        fields = [(name, _converter(dtype.fields[name][0], loc, refs)) for name in dtype.names]

        def compound(rec: Any) -> Any:
            out = {}
            for name, conv in fields:
                value = rec[name]
                if conv is not None:
                    out[name] = conv(value)
                else:
                    out[name] = value.tolist() if hasattr(value, "tolist") else value
            return out

        return compound
    if dtype.subdtype is not None:  # array member of a compound
        conv = _converter(dtype.subdtype[0], loc, refs)
        if conv is None:
            return lambda v: np.asarray(v).tolist()
        return lambda v: _nested(np.asarray(v), conv)
    enum = h5py.check_enum_dtype(dtype)
    if enum is not None:
        names = {int(v): k for k, v in enum.items()}
        return lambda v: names.get(int(v), int(v))
    if h5py.check_ref_dtype(dtype) is not None:
        refs.append(True)
        return lambda v: _ref_name(v, loc)
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None:
        if vlen is str or vlen is bytes:
            return _text
        conv = _converter(np.dtype(vlen), loc, refs)
        if conv is None:
            return lambda v: np.asarray(v).tolist()
        return lambda v: _nested(np.asarray(v), conv)
    kind = dtype.kind
    if kind in "SO":
        return _text
    if kind == "U":
        return str
    if kind == "V":
        return _opaque
    if kind == "c":
        return lambda v: {"real": float(v.real), "imag": float(v.imag)}
    if kind in "Mm":
        return str
    if kind == "f" and dtype.itemsize == 4:  # float32: the shortest decimal that reads back
        return shortest_float32  # the same (0.1, as h5dump and ncdump print it; not 0.10000000149)
    if kind == "f" and dtype.itemsize > 8:
        return float  # long double: tolist() keeps numpy scalars
    return None  # bool, int, uint, float: tolist() gives Python values


class _Plan(NamedTuple):
    """How to read and convert values of one HDF5 datatype (as h5py's attrs[] reads them)."""

    dtype: np.dtype  # of the array to read into
    subshape: tuple[int, ...]  # dims of a top-level array type, appended to the dataspace's
    mtype: Any  # memory type for H5Aread
    conv: Callable[[Any], Any] | None  # element converter, None for tolist()


#: Plans by encoded HDF5 type (``H5Tencode``, under a microsecond), shared by every file:
#: deriving numpy dtypes and memory types is most of the cost of a plain attribute read.
_PLANS: dict[bytes, _Plan] = {}
_DTYPE_STRS: dict[bytes, str] = {}
_CACHE_LIMIT = 4096


def _plan(tid: Any, key: bytes, loc: Any) -> _Plan:
    """Build (and cache, unless it resolves references in one file) the plan for a type."""
    dtype = tid.dtype
    # an opaque type converts only to itself (its tag included): h5py's would be untagged
    mtype = tid.copy() if tid.get_class() == h5t.OPAQUE else h5t.py_create(dtype)
    subshape: tuple[int, ...] = ()
    if dtype.subdtype is not None:  # numpy has no top-level array type: fold it into the shape
        dtype, subshape = dtype.subdtype
    refs: list[bool] = []
    plan = _Plan(dtype, subshape, mtype, _converter(dtype, loc, refs))
    if not refs:
        if len(_PLANS) >= _CACHE_LIMIT:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _dtype_str(tid: Any) -> str:
    """numpy's ``str(dtype)`` of an HDF5 type, as h5py maps it."""
    key = tid.encode()
    text = _DTYPE_STRS.get(key)
    if text is None:
        if len(_DTYPE_STRS) >= _CACHE_LIMIT:
            _DTYPE_STRS.clear()
        text = _DTYPE_STRS[key] = str(tid.dtype)
    return text


def _attr_value(aid: Any, loc: Any, data_size: int) -> Any:
    """The JSON-able value of one open attribute (``h5a.AttrID``) of ``data_size`` bytes."""
    space = aid.get_space()
    if not data_size and space.get_simple_extent_type() == h5s.NULL:
        return None  # an empty attribute (h5py.Empty)
    tid = aid.get_type()
    key = tid.encode()
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan(tid, key, loc)
    dtype, subshape, mtype, conv = plan
    arr = np.empty(space.get_simple_extent_dims() + subshape, dtype=dtype)
    aid.read(arr, mtype=mtype)
    if conv is None:
        return arr.tolist()
    if arr.ndim == 0:
        return conv(arr[()])
    return _nested(arr, conv)


#: ``dumps()`` with its encoder built once; plain values (the common case) need nothing more.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _dumps(value: dict[str, Any]) -> str:
    if not value:
        return "{}"
    try:
        return _encode(value)
    except (ValueError, TypeError):  # NaN/Inf or a value that needs jsonable()
        pass
    try:
        return dumps(value)
    except (ValueError, TypeError, RecursionError):  # a value no converter foresaw
        safe = {}
        for key, item in value.items():
            try:
                dumps(item)
                safe[key] = item
            except (ValueError, TypeError, RecursionError) as exc:
                safe[key] = {"error": format_error(exc)}
        return dumps(safe)


# --- the walk, over either backend ------------------------------------------------------------
#
# A backend reads one open file. ``root()`` -> (handle, address); ``attributes(handle, path)``
# -> {name: value}; ``links(handle)`` -> [(name, link type, address or None, row fields of a
# soft/external/user link or None)] in name order; ``child(parent, name, address)`` -> handle;
# ``describe(handle, path)`` -> (row fields, child links or None). Row fields exclude
# ``object_path``. Problems that do not stop the file go to ``backend.errors``.


class _Walker:
    """Walks every path of one file and fills an :class:`Extraction`."""

    def __init__(self, out: Extraction, backend: Any) -> None:
        self.out = out
        self.backend = backend
        # address -> (row fields without object_path, child links or None)
        self.objects: dict[int, tuple[dict[str, Any], list | None]] = {}
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.truncated = False

    def add(self, path: str, fields: dict[str, Any]) -> bool:
        if self.rows >= MAX_ROWS:
            self.truncated = True
            return False
        self.rows += 1
        kind = fields["kind"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.out.add_row("hdf5", {"object_path": path, **fields})
        return True

    def walk(self) -> None:
        backend, out = self.backend, self.out
        root, root_addr = backend.root()
        root_json = _dumps(backend.attributes(root, "/"))
        out.metadata["attributes"] = json.loads(root_json)  # exactly what a row would hold
        children = backend.links(root)
        # The root has no row, but a hard link back to it does.
        self.objects[root_addr] = (_group_fields(root_json), children)
        # Depth-first, children in name order (as h5dump prints them). A frame keeps its group
        # open while its subtree is walked; ``ancestors`` guards against hard-link cycles.
        stack = [(root, iter(children), "", frozenset((root_addr,)))]
        while stack:
            handle, entries, prefix, ancestors = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name, _, addr, link = entry
            path = f"{prefix}/{_name(name)}"
            if link is not None:  # soft, external or user-defined: a row, never followed
                if not self.add(path, link):
                    return
                continue
            known = self.objects.get(addr)
            obj = None
            if known is None:
                obj = backend.child(handle, name, addr)
                known = self.objects[addr] = backend.describe(obj, path)
            fields, grandchildren = known
            if not self.add(path, fields):
                return
            if grandchildren is not None and addr not in ancestors:
                if obj is None:
                    obj = backend.child(handle, name, addr)
                stack.append((obj, iter(grandchildren), path, ancestors | {addr}))


def _collect(backend: Any, out: Extraction) -> None:
    """Fill ``out`` from an open file: format version, metadata and one row per path."""
    superblock, userblock = backend.superblock()
    out.format_version = f"HDF5 superblock v{superblock}"
    out.metadata.update(superblock_version=superblock, userblock_size=userblock)
    walker = _Walker(out, backend)
    try:
        walker.walk()
    finally:
        out.metadata["counts"] = walker.counts
        out.metadata["objects"] = len(walker.objects)  # distinct objects, the root included
        if backend.errors:
            out.metadata["read_errors"] = backend.errors
        if walker.truncated:
            out.metadata["truncated"] = True


def _group_fields(attributes: str) -> dict[str, Any]:
    return {"kind": _GROUP, "link_target": None, "shape": None, "dtype": None, "chunks": None,
            "compression": None, "attributes": attributes}


def _link_row(kind: str, target: str) -> dict[str, Any]:
    return {"kind": kind, "link_target": target, "shape": None, "dtype": None,
            "chunks": None, "compression": None, "attributes": None}


def _compression(codes: list[int]) -> str | None:
    filters = [_FILTER_NAMES.get(c) or f"filter:{c}" for c in codes if c not in _NOT_COMPRESSION]
    return "+".join(filters) if filters else None


# --- backend 1: h5py's low-level API (the reference, and the fallback) ---------------------


class _H5pyBackend:
    """Reads through libhdf5: every HDF5 feature, about 20 us per attribute and object."""

    def __init__(self, fid: Any, io_failed: Callable[[], bool] = lambda: False) -> None:
        self.fid = fid
        self.io_failed = io_failed
        self.errors: list[dict[str, str]] = []

    def superblock(self) -> tuple[int, int]:
        fcpl = self.fid.get_create_plist()
        return fcpl.get_version()[0], fcpl.get_userblock()

    def root(self) -> tuple[Any, int]:
        root = h5o.open(self.fid, b"/")
        return root, h5o.get_info(root).addr

    def child(self, gid: Any, name: bytes, addr: int) -> Any:
        return h5o.open(gid, name)

    def attributes(self, obj: Any, path: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {}

        def read(name: bytes, info: Any) -> None:
            key = _name(name)
            size = info.data_size
            if size > MAX_ATTRIBUTE_BYTES:
                attrs[key] = {"omitted_bytes": size}
                return
            try:
                attrs[key] = _attr_value(h5a.open(obj, name), obj, size)
            except Exception as exc:  # one bad attribute must not lose the file
                if self.io_failed():
                    raise  # the file could not be read: not a property of this attribute
                message = format_error(exc)
                attrs[key] = {"error": message}
                self.errors.append({"object_path": path, "attribute": key, "error": message})

        _iterate(lambda callback: h5a.iterate(obj, callback, info=True), read)
        return attrs

    def describe(self, obj: Any, path: str) -> tuple[dict[str, Any], list | None]:
        if isinstance(obj, h5d.DatasetID):
            fields = self.dataset(obj, path)
        elif isinstance(obj, h5t.TypeID):
            fields = {"kind": _DATATYPE, "link_target": None, "shape": None,
                      "dtype": self.dtype_str(obj, path), "chunks": None, "compression": None}
        else:
            return _group_fields(_dumps(self.attributes(obj, path))), self.links(obj)
        fields["attributes"] = _dumps(self.attributes(obj, path))
        return fields, None

    def dtype_str(self, tid: Any, path: str) -> str | None:
        try:
            return _dtype_str(tid)
        except (TypeError, ValueError) as exc:  # H5T_TIME, a 128-bit float: no numpy equivalent
            self.errors.append({"object_path": path, "error": format_error(exc)})
            return None

    def dataset(self, dsid: Any, path: str) -> dict[str, Any]:
        space = dsid.get_space()
        dims = space.get_simple_extent_dims()
        if dims and any(d > _INT64_MAX for d in dims):
            raise OSError(f"corrupt HDF5 file: dataset {path}: dimension {max(dims)} beyond 2^63 - 1")
        shape = list(dims) if dims or space.get_simple_extent_type() != h5s.NULL else None
        chunks = None
        codes: list[int] = []
        # A file offset means contiguous storage (no chunks, no filters): the creation property
        # list, five times dearer, is only read for the other layouts.
        if dsid.get_offset() is None:
            plist = dsid.get_create_plist()
            if plist.get_layout() == h5d.CHUNKED:  # filters need a chunked layout
                chunks = list(plist.get_chunk())
                codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        return {"kind": _DATASET, "link_target": None, "shape": shape,
                "dtype": self.dtype_str(dsid.get_type(), path), "chunks": chunks,
                "compression": _compression(codes)}

    def links(self, gid: Any) -> list[tuple[bytes, int, Any, dict[str, Any] | None]]:
        entries: list[tuple[bytes, int, Any, dict[str, Any] | None]] = []
        hard = h5l.TYPE_HARD

        def add(name: bytes, info: Any) -> None:
            ltype = info.type
            if ltype == hard:
                entries.append((name, ltype, info.u, None))
            else:
                entries.append((name, ltype, None, _h5py_link_fields(gid, name, ltype)))

        _iterate(lambda callback: gid.links.iterate(callback, info=True), add)
        return entries


def _iterate(run: Callable[[Callable[..., Any]], Any], callback: Callable[..., None]) -> None:
    """``run(guarded)``, an h5py iteration (``links.iterate``, ``h5a.iterate``) whose callback may
    raise: h5py reports an exception raised in a callback as a ``SystemError``, so the callback's
    own exception is kept, the iteration stopped, and that exception raised here."""
    failed: list[BaseException] = []

    def guarded(*args: Any) -> int | None:
        try:
            callback(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, outside h5py
            failed.append(exc)
            return 1  # not None: h5py stops iterating
        return None

    run(guarded)
    if failed:
        raise failed[0]


def _h5py_link_fields(gid: Any, name: bytes, ltype: int) -> dict[str, Any]:
    if ltype == h5l.TYPE_SOFT:
        return _link_row("soft_link", _name(gid.links.get_val(name)))
    if ltype == h5l.TYPE_EXTERNAL:
        filename, objpath = gid.links.get_val(name)
        return _link_row("external_link", f"{_name(filename)}:{_name(objpath)}")
    return _link_row("user_link", f"class:{ltype}")


# --- backend 2: a pure-Python reader of HDF5 metadata (the fast path) -------------------------
#
# Parses the superblock, object headers, links (symbol tables, link messages, dense storage in
# fractal heaps indexed by v2 B-trees) and attribute messages straight from the bytes, through
# a cache of blocks: no per-call overhead of a C API, and the same bounded reads locally and
# remotely. It covers what h5py, netCDF and most writers produce; anything else raises
# _Unsupported and the file is read by the h5py backend instead, from the start. Datatype
# messages are handed to libhdf5 (H5Tdecode) for their numpy dtype, so ``dtype`` and the value
# conversions are h5py's by construction. Checksums of version-2 structures are not verified.

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LOCAL_BLOCK = 64 * 1024
_UNPACK = {n: struct.Struct(f"<{c}").unpack_from for n, c in ((1, "B"), (2, "H"), (4, "I"),
                                                                 (8, "Q"))}
_MSG_V2 = struct.Struct("<BHB").unpack_from
_MSG_V2_CRT = struct.Struct("<BHBH").unpack_from
_MSG_V1 = struct.Struct("<HHB").unpack_from
_ATTR_HEAD = struct.Struct("<BBHHH").unpack_from
_MAX_DEPTH = 64
_MAX_CHUNKS = 10_000  # continuation chunks of one object header
_MAX_READ = 16 * 1024 * 1024  # one metadata structure; corrupt sizes must not read the file
_MAX_NODES = 1_000_000  # B-tree nodes visited in one file
_INT64_MAX = 2**63 - 1  # shape and chunks are int64 columns
#: Standard IEEE layouts (size: precision, exponent location, exponent size, mantissa location,
#: mantissa size, bias): any other float is left to libhdf5's conversions.
_IEEE = {2: (16, 10, 5, 0, 10, 15), 4: (32, 23, 8, 0, 23, 127), 8: (64, 52, 11, 0, 52, 1023)}
#: Datatype messages (bytes) -> numpy dtype str, value plan, or the TypeError h5py raised.
_RAW_TYPES: dict[bytes, tuple[str | None, Any, str | None]] = {}

_STR_PLAIN, _STR_FIXED, _STR_VLEN = 0, 1, 2
#: Datatype messages (bytes) -> which of the above, or -1 when the raw reader leaves it alone.
_KINDS: dict[bytes, int] = {}


class _Unsupported(Exception):
    """A structure the raw reader does not implement: h5py reads the file instead."""


class _Corrupt(Exception):
    """The bytes contradict the format: the file fails (libhdf5 may hang on such files)."""


class _ReadError(Exception):
    """The file object raised ``error``: the file fails, h5py does not get a second try."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _u(data: bytes, pos: int, size: int) -> int:
    """Little-endian unsigned integer of ``size`` bytes at ``pos``."""
    unpack = _UNPACK.get(size)
    if unpack is not None:
        return unpack(data, pos)[0]
    if pos + size > len(data):
        raise _Corrupt("field runs past its structure")
    return int.from_bytes(data[pos:pos + size], "little")


def _enc_size(value: int) -> int:
    """Bytes libhdf5 (H5VM_limit_enc_size) uses to encode values up to ``value``."""
    return (value.bit_length() - 1) // 8 + 1 if value > 0 else 1


def _raw_type(tbytes: bytes) -> tuple[str | None, Any, str | None]:
    """(str(dtype), value plan, error) of a datatype message, through libhdf5 and h5py."""
    known = _RAW_TYPES.get(tbytes)
    if known is None:
        tid = h5t.decode(b"\x03\x00" + tbytes)  # H5Tencode's header: message id, version 0
        try:
            dtype = tid.dtype
        except TypeError as exc:  # e.g. H5T_TIME, as the h5py backend reports it
            known = (None, None, format_error(exc))
        else:
            plan = _plan(tid, tid.encode(), None) if not dtype.hasobject else None
            known = (str(dtype), plan, None)
        if len(_RAW_TYPES) >= _CACHE_LIMIT:
            _RAW_TYPES.clear()
        _RAW_TYPES[tbytes] = known
    return known


class _Blocks:
    """Bounded random access to a file through a cache of fixed-size blocks."""

    def __init__(self, fileobj: Any, size: int, block: int) -> None:
        self.f, self.size, self.block = fileobj, size, block
        self.cache: dict[int, bytes] = {}

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise _Corrupt(f"HDF5 structure at {offset} (+{n}) beyond the end of the file")
        if n > _MAX_READ:
            raise _Corrupt(f"HDF5 structure of {n} bytes: larger than any metadata")
        block = self.block
        first = offset // block
        last = (offset + n - 1) // block if n else first
        start = offset - first * block
        if first == last:
            data = self.cache.get(first) or self._load(first)
            return data[start:start + n]
        data = b"".join(self.cache.get(i) or self._load(i) for i in range(first, last + 1))
        return data[start:start + n]

    def _load(self, index: int) -> bytes:
        try:
            self.f.seek(index * self.block)
            data = self.f.read(self.block)
        except Exception as exc:  # the file object failed (a network error): not a parse error
            raise _ReadError(exc) from exc
        if len(data) < min(self.block, self.size - index * self.block):
            raise _Corrupt(f"short read at {index * self.block}: the file is truncated")
        self.cache[index] = data
        return data


class _Header:
    """One parsed object header: its messages as (type, flags, body)."""

    __slots__ = ("addr", "messages")

    def __init__(self, addr: int, messages: list[tuple[int, int, bytes]]) -> None:
        self.addr, self.messages = addr, messages

    def first(self, mtype: int) -> tuple[int, bytes] | None:
        for t, flags, body in self.messages:
            if t == mtype:
                return flags, body
        return None


class _RawBackend:
    """The walk's backend over :class:`_Blocks`; see the section comment."""

    def __init__(self, blocks: _Blocks) -> None:
        self.r = blocks
        self.errors: list[dict[str, str]] = []
        self.headers: dict[int, _Header] = {}
        self.gheaps: dict[int, dict[int, bytes]] = {}
        self.visited: set[int] = set()
        self._superblock()

    # -- superblock ------------------------------------------------------------------------

    def _superblock(self) -> None:
        r = self.r
        base = 0
        while r.read(base, 8) != _SIGNATURE:
            base = 512 if base == 0 else base * 2
            if base + 8 > r.size:
                raise _Corrupt("no HDF5 signature")
        sb = r.read(base, min(256, r.size - base))
        version = sb[8]
        if version in (0, 1):
            self.O, self.L = sb[13], sb[14]
            pos = 24 if version == 0 else 28
            self._sizes()
            stored_base = _u(sb, pos, self.O)
            eof = _u(sb, pos + 2 * self.O, self.O)
            driver = _u(sb, pos + 3 * self.O, self.O)
            self.root_addr = _u(sb, pos + 5 * self.O, self.O)
            if driver != self.undef:
                raise _Unsupported("driver information block")
        elif version in (2, 3):
            self.O, self.L = sb[9], sb[10]
            self._sizes()
            stored_base = _u(sb, 12, self.O)
            ext = _u(sb, 12 + self.O, self.O)
            eof = _u(sb, 12 + 2 * self.O, self.O)
            self.root_addr = _u(sb, 12 + 3 * self.O, self.O)
            if ext != self.undef:
                self.base = base
                for mtype, _, _ in self.header(ext).messages:
                    if mtype not in (0x13, 0x17):  # B-tree 'K' values, file space info
                        raise _Unsupported(f"superblock extension message {mtype}")
        else:
            raise _Unsupported(f"superblock version {version}")
        if stored_base != base:
            raise _Unsupported("base address differs from the superblock's position")
        if eof > r.size:  # the stored end of file counts the user block (H5F__super_read)
            raise _Corrupt(f"HDF5 file truncated: its superblock says {eof} bytes, "
                           f"the file has {r.size}")
        self.version, self.base = version, base

    def _sizes(self) -> None:
        if self.O not in (2, 4, 8) or self.L not in (2, 4, 8):
            raise _Corrupt("bad sizes of offsets and lengths")
        self.undef = (1 << (8 * self.O)) - 1

    def superblock(self) -> tuple[int, int]:
        return self.version, self.base

    # -- object headers --------------------------------------------------------------------

    def _visit(self, addr: int, depth: int) -> None:
        """Count a node of an index: corrupt files must not send the reader round in circles."""
        if depth > _MAX_DEPTH or addr in self.visited or len(self.visited) > _MAX_NODES:
            raise _Corrupt(f"index node at {addr} visited twice, or index too large")
        self.visited.add(addr)

    def header(self, addr: int) -> _Header:
        hdr = self.headers.get(addr)
        if hdr is None:
            hdr = self.headers[addr] = self._parse_header(addr)
        return hdr

    def _parse_header(self, addr: int) -> _Header:
        if addr == self.undef:
            raise _Corrupt("undefined object header address")
        start = self.base + addr
        first = self.r.read(start, 16)
        messages: list[tuple[int, int, bytes]] = []
        if first[:4] == b"OHDR":
            version, flags = first[4], first[5]
            if version != 2:
                raise _Unsupported(f"object header version {version}")
            pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            size0 = _u(self.r.read(start + pos, width), 0, width)
            crt = bool(flags & 0x04)
            chunks = [self.r.read(start + pos + width, size0)]
            seen = 0
            while chunks:
                seen += 1
                if seen > _MAX_CHUNKS:
                    raise _Corrupt("object header continuation loop")
                self._v2_messages(chunks.pop(0), crt, messages, chunks)
            return _Header(addr, messages)
        if first[0] != 1:
            raise _Corrupt(f"no object header at address {addr}")
        budget = _u(first, 2, 2)
        chunks = [self.r.read(start + 16, _u(first, 8, 4))]
        while chunks and budget > 0:
            data = chunks.pop(0)
            pos = 0
            while pos + 8 <= len(data) and budget > 0:
                mtype, msize, mflags = _MSG_V1(data, pos)
                body = data[pos + 8:pos + 8 + msize]
                if len(body) < msize:
                    raise _Corrupt(f"object header at {addr} truncated")
                pos += 8 + msize
                budget -= 1
                if mtype == 0x10:
                    chunks.append(self.r.read(self.base + _u(body, 0, self.O),
                                              _u(body, self.O, self.L)))
                elif mtype:
                    messages.append((mtype, mflags, body))
        return _Header(addr, messages)

    def _v2_messages(self, data: bytes, crt: bool, messages: list, chunks: list) -> None:
        """Messages of one chunk of a version-2 header; continuation chunks go to ``chunks``."""
        pos, end = 0, len(data)
        if data[:4] == b"OCHK":  # continuation block: signature, messages, checksum
            pos, end = 4, len(data) - 4
        hsize = 6 if crt else 4
        while pos + hsize <= end:
            if crt:
                mtype, msize, mflags, _ = _MSG_V2_CRT(data, pos)
            else:
                mtype, msize, mflags = _MSG_V2(data, pos)
            body = data[pos + hsize:pos + hsize + msize]
            if len(body) < msize:
                raise _Corrupt("object header message runs past its chunk")
            pos += hsize + msize
            if mtype == 0x10:
                block = self.r.read(self.base + _u(body, 0, self.O), _u(body, self.O, self.L))
                if block[:4] != b"OCHK":
                    raise _Corrupt("bad object header continuation block")
                chunks.append(block)
            elif mtype:
                messages.append((mtype, mflags, body))

    def _kind(self, hdr: _Header) -> str:
        # libhdf5's order (H5O__obj_class_real): group, then dataset, then named datatype.
        types = {m[0] for m in hdr.messages}
        if 0x11 in types or 0x02 in types:
            return _GROUP
        if 0x03 in types and 0x01 in types:
            return _DATASET
        if 0x03 in types:
            return _DATATYPE
        raise _Unsupported("object of unknown class")

    # -- datatypes and dataspaces ------------------------------------------------------------

    def _datatype(self, flags: int, body: bytes, depth: int = 0) -> bytes:
        """The datatype message of a (possibly committed, i.e. shared) datatype."""
        if not flags & 0x02:
            return body
        version, kind = body[0], body[1]
        if version == 1:
            addr = _u(body, 8, self.O)
        elif version == 2 or (version == 3 and kind == 2):
            addr = _u(body, 2, self.O)
        else:
            raise _Unsupported("datatype in the shared message heap")
        if depth > _MAX_DEPTH:
            raise _Corrupt("loop of committed datatypes")
        found = self.header(addr).first(0x03)
        if found is None:
            raise _Corrupt("committed datatype without a datatype message")
        return self._datatype(found[0], found[1], depth + 1)

    def _dataspace(self, body: bytes) -> tuple[str, tuple[int, ...]]:
        version, ndims = body[0], body[1]
        if version == 1:
            pos, kind = 8, ("simple" if ndims else "scalar")
        elif version == 2:
            pos, kind = 4, ("scalar", "simple", "null")[body[3]]
        else:
            raise _Unsupported(f"dataspace message version {version}")
        if not ndims or kind != "simple":
            return kind, ()
        code = {8: "Q", 4: "I", 2: "H"}[self.L]
        return kind, struct.unpack_from(f"<{ndims}{code}", body, pos)

    def _check(self, body: bytes, pos: int, top: bool, depth: int = 0) -> tuple[int, int]:
        """(string kind, bytes consumed) of a datatype: what the raw decoder must special-case.

        Raises _Unsupported for what it leaves to libhdf5's conversions: references, variable-
        length sequences, strings inside other types, time, non-IEEE floats, integers with
        padding bits.
        """
        if depth > _MAX_DEPTH:
            raise _Corrupt("datatype nested too deep")
        cv = body[pos]
        cls, version = cv & 0x0F, cv >> 4
        bits = _u(body, pos + 1, 2) | body[pos + 3] << 16
        size = _u(body, pos + 4, 4)
        p = pos + 8
        # Field values the format does not define mean a corrupt file, not an unknown feature:
        # libhdf5 can crash on those (seen fuzzing: a segfault in H5Aread).
        if not 1 <= version <= 5 or cls > 11 or (size == 0 and cls != 9):
            raise _Corrupt(f"invalid datatype (class {cls}, version {version}, size {size})")
        if cls == 3 and (bits & 0x0F > 2 or (bits >> 4) & 0x0F > 1):
            raise _Corrupt("invalid string padding or character set")
        if cls == 9 and (bits & 0x0F > 1 or (bits >> 4) & 0x0F > 2 or (bits >> 8) & 0x0F > 1):
            raise _Corrupt("invalid variable-length type")
        if cls in (0, 4):  # integer, bitfield
            if _u(body, p, 2) != 0 or _u(body, p + 2, 2) != 8 * size:
                raise _Unsupported("integer with padding bits")
            return _STR_PLAIN, 12
        if cls == 1:
            layout = (_u(body, p + 2, 2), body[p + 4], body[p + 5], body[p + 6], body[p + 7],
                      _u(body, p + 8, 4))
            standard = bits & 0x4E == 0 and (bits >> 4) & 3 == 2 and (bits >> 8) & 0xFF == 8 * size - 1
            if not standard or _IEEE.get(size) != layout or _u(body, p, 2) != 0:
                raise _Unsupported("floating point format other than IEEE")
            return _STR_PLAIN, 20
        if cls == 3:
            if top:
                return _STR_FIXED, 8
            if bits & 0x0F != 1:  # only NUL-padded (h5py's own): converted as stored
                raise _Unsupported("string member that is not NUL-padded")
            return _STR_PLAIN, 8
        if cls == 5:  # opaque: the tag follows, NUL-padded to 8 bytes
            return _STR_PLAIN, 8 + (bits & 0xFF)
        if cls == 6:  # compound
            for _ in range(bits & 0xFFFF):
                nul = body.index(b"\x00", p)
                p = p + ((nul - p) // 8 + 1) * 8 if version < 3 else nul + 1
                if version == 1:
                    if body[p + 4]:
                        raise _Unsupported("compound member with old-style array dimensions")
                    p += 32
                elif version == 2:
                    p += 4
                else:
                    p += _enc_size(size)
                p += self._check(body, p, False, depth + 1)[1]
            return _STR_PLAIN, p - pos
        if cls == 8:  # enum: base type, names, values
            p += self._check(body, p, False, depth + 1)[1]
            base_size = _u(body, pos + 12, 4)
            for _ in range(bits & 0xFFFF):
                nul = body.index(b"\x00", p)
                p = p + ((nul - p) // 8 + 1) * 8 if version < 3 else nul + 1
            return _STR_PLAIN, p + (bits & 0xFFFF) * base_size - pos
        if cls == 9 and bits & 0x0F == 1:
            if not top:
                raise _Unsupported("variable-length string inside another type")
            return _STR_VLEN, 0  # only ever at the top: its length is not needed
        if cls == 10:  # array
            ndims = body[p]
            p += 1 if version >= 3 else 4
            p += 4 * ndims * (1 if version >= 3 else 2)
            p += self._check(body, p, False, depth + 1)[1]
            return _STR_PLAIN, p - pos
        raise _Unsupported(f"values of datatype class {cls}")

    # -- attributes -------------------------------------------------------------------------

    def attributes(self, hdr: _Header, path: str) -> dict[str, Any]:
        found: list[tuple[bytes, Any]] = []
        for mtype, flags, body in hdr.messages:
            if mtype == 0x0C:
                if flags & 0x02:
                    raise _Unsupported("shared attribute message")
                found.append(self._attribute(body))
            elif mtype == 0x15:
                aflags = body[1]
                pos = 2 + (2 if aflags & 1 else 0)
                heap, name_index = _u(body, pos, self.O), _u(body, pos + self.O, self.O)
                if heap == self.undef:
                    continue
                fheap = _FractalHeap(self, heap)
                for record in self._btree2(name_index, 8):
                    if record[8] & 0x01:
                        raise _Unsupported("shared attribute in dense storage")
                    found.append(self._attribute(fheap.get(record[:8])))
        found.sort(key=lambda item: item[0])  # by name, as libhdf5 iterates them
        attrs = {}
        for name, value in found:
            key = _name(name)
            if isinstance(value, _Corrupt):  # its value only: the rest of the file is fine
                value = {"error": f"OSError: {value}"}
                self.errors.append({"object_path": path, "attribute": key,
                                    "error": value["error"]})
            attrs[key] = value
        return attrs

    def _attribute(self, body: bytes) -> tuple[bytes, Any]:
        version, flags, name_size, dt_size, ds_size = _ATTR_HEAD(body, 0)
        if version == 1:
            pos = 8
            name = body[pos:pos + name_size]
            pos += (name_size + 7) // 8 * 8
            dt_pos = pos
            pos += (dt_size + 7) // 8 * 8
            ds_pos = pos
            pos += (ds_size + 7) // 8 * 8
        elif version in (2, 3):
            pos = 8 + (1 if version == 3 else 0)
            name = body[pos:pos + name_size]
            dt_pos = pos + name_size
            ds_pos = dt_pos + dt_size
            pos = ds_pos + ds_size
        else:
            raise _Unsupported(f"attribute message version {version}")
        name = name[:name_size - 1].split(b"\x00", 1)[0]  # as libhdf5's strndup(name_size - 1)
        if flags & 0x02:
            raise _Unsupported("shared attribute dataspace")
        tbytes = self._datatype(0x02 if flags & 0x01 else 0, body[dt_pos:dt_pos + dt_size])
        kind, dims = self._dataspace(body[ds_pos:ds_pos + ds_size])
        if kind == "null":
            return name, None
        count = 1
        for d in dims:
            count *= d
        esize = _u(tbytes, 4, 4)
        if esize == 0:
            raise _Corrupt(f"attribute {name!r} of a zero-size datatype")
        if count * esize > len(body) - pos:  # the values are in the message: a false claim
            return name, _Corrupt(f"the dataspace claims {count * esize} bytes of values, "
                                  f"the attribute message holds {len(body) - pos}")
        if count * esize > MAX_ATTRIBUTE_BYTES:
            return name, {"omitted_bytes": count * esize}
        data = body[pos:pos + count * esize]
        strings = _KINDS.get(tbytes)
        if strings is None:
            try:
                strings = self._check(tbytes, 0, True)[0]
            except _Unsupported:
                strings = -1
            if len(_KINDS) >= _CACHE_LIMIT:
                _KINDS.clear()
            _KINDS[tbytes] = strings
        if strings < 0:
            raise _Unsupported("attribute type left to libhdf5")
        if strings == _STR_VLEN:
            step = 8 + self.O
            try:
                flat = [_text(self._vlen(data, i * step)) for i in range(count)]
            except _Corrupt as exc:  # a damaged global heap: this value is lost, not the file
                return name, exc
            return name, _reshape(flat, dims)
        if strings == _STR_FIXED:
            pad = _u(tbytes, 1, 1) & 0x0F
            chunks = [data[i * esize:(i + 1) * esize] for i in range(count)]
            # What libhdf5's conversion to h5py's memory type (NUL-padded) leaves: a NUL-padded
            # string as stored, a NUL-terminated one up to its first NUL, a space-padded one
            # without its trailing spaces (_text then drops trailing NULs).
            if pad == 0:
                chunks = [c.split(b"\x00", 1)[0] for c in chunks]
            elif pad == 2:
                chunks = [c.rstrip(b" ") for c in chunks]
            elif pad != 1:
                raise _Unsupported(f"string padding {pad}")
            cut = chunks
            return name, _reshape([_text(c) for c in cut], dims)
        _, plan, error = _raw_type(tbytes)
        if error is not None or plan is None:
            raise _Unsupported("attribute type left to libhdf5")
        dtype, subshape, _, conv = plan
        per = 1
        for d in subshape:
            per *= d
        if dtype.itemsize * per != esize:
            raise _Unsupported("numpy layout differs from the file's")
        arr = np.frombuffer(data, dtype=dtype, count=count * per).reshape(dims + subshape)
        if conv is None:
            return name, arr.tolist()
        if arr.ndim == 0:
            return name, conv(arr[()])
        return name, _nested(arr, conv)

    def _vlen(self, data: bytes, pos: int) -> bytes:
        """The bytes a variable-length element (length, global heap collection, index) holds."""
        length = _u(data, pos, 4)
        addr = _u(data, pos + 4, self.O)
        if not length or addr == 0 or addr == self.undef:
            return b""
        heap = self.gheaps.get(addr)
        if heap is None:
            heap = self.gheaps[addr] = self._global_heap(addr)
        obj = heap.get(_u(data, pos + 4 + self.O, 4))
        if obj is None:
            raise _Corrupt(f"global heap object missing at {addr}")
        if len(obj) != length:  # libhdf5 checks this too (H5F__blob_get)
            raise _Corrupt(f"global heap object at {addr} has {len(obj)} bytes, not {length}")
        return obj

    def _global_heap(self, addr: int) -> dict[int, bytes]:
        lsz = self.L
        head = self.r.read(self.base + addr, 8 + lsz)
        if head[:4] != b"GCOL":
            raise _Corrupt(f"bad global heap collection at {addr}")
        size = _u(head, 8, lsz)
        data = self.r.read(self.base + addr, size)
        objects: dict[int, bytes] = {}
        pos = 8 + lsz
        while pos + 8 + lsz <= size:  # a smaller tail is free space (H5HG__cache_heap_deserialize)
            index = _u(data, pos, 2)
            osize = _u(data, pos + 8, lsz)
            # Objects are padded to 8 bytes, the free-space object (index 0) is not.
            need = 8 + lsz + (osize + 7) // 8 * 8 if index else osize
            if need <= 0 or pos + need > size:
                raise _Corrupt(f"global heap collection at {addr} runs past its end")
            if index:
                objects[index] = data[pos + 8 + lsz:pos + 8 + lsz + osize]
            pos += need
        return objects

    # -- objects -----------------------------------------------------------------------------

    def root(self) -> tuple[_Header, int]:
        hdr = self.header(self.root_addr)
        if self._kind(hdr) != _GROUP:
            raise _Corrupt("the root object is not a group")
        return hdr, self.root_addr

    def child(self, parent: _Header, name: bytes, addr: int) -> _Header:
        return self.header(addr)

    def describe(self, hdr: _Header, path: str) -> tuple[dict[str, Any], list | None]:
        kind = self._kind(hdr)
        if kind == _GROUP:
            return _group_fields(_dumps(self.attributes(hdr, path))), self.links(hdr)
        found = hdr.first(0x03)
        dtype_str, _, error = _raw_type(self._datatype(*found))  # type: ignore[misc]
        if error is not None:
            self.errors.append({"object_path": path, "error": error})
        fields = {"kind": kind, "link_target": None, "shape": None, "dtype": dtype_str,
                  "chunks": None, "compression": None}
        if kind == _DATASET:
            space, dims = self._dataspace(hdr.first(0x01)[1])  # type: ignore[index]
            fields["shape"] = None if space == "null" else _int64s(dims, f"dataset {path}")
            self._storage(hdr, fields)
        fields["attributes"] = _dumps(self.attributes(hdr, path))
        return fields, None

    def _storage(self, hdr: _Header, fields: dict[str, Any]) -> None:
        found = hdr.first(0x08)
        if found is None:
            raise _Unsupported("dataset without a layout message")
        body = found[1]
        version, layout = body[0], body[1]
        if version == 3:
            if layout == 2:
                ndims = body[2]
                dims = [_u(body, 3 + self.O + 4 * i, 4) for i in range(ndims)]
                fields["chunks"] = dims[:-1]  # the last "dimension" is the element size
        elif version in (4, 5):
            if layout == 2:
                ndims, width = body[3], body[4]
                dims = [_u(body, 5 + width * i, width) for i in range(ndims)]
                fields["chunks"] = _int64s(dims[:-1], "chunk shape")
        else:
            raise _Unsupported(f"layout message version {version}")
        if layout not in (0, 1, 2, 3):
            raise _Unsupported(f"layout class {layout}")
        if layout != 2:
            return
        found = hdr.first(0x0B)
        if found is None:
            return
        if found[0] & 0x02:
            raise _Unsupported("shared filter pipeline message")
        body = found[1]
        version, count = body[0], body[1]
        pos = 8 if version == 1 else 2
        codes = []
        for _ in range(count):
            code = _u(body, pos, 2)
            named = version == 1 or code >= 256
            name_len = _u(body, pos + 2, 2) if named else 0
            pos += 4 if named else 2
            nvalues = _u(body, pos + 2, 2)
            pos += 4
            pos += (name_len + 7) // 8 * 8 if version == 1 else name_len
            pos += 4 * nvalues + (4 if version == 1 and nvalues % 2 else 0)
            codes.append(code)
        fields["compression"] = _compression(codes)

    # -- links -------------------------------------------------------------------------------

    def links(self, hdr: _Header) -> list[tuple[bytes, int, Any, dict[str, Any] | None]]:
        stab = hdr.first(0x11)
        if stab is not None:
            entries = self._symbol_table(stab[1])
        else:
            entries = []
            for mtype, _, body in hdr.messages:
                if mtype == 0x06:
                    entries.append(self._link(body))
                elif mtype == 0x02:
                    lflags = body[1]
                    pos = 2 + (8 if lflags & 1 else 0)
                    heap, name_index = _u(body, pos, self.O), _u(body, pos + self.O, self.O)
                    if heap == self.undef:
                        continue
                    fheap = _FractalHeap(self, heap)
                    for record in self._btree2(name_index, 5):
                        entries.append(self._link(fheap.get(record[4:])))
        entries.sort(key=lambda entry: entry[0])  # by name, as libhdf5 iterates them
        return entries

    def _link(self, body: bytes) -> tuple[bytes, int, Any, dict[str, Any] | None]:
        if body[0] != 1:
            raise _Unsupported(f"link message version {body[0]}")
        flags = body[1]
        pos = 2
        ltype = 0
        if flags & 0x08:
            ltype = body[pos]
            pos += 1
        if flags & 0x04:
            pos += 8  # creation order
        if flags & 0x10:
            pos += 1  # character set of the name
        width = 1 << (flags & 3)
        nlen = _u(body, pos, width)
        pos += width
        name = body[pos:pos + nlen]
        pos += nlen
        if ltype == 0:
            return name, 0, _u(body, pos, self.O), None
        size = _u(body, pos, 2)
        value = body[pos + 2:pos + 2 + size]
        if ltype == 1:
            return name, 1, None, _link_row("soft_link", _name(value))
        if ltype == 64:
            filename, objpath = value[1:].split(b"\x00")[:2]
            return name, 64, None, _link_row("external_link",
                                             f"{_name(filename)}:{_name(objpath)}")
        return name, ltype, None, _link_row("user_link", f"class:{ltype}")

    def _symbol_table(self, body: bytes) -> list[tuple[bytes, int, Any, dict[str, Any] | None]]:
        osz, lsz = self.O, self.L
        btree, lheap = _u(body, 0, osz), _u(body, osz, osz)
        head = self.r.read(self.base + lheap, 8 + 2 * lsz + osz)
        if head[:4] != b"HEAP":
            raise _Corrupt("bad local heap")
        names = self.r.read(self.base + _u(head, 8 + 2 * lsz, osz), _u(head, 8, lsz))
        entries: list[tuple[bytes, int, Any, dict[str, Any] | None]] = []
        self._group_btree(btree, names, entries, 0)
        return entries

    def _group_btree(self, addr: int, names: bytes, entries: list, depth: int,
                     level_expected: int | None = None) -> None:
        self._visit(addr, depth)
        osz, lsz = self.O, self.L
        head = self.r.read(self.base + addr, 8 + 2 * osz)
        if head[:4] != b"TREE" or head[4] != 0:
            raise _Corrupt("bad group B-tree node")
        level, used = head[5], _u(head, 6, 2)
        if level_expected is not None and level != level_expected:
            raise _Corrupt("group B-tree levels out of order")
        body = self.r.read(self.base + addr + 8 + 2 * osz, (used + 1) * lsz + used * osz)
        for i in range(used):
            child = _u(body, lsz + i * (lsz + osz), osz)
            if level > 0:
                self._group_btree(child, names, entries, depth + 1, level - 1)
                continue
            self._visit(child, depth)
            node = self.r.read(self.base + child, 8)
            if node[:4] != b"SNOD":
                raise _Corrupt("bad symbol table node")
            count = _u(node, 6, 2)
            size = 2 * osz + 24
            data = self.r.read(self.base + child + 8, count * size)
            for j in range(count):
                pos = j * size
                name_at = _u(data, pos, osz)
                name = names[name_at:names.index(b"\x00", name_at)]
                cache = _u(data, pos + 2 * osz, 4)
                if cache == 2:  # a soft link: its value in the local heap
                    at = _u(data, pos + 2 * osz + 8, 4)
                    value = names[at:names.index(b"\x00", at)]
                    entries.append((name, 1, None, _link_row("soft_link", _name(value))))
                else:
                    entries.append((name, 0, _u(data, pos + osz, osz), None))

    # -- v2 B-trees (the name indexes of dense links and attributes) ---------------------------

    def _btree2(self, addr: int, rtype: int) -> list[bytes]:
        """Every record of a v2 B-tree (order does not matter: callers sort by name)."""
        if addr == self.undef:
            return []
        osz, lsz = self.O, self.L
        head = self.r.read(self.base + addr, 16 + osz + 2 + lsz)
        if head[:4] != b"BTHD" or head[5] != rtype:
            raise _Corrupt("bad v2 B-tree header")
        node_size, rec_size, depth = _u(head, 6, 4), _u(head, 10, 2), _u(head, 12, 2)
        root, root_n = _u(head, 16, osz), _u(head, 16 + osz, 2)
        if root == self.undef or not root_n:
            return []
        if depth > _MAX_DEPTH:
            raise _Corrupt("v2 B-tree too deep")
        # Field widths of internal nodes, as H5B2__hdr_init derives them from the node size.
        max_nrec = (node_size - 10) // rec_size  # leaves: signature, version, type, checksum
        nrec_size = _enc_size(max_nrec)
        cum_max, cum_sizes = max_nrec, [0]
        for level in range(1, depth):
            pointer = osz + nrec_size + (cum_sizes[level - 1] if level > 1 else 0)
            level_max = (node_size - 10 - pointer) // (rec_size + pointer)
            cum_max = (level_max + 1) * cum_max + level_max
            cum_sizes.append(_enc_size(cum_max))
        records: list[bytes] = []
        self._btree2_node(root, root_n, depth, rec_size, nrec_size, cum_sizes, records)
        return records

    def _btree2_node(self, addr: int, count: int, depth: int, rec_size: int, nrec_size: int,
                     cum_sizes: list[int], records: list[bytes]) -> None:
        osz = self.O
        self._visit(addr, 0)
        if depth == 0:
            node = self.r.read(self.base + addr, 6 + count * rec_size)
            if node[:4] != b"BTLF":
                raise _Corrupt("bad v2 B-tree leaf")
            records.extend(node[6 + i * rec_size:6 + (i + 1) * rec_size] for i in range(count))
            return
        total = cum_sizes[depth - 1] if depth > 1 else 0
        pointer = osz + nrec_size + total
        node = self.r.read(self.base + addr, 6 + count * rec_size + (count + 1) * pointer)
        if node[:4] != b"BTIN":
            raise _Corrupt("bad v2 B-tree internal node")
        records.extend(node[6 + i * rec_size:6 + (i + 1) * rec_size] for i in range(count))
        pos = 6 + count * rec_size
        for _ in range(count + 1):
            child, child_n = _u(node, pos, osz), _u(node, pos + osz, nrec_size)
            pos += pointer
            self._btree2_node(child, child_n, depth - 1, rec_size, nrec_size, cum_sizes,
                              records)


class _FractalHeap:
    """Managed and tiny objects of a fractal heap (dense links and attributes)."""

    def __init__(self, raw: _RawBackend, addr: int) -> None:
        self.raw = raw
        osz, lsz = raw.O, raw.L
        h = raw.r.read(raw.base + addr, 22 + 12 * lsz + 3 * osz)
        if h[:4] != b"FRHP":
            raise _Corrupt("bad fractal heap header")
        if _u(h, 7, 2):
            raise _Unsupported("filtered fractal heap")
        self.id_len = _u(h, 5, 2)
        max_managed = _u(h, 10, 4)
        p = 14 + 10 * lsz + 2 * osz
        self.width = _u(h, p, 2)
        self.start = _u(h, p + 2, lsz)
        max_direct = _u(h, p + 2 + lsz, lsz)
        max_heap_bits = _u(h, p + 2 + 2 * lsz, 2)
        self.root = _u(h, p + 6 + 2 * lsz, osz)
        self.rows = _u(h, p + 6 + 2 * lsz + osz, 2)
        self.off_size = (max_heap_bits + 7) // 8
        self.len_size = min((max_direct.bit_length() - 1 + 7) // 8, _enc_size(max_managed))
        self.max_direct_rows = (max_direct.bit_length() - self.start.bit_length()) + 2
        self._blocks: list[tuple[int, int, int]] | None = None

    def get(self, heap_id: bytes) -> bytes:
        kind = (heap_id[0] >> 4) & 0x03
        if heap_id[0] >> 6:
            raise _Unsupported("fractal heap ID version")
        if kind == 2:  # tiny: the object is in the ID
            if self.id_len - 1 <= 16:  # H5HF_TINY_LEN_SHORT
                return heap_id[1:1 + (heap_id[0] & 0x0F) + 1]
            return heap_id[2:2 + ((heap_id[0] & 0x0F) << 8 | heap_id[1]) + 1]
        if kind != 0:
            raise _Unsupported("huge fractal heap object")
        offset = _u(heap_id, 1, self.off_size)
        length = _u(heap_id, 1 + self.off_size, self.len_size)
        blocks = self._direct_blocks()
        i = bisect.bisect_right(blocks, (offset, 1 << 64)) - 1
        if i < 0:
            raise _Corrupt("fractal heap object outside the heap")
        block_offset, size, addr = blocks[i]
        if offset + length > block_offset + size:
            raise _Corrupt("fractal heap object outside its block")
        return self.raw.r.read(self.raw.base + addr + offset - block_offset, length)

    def _direct_blocks(self) -> list[tuple[int, int, int]]:
        """(heap offset, size, file address) of every direct block, by offset."""
        if self._blocks is None:
            blocks: list[tuple[int, int, int]] = []
            if self.rows == 0:
                blocks.append((0, self.start, self.root))
            else:
                self._indirect(self.root, self.rows, 0, blocks, 0)
            blocks.sort()
            self._blocks = blocks
        return self._blocks

    def _indirect(self, addr: int, rows: int, offset: int, blocks: list, depth: int) -> None:
        raw = self.raw
        if depth > _MAX_DEPTH:
            raise _Corrupt("fractal heap too deep")
        osz, width = raw.O, self.width
        head = 4 + 1 + osz + self.off_size
        data = raw.r.read(raw.base + addr, head + rows * width * osz)
        if data[:4] != b"FHIB":
            raise _Corrupt("bad fractal heap indirect block")
        first_row_bits = (self.start.bit_length() - 1) + (width.bit_length() - 1)
        for row in range(rows):
            size = self.start if row == 0 else self.start << (row - 1)
            for col in range(width):
                child = _u(data, head + (row * width + col) * osz, osz)
                if child != raw.undef:
                    if row < self.max_direct_rows:
                        blocks.append((offset, size, child))
                    else:  # an indirect block covering ``size`` bytes of the heap
                        child_rows = (size.bit_length() - 1) - first_row_bits + 1
                        self._indirect(child, child_rows, offset, blocks, depth + 1)
                offset += size


def _int64s(values: Any, what: str) -> list[int]:
    """``values`` as a list for an int64 column; a larger value is corrupt (h5dump fails too)."""
    values = list(values)
    if any(v > _INT64_MAX for v in values):
        raise _Corrupt(f"{what}: dimension {max(values)} beyond 2^63 - 1")
    return values


def _reshape(flat: list[Any], dims: tuple[int, ...]) -> Any:
    """A flat list of values as the (nested) lists of ``dims``; a scalar for ``()``."""
    if not dims:
        return flat[0]
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0] if dims[0] else 0
    return [_reshape(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


class _GuardedFile:
    """A file object that remembers whether a read failed.

    h5py's file-object driver turns a Python exception into an HDF5 read error, which would look
    like one unreadable attribute; a failed read (a network error) must fail the whole file.
    """

    def __init__(self, fileobj: Any) -> None:
        self._f = fileobj
        self.error: BaseException | None = None

    def _guard(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._f, method)(*args)
        except BaseException as exc:
            self.error = exc
            raise

    def readinto(self, buf: Any) -> Any:
        return self._guard("readinto", buf)

    def read(self, *args: Any) -> Any:
        return self._guard("read", *args)

    def seek(self, *args: Any) -> Any:
        return self._guard("seek", *args)

    def tell(self) -> Any:
        return self._guard("tell")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _fileobj_fapl(fileobj: Any) -> Any:
    # Otherwise default access properties (close degree, file locking): another handle on the
    # same file in this process (h5py.File, netCDF4) must agree with ours, or HDF5 refuses it.
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_fileobj_driver(h5fd.fileobj_driver, fileobj)
    return fapl


def _open_fileobj(fileobj: Any, name: bytes) -> Any:
    # The access property list holds the file object for h5py's driver. It must die here, not
    # linger in a traceback: freed at interpreter exit, after Python, it crashes the process.
    return h5f.open(name, h5f.ACC_RDONLY, fapl=_fileobj_fapl(fileobj))


def _close(fid: Any) -> None:
    # As h5py's File.close: every object of the file first, then the file (h5py#2019).
    if fid.valid:
        fid._close_open_objects(h5f.OBJ_LOCAL | ~h5f.OBJ_FILE)
        fid._close_open_objects(h5f.OBJ_LOCAL | h5f.OBJ_FILE)
        if fid.valid:
            fid.close()


def _read_raw(fileobj: Any, size: int, block: int, out: Extraction) -> bool:
    """Read with the raw reader into ``out``; False (``out`` untouched) when it cannot.

    A file the reader finds inconsistent fails here (OSError) rather than going to libhdf5,
    which can loop forever on some corrupt structures; anything else it cannot handle
    (features it does not implement, unexpected errors) goes to libhdf5.
    """
    scratch = Extraction(format=out.format)
    try:
        _collect(_RawBackend(_Blocks(fileobj, size, block)), scratch)
    except _ReadError as exc:
        raise exc.error from None
    except _Corrupt as exc:
        raise OSError(f"corrupt HDF5 file: {exc}") from None
    except Exception:  # noqa: BLE001 - not implemented, or a reader bug: libhdf5 decides
        return False
    out.format_version = scratch.format_version
    out.metadata.update(scratch.metadata)
    for table, rows in scratch.rows.items():
        out.rows.setdefault(table, []).extend(rows)
    return True


def _size(fileobj: Any) -> int:
    size = getattr(fileobj, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(fileobj.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        fileobj.seek(0, os.SEEK_END)
        return fileobj.tell()


def extract(source: Source, out: Extraction) -> None:
    """Fill ``out`` with the groups, datasets, datatypes and links of an HDF5 file."""
    path = source.local_path
    if path is not None:
        with open(path, "rb") as f:
            if _read_raw(f, _size(f), _LOCAL_BLOCK, out):
                return
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY)
        try:
            _collect(_H5pyBackend(fid), out)
        finally:
            _close(fid)
        return
    with source.open() as raw:
        if _read_raw(raw, _size(raw), REMOTE_BLOCK_SIZE, out):
            return
        guard = _GuardedFile(raw)
        try:
            fid = _open_fileobj(guard, repr(raw).encode("ascii", "replace"))
            try:
                _collect(_H5pyBackend(fid, lambda: guard.error is not None), out)
            finally:
                _close(fid)
        except Exception as exc:
            error, guard.error = guard.error, None
            if error is None or error is exc:
                raise
            try:
                raise error from exc  # the read failed: say so, not HDF5's view of it
            finally:
                error = None  # no frame <-> traceback cycle that keeps the driver alive
        error, guard.error = guard.error, None
        if error is not None:
            try:
                raise error
            finally:
                error = None


EXTRACTOR = Extractor(format="hdf5", extract=extract, tables=SchemaTables(hdf5="HDF5"),
                      open_arrays=open_hdf5_arrays)
