"""HDF5: one ``hdf5`` row per group, dataset, named datatype and link, read from metadata only.

The walk goes through h5py's low-level API (``h5f``/``h5o``/``h5l``/``h5a``) rather than
``File.visititems`` and ``dict(obj.attrs)``: it visits every *path* (``visititems`` visits every
object once, and the contract wants one row per name), and it skips the per-call overhead of
the high-level wrappers, which dominates on attribute-rich files (NeXus-like files carry an
attribute or three on every object).

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
  variable-length strings the stored size is 16 bytes per string, whatever its length).

``files.metadata``: ``superblock_version``, ``userblock_size``, ``attributes`` (root
attributes, same encoding), ``counts`` (rows per kind), ``objects`` (distinct objects),
``read_errors`` (only when some attribute or datatype could not be read) and ``truncated``
(only when the path limit :data:`MAX_ROWS` was hit). ``format_version`` is
``"HDF5 superblock v<N>"``.

Errors: a file HDF5 cannot open (truncated, corrupt superblock) raises; so does any read
failure of the file object (a network error), even inside an attribute read, rather than
being mistaken for one unreadable attribute.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5fd, h5l, h5o, h5p, h5r, h5s, h5t

from transforms import schemas
from transforms.formats.base import Extraction, Extractor, Source, dumps, format_error

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
    mtype = h5t.py_create(dtype)
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


class _Walker:
    """Walks every path of one open file and fills an :class:`Extraction`."""

    def __init__(self, out: Extraction, io_failed: Callable[[], bool] = lambda: False) -> None:
        self.out = out
        self.io_failed = io_failed
        self.errors: list[dict[str, str]] = []
        # address -> (row fields without object_path, child entries or None)
        self.objects: dict[int, tuple[dict[str, Any], list[tuple[bytes, int, Any]] | None]] = {}
        self.counts: dict[str, int] = {}
        self.rows = 0
        self.truncated = False

    # -- one object ------------------------------------------------------------------------

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

        h5a.iterate(obj, read, info=True)
        return attrs

    def describe(self, obj: Any, path: str) -> tuple[dict[str, Any], list | None]:
        """Row fields and (for groups) the child links of an open object."""
        if isinstance(obj, h5d.DatasetID):
            fields = self.dataset(obj, path)
        elif isinstance(obj, h5t.TypeID):
            fields = {"kind": _DATATYPE, "link_target": None, "shape": None,
                      "dtype": self.dtype_str(obj, path), "chunks": None, "compression": None}
        else:
            return _group_fields(_dumps(self.attributes(obj, path))), _links(obj)
        fields["attributes"] = _dumps(self.attributes(obj, path))
        return fields, None

    def dtype_str(self, tid: Any, path: str) -> str | None:
        try:
            return _dtype_str(tid)
        except TypeError as exc:  # e.g. H5T_TIME: no numpy equivalent
            self.errors.append({"object_path": path, "error": format_error(exc)})
            return None

    def dataset(self, dsid: Any, path: str) -> dict[str, Any]:
        space = dsid.get_space()
        dims = space.get_simple_extent_dims()
        shape = list(dims) if dims or space.get_simple_extent_type() != h5s.NULL else None
        chunks = None
        filters = []
        # A file offset means contiguous storage (no chunks, no filters): the creation property
        # list, five times dearer, is only read for the other layouts.
        if dsid.get_offset() is None:
            plist = dsid.get_create_plist()
            if plist.get_layout() == h5d.CHUNKED:  # filters need a chunked layout
                chunks = list(plist.get_chunk())
                for i in range(plist.get_nfilters()):
                    code = plist.get_filter(i)[0]
                    if code not in _NOT_COMPRESSION:
                        filters.append(_FILTER_NAMES.get(code) or f"filter:{code}")
        return {"kind": _DATASET, "link_target": None, "shape": shape,
                "dtype": self.dtype_str(dsid.get_type(), path), "chunks": chunks,
                "compression": "+".join(filters) if filters else None}

    # -- the walk --------------------------------------------------------------------------

    def add(self, path: str, fields: dict[str, Any]) -> bool:
        if self.rows >= MAX_ROWS:
            self.truncated = True
            return False
        self.rows += 1
        kind = fields["kind"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.out.add_row("hdf5", {"object_path": path, **fields})
        return True

    def walk(self, root: Any, root_addr: int, root_children: list) -> None:
        # Depth-first, children in name order (as h5dump prints them). A frame keeps its group
        # open while its subtree is walked; ``ancestors`` guards against hard-link cycles.
        stack = [(root, iter(root_children), "", frozenset((root_addr,)))]
        while stack:
            gid, entries, prefix, ancestors = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name, ltype, addr = entry
            path = f"{prefix}/{_name(name)}"
            if ltype != h5l.TYPE_HARD:
                if not self.add(path, _link_fields(gid, name, ltype)):
                    return
                continue
            known = self.objects.get(addr)
            obj = None
            if known is None:
                obj = h5o.open(gid, name)
                known = self.objects[addr] = self.describe(obj, path)
            fields, children = known
            if not self.add(path, fields):
                return
            if children is not None and addr not in ancestors:
                if obj is None:
                    obj = h5o.open(gid, name)
                stack.append((obj, iter(children), path, ancestors | {addr}))


def _group_fields(attributes: str) -> dict[str, Any]:
    return {"kind": _GROUP, "link_target": None, "shape": None, "dtype": None, "chunks": None,
            "compression": None, "attributes": attributes}


def _links(gid: Any) -> list[tuple[bytes, int, Any]]:
    """(name, link type, object address or None) of every link in a group, by name."""
    entries: list[tuple[bytes, int, Any]] = []
    hard = h5l.TYPE_HARD

    def add(name: bytes, info: Any) -> None:
        ltype = info.type
        entries.append((name, ltype, info.u if ltype == hard else None))

    gid.links.iterate(add, info=True)
    return entries


def _link_fields(gid: Any, name: bytes, ltype: int) -> dict[str, Any]:
    if ltype == h5l.TYPE_SOFT:
        kind, target = "soft_link", _name(gid.links.get_val(name))
    elif ltype == h5l.TYPE_EXTERNAL:
        filename, objpath = gid.links.get_val(name)
        kind, target = "external_link", f"{_name(filename)}:{_name(objpath)}"
    else:
        kind, target = "user_link", f"class:{ltype}"
    return {"kind": kind, "link_target": target, "shape": None, "dtype": None,
            "chunks": None, "compression": None, "attributes": None}


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


def _read(fid: Any, out: Extraction, io_failed: Callable[[], bool] = lambda: False) -> None:
    fcpl = fid.get_create_plist()
    superblock = fcpl.get_version()[0]
    out.format_version = f"HDF5 superblock v{superblock}"
    out.metadata.update(superblock_version=superblock, userblock_size=fcpl.get_userblock())
    walker = _Walker(out, io_failed)
    root = h5o.open(fid, b"/")
    root_addr = h5o.get_info(root).addr
    root_json = _dumps(walker.attributes(root, "/"))
    out.metadata["attributes"] = json.loads(root_json)  # exactly what a row would hold
    children = _links(root)
    # The root has no row, but a hard link back to it does.
    walker.objects[root_addr] = (_group_fields(root_json), children)
    try:
        walker.walk(root, root_addr, children)
    finally:
        out.metadata["counts"] = walker.counts
        out.metadata["objects"] = len(walker.objects)  # distinct objects, the root included
        if walker.errors:
            out.metadata["read_errors"] = walker.errors
        if walker.truncated:
            out.metadata["truncated"] = True


def _close(fid: Any) -> None:
    # As h5py's File.close: every object of the file first, then the file (h5py#2019).
    if fid.valid:
        fid._close_open_objects(h5f.OBJ_LOCAL | ~h5f.OBJ_FILE)
        fid._close_open_objects(h5f.OBJ_LOCAL | h5f.OBJ_FILE)
        if fid.valid:
            fid.close()


def extract(source: Source, out: Extraction) -> None:
    """Fill ``out`` with the groups, datasets, datatypes and links of an HDF5 file."""
    path = source.local_path
    if path is not None:
        fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY)
        try:
            _read(fid, out)
        finally:
            _close(fid)
        return
    with source.open() as raw:
        guard = _GuardedFile(raw)
        try:
            fid = _open_fileobj(guard, repr(raw).encode("ascii", "replace"))
            try:
                _read(fid, out, lambda: guard.error is not None)
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


EXTRACTOR = Extractor(format="hdf5", extract=extract, tables={"hdf5": schemas.HDF5})
