"""NetCDF extractor: classic (CDF-1, CDF-2, CDF-5) and NetCDF-4 (HDF5) headers, never data.

One row per variable in every group of the ``netcdf`` table. ``files.metadata`` holds::

    data_model              NETCDF3_CLASSIC | NETCDF3_64BIT_OFFSET | NETCDF3_64BIT_DATA |
                            NETCDF4 | NETCDF4_CLASSIC (also the format_version)
    dimensions              {group: {name: {"size": n, "unlimited": bool}}}, ncdump's order
    attributes              the root group's (global) attributes
    group_attributes        {group: {name: value}}, every group, root included
    group_attribute_types   {group: {name: netCDF type}}   (char, string, float, wind_t, ...)
    variables               {group: {name: {"type": netCDF type as ncdump declares it,
                              "attribute_types": {...}, + storage details}}}
    types                   {group: {name: definition}}: user-defined (compound, vlen, enum,
                            opaque) types of NetCDF-4 files
    read_errors             [{"group", "variable", "attribute", "error"}]: attributes that could
                            not be read (their value is {"error": ...}); only when there are
    classic only:           numrecs, numrecs_streaming, header_size; per variable begin,
                            vsize, record
    NetCDF-4 only:          nc_properties (the hidden _NCProperties), superblock_version; per
                            variable storage (contiguous/chunked/compact), chunk_sizes, filters
                            ([{"id", "name", "params"}]), endianness, no_fill (fill mode off:
                            no user-defined HDF5 fill value), as ``ncdump -s``

* Classic files: a small pure-Python parser of the header (magic, numrecs, dim_list,
  gatt_list, var_list) with bounded reads, first from ``source.head``: local and remote files
  read the same bytes. Every claimed count or length is checked against the file size before
  anything is allocated; a header cut short raises. numrecs = STREAMING is computed from the
  file size. A file cut short in its data section is read, as ncdump does.
* NetCDF-4 files: a small pure-Python reader of HDF5 object headers (superblock v0-v3,
  object header v1/v2, compact and dense links and attributes through fractal heaps and
  v2 B-trees, symbol-table groups, global heap for variable-length values) through a block
  cache: the same bytes locally and remotely, and several times faster than HDF5 calls per
  attribute. Anything it does not implement (soft links, shared message tables, huge heap
  objects...) or cannot parse falls back to h5py on the same file (``metadata["reader"] =
  "h5py"``). Either way the HDF5 objects are mapped to netCDF exactly as netCDF-C
  (libhdf5/hdf5open.c, hence ``ncdump``) does: dimension scales are dimensions, ordered by
  ``_Netcdf4Dimid``; a scale whose NAME starts with "This is a netCDF dimension but not a
  netCDF variable" is not a variable; a variable's dimensions come from
  ``_Netcdf4Coordinates``, else its attached scales, else phony_dim_N dimensions; an
  unlimited dimension has the length of the longest variable using it (variable shapes use
  dimension lengths, as netCDF does); ``_nc4_non_coord_`` prefixes are removed; datasets of
  types netCDF cannot map (uncommitted compound/enum, references) are skipped; netCDF's
  reserved attributes (``HIDDEN_ATTRIBUTES``) are hidden. Where netCDF-C refuses a file
  (a scale attached to some axes only) we give the other axes phony dimensions instead.

Encodings: ``shape`` is null when a length does not fit in int64 (a CDF-5 dimension or record
count can claim up to 2^64 - 2; ``metadata.dimensions`` keeps the number). ``dtype`` is the numpy dtype of the values as netCDF delivers them (native byte
order): int8 ... uint64, float32, float64 (an integer of another size or precision: the
native integer netCDF-C reads it as, int32 for 24 bits); ``|S1`` for ``char``; ``str`` for ``string``;
``compound:NAME``, ``vlen:NAME``, ``enum:NAME``, ``opaque:NAME`` for user-defined types (NAME
the type's path, ``/g1/pair_t``, where its bare name would not resolve to it from the group).
Attribute values of length one are scalars, longer ones lists (as ncdump prints them); empty
numeric attributes are ``[]``; ``char`` attributes are one string (UTF-8, trailing NULs
dropped; ``{"base64": ...}`` when not UTF-8); ``float`` values are the shortest decimal that round-trips
in float32 (``0.1``, not ``0.10000000149011612``); non-finite floats become ``"NaN"`` /
``"Infinity"`` strings (base.dumps); compound values are objects, vlen values lists, enum
values their member names, opaque values ``0x``-hex strings. ``units``, ``standard_name`` and
``long_name`` are copied as strings (a list of strings is joined with spaces; another type
is its JSON text).
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Iterable
from typing import IO, Any

import h5py
import numpy as np
from h5py import h5, h5a, h5d, h5g, h5i, h5l, h5o, h5p, h5r, h5s, h5t

from transforms.formats.arrays import open_netcdf_arrays
from transforms.formats.base import (
    REMOTE_BLOCK_SIZE, Extraction, Extractor, SchemaTables, Source, cf_text, dumps,
    format_error, jsonable, shortest_float32,
)

TABLE = "netcdf"

CLASSIC_MAGIC = {b"CDF\x01": "NETCDF3_CLASSIC", b"CDF\x02": "NETCDF3_64BIT_OFFSET",
                 b"CDF\x05": "NETCDF3_64BIT_DATA"}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_INT64_MAX = 2**63 - 1

# netCDF atomic types: nc_type -> (ncdump name, numpy dtype string of the row, struct code, size)
_NC_TYPES: dict[int, tuple[str, str, str, int]] = {
    1: ("byte", "int8", "b", 1),
    2: ("char", "|S1", "c", 1),
    3: ("short", "int16", "h", 2),
    4: ("int", "int32", "i", 4),
    5: ("float", "float32", "f", 4),
    6: ("double", "float64", "d", 8),
    7: ("ubyte", "uint8", "B", 1),
    8: ("ushort", "uint16", "H", 2),
    9: ("uint", "uint32", "I", 4),
    10: ("int64", "int64", "q", 8),
    11: ("uint64", "uint64", "Q", 8),
}
_CDF5_ONLY_TYPES = frozenset({7, 8, 9, 10, 11})
_DTYPE_OF = {name: dtype for name, dtype, _, _ in _NC_TYPES.values()} | {"string": "str"}

#: Attributes netCDF-C keeps for itself (NC_reserved in nc4internal.c): never user attributes.
HIDDEN_ATTRIBUTES = frozenset({
    "CLASS", "DIMENSION_LIST", "NAME", "REFERENCE_LIST", "_Format", "_IsNetcdf4",
    "_NCProperties", "_Netcdf4Coordinates", "_Netcdf4Dimid", "_SuperblockVersion",
    "_nc3_strict", "_ARRAY_DIMENSIONS", "_Codecs", "_NCZARR_ATTR", "_nczarr_attr",
})
DIM_WITHOUT_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"
NON_COORD_PREFIX = "_nc4_non_coord_"
_NETCDF4_MARKERS = frozenset({"_Netcdf4Dimid", "_Netcdf4Coordinates", "_nc3_strict",
                              "_NCProperties", "DIMENSION_LIST", "REFERENCE_LIST"})

#: How many HDF5 objects looks_like_netcdf4() inspects before calling a file plain HDF5.
SNIFF_OBJECTS = 64

__all__ = ["EXTRACTOR", "HIDDEN_ATTRIBUTES", "extract", "looks_like_netcdf4", "read_netcdf4_attributes",
           "read_netcdf4_model"]


class NetCDFError(ValueError):
    """A NetCDF file whose header is malformed, truncated or claims impossible sizes."""


class NetCDFAttributeError(NetCDFError):
    """One attribute that cannot be read (its type or its shape): its value is
    ``{"error": ...}``, listed in ``files.metadata.read_errors``; the file stays ok."""

    def __init__(self, message: str, desc: tuple | None = None) -> None:
        super().__init__(message)
        self.desc = desc  # the attribute's type, when known


# --- values ------------------------------------------------------------------------------




def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("utf-8", "replace")


def _value_text(raw: bytes) -> str | dict[str, str]:
    """A text value: the string when it is UTF-8 (trailing NULs dropped), else its bytes as
    ``{"base64": ...}`` (the catalog's rule for bytes; nothing lost)."""
    return jsonable(raw)


def _attr_value(nctype: str, values: list[Any]) -> Any:
    """netCDF numeric attribute values: a scalar for one value, else a list."""
    if nctype == "float":
        values = [shortest_float32(v) for v in values]
    return values[0] if len(values) == 1 else values


def _add_rows(out: Extraction, group: str, variables: Iterable[dict[str, Any]]) -> None:
    for var in variables:
        attrs = var["attributes"]
        shape = var["shape"]
        out.add_row(TABLE, {
            "group": group,
            "variable": var["name"],
            "dimensions": var["dimensions"],
            # int64 column: a length beyond it (a CDF-5 claim) stays in metadata["dimensions"]
            "shape": None if shape is not None and any(n > _INT64_MAX for n in shape) else shape,
            "dtype": var["dtype"],
            "attributes": dumps(attrs),
            "units": cf_text(attrs, "units"),
            "standard_name": cf_text(attrs, "standard_name"),
            "long_name": cf_text(attrs, "long_name"),
        })


# --- classic format (CDF-1, CDF-2, CDF-5) --------------------------------------------------

_ABSENT, _NC_DIMENSION, _NC_VARIABLE, _NC_ATTRIBUTE = 0, 10, 11, 12
_STREAMING = {4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
_READ_AHEAD = 64 * 1024


class _HeaderReader:
    """Sequential big-endian reads over ``source.head``, then the file, never past its size."""

    def __init__(self, source: Source, stack: contextlib.ExitStack) -> None:
        self.size = source.size
        self.data = bytes(source.head[: self.size]) if source.head else b""
        self.pos = 0
        self._source = source
        self._stack = stack
        self._file: IO[bytes] | None = None

    def remaining(self) -> int:
        return self.size - self.pos

    def _fill(self, end: int, what: str) -> None:
        if end > self.size:
            raise NetCDFError(
                f"header truncated: {what} needs bytes up to offset {end}, "
                f"file has {self.size}")
        if self._file is None:
            self._file = self._stack.enter_context(self._source.open())
        want = min(self.size, max(end, 2 * len(self.data), len(self.data) + _READ_AHEAD))
        self._file.seek(len(self.data))
        chunk = self._file.read(want - len(self.data))
        self.data += chunk
        if len(self.data) < end:
            raise NetCDFError(
                f"header truncated: {what} needs bytes up to offset {end}, "
                f"could read {len(self.data)}")

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            self._fill(end, what)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str, size: int, what: str) -> tuple[Any, ...]:
        end = self.pos + size
        if end > len(self.data):
            self._fill(end, what)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos = end
        return values


class _ClassicParser:
    def __init__(self, reader: _HeaderReader, version: int) -> None:
        self.r = reader
        self.version = version
        self.count_size = 8 if version == 5 else 4  # NON_NEG counts and lengths
        self.count_fmt = ">Q" if version == 5 else ">I"
        self.offset_fmt = ">I" if version == 1 else ">Q"

    def count(self, what: str) -> int:
        return self.r.unpack(self.count_fmt, self.count_size, what)[0]

    def list_header(self, expected_tag: int, what: str) -> int:
        tag = self.r.unpack(">I", 4, f"{what} tag")[0]
        nelems = self.count(f"{what} count")
        if tag == _ABSENT:
            if nelems != 0:
                raise NetCDFError(f"{what}: ABSENT list with {nelems} elements")
            return 0
        if tag != expected_tag:
            raise NetCDFError(f"{what}: bad tag {tag:#x} (expected {expected_tag:#x})")
        # Every element takes at least 8 bytes: refuse counts the file cannot hold.
        if nelems * 8 > self.r.remaining():
            raise NetCDFError(
                f"{what}: claims {nelems} elements, more than the {self.r.remaining()} "
                f"bytes left in the file can hold")
        return nelems

    def name(self, what: str) -> str:
        nchars = self.count(f"{what} name length")
        if nchars > self.r.remaining():
            raise NetCDFError(f"{what}: name claims {nchars} bytes, beyond the end of the file")
        raw = self.r.take(nchars, f"{what} name")
        self.r.take(-nchars % 4, f"{what} name padding")
        return raw.decode("utf-8", "replace")

    def nc_type(self, what: str) -> int:
        code = self.r.unpack(">I", 4, f"{what} type")[0]
        if code not in _NC_TYPES or (code in _CDF5_ONLY_TYPES and self.version != 5):
            raise NetCDFError(f"{what}: invalid nc_type {code}")
        return code

    def attributes(self, owner: str) -> tuple[dict[str, Any], dict[str, str]]:
        values: dict[str, Any] = {}
        types: dict[str, str] = {}
        for _ in range(self.list_header(_NC_ATTRIBUTE, f"{owner} attribute list")):
            name = self.name(f"{owner} attribute")
            what = f"attribute {owner}:{name}"
            code = self.nc_type(what)
            nelems = self.count(f"{what} length")
            tname, _, fmt_code, size = _NC_TYPES[code]
            nbytes = nelems * size
            if nbytes > self.r.remaining():
                raise NetCDFError(
                    f"{what}: claims {nbytes} bytes of values, beyond the end of the file")
            raw = self.r.take(nbytes, what)
            self.r.take(-nbytes % 4, f"{what} padding")
            if code == 2:
                values[name] = _value_text(raw)
            else:
                values[name] = _attr_value(tname, list(struct.unpack(f">{nelems}{fmt_code}", raw)))
            types[name] = tname
        return values, types


def _extract_classic(source: Source, out: Extraction, version: int) -> None:
    with contextlib.ExitStack() as stack:
        reader = _HeaderReader(source, stack)
        parser = _ClassicParser(reader, version)
        reader.take(4, "magic")
        numrecs_raw = parser.count("numrecs")
        streaming = numrecs_raw == _STREAMING[parser.count_size]

        dims: list[tuple[str, int]] = []
        for _ in range(parser.list_header(_NC_DIMENSION, "dimension list")):
            name = parser.name("dimension")
            dims.append((name, parser.count(f"dimension {name} length")))
        record_dims = [i for i, (_, length) in enumerate(dims) if length == 0]
        if len(record_dims) > 1:
            raise NetCDFError("more than one unlimited (record) dimension")
        out.metadata["dimensions"] = {"/": {
            name: {"size": length, "unlimited": length == 0} for name, length in dims}}

        gattrs, gtypes = parser.attributes("global")
        out.metadata["attributes"] = gattrs
        out.metadata["group_attributes"] = {"/": gattrs}
        out.metadata["group_attribute_types"] = {"/": gtypes}

        variables: list[dict[str, Any]] = []
        var_meta: dict[str, Any] = {}
        nvars = parser.list_header(_NC_VARIABLE, "variable list")
        for _ in range(nvars):
            name = parser.name("variable")
            ndims = parser.count(f"variable {name} rank")
            if ndims * parser.count_size > reader.remaining():
                raise NetCDFError(f"variable {name}: claims {ndims} dimensions, beyond the "
                                  "end of the file")
            dimids = list(reader.unpack(f">{ndims}{parser.count_fmt[1]}",
                                        ndims * parser.count_size, f"variable {name} dimids"))
            for position, dimid in enumerate(dimids):
                if dimid >= len(dims):
                    raise NetCDFError(f"variable {name}: dimension id {dimid} out of range")
                if dims[dimid][1] == 0 and position != 0:
                    raise NetCDFError(
                        f"variable {name}: unlimited dimension not first (NC_EUNLIMPOS)")
            attrs, atypes = parser.attributes(name)
            code = parser.nc_type(f"variable {name}")
            vsize = parser.count(f"variable {name} vsize")
            begin = reader.unpack(parser.offset_fmt, 4 if version == 1 else 8,
                                  f"variable {name} begin")[0]
            tname, dtype, _, _ = _NC_TYPES[code]
            variables.append({
                "name": name, "dimids": dimids, "dtype": dtype, "attributes": attrs,
                "vsize": vsize, "begin": begin,
            })
            var_meta[name] = {"type": tname, "attribute_types": atypes, "begin": begin,
                              "vsize": vsize, "record": bool(dimids) and dims[dimids[0]][1] == 0}
        header_size = reader.pos

    numrecs = numrecs_raw
    if streaming:
        numrecs = _streaming_numrecs(source.size, variables, dims)
    for var in variables:
        var["dimensions"] = [dims[i][0] for i in var["dimids"]]
        var["shape"] = [numrecs if dims[i][1] == 0 else dims[i][1] for i in var["dimids"]]
    if record_dims:
        name = dims[record_dims[0]][0]
        out.metadata["dimensions"]["/"][name]["size"] = numrecs
    out.metadata["variables"] = {"/": var_meta}
    out.metadata["types"] = {}
    out.metadata["numrecs"] = numrecs
    out.metadata["numrecs_streaming"] = streaming
    out.metadata["header_size"] = header_size
    _add_rows(out, "/", variables)


def _streaming_numrecs(size: int, variables: list[dict[str, Any]],
                       dims: list[tuple[str, int]]) -> int:
    """Records in a file written in streaming mode: what the data after the header holds."""
    record_vars = [v for v in variables if v["dimids"] and dims[v["dimids"][0]][1] == 0]
    if not record_vars:
        return 0
    recsize = sum(v["vsize"] for v in record_vars)
    if len(record_vars) == 1:  # one record variable: its records are not padded to 4 bytes
        (var,) = record_vars
        recsize = math.prod(dims[i][1] for i in var["dimids"][1:]) * np.dtype(var["dtype"]).itemsize
    start = min(v["begin"] for v in record_vars)
    return max(0, (size - start) // recsize) if recsize else 0


# --- NetCDF-4: the netCDF data model over HDF5 ---------------------------------------------
#
# Two backends read HDF5 metadata into the same neutral form; _Model maps it to netCDF as
# netCDF-C's libhdf5/hdf5open.c does. _RawHDF5 is a small pure-Python reader of HDF5 object
# headers (bounded reads through a block cache: the same bytes locally and remotely, several
# times faster than per-attribute HDF5 calls); _H5pyBackend reads through h5py and is used for
# the rare structures the raw reader does not implement (it raises _Unsupported for them).
#
# Type descriptions ("desc") are tuples, compared structurally (as H5Tequal does):
#   ("int", size, signed, big_endian, precision, bit_offset)
#   ("float", size, big_endian, layout)  layout: (precision, bit offset, sign, exponent and
#       mantissa positions and sizes, exponent bias, mantissa normalization as stored)
#   ("string", is_vlen, size)           ("compound", size, ((name, offset, desc), ...))
#   ("enum", base, ((name, value), ...))  ("vlen", base)   ("opaque", size)
#   ("array", dims, base)               ("reference", size)   ("other", class)
# Decoded values: int, float, bytes (strings, opaque), tuple (compound), list (vlen, array).

_UNLIMITED_H5 = h5s.UNLIMITED
_INT_NAMES = {(1, True): "byte", (2, True): "short", (4, True): "int", (8, True): "int64",
              (1, False): "ubyte", (2, False): "ushort", (4, False): "uint",
              (8, False): "uint64"}
#: IEEE 754 binary16/32/64 layouts (see the float desc), which numpy reads as they are stored.
_IEEE_LAYOUTS = {2: (16, 0, 15, 10, 5, 0, 10, 15, 2), 4: (32, 0, 31, 23, 8, 0, 23, 127, 2),
                 8: (64, 0, 63, 52, 11, 0, 52, 1023, 2)}


def _float_name(size: int) -> str | None:
    """netCDF's type of a float of ``size`` bytes, as netCDF-C types it through
    H5Tget_native_type() with HDF5 before 1.14.4: the smallest of float and double that
    holds it (a float16 or bfloat16 is a ``float``); long double (``None``) is no netCDF type.
    HDF5 1.14.4 added a native float16, which netCDF-C built on it does not map to ``float``."""
    return "float" if size <= 4 else "double" if size <= 8 else None


def _native_int_size(precision: int) -> int:
    """The size of the native integer H5Tget_native_type() maps an integer of this precision
    to: the smallest of char, short, int, long long that holds its bits (long long beyond).
    netCDF-C types integers by it: a 24-bit integer is an ``int``, a 40-bit one an
    ``int64``, 12 bits in 2 bytes a ``short``."""
    return next((n for n in (1, 2, 4) if precision <= 8 * n), 8)


class _Skip(Exception):
    """An HDF5 object or attribute netCDF-C ignores (a type it cannot map: NC_EBADTYPID)."""


class _Unsupported(Exception):
    """An HDF5 structure the pure-Python reader does not implement: use h5py instead."""


class _Dim:
    __slots__ = ("group", "id", "identity", "name", "size", "unlimited")

    def __init__(self, name: str, size: int, unlimited: bool, dimid: int, group: _Group,
                 identity: Any) -> None:
        self.name, self.size, self.unlimited, self.id = name, size, unlimited, dimid
        self.group, self.identity = group, identity


class _Var:
    __slots__ = (
        "attrs",
        "atypes",
        "dimids",
        "dims",
        "dtype",
        "extent",
        "handle",
        "is_scale",
        "maxdims",
        "name",
        "nctype",
        "scales",
        "storage",
        "user_type",
    )

    def __init__(self, name: str, extent: list[int], maxdims: list[int | None]) -> None:
        self.name, self.extent, self.maxdims = name, extent, maxdims
        self.dims: list[_Dim] = []
        self.dimids: list[int] | None = None
        self.scales: list[Any] | None = None
        self.is_scale = False
        self.user_type: int | None = None  # index in _Model.types
        self.attrs: dict[str, Any] = {}
        self.atypes: dict[str, str] = {}
        self.handle: Any = None


class _Group:
    __slots__ = ("attrs", "atypes", "children", "dims",
        "handle", "identity", "parent", "path", "read_errors", "types", "vars")

    def __init__(self, path: str, parent: _Group | None) -> None:
        self.path, self.parent = path, parent
        self.identity: Any = None
        self.handle: Any = None
        self.dims: list[_Dim] = []
        self.vars: list[_Var] = []
        self.attrs: dict[str, Any] = {}
        self.atypes: dict[str, str] = {}
        self.types: dict[str, dict[str, Any]] = {}
        self.children: list[_Group] = []
        self.read_errors: list[dict[str, Any]] = []  # the root's: the file's unreadable attributes

    def lineage(self) -> Iterable[_Group]:
        group: _Group | None = self
        while group is not None:
            yield group
            group = group.parent

    def walk(self) -> Iterable[_Group]:
        yield self
        for child in self.children:
            yield from child.walk()


class _Model:
    """netCDF-C's reading of an HDF5 file (rec_read_metadata + rec_match_dimscales)."""

    def __init__(self, backend: Any, attributes: bool = True) -> None:
        self.b = backend
        self.attributes = attributes
        self.next_dimid = 0
        self.types: list[tuple[_Group, str, tuple]] = []  # committed: (group, name, desc), read order
        self.errors: list[dict[str, Any]] = []  # attributes that could not be read

    # types -----------------------------------------------------------------------------
    def type_name(self, desc: tuple, for_variable: bool, where: _Group | None = None) -> str:
        """netCDF's name of a type used in group ``where``: an atomic type's, or a
        user-defined type's as :meth:`type_ref` gives it. Raises _Skip for a type netCDF-C
        cannot map (NC_EBADTYPID)."""
        kind = desc[0]
        if kind == "int" or kind == "float":
            name = (_INT_NAMES.get((_native_int_size(desc[4]), desc[2])) if kind == "int"
                    else _float_name(desc[1]))
            if name is not None:
                return name
            if for_variable:  # get_type_info2() falls through to NC_STRING for odd sizes
                return "string"
            raise _Skip
        if kind == "string":
            if desc[1] or (for_variable and desc[2] > 1):
                return "string"
            return "char"
        return self.type_ref(self.user_type(desc), where)

    def user_type(self, desc: tuple) -> int:
        """nc4_rec_find_hdf_type(): the first committed type (in read order, file-wide) equal
        to ``desc`` (H5Tequal), as its index in ``self.types``; _Skip when there is none."""
        for index, (_, _, committed) in enumerate(self.types):
            if committed == desc:
                return index
        raise _Skip

    def type_ref(self, index: int, where: _Group | None) -> str:
        """How a user-defined type is named where group ``where`` uses it: its bare name when
        a reader of the CDL resolves that name from ``where`` to it (the nearest group, ``where``
        or an ancestor, that defines a type of that name defines this one), else its absolute
        path (``/g1/sub/vs_t``), as ncdump prints a type of a group that is not an ancestor."""
        group, name, _ = self.types[index]
        for g in where.lineage() if where is not None else ():
            if name in g.types:
                if g is group:
                    return name
                break
        else:
            if where is None:
                return name
        return f"{group.path.rstrip('/')}/{name}"

    def definition(self, desc: tuple, where: _Group) -> dict[str, Any]:
        kind = desc[0]
        if kind == "compound":
            fields = []
            for name, offset, member in desc[2]:
                field: dict[str, Any] = {"name": name, "offset": offset}
                if member[0] == "array":
                    field["dims"] = list(member[1])
                    member = member[2]
                field["type"] = self.type_name(member, False, where)
                fields.append(field)
            return {"class": "compound", "size": desc[1], "fields": fields}
        if kind == "vlen":
            return {"class": "vlen", "base": self.type_name(desc[1], False, where)}
        if kind == "enum":
            return {"class": "enum", "base": self.type_name(desc[1], False, where),
                    "members": dict(desc[2])}
        if kind == "opaque":
            return {"class": "opaque", "size": desc[1]}
        if kind == "string":
            return {"class": "string"}
        raise _Skip

    def json_value(self, desc: tuple, value: Any) -> Any:
        kind = desc[0]
        if kind == "float":
            return shortest_float32(value) if desc[1] <= 4 else value
        if kind == "int":
            return value
        if kind == "string":
            return _value_text(value)
        if kind == "compound":
            return {name: self.json_value(member, item)
                    for (name, _, member), item in zip(desc[2], value, strict=True)}
        if kind == "enum":
            for name, number in desc[2]:
                if number == value:
                    return name
            return value
        if kind == "vlen" or kind == "array":
            base = desc[1] if kind == "vlen" else desc[2]
            if kind == "array" and base[0] == "string" and not base[1] and \
                    all(isinstance(item, bytes) for item in value):
                # a char array member: one string, as ncdump's {"ab"}; of several dimensions,
                # one string per run of the last, in order, as ncdump's {"abc", "de"}
                joined = b"".join(value)
                if len(desc[1]) <= 1:
                    return _value_text(joined)
                width = max(1, desc[1][-1] * base[2])
                return [_value_text(joined[i:i + width]) for i in range(0, len(joined), width)]
            return [self.json_value(base, item) for item in value]
        if kind == "opaque":
            return "0x" + bytes(value).hex().upper()
        return value

    # attributes ------------------------------------------------------------------------
    def read_attrs(self, obj: Any, where: _Group | None, variable: str | None,
                   names: Iterable[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """The netCDF attributes of group ``where`` or of its ``variable``, only ``names``
        when given. One that cannot be read (:class:`NetCDFAttributeError`) is
        ``{"error": ...}``, listed in ``self.errors``."""
        values: dict[str, Any] = {}
        types: dict[str, str] = {}
        if not self.attributes and names is None:
            return values, types
        wanted = None if names is None else frozenset(names)
        for name in self.b.attribute_names(obj):
            if name in HIDDEN_ATTRIBUTES or (wanted is not None and name not in wanted):
                continue
            try:
                desc, space, raw = self.b.attribute(obj, name)
            except NetCDFAttributeError as exc:
                try:
                    if exc.desc is not None:
                        self.type_name(exc.desc, False, where)
                except _Skip:
                    continue  # a type netCDF-C cannot map: not an attribute (NC_EBADTYPID)
                message = format_error(exc.__cause__ or exc)
                values[name] = {"error": message}
                self.errors.append({"group": where.path if where else None, "variable": variable,
                                    "attribute": name, "error": message})
                continue
            kind = desc[0]
            try:
                if kind == "string" and not desc[1]:  # read_hdf5_att(): NC_CHAR unless 1-D
                    tname = "string" if space == "simple" else "char"
                else:
                    tname = self.type_name(desc, False, where)
            except _Skip:
                continue
            if tname == "char":
                value: Any = _value_text(raw[0]) if raw else ""
            elif tname == "float":
                value = [shortest_float32(v) for v in raw]
            elif kind == "int" or kind == "float":
                value = raw
            elif kind == "string":
                value = [_value_text(v) for v in raw]
            else:
                value = [self.json_value(desc, v) for v in raw]
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            values[name] = value
            types[name] = tname
        return values, types

    def _string_attr(self, obj: Any, name: str) -> bytes:
        desc, _, raw = self.b.attribute(obj, name)
        if desc[0] != "string" or not raw:
            return b""
        return raw[0].rstrip(b"\x00")

    def _int_attr(self, obj: Any, name: str) -> list[int]:
        desc, _, raw = self.b.attribute(obj, name)
        if desc[0] != "int":
            raise NetCDFError(f"hidden attribute {name} is not an integer")
        return raw

    # groups and datasets -----------------------------------------------------------------
    def read_group(self, handle: Any, group: _Group) -> None:
        children = []
        for name, kind, obj in self.b.members(handle):
            if kind == "dataset":
                self.read_dataset(group, obj, name)
            elif kind == "group":
                children.append((name, obj))
            elif kind == "type":
                self.types.append((group, name, self.b.committed_type(obj)))
                group.types[name] = {}  # defined by finish_types(), once all are read
        group.handle = handle
        for name, obj in children:
            identity = self.b.identity(obj)
            if any(g.identity == identity for g in group.lineage()):
                continue  # a link back to an enclosing group: a cycle, not a new group
            child = _Group(f"{group.path.rstrip('/')}/{name}", group)
            child.identity = identity
            group.children.append(child)
            self.read_group(obj, child)

    def read_dataset(self, group: _Group, ds: Any, name: str) -> None:
        names = self.b.attribute_names(ds)
        extent, maxdims, desc = self.b.dataset(ds)
        dim = None
        if "CLASS" in names and self._string_attr(ds, "CLASS") == b"DIMENSION_SCALE":
            if not extent:
                raise NetCDFError(f"dimension scale {name} is not one-dimensional")
            dimid = self._int_attr(ds, "_Netcdf4Dimid")[0] if "_Netcdf4Dimid" in names else -1
            if dimid >= 0:
                self.next_dimid = max(self.next_dimid, dimid + 1)
            else:
                dimid = self.next_dimid
                self.next_dimid += 1
            dim = _Dim(name, extent[0], maxdims[0] is None, dimid, group, self.b.identity(ds))
            group.dims.append(dim)
            if "NAME" in names and self._string_attr(ds, "NAME").startswith(
                    DIM_WITHOUT_VARIABLE):
                return  # a dimension without a coordinate variable
        vname = name
        if name.startswith(NON_COORD_PREFIX) and len(name) > len(NON_COORD_PREFIX):
            vname = name[len(NON_COORD_PREFIX):]
        var = _Var(vname, extent, maxdims)
        if "_Netcdf4Coordinates" in names:
            var.dimids = self._int_attr(ds, "_Netcdf4Coordinates")
            if len(var.dimids) != len(extent):
                raise NetCDFError(f"variable {vname}: _Netcdf4Coordinates has "
                                  f"{len(var.dimids)} ids for {len(extent)} dimensions")
        if dim is not None:
            var.is_scale = True
            if len(extent) == 1:
                var.dims, var.dimids = [dim], None
            elif var.dimids is None:
                raise NetCDFError(f"coordinate variable {vname} has several dimensions but "
                                  "no _Netcdf4Coordinates")
        elif var.dimids is None and extent and "DIMENSION_LIST" in names:
            var.scales = self.b.dimension_list(ds, len(extent))
        try:
            var.nctype = self.type_name(desc, True, group)  # a user type's renamed by finish_types()
        except _Skip:
            return  # netCDF-C skips datasets of types it cannot map (a type not read before)
        var.dtype = _DTYPE_OF.get(var.nctype)
        if var.dtype is None:
            var.user_type = self.user_type(desc)
        var.handle = ds
        var.storage = self.b.storage(ds)
        kind = desc[0]
        # no byte order for 1-byte netCDF types (ncdump -hs prints no _Endianness for them)
        if kind == "int":
            big = desc[3] if _native_int_size(desc[4]) > 1 else None
        else:
            big = desc[2] if kind == "float" else None
        var.storage["endianness"] = None if big is None else "big" if big else "little"
        var.storage["no_fill"] = var.storage.pop("no_fill")  # after endianness, as ncdump -hs
        group.vars.append(var)

    def finish_types(self, root: _Group) -> None:
        """Once every group is read: the user-defined types' definitions, and the names of
        the variables' user-defined types (``dtype`` ``class:name``), named as seen from
        their groups (see :meth:`type_ref`)."""
        for group, name, desc in self.types:
            try:
                group.types[name] = self.definition(desc, group)
            except _Skip:
                group.types[name] = {"class": "unknown"}
        for group in root.walk():
            for var in group.vars:
                if var.user_type is not None:
                    owner, name, _ = self.types[var.user_type]
                    var.nctype = self.type_ref(var.user_type, group)
                    var.dtype = f"{owner.types[name].get('class', 'user')}:{var.nctype}"

    def read_all_attrs(self, root: _Group) -> None:
        """Every group's and variable's attributes, once every type is known: netCDF-C reads
        attributes when asked, after all the file's types (an attribute may use a type that
        is committed after its object, or in another group)."""
        for group in root.walk():
            group.attrs, group.atypes = self.read_attrs(group.handle, group, None)
            for var in group.vars:
                var.attrs, var.atypes = self.read_attrs(var.handle, group, var.name)

    # dimensions ------------------------------------------------------------------------
    def match_dimensions(self, group: _Group) -> None:
        """rec_match_dimscales(): children first, then this group's variables."""
        for child in group.children:
            self.match_dimensions(child)
        for var in group.vars:
            if var.is_scale and len(var.extent) == 1:
                continue
            if var.dimids is not None:
                var.dims = [self._dim_by_id(group, var, dimid) for dimid in var.dimids]
            elif var.scales is not None:
                found = [self._dim_by_scale(group, identity) for identity in var.scales]
                # netCDF-C cannot open a file with an axis whose scale it cannot match; we
                # give such axes phony dimensions instead of failing.
                var.dims = self._phony_dims(group, var, found)
            else:
                var.dims = self._phony_dims(group, var, [None] * len(var.extent))

    @staticmethod
    def _dim_by_id(group: _Group, var: _Var, dimid: int) -> _Dim:
        """nc4_find_dim(): the dimension with this id anywhere in the file (netCDF-C looks ids
        up in one list of all dimensions: a variable may use a dimension of a group that is
        not its ancestor, ncgen writes such files); the group's and its ancestors' first."""
        lineage = list(group.lineage())
        for g in (*lineage, *lineage[-1].walk()):
            for dim in g.dims:
                if dim.id == dimid:
                    return dim
        raise NetCDFError(f"variable {group.path} {var.name}: no dimension with id {dimid}")

    @staticmethod
    def _dim_by_scale(group: _Group, identity: Any) -> _Dim | None:
        if identity is None:
            return None
        for g in group.lineage():
            for dim in g.dims:
                if dim.identity == identity:
                    return dim
        return None

    def _phony_dims(self, group: _Group, var: _Var, found: list[_Dim | None]) -> list[_Dim]:
        """create_phony_dims(): reuse a dimension of the same size, else make phony_dim_N."""
        dims: list[_Dim] = []
        for length, maxdim, dim in zip(var.extent, var.maxdims, found, strict=True):
            if dim is None:
                unlimited = maxdim is None
                dim = next((d for d in group.dims if d.size == length
                            and d.unlimited == unlimited and d not in dims), None)
                if dim is None:
                    dim = _Dim(f"phony_dim_{self.next_dimid}", length, unlimited,
                               self.next_dimid, group, None)
                    self.next_dimid += 1
                    group.dims.append(dim)
            dims.append(dim)
        return dims


def _unlimited_length(dim: _Dim) -> int:
    """nc4_find_dim_len(): the longest extent of any variable using the dimension in its group
    or below (netCDF-C looks no further: a variable of another group that uses it does not
    lengthen it, and reads as long as the dimension)."""
    length = 0
    for g in dim.group.walk():
        for var in g.vars:
            for axis, vdim in enumerate(var.dims):
                if vdim is dim and axis < len(var.extent):
                    length = max(length, var.extent[axis])
    return length


def read_netcdf4_model(backend: Any, root_handle: Any = None, attributes: bool = True) -> _Group:
    """The netCDF view of a NetCDF-4 file's HDF5 objects, built as netCDF-C builds it.

    Every group below the root is read (links back to an enclosing group are not followed),
    dimension scales are matched to variables (``_Netcdf4Dimid``, ``_Netcdf4Coordinates``,
    attached scales, else phony dimensions), and each unlimited dimension gets the length of
    the longest variable using it, as ``nc4_find_dim_len`` does. Both the extractor (the
    ``netcdf`` rows and ``files.metadata``) and the ``--stats`` reader
    (``arrays.open_netcdf_arrays``) use it, so they see the same variables.

    Args:
      backend: the file's HDF5 metadata reader: ``_H5pyBackend(fid, file_size)`` or
        ``_RawHDF5(blocks)``.
      root_handle: ``backend.root()``, when the caller already has it (read here otherwise).
      attributes: read the groups' and variables' attributes (False: ``attrs`` and ``atypes``
        stay empty; the ``--stats`` reader needs a few, which it reads by name).

    Returns:
      The root group ``/``; ``root.walk()`` yields it and every group below it, depth-first.
      Each group has ``path``, ``dims`` (``name``, ``size``, ``unlimited``, ``id``), ``vars``
      (``name``, ``nctype``, ``dtype``, ``dims``, ``attrs``, ``atypes``, ``storage``),
      ``attrs`` and ``atypes`` (netCDF's reserved attributes hidden) and ``types``
      (user-defined types).

    Raises what the backend raises on a file it cannot read (``NetCDFError``, and for the raw
    reader ``_Unsupported`` where h5py has to take over).
    """
    model = _Model(backend, attributes)
    if root_handle is None:
        root_handle = backend.root()
    root = _Group("/", None)
    root.identity = backend.identity(root_handle)
    model.read_group(root_handle, root)
    model.finish_types(root)
    if attributes:
        model.read_all_attrs(root)
    model.match_dimensions(root)
    for group in root.walk():
        for dim in group.dims:
            if dim.unlimited:
                dim.size = _unlimited_length(dim)
    root.read_errors = model.errors
    return root


def read_netcdf4_attributes(backend: Any, obj: Any, names: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The attributes ``names`` (those present) of one HDF5 object as netCDF-C reads them:
    values as in the ``netcdf`` rows, and their netCDF type names (``float`` for a float16,
    ``int`` for a 24-bit integer; types netCDF-C cannot map left out). For the ``--stats``
    reader, which needs a few by name."""
    return _Model(backend).read_attrs(obj, None, None, names)


def _read_netcdf4(backend: Any, out: Extraction) -> None:
    root_handle = backend.root()
    root_names = backend.attribute_names(root_handle)
    version = "NETCDF4_CLASSIC" if "_nc3_strict" in root_names else "NETCDF4"
    if "_NCProperties" in root_names:
        raw = _Model(backend)._string_attr(root_handle, "_NCProperties")
        nc_properties: str | None = _text(raw)
    else:
        nc_properties = None
    root = read_netcdf4_model(backend, root_handle)

    out.format_version = version
    out.metadata.update({
        "data_model": version,
        "nc_properties": nc_properties,
        "superblock_version": backend.superblock_version,
        "dimensions": {group.path: {
            dim.name: {"size": dim.size, "unlimited": dim.unlimited}
            for dim in sorted(group.dims, key=lambda d: d.id)} for group in root.walk()},
        "attributes": root.attrs,
        "group_attributes": {group.path: group.attrs for group in root.walk()},
        "group_attribute_types": {group.path: group.atypes for group in root.walk()},
        "variables": {group.path: {
            var.name: {"type": var.nctype, "attribute_types": var.atypes, **var.storage}
            for var in group.vars} for group in root.walk()},
        "types": {group.path: group.types for group in root.walk() if group.types},
    })
    if root.read_errors:
        out.metadata["read_errors"] = root.read_errors
    for group in root.walk():
        _add_rows(out, group.path, (
            {"name": var.name, "dimensions": [d.name for d in var.dims],
             "shape": [d.size for d in var.dims], "dtype": var.dtype,
             "attributes": var.attrs} for var in group.vars))


# --- backend 1: h5py -----------------------------------------------------------------------

_MTYPES = {("int", 1, True): (h5t.NATIVE_INT8, "i1"), ("int", 2, True): (h5t.NATIVE_INT16, "i2"),
           ("int", 4, True): (h5t.NATIVE_INT32, "i4"), ("int", 8, True): (h5t.NATIVE_INT64, "i8"),
           ("int", 1, False): (h5t.NATIVE_UINT8, "u1"),
           ("int", 2, False): (h5t.NATIVE_UINT16, "u2"),
           ("int", 4, False): (h5t.NATIVE_UINT32, "u4"),
           ("int", 8, False): (h5t.NATIVE_UINT64, "u8"),
           ("float", 4): (h5t.NATIVE_FLOAT, "f4"), ("float", 8): (h5t.NATIVE_DOUBLE, "f8")}
_VLEN_STR = h5t.py_create(h5py.string_dtype("utf-8"))


def _desc_of(tid: Any) -> tuple:
    cls = tid.get_class()
    if cls == h5t.INTEGER:
        return ("int", tid.get_size(), tid.get_sign() != h5t.SGN_NONE,
                tid.get_order() == h5t.ORDER_BE, tid.get_precision(), tid.get_offset())
    if cls == h5t.FLOAT:
        norm = {h5t.NORM_NONE: 0, h5t.NORM_MSBSET: 1, h5t.NORM_IMPLIED: 2}[tid.get_norm()]
        return ("float", tid.get_size(), tid.get_order() == h5t.ORDER_BE,
                (tid.get_precision(), tid.get_offset(), *tid.get_fields(), tid.get_ebias(), norm))
    if cls == h5t.STRING:
        vlen = bool(tid.is_variable_str())
        return ("string", vlen, 0 if vlen else tid.get_size())
    if cls == h5t.COMPOUND:
        return ("compound", tid.get_size(), tuple(
            (tid.get_member_name(i).decode("utf-8", "replace"), tid.get_member_offset(i),
             _desc_of(tid.get_member_type(i))) for i in range(tid.get_nmembers())))
    if cls == h5t.ENUM:
        return ("enum", _desc_of(tid.get_super()), tuple(
            (tid.get_member_name(i).decode("utf-8", "replace"), int(tid.get_member_value(i)))
            for i in range(tid.get_nmembers())))
    if cls == h5t.VLEN:
        return ("vlen", _desc_of(tid.get_super()))
    if cls == h5t.OPAQUE:
        return ("opaque", tid.get_size())
    if cls == h5t.ARRAY:
        return ("array", tuple(tid.get_array_dims()), _desc_of(tid.get_super()))
    if cls == h5t.REFERENCE:
        return ("reference", tid.get_size())
    return ("other", int(cls))


def _py_value(desc: tuple, value: Any) -> Any:
    """A value h5py read (numpy) in the neutral decoded form."""
    kind = desc[0]
    if kind == "compound":
        return tuple(_py_value(member, value[i]) for i, (_, _, member) in enumerate(desc[2]))
    if kind == "vlen" or kind == "array":
        base = desc[1] if kind == "vlen" else desc[2]
        arr = np.asarray(value)
        if base[0] == "string" and not base[1] and arr.dtype.kind == "S" and base[2]:
            data = arr.tobytes()  # each element as stored: numpy's drop their trailing NULs
            return [data[i:i + base[2]] for i in range(0, len(data), base[2])]
        return [_py_value(base, v) for v in arr.reshape(-1)]
    if kind == "opaque":
        return bytes(np.asarray(value).tobytes())
    if kind == "string":
        return value if isinstance(value, bytes) else bytes(np.asarray(value).tobytes())
    if isinstance(value, np.generic):
        return value.item()
    return value


_LAYOUTS = {0: "compact", 1: "contiguous", 2: "chunked", 3: "virtual"}
_FILTER_NAMES = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                 6: "scaleoffset", 307: "bzip2", 32001: "blosc", 32004: "lz4", 32013: "zfp",
                 32015: "zstd"}


#: H5_SZIP_CHIP_OPTION_MASK | H5_SZIP_EC_OPTION_MASK | H5_SZIP_NN_OPTION_MASK
_SZIP_ALL_MASKS = 0x26


def _filter(code: int, params: list[int]) -> dict[str, Any]:
    """A filter as ``ncdump -hs`` shows it (``_Filter = "id,params"``). HDF5 stores szip's two
    parameters expanded to four (the options mask with its own flags added, pixels per
    block, bits per pixel, pixels per scanline); netCDF-C (get_filter_info) gives back the
    two set: the options masked by H5_SZIP_ALL_MASKS, and pixels per block."""
    if code == 4 and len(params) == 4:
        params = [params[0] & _SZIP_ALL_MASKS, params[1]]
    return {"id": code, "name": _FILTER_NAMES.get(code), "params": params}


class _H5pyBackend:
    """HDF5 metadata through h5py's low-level API (the reference for the raw reader)."""

    def __init__(self, fid: Any, file_size: int) -> None:
        self.fid = fid
        self.file_size = file_size
        self.superblock_version = fid.get_create_plist().get_version()[0]
        #: (group path, name, reason) of the objects libhdf5 refuses to open (an integer with
        #: most of its bits unused, which HDF5 2.x rejects): left out of the model
        self.unopenable: list[tuple[str, str, str]] = []

    def root(self) -> Any:
        return h5g.open(self.fid, b"/")

    def members(self, gid: Any) -> list[tuple[str, str, Any]]:
        order = h5.INDEX_NAME
        if gid.get_create_plist().get_link_creation_order() & h5p.CRT_ORDER_TRACKED:
            order = h5.INDEX_CRT_ORDER
        links: list[tuple[bytes, int]] = []
        gid.links.iterate(lambda name, info: links.append((name, info.type)),
                          idx_type=order, info=True)
        result = []
        for name, link_type in links:
            if link_type == h5l.TYPE_EXTERNAL:
                continue
            try:
                obj = h5o.open(gid, name)
            except KeyError as exc:  # libhdf5 refuses the object itself (a read error is not a KeyError)
                group = h5i.get_name(gid).decode("utf-8", "replace")
                self.unopenable.append((group, name.decode("utf-8", "replace"), format_error(exc)))
                continue
            kind = ("dataset" if isinstance(obj, h5d.DatasetID) else
                    "group" if isinstance(obj, h5g.GroupID) else
                    "type" if isinstance(obj, h5t.TypeID) else "other")
            result.append((name.decode("utf-8", "replace"), kind, obj))
        return result

    def attribute_names(self, obj: Any) -> list[str]:
        names: list[bytes] = []
        h5a.iterate(obj, names.append, index_type=h5.INDEX_CRT_ORDER)
        return [n.decode("utf-8", "replace") for n in names]

    def attribute(self, obj: Any, name: str) -> tuple[tuple, str, list[Any]]:
        attr = h5a.open(obj, name.encode("utf-8"))
        tid = attr.get_type()
        desc = _desc_of(tid)
        space = attr.get_space()
        kind = space.get_simple_extent_type()
        scalar = "scalar" if kind == h5s.SCALAR else "null" if kind == h5s.NULL else "simple"
        n = 0 if kind == h5s.NULL else space.get_simple_extent_npoints()
        if n > self.file_size:
            raise NetCDFError(f"attribute {name} claims {n} values, more than the file holds")
        if kind == h5s.SIMPLE and space.get_simple_extent_ndims() > 1 and desc[0] != "string":
            raise NetCDFAttributeError(_several_dimensions(name), desc)
        if not n:
            return desc, scalar, []
        try:
            return desc, scalar, self._values(attr, tid, desc, n)
        except (TypeError, ValueError) as exc:  # no numpy type for it (a compound of int24s)
            raise NetCDFAttributeError(f"attribute {name!r}: {exc}", desc) from exc

    @staticmethod
    def _values(attr: Any, tid: Any, desc: tuple, n: int) -> list[Any]:
        # as netCDF-C reads it, in the native type H5Tget_native_type() gives (a 24-bit integer
        # as a 32-bit one, a float16 as a float)
        if desc[0] == "int":
            key: tuple = ("int", _native_int_size(desc[4]), desc[2])
        elif desc[0] == "float" and desc[1] <= 8:  # a float16 as a float
            key = ("float", 4 if desc[1] <= 4 else 8)
        else:
            key = desc[:2]
        if key in _MTYPES:
            mtype, dtype = _MTYPES[key]
            arr = np.empty(n, dtype)
            attr.read(arr, mtype=mtype)
            return arr.tolist()
        if desc[0] == "string":
            if desc[1]:
                arr = np.empty(n, object)
                attr.read(arr, mtype=_VLEN_STR)
                return [v or b"" for v in arr.tolist()]
            arr = np.empty(n, f"V{desc[2]}")
            attr.read(arr, mtype=tid)
            return [v.tobytes() for v in arr]
        arr = np.empty(n, attr.dtype)
        attr.read(arr)
        return [_py_value(desc, v) for v in arr]

    def dataset(self, ds: Any) -> tuple[list[int], list[int | None], tuple]:
        space = ds.get_space()
        if space.get_simple_extent_type() == h5s.SIMPLE:
            extent = list(space.get_simple_extent_dims())
            maxdims = [None if m == _UNLIMITED_H5 else m
                       for m in space.get_simple_extent_dims(True)]
        else:
            extent, maxdims = [], []
        return extent, maxdims, _desc_of(ds.get_type())

    def storage(self, ds: Any) -> dict[str, Any]:
        dcpl = ds.get_create_plist()
        layout = dcpl.get_layout()
        filters = []
        for i in range(dcpl.get_nfilters()):
            code, _, values, _ = dcpl.get_filter(i)
            filters.append(_filter(code, list(values)))
        return {"storage": _LAYOUTS.get(layout, str(layout)),
                "chunk_sizes": list(dcpl.get_chunk()) if layout == h5d.CHUNKED else None,
                "filters": filters,
                "no_fill": dcpl.fill_value_defined() != h5d.FILL_VALUE_USER_DEFINED}

    def identity(self, obj: Any) -> Any:
        stat = h5g.get_objinfo(obj)
        return (stat.fileno, stat.objno)

    def committed_type(self, tid: Any) -> tuple:
        return _desc_of(tid)

    def dimension_list(self, ds: Any, ndims: int) -> list[Any] | None:
        attr = h5a.open(ds, b"DIMENSION_LIST")
        arr = np.empty(attr.get_space().get_simple_extent_npoints(), attr.dtype)
        attr.read(arr)
        if len(arr) != ndims or len(arr[0]) == 0:  # H5DSget_num_scales(ds, 0) == 0
            return None
        return [self.identity(h5r.dereference(refs[-1], self.fid)) if len(refs) else None
                for refs in arr]


# --- backend 2: pure-Python HDF5 object headers -----------------------------------------------

_UNDEF = 0xFFFFFFFFFFFFFFFF
_MAX_DEPTH = 64


_UNPACK = {n: struct.Struct(f"<{c}").unpack_from for n, c in ((1, "B"), (2, "H"), (4, "I"),
                                                                 (8, "Q"))}
_MSG_V2 = struct.Struct("<BHB").unpack_from
_MSG_V2_CRT = struct.Struct("<BHBH").unpack_from
_ATTR_HEAD = struct.Struct("<BBHHH").unpack_from


def _several_dimensions(name: str) -> str:
    return (f"attribute {name!r} has more than one dimension: not a netCDF attribute "
            "(netCDF-C cannot read it: NC_EATTMETA)")


def _odd_ints(desc: tuple, data: bytes, n: int) -> list[int]:
    """Integers of a size numpy has no type for (3, 5, 6, 7 bytes) or with fewer bits than
    their bytes: the ``precision`` bits at ``bit_offset``, sign-extended, as HDF5 converts
    them to the native integer netCDF-C reads them as."""
    _, size, signed, big, precision, offset = desc
    if size > 8 or not 0 < precision <= 8 * size:
        raise _Unsupported(f"{size}-byte integer of precision {precision}")
    mask, top = (1 << precision) - 1, 1 << (precision - 1)
    values = []
    for i in range(n):
        value = int.from_bytes(data[i * size:(i + 1) * size], "big" if big else "little")
        value = (value >> offset) & mask
        values.append(value - (1 << precision) if signed and value & top else value)
    return values


def _le(data: bytes, pos: int, size: int) -> int:
    """Little-endian unsigned integer of ``size`` bytes at ``pos``."""
    unpack = _UNPACK.get(size)
    if unpack is not None and pos + size <= len(data):
        return unpack(data, pos)[0]
    return int.from_bytes(data[pos:pos + size], "little")


def _enc_size(value: int) -> int:
    """Bytes H5VM_limit_enc_size() uses to encode values up to ``value``."""
    return (value.bit_length() - 1) // 8 + 1 if value > 0 else 1


class _Blocks:
    """Bounded random access to a file through a cache of fixed-size blocks."""

    def __init__(self, fileobj: IO[bytes], size: int, block: int, head: bytes) -> None:
        self.f, self.size, self.block = fileobj, size, block
        self.cache: dict[int, bytes] = {}
        if len(head) >= block:
            self.cache[0] = head[:block]

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise NetCDFError(f"HDF5 structure at offset {offset} (+{n} bytes) lies beyond the "
                              f"end of the file ({self.size} bytes): truncated or corrupt")
        block = self.block
        first, last = offset // block, (offset + n - 1) // block if n else offset // block
        if first == last:
            data = self.cache.get(first) or self._load(first)
            start = offset - first * block
            return data[start:start + n]
        parts = [self.cache.get(i) or self._load(i) for i in range(first, last + 1)]
        start = offset - first * block
        return b"".join(parts)[start:start + n]

    def _load(self, index: int) -> bytes:
        self.f.seek(index * self.block)
        data = self.f.read(self.block)
        expected = min(self.block, self.size - index * self.block)
        if len(data) < expected:
            raise NetCDFError(f"short read at offset {index * self.block}: file truncated")
        self.cache[index] = data
        return data


class _Header:
    """A parsed object header: its messages as (type, flags, creation order, body)."""

    __slots__ = ("_attr_names", "_attrs", "addr", "attr_crt_tracked", "links", "messages")

    def __init__(self, addr: int, messages: list[tuple[int, int, int, bytes]],
                 attr_crt_tracked: bool) -> None:
        self.addr, self.messages, self.attr_crt_tracked = addr, messages, attr_crt_tracked
        self._attrs: dict[str, tuple[tuple, str, bytes, int]] | None = None
        self._attr_names: list[str] | None = None
        self.links: list[tuple[str, int, Any]] | None = None

    def first(self, mtype: int) -> tuple[int, bytes] | None:
        for t, flags, _, body in self.messages:
            if t == mtype:
                return flags, body
        return None

    def kind(self) -> str:
        types = {m[0] for m in self.messages}
        if types & {0x02, 0x06, 0x0A, 0x11}:
            return "group"
        if types & {0x01, 0x08}:
            return "dataset"
        if 0x03 in types:
            return "type"
        return "other"


class _RawHDF5:
    """Just enough of the HDF5 file format to read netCDF-4 metadata, never data."""

    def __init__(self, blocks: _Blocks) -> None:
        self.r = blocks
        # Attribute messages repeat a few datatypes and dataspaces: parsed once per file, by
        # their bytes (what each parse depends on, with the file's sizes of offsets/lengths).
        self._attribute_types: dict[bytes, tuple] = {}
        self._attribute_spaces: dict[bytes, tuple[str, tuple[int, ...]]] = {}
        self.headers: dict[int, _Header] = {}
        self.gheaps: dict[int, dict[int, bytes]] = {}
        self._superblock()

    # superblock, object headers ------------------------------------------------------
    def _superblock(self) -> None:
        base = 0
        while True:
            if self.r.read(base, 8) == HDF5_SIGNATURE:
                break
            base = 512 if base == 0 else base * 2
            if base + 8 > self.r.size:
                raise NetCDFError("no HDF5 signature found")
        sb = self.r.read(base, min(128, self.r.size - base))
        version = sb[8] if len(sb) > 14 else -1
        ext = None
        if version in (0, 1):
            self.O, self.L = sb[13], sb[14]
            self._check_sizes()
            pos = 24 + (4 if version == 1 else 0)
            self._need(sb, pos + 6 * self.O)
            eof = _le(sb, pos + 2 * self.O, self.O)
            self.root_addr = _le(sb, pos + 5 * self.O, self.O)
        elif version in (2, 3):
            self.O, self.L = sb[9], sb[10]
            self._check_sizes()
            self._need(sb, 12 + 4 * self.O + 4)
            ext = _le(sb, 12 + self.O, self.O)
            eof = _le(sb, 12 + 2 * self.O, self.O)
            self.root_addr = _le(sb, 12 + 3 * self.O, self.O)
        elif version == -1:
            raise NetCDFError(f"HDF5 superblock truncated: the file has {self.r.size} bytes")
        else:
            raise _Unsupported(f"superblock version {version}")
        self.superblock_version = version
        self.base = base  # HDF5 takes the superblock's position as the base address
        self.undef = (1 << (8 * self.O)) - 1
        if base + eof > self.r.size:
            raise NetCDFError(f"HDF5 file truncated: its superblock says {base + eof} bytes, "
                              f"the file has {self.r.size}")
        if ext is not None and ext != self.undef and \
                self._parse_header(ext).first(0x0F) is not None:
            raise _Unsupported("shared object header message table")

    def _need(self, sb: bytes, size: int) -> None:
        if len(sb) < size:
            raise NetCDFError(f"HDF5 superblock truncated: the file has {self.r.size} bytes")

    def _check_sizes(self) -> None:
        if self.O not in (2, 4, 8) or self.L not in (2, 4, 8):
            raise NetCDFError(f"invalid HDF5 superblock (offset size {self.O}, "
                              f"length size {self.L})")

    def header(self, addr: int) -> _Header:
        hdr = self.headers.get(addr)
        if hdr is None:
            hdr = self.headers[addr] = self._parse_header(addr)
        return hdr

    def _parse_header(self, addr: int) -> _Header:
        if addr == self.undef:
            raise NetCDFError("undefined object header address")
        start = self.base + addr
        first = self.r.read(start, 16)
        messages: list[tuple[int, int, int, bytes]] = []
        if first[:4] == b"OHDR":
            version, flags = first[4], first[5]
            if version != 2:
                raise NetCDFError(f"object header version {version} at {addr}")
            pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            head = self.r.read(start, pos + width)
            size0 = _le(head, pos, width)
            chunk = self.r.read(start + pos + width, size0)
            crt = bool(flags & 0x04)
            pending = [(chunk, 0)]
            seen = 0
            while pending:
                data, _ = pending.pop(0)
                self._v2_messages(data, crt, messages, pending)
                seen += 1
                if seen > 10000:
                    raise NetCDFError("object header continuation loop")
            return _Header(addr, messages, crt)
        version = first[0]
        if version != 1:
            raise NetCDFError(f"not an HDF5 object header at address {addr}")
        nmsgs = _le(first, 2, 2)
        size = _le(first, 8, 4)
        pending = [self.r.read(start + 16, size)]
        budget = nmsgs
        while pending and budget > 0:
            data = pending.pop(0)
            pos = 0
            while pos + 8 <= len(data) and budget > 0:
                mtype, msize, mflags = _le(data, pos, 2), _le(data, pos + 2, 2), data[pos + 4]
                body = data[pos + 8:pos + 8 + msize]
                if len(body) < msize:
                    raise NetCDFError(f"object header at {addr} truncated")
                pos += 8 + msize
                budget -= 1
                if mtype == 0x10:
                    caddr, clen = _le(body, 0, self.O), _le(body, self.O, self.L)
                    pending.append(self.r.read(self.base + caddr, clen))
                elif mtype:
                    messages.append((mtype, mflags, 0, body))
        return _Header(addr, messages, False)

    def _v2_messages(self, data: bytes, crt: bool, messages: list, pending: list) -> None:
        pos, end = 0, len(data)
        if data[:4] == b"OCHK":  # continuation block: signature, messages, checksum
            pos, end = 4, len(data) - 4
        hsize = 6 if crt else 4
        while pos + hsize <= end:
            if crt:
                mtype, msize, mflags, corder = _MSG_V2_CRT(data, pos)
            else:
                (mtype, msize, mflags), corder = _MSG_V2(data, pos), 0
            body = data[pos + hsize:pos + hsize + msize]
            if len(body) < msize:
                raise NetCDFError("object header message runs past its chunk")
            pos += hsize + msize
            if mtype == 0x10:
                caddr, clen = _le(body, 0, self.O), _le(body, self.O, self.L)
                block = self.r.read(self.base + caddr, clen)
                if block[:4] != b"OCHK":
                    raise NetCDFError("bad object header continuation block")
                pending.append((block, 0))
            elif mtype:
                messages.append((mtype, mflags, corder, body))

    # datatypes, dataspaces ---------------------------------------------------------------
    def datatype(self, body: bytes, pos: int = 0) -> tuple[tuple, int]:
        """(desc, bytes consumed) of a datatype message."""
        cv = body[pos]
        cls, version = cv & 0x0F, cv >> 4
        bits = _le(body, pos + 1, 3)
        size = _le(body, pos + 4, 4)
        p = pos + 8
        if cls == 0:  # fixed point: bit offset, bit precision
            return ("int", size, bool(bits & 0x08), bool(bits & 0x01), _le(body, p + 2, 2),
                    _le(body, p, 2)), p + 4 - pos
        if cls == 1:  # floating point: offset, precision, exponent and mantissa fields, bias
            layout = (_le(body, p + 2, 2), _le(body, p, 2), (bits >> 8) & 0xFF, _le(body, p + 4, 1),
                      _le(body, p + 5, 1), _le(body, p + 6, 1), _le(body, p + 7, 1),
                      _le(body, p + 8, 4), (bits >> 4) & 3)
            return ("float", size, bool(bits & 0x01), layout), p + 12 - pos
        if cls == 3:
            return ("string", False, size), p - pos
        if cls == 6:  # compound
            members = []
            for _ in range(bits & 0xFFFF):
                nul = body.index(b"\x00", p)
                name = body[p:nul].decode("utf-8", "replace")
                if version < 3:
                    p += ((nul - p) // 8 + 1) * 8
                else:
                    p = nul + 1
                if version == 1:
                    offset = _le(body, p, 4)
                    ndims = body[p + 4]
                    dims = [_le(body, p + 16 + 4 * i, 4) for i in range(ndims)]
                    p += 32
                elif version == 2:
                    offset = _le(body, p, 4)
                    p += 4
                    dims = []
                else:
                    width = _enc_size(size)
                    offset = _le(body, p, width)
                    p += width
                    dims = []
                member, used = self.datatype(body, p)
                p += used
                if dims:
                    member = ("array", tuple(dims), member)
                members.append((name, offset, member))
            return ("compound", size, tuple(members)), p - pos
        if cls == 8:  # enum
            base, used = self.datatype(body, p)
            p += used
            names = []
            for _ in range(bits & 0xFFFF):
                nul = body.index(b"\x00", p)
                names.append(body[p:nul].decode("utf-8", "replace"))
                p = p + ((nul - p) // 8 + 1) * 8 if version < 3 else nul + 1
            values = self.decode(base, body[p:p + len(names) * base[1]], len(names))
            p += len(names) * base[1]
            return ("enum", base, tuple(zip(names, values, strict=True))), p - pos
        if cls == 9:  # variable length
            base, used = self.datatype(body, p)
            p += used
            if bits & 0x0F == 1:
                return ("string", True, 0), p - pos
            return ("vlen", base), p - pos
        if cls == 5:  # opaque
            taglen = bits & 0xFF
            return ("opaque", size), p + taglen - pos
        if cls == 10:  # array
            ndims = body[p]
            p += 1 if version >= 3 else 4
            dims = tuple(_le(body, p + 4 * i, 4) for i in range(ndims))
            p += 4 * ndims * (1 if version >= 3 else 2)
            base, used = self.datatype(body, p)
            return ("array", dims, base), p + used - pos
        if cls == 7:
            return ("reference", size), p - pos
        if cls == 4:
            return ("other", 4), p + 4 - pos
        if cls == 2:
            return ("other", 2), p + 2 - pos
        raise NetCDFError(f"unknown HDF5 datatype class {cls}")

    def shared_type(self, flags: int, body: bytes) -> tuple:
        if not flags & 0x02:
            return self.datatype(body)[0]
        version, kind = body[0], body[1]
        if version == 1:
            addr = _le(body, 8, self.O)
        elif version == 2 or (version == 3 and kind == 2):
            addr = _le(body, 2, self.O)
        else:
            raise _Unsupported("datatype in the shared message heap")
        found = self.header(addr).first(0x03)
        if found is None:
            raise NetCDFError("shared datatype without a datatype message")
        return self.shared_type(*found)

    def dataspace(self, body: bytes) -> tuple[str, list[int], list[int | None]]:
        version, ndims, flags = body[0], body[1], body[2]
        if version == 1:
            pos, kind = 8, "simple" if ndims else "scalar"
        elif version == 2:
            pos, kind = 4, ("scalar", "simple", "null")[body[3]]
        else:
            raise NetCDFError(f"dataspace message version {version}")
        lsz = self.L
        if not ndims:
            return kind, [], []
        code = {8: "Q", 4: "I", 2: "H"}[lsz]
        count = 2 * ndims if flags & 1 else ndims
        if len(body) < pos + count * lsz:
            raise NetCDFError("dataspace message truncated")
        values = struct.unpack_from(f"<{count}{code}", body, pos)
        dims = list(values[:ndims])
        if flags & 1:
            limit = (1 << (8 * lsz)) - 1
            maxdims: list[int | None] = [None if m == limit else m for m in values[ndims:]]
        else:
            maxdims = list(dims)
        return kind, dims, maxdims

    # values ------------------------------------------------------------------------------
    def decode(self, desc: tuple, data: bytes, n: int) -> list[Any]:
        kind = desc[0]
        if kind == "int" or kind == "float":
            size = desc[1]
            if kind == "int":
                if size not in (1, 2, 4, 8) or desc[4] != 8 * size or desc[5]:
                    return _odd_ints(desc, data, n)
                code = ("i" if desc[2] else "u") + str(size)
                order = ">" if desc[3] else "<"
            else:
                if _IEEE_LAYOUTS.get(size) != desc[3]:  # bfloat16, long double...: HDF5 converts
                    raise _Unsupported(f"{size}-byte float of layout {desc[3]}")
                code = "f" + str(size)
                order = ">" if desc[2] else "<"
            return np.frombuffer(data, order + code, n).tolist()
        if kind == "string":
            if desc[1]:
                return [self.vlen_bytes(data, i * (8 + self.O)) for i in range(n)]
            size = desc[2]
            return [data[i * size:(i + 1) * size] for i in range(n)]
        if kind == "opaque" or kind == "reference":
            size = desc[1]
            chunks = [data[i * size:(i + 1) * size] for i in range(n)]
            return chunks if kind == "opaque" else [_le(c, 0, size) for c in chunks]
        if kind == "enum":
            return self.decode(desc[1], data, n)
        if kind == "vlen":
            base = desc[1]
            out = []
            for i in range(n):
                pos = i * (8 + self.O)
                count = _le(data, pos, 4)
                out.append(self.decode(base, self.vlen_bytes(data, pos), count) if count else [])
            return out
        if kind == "array":
            count = 1
            for d in desc[1]:
                count *= d
            size = self.size_of(desc[2]) * count
            return [self.decode(desc[2], data[i * size:(i + 1) * size], count)
                    for i in range(n)]
        if kind == "compound":
            size = desc[1]
            out = []
            for i in range(n):
                rec = data[i * size:(i + 1) * size]
                out.append(tuple(self.decode(member, rec[offset:], 1)[0]
                                 for _, offset, member in desc[2]))
            return out
        raise _Unsupported(f"values of {kind}")

    def size_of(self, desc: tuple) -> int:
        kind = desc[0]
        if kind in ("int", "float", "opaque", "reference", "compound"):
            return desc[1]
        if kind == "string":
            return 8 + self.O if desc[1] else desc[2]
        if kind == "enum":
            return desc[1][1]
        if kind == "vlen":
            return 8 + self.O
        if kind == "array":
            count = 1
            for d in desc[1]:
                count *= d
            return count * self.size_of(desc[2])
        raise _Unsupported(f"size of {kind}")

    def vlen_bytes(self, data: bytes, pos: int) -> bytes:
        """The global heap object a variable-length element points to."""
        addr = _le(data, pos + 4, self.O)
        index = _le(data, pos + 4 + self.O, 4)
        if not _le(data, pos, 4) or addr == 0 or addr == self.undef:
            return b""
        heap = self.gheaps.get(addr)
        if heap is None:
            heap = self.gheaps[addr] = self._global_heap(addr)
        obj = heap.get(index)
        if obj is None:
            raise NetCDFError(f"global heap object {index} missing at {addr}")
        return obj

    def _global_heap(self, addr: int) -> dict[int, bytes]:
        head = self.r.read(self.base + addr, 8 + self.L)
        if head[:4] != b"GCOL":
            raise NetCDFError(f"bad global heap collection at {addr}")
        size = _le(head, 8, self.L)
        data = self.r.read(self.base + addr, size)
        objects: dict[int, bytes] = {}
        pos = 8 + self.L
        lsz = self.L
        while pos + 8 + lsz <= size:
            index = _le(data, pos, 2)
            osize = _le(data, pos + 8, lsz)
            if index == 0:
                break
            objects[index] = data[pos + 8 + lsz:pos + 8 + lsz + osize]
            pos += 8 + lsz + ((osize + 7) // 8) * 8
        return objects

    # attributes --------------------------------------------------------------------------
    def _attribute_message(self, body: bytes) -> tuple[str, tuple, str, bytes, int]:
        """(name, desc, scalar, data, n) of an attribute message."""
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
            raise NetCDFError(f"attribute message version {version}")
        if flags & 0x03:
            if flags & 0x02:
                raise _Unsupported("shared attribute dataspace")
            desc = self.shared_type(0x02, body[dt_pos:dt_pos + dt_size])
        else:
            key = body[dt_pos:dt_pos + dt_size]
            desc = self._attribute_types.get(key)
            if desc is None:
                desc, used = self.datatype(body, dt_pos)
                if used <= dt_size:  # parsed from these bytes alone
                    self._attribute_types[key] = desc
        space = body[ds_pos:ds_pos + ds_size]
        found = self._attribute_spaces.get(space)
        if found is None:
            kind, dims, _ = self.dataspace(space)
            found = self._attribute_spaces[space] = (kind, tuple(dims))
        kind, dims = found
        n = 0
        if kind == "simple":
            if len(dims) > 1 and desc[0] != "string":
                kind = "several"  # not a netCDF attribute: attribute() raises for it
            n = 1
            for d in dims:
                n *= d
        elif kind == "scalar":
            n = 1
        data = body[pos:]
        text = name.rstrip(b"\x00").decode("utf-8", "replace")
        need = n * self.size_of(desc)
        if need > len(data):
            raise NetCDFError(f"attribute {text!r} claims {need} bytes of values, its message "
                              f"holds {len(data)}")
        return text, desc, kind, data, n

    def attributes(self, hdr: _Header) -> dict[str, tuple[tuple, str, bytes, int]]:
        if hdr._attrs is not None:
            return hdr._attrs
        found: list[tuple[int, int, str, tuple, str, bytes, int]] = []
        seq = 0
        for mtype, flags, corder, body in hdr.messages:
            if mtype == 0x0C:
                if flags & 0x02:
                    raise _Unsupported("shared attribute message")
                found.append((corder, seq, *self._attribute_message(body)))
                seq += 1
            elif mtype == 0x15:
                aflags = body[1]
                pos = 2 + (2 if aflags & 1 else 0)
                heap = _le(body, pos, self.O)
                name_bt = _le(body, pos + self.O, self.O)
                crt_bt = _le(body, pos + 2 * self.O, self.O) if aflags & 2 else self.undef
                if heap == self.undef:
                    continue
                fheap = _FractalHeap(self, heap)
                index = crt_bt if crt_bt != self.undef else name_bt
                for record in _btree2_records(self, index):
                    heap_id = record[:8]
                    rflags = record[8]
                    if rflags & 0x01:
                        raise _Unsupported("shared attribute in dense storage")
                    corder = _le(record, 9, 4)
                    found.append((corder, seq, *self._attribute_message(fheap.get(heap_id))))
                    seq += 1
        found.sort(key=lambda item: (item[0], item[1]))
        hdr._attrs = {item[2]: item[3:] for item in found}
        hdr._attr_names = [item[2] for item in found]
        return hdr._attrs

    # groups ------------------------------------------------------------------------------
    def links(self, hdr: _Header) -> list[tuple[str, int, Any]]:
        """(name, link type, target: address or soft path) in netCDF-C's iteration order."""
        if hdr.links is None:
            hdr.links = self._links(hdr)
        return hdr.links

    def _links(self, hdr: _Header) -> list[tuple[str, int, Any]]:
        links: list[tuple[int, str, int, int | None]] = []
        tracked = False
        stab = hdr.first(0x11)
        if stab is not None:
            return self._symbol_table_links(stab[1])
        for mtype, _, _, body in hdr.messages:
            if mtype == 0x06:
                links.append(self._link_message(body))
            elif mtype == 0x02:
                lflags = body[1]
                tracked = bool(lflags & 1)
                pos = 2 + (8 if lflags & 1 else 0)
                heap = _le(body, pos, self.O)
                name_bt = _le(body, pos + self.O, self.O)
                crt_bt = _le(body, pos + 2 * self.O, self.O) if lflags & 2 else self.undef
                if heap == self.undef:
                    continue
                fheap = _FractalHeap(self, heap)
                index = crt_bt if crt_bt != self.undef else name_bt
                for record in _btree2_records(self, index):
                    heap_id = record[8:] if index == crt_bt else record[4:]
                    links.append(self._link_message(fheap.get(heap_id)))
        if tracked:
            links.sort(key=lambda link: link[0])
        else:
            links.sort(key=lambda link: link[1].encode("utf-8"))
        return [(name, ltype, target) for _, name, ltype, target in links]

    def _link_message(self, body: bytes) -> tuple[int, str, int, Any]:
        flags = body[1]
        pos = 2
        ltype = 0
        if flags & 0x08:
            ltype = body[pos]
            pos += 1
        corder = 0
        if flags & 0x04:
            corder = _le(body, pos, 8)
            pos += 8
        if flags & 0x10:
            pos += 1
        width = 1 << (flags & 3)
        nlen = _le(body, pos, width)
        pos += width
        name = body[pos:pos + nlen].decode("utf-8", "replace")
        pos += nlen
        target: int | str | None = None
        if ltype == 0:
            target = _le(body, pos, self.O)
        elif ltype == 1:
            target = body[pos + 2:pos + 2 + _le(body, pos, 2)].decode("utf-8", "replace")
        return corder, name, ltype, target

    def _symbol_table_links(self, body: bytes) -> list[tuple[str, int, Any]]:
        btree, lheap = _le(body, 0, self.O), _le(body, self.O, self.O)
        head = self.r.read(self.base + lheap, 8 + 2 * self.L + self.O)
        if head[:4] != b"HEAP":
            raise NetCDFError("bad local heap")
        seg_size = _le(head, 8, self.L)
        seg_addr = _le(head, 8 + 2 * self.L, self.O)
        names = self.r.read(self.base + seg_addr, seg_size)
        entries: list[tuple[str, int, int | None]] = []
        self._btree1_group(btree, names, entries, 0)
        return entries

    def _btree1_group(self, addr: int, names: bytes, entries: list, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise NetCDFError("group B-tree too deep")
        osz, lsz = self.O, self.L
        head = self.r.read(self.base + addr, 8 + 2 * osz)
        if head[:4] != b"TREE" or head[4] != 0:
            raise NetCDFError("bad group B-tree node")
        level, used = head[5], _le(head, 6, 2)
        body = self.r.read(self.base + addr + 8 + 2 * osz, (used + 1) * lsz + used * osz)
        children = [_le(body, lsz + i * (lsz + osz), osz) for i in range(used)]
        for child in children:
            if level > 0:
                self._btree1_group(child, names, entries, depth + 1)
                continue
            node = self.r.read(self.base + child, 8)
            if node[:4] != b"SNOD":
                raise NetCDFError("bad symbol table node")
            count = _le(node, 6, 2)
            size = 2 * osz + 24
            data = self.r.read(self.base + child + 8, count * size)
            for i in range(count):
                pos = i * size
                name_off = _le(data, pos, osz)
                obj = _le(data, pos + osz, osz)
                cache = _le(data, pos + 2 * osz, 4)
                end = names.index(b"\x00", name_off)
                name = names[name_off:end].decode("utf-8", "replace")
                if cache == 2:  # soft link: the scratch pad holds its value's heap offset
                    value = _le(data, pos + 2 * osz + 8, 4)
                    end = names.index(b"\x00", value)
                    entries.append((name, 1, names[value:end].decode("utf-8", "replace")))
                else:
                    entries.append((name, 0, obj))

    # the backend protocol ------------------------------------------------------------------
    def root(self) -> _Header:
        return self.header(self.root_addr)

    def members(self, hdr: _Header) -> list[tuple[str, str, Any]]:
        result = []
        for name, ltype, target in self.links(hdr):
            if ltype == 0:
                child = self.header(target)
            elif ltype == 1:  # netCDF-C opens soft links' targets (H5Oopen follows them)
                child = self._resolve(hdr, target, 0)
            else:
                continue  # external and user-defined links point outside the file
            result.append((name, child.kind(), child))
        return result

    def _resolve(self, start: _Header, path: str, depth: int) -> _Header:
        """The object a soft link's path names, from the root or from its group."""
        if depth > 16:
            raise NetCDFError(f"soft link loop at {path!r}")
        hdr = self.root() if path.startswith("/") else start
        for part in path.split("/"):
            if part in ("", "."):
                continue
            found = next(((t, v) for n, t, v in self.links(hdr) if n == part), None)
            if found is None:
                raise NetCDFError(f"dangling soft link to {path!r}")
            ltype, target = found
            if ltype == 0:
                hdr = self.header(target)
            elif ltype == 1:
                hdr = self._resolve(hdr, target, depth + 1)
            else:
                raise NetCDFError(f"soft link {path!r} goes through an external link")
        return hdr

    def attribute_names(self, hdr: _Header) -> list[str]:
        self.attributes(hdr)
        return hdr._attr_names  # type: ignore[return-value]

    def attribute(self, hdr: _Header, name: str) -> tuple[tuple, str, list[Any]]:
        desc, space, data, n = self.attributes(hdr)[name]
        if space == "several":
            raise NetCDFAttributeError(_several_dimensions(name), desc)
        return desc, space, self.decode(desc, data, n) if n else []

    def dataset(self, hdr: _Header) -> tuple[list[int], list[int | None], tuple]:
        space = hdr.first(0x01)
        dtype = hdr.first(0x03)
        if dtype is None:
            raise NetCDFError("dataset without a datatype")
        if space is None:
            extent, maxdims = [], []
        else:
            kind, extent, maxdims = self.dataspace(space[1])
            if kind != "simple":
                extent, maxdims = [], []
        return extent, maxdims, self.shared_type(*dtype)

    def storage(self, hdr: _Header) -> dict[str, Any]:
        """Layout (0x08) and filter pipeline (0x0B) messages, as ncdump -s reports them."""
        layout, chunks = None, None
        found = hdr.first(0x08)
        if found is not None:
            body = found[1]
            version = body[0]
            if version in (1, 2):
                ndims, layout = body[1], body[2]
                pos = 8 + (self.O if layout != 0 else 0)
                dims = [_le(body, pos + 4 * i, 4) for i in range(ndims)]
            elif version == 3:
                layout = body[1]
                dims = ([_le(body, 3 + self.O + 4 * i, 4) for i in range(body[2])]
                        if layout == 2 else [])
            elif version in (4, 5):
                layout = body[1]
                ndims, width = (body[3], body[4]) if layout == 2 else (0, 0)
                dims = [_le(body, 5 + width * i, width) for i in range(ndims)]
            else:
                dims = []
            if layout == 2:
                chunks = dims[:-1]  # the last "dimension" is the element size
        filters = []
        found = hdr.first(0x0B)
        if found is not None:
            body = found[1]
            version, count = body[0], body[1]
            pos = 8 if version == 1 else 2
            for _ in range(count):
                code = _le(body, pos, 2)
                named = version == 1 or code >= 256
                name_len = _le(body, pos + 2, 2) if named else 0
                pos += 4 if named else 2
                nvalues = _le(body, pos + 2, 2)
                pos += 4
                pos += ((name_len + 7) // 8 * 8) if version == 1 else name_len
                filters.append(_filter(code, [_le(body, pos + 4 * i, 4)
                                              for i in range(nvalues)]))
                pos += 4 * nvalues + (4 if version == 1 and nvalues % 2 else 0)
        return {"storage": _LAYOUTS.get(layout) if layout is not None else None,
                "chunk_sizes": chunks, "filters": filters, "no_fill": not self._user_fill(hdr)}

    @staticmethod
    def _user_fill(hdr: _Header) -> bool:
        """Whether the dataset has a user-defined fill value (H5Pfill_value_defined() ==
        H5D_FILL_VALUE_USER_DEFINED): a fill value message (0x05) that carries a value, or
        else an old one (0x04) that does."""
        found = hdr.first(0x05)
        if found is not None:
            flags, body = found
            if flags & 0x02:
                raise _Unsupported("shared fill value message")
            if len(body) < 2:
                raise NetCDFError("fill value message truncated")
            if body[0] < 3:  # alloc time, fill time, "defined", then the size if defined
                return len(body) >= 8 and bool(body[3]) and _le(body, 4, 4) > 0
            # version 3: bit 4 undefined, bit 5 a value (size, value) follows
            return len(body) >= 6 and not body[1] & 0x10 and bool(body[1] & 0x20) and \
                _le(body, 2, 4) > 0
        found = hdr.first(0x04)
        return found is not None and len(found[1]) >= 4 and _le(found[1], 0, 4) > 0

    def identity(self, hdr: _Header) -> Any:
        return hdr.addr

    def committed_type(self, hdr: _Header) -> tuple:
        found = hdr.first(0x03)
        if found is None:
            raise NetCDFError("named datatype without a datatype message")
        return self.shared_type(*found)

    def dimension_list(self, hdr: _Header, ndims: int) -> list[Any] | None:
        desc, _, data, n = self.attributes(hdr)["DIMENSION_LIST"]
        if desc[0] != "vlen" or desc[1][0] != "reference" or n != ndims:
            return None
        refs = self.decode(desc, data, n)
        if not refs[0]:
            return None
        return [r[-1] if r else None for r in refs]


class _FractalHeap:
    """Objects of a fractal heap (dense link and attribute storage)."""

    def __init__(self, raw: _RawHDF5, addr: int) -> None:
        self.raw = raw
        osz, lsz = raw.O, raw.L
        h = raw.r.read(raw.base + addr, 4 + 1 + 2 + 2 + 1 + 4 + 12 * lsz + 4 * osz + 2 + 2 + 2 + 2)
        if h[:4] != b"FRHP":
            raise NetCDFError(f"bad fractal heap header at {addr}")
        self.id_len = _le(h, 5, 2)
        filters_len = _le(h, 7, 2)
        self.flags = h[9]
        self.max_managed = _le(h, 10, 4)
        pos = 14 + lsz + osz + lsz + osz + lsz + lsz + lsz + lsz + lsz + lsz + lsz + lsz
        self.width = _le(h, pos, 2)
        self.start_block = _le(h, pos + 2, lsz)
        self.max_direct = _le(h, pos + 2 + lsz, lsz)
        self.max_heap_bits = _le(h, pos + 2 + 2 * lsz, 2)
        self.root = _le(h, pos + 2 + 2 * lsz + 4, osz)
        self.root_rows = _le(h, pos + 2 + 2 * lsz + 4 + osz, 2)
        if filters_len:
            raise _Unsupported("filtered fractal heap")
        self.off_size = (self.max_heap_bits + 7) // 8
        self.len_size = min(_enc_size(self.max_direct - 1) if self.max_direct > 1 else 1,
                            _enc_size(self.max_managed))
        max_dblock_rows = (self.max_direct.bit_length() - 1) - (self.start_block.bit_length()
                                                                 - 1) + 2
        self.max_direct_rows = max_dblock_rows
        self.checksum = bool(self.flags & 0x02)

    def get(self, heap_id: bytes) -> bytes:
        first = heap_id[0]
        kind = (first >> 4) & 0x03
        if kind == 2:  # tiny
            length = (first & 0x0F) + 1
            return heap_id[1:1 + length]
        if kind != 0:
            raise _Unsupported("huge fractal heap object")
        offset = _le(heap_id, 1, self.off_size)
        length = _le(heap_id, 1 + self.off_size, self.len_size)
        return self._managed(offset, length)

    def _block_size(self, row: int) -> int:
        return self.start_block if row == 0 else self.start_block << (row - 1)

    def _managed(self, offset: int, length: int) -> bytes:
        raw = self.raw
        if self.root_rows == 0:
            return raw.r.read(raw.base + self.root + offset, length)
        return self._from_indirect(self.root, self.root_rows, 0, offset, length, 0)

    def _from_indirect(self, addr: int, nrows: int, block_offset: int, offset: int,
                       length: int, depth: int) -> bytes:
        if depth > _MAX_DEPTH:
            raise NetCDFError("fractal heap too deep")
        raw = self.raw
        osz = raw.O
        start = 4 + 1 + osz + self.off_size
        rel = offset - block_offset
        row_start = 0
        for row in range(nrows):
            bsize = self._block_size(row)
            row_span = bsize * self.width
            if rel < row_start + row_span:
                col = (rel - row_start) // bsize
                entry = row * self.width + col
                if row < self.max_direct_rows:
                    child = _le(raw.r.read(raw.base + addr + start + entry * osz, osz), 0, osz)
                    child_offset = block_offset + row_start + col * bsize
                    if child == raw.undef:
                        raise NetCDFError("fractal heap object in an unallocated block")
                    return raw.r.read(raw.base + child + (offset - child_offset), length)
                direct_entries = self.max_direct_rows * self.width
                indirect_index = entry - direct_entries
                child = _le(raw.r.read(raw.base + addr + start + direct_entries * osz
                                       + indirect_index * osz, osz), 0, osz)
                child_rows = (bsize.bit_length() - 1) - \
                    ((self.start_block * self.width).bit_length() - 1) + 1
                return self._from_indirect(child, child_rows,
                                           block_offset + row_start + col * bsize,
                                           offset, length, depth + 1)
            row_start += row_span
        raise NetCDFError("fractal heap offset out of range")


def _btree2_records(raw: _RawHDF5, addr: int) -> list[bytes]:
    """All records of a version 2 B-tree, in key order."""
    osz, lsz = raw.O, raw.L
    h = raw.r.read(raw.base + addr, 4 + 1 + 1 + 4 + 2 + 2 + 1 + 1 + osz + 2 + lsz + 4)
    if h[:4] != b"BTHD":
        raise NetCDFError(f"bad v2 B-tree header at {addr}")
    node_size, rec_size, depth = _le(h, 6, 4), _le(h, 10, 2), _le(h, 12, 2)
    root = _le(h, 16, osz)
    root_nrec = _le(h, 16 + osz, 2)
    if root == raw.undef or root_nrec == 0:
        return []
    if depth > _MAX_DEPTH or rec_size == 0:
        raise NetCDFError("implausible v2 B-tree")
    prefix = 10
    max_nrec = [(node_size - prefix) // rec_size]
    cum_max = [max_nrec[0]]
    cum_size = [0]
    max_nrec_size = _enc_size(max_nrec[0])
    for d in range(1, depth + 1):
        ptr = osz + max_nrec_size + (cum_size[d - 1] if d > 1 else 0)
        m = (node_size - (prefix + ptr)) // (rec_size + ptr)
        max_nrec.append(m)
        cum_max.append((m + 1) * cum_max[d - 1] + m)
        cum_size.append(_enc_size(cum_max[d]))
    records: list[bytes] = []

    def visit(node: int, nrec: int, d: int) -> None:
        if d == 0:
            data = raw.r.read(raw.base + node, 6 + nrec * rec_size)
            if data[:4] != b"BTLF":
                raise NetCDFError("bad v2 B-tree leaf")
            records.extend(data[6 + i * rec_size:6 + (i + 1) * rec_size] for i in range(nrec))
            return
        ptr = osz + max_nrec_size + (cum_size[d - 1] if d > 1 else 0)
        data = raw.r.read(raw.base + node, 6 + nrec * rec_size + (nrec + 1) * ptr)
        if data[:4] != b"BTIN":
            raise NetCDFError("bad v2 B-tree internal node")
        base = 6 + nrec * rec_size
        for i in range(nrec + 1):
            p = base + i * ptr
            child = _le(data, p, osz)
            child_nrec = _le(data, p + osz, max_nrec_size)
            visit(child, child_nrec, d - 1)
            if i < nrec:
                records.append(data[6 + i * rec_size:6 + (i + 1) * rec_size])

    visit(root, root_nrec, depth)
    return records


# --- opening ---------------------------------------------------------------------------------

#: Block sizes of the raw reader's cache: small locally (cheap reads), the remote file's own
#: block size remotely (each block is one request).
LOCAL_BLOCK = 32 * 1024


@contextlib.contextmanager
def _open_hdf5(source: Source):
    """An h5py File for the source: the OS path locally, the fsspec file object remotely."""
    path = source.local_path
    if path is not None:
        with h5py.File(path, "r", locking=False) as f:
            yield f
        return
    with source.open() as fileobj, h5py.File(fileobj, "r", locking=False) as f:
        yield f


def _extract_netcdf4(source: Source, out: Extraction) -> None:
    """The raw reader; h5py for what it does not implement (or fails on unexpectedly)."""
    scratch = Extraction(format=out.format)
    try:
        with source.open() as fileobj:
            block = LOCAL_BLOCK if source.local_path is not None else REMOTE_BLOCK_SIZE
            _read_netcdf4(_RawHDF5(_Blocks(fileobj, source.size, block, source.head)), scratch)
    except NetCDFError:
        raise  # corrupt or truncated: HDF5 itself can spin or crash on such files
    except Exception:  # _Unsupported (or a bug of ours): HDF5 decides
        out.metadata["reader"] = "h5py"
        with _open_hdf5(source) as f:
            _read_netcdf4(_H5pyBackend(f.id, source.size), out)
        return
    out.format_version = scratch.format_version
    out.metadata.update(scratch.metadata)
    for table, rows in scratch.rows.items():
        for row in rows:
            out.add_row(table, row)


# --- entry points ----------------------------------------------------------------------------


def extract(source: Source, out: Extraction) -> None:
    """Read a NetCDF header (classic or NetCDF-4) into ``out``."""
    head = bytes(source.head[:8]) if source.head else b""
    if len(head) < 8 and source.size > len(head):
        with source.open() as f:
            head = f.read(8)
    magic = head[:4]
    if magic in CLASSIC_MAGIC:
        out.format_version = CLASSIC_MAGIC[magic]
        out.metadata["data_model"] = out.format_version
        _extract_classic(source, out, magic[3])
        return
    if magic[:3] == b"CDF":
        raise NetCDFError(f"unknown classic NetCDF version byte {magic[3]:#04x}")
    _extract_netcdf4(source, out)


#: A local HDF5 file up to this size is first searched whole for the markers' bytes (cheaper
#: than walking its objects: a plain HDF5 file of 50 objects took 1.2-2 ms to walk).
WHOLE_FILE_SNIFF_BYTES = 256 * 1024
_MARKER_BYTES = tuple(m.encode("ascii") for m in sorted(_NETCDF4_MARKERS)) + (b"DIMENSION_SCALE",)


def _holds_no_marker_bytes(source: Source) -> bool:
    """True when a small local file holds none of the markers' bytes anywhere: then no object
    can carry one (attribute names and string values are stored as written). False when it
    may, or when that cannot be told this way: a larger or remote file, or one whose fractal
    heaps (dense link or attribute storage) pass their blocks through filters."""
    if source.local_path is None or not 0 < source.size <= WHOLE_FILE_SNIFF_BYTES:
        return False
    try:
        with source.open() as fileobj:
            data = fileobj.read(WHOLE_FILE_SNIFF_BYTES + 1)
    except OSError:
        return False
    if len(data) != source.size or _filtered_heap(data):
        return False
    return not any(marker in data for marker in _MARKER_BYTES)


def _filtered_heap(data: bytes) -> bool:
    """Whether a fractal heap header in ``data`` has I/O filters: its blocks (where dense
    storage keeps link and attribute messages) may then hold names compressed. Bytes that only
    look like a heap header count too (the answer errs towards walking the objects)."""
    at = data.find(b"FRHP")
    while at >= 0:
        # signature (4), version (1), heap ID length (2), I/O filters' encoded length (2)
        if at + 9 > len(data) or data[at + 7:at + 9] != b"\x00\x00":
            return True
        at = data.find(b"FRHP", at + 4)
    return False


def looks_like_netcdf4(source: Source) -> bool:
    """True when an HDF5 file was written by the netCDF library (or follows its model).

    Fast paths: ``_NCProperties`` as an attribute name (NUL-terminated) in ``source.head`` (netCDF); a small local file in which no
    marker's bytes occur (plain HDF5; :func:`_holds_no_marker_bytes`). Otherwise the root group's attributes and
    up to ``SNIFF_OBJECTS`` datasets are checked for netCDF-4 markers (``_NCProperties``,
    ``_nc3_strict``, ``_Netcdf4Dimid``, ``_Netcdf4Coordinates``, ``DIMENSION_LIST``,
    ``REFERENCE_LIST``, ``CLASS=DIMENSION_SCALE``). A file that cannot be read is not NetCDF.
    """
    if b"_NCProperties\x00" in (source.head or b""):  # the attribute's name (NUL-terminated)
        return True
    if _holds_no_marker_bytes(source):
        return False
    try:
        with source.open() as fileobj:
            block = LOCAL_BLOCK if source.local_path is not None else REMOTE_BLOCK_SIZE
            return _has_netcdf4_markers(_RawHDF5(_Blocks(fileobj, source.size, block,
                                                         source.head)))
    except NetCDFError:
        return False  # corrupt or truncated
    except Exception:  # _Unsupported: ask HDF5
        pass
    try:
        with _open_hdf5(source) as f:
            return _has_netcdf4_markers(_H5pyBackend(f.id, source.size))
    except Exception:
        return False


def _is_dimension_scale(backend: Any, obj: Any) -> bool:
    try:
        desc, _, raw = backend.attribute(obj, "CLASS")
    except NetCDFAttributeError:
        return False
    return desc[0] == "string" and bool(raw) and raw[0].rstrip(b"\x00") == b"DIMENSION_SCALE"


def _has_netcdf4_markers(backend: Any) -> bool:
    """Whether the root group's attribute names, or those of the first SNIFF_OBJECTS objects,
    hold netCDF's markers (or a dataset is a dimension scale). Only names are read (and CLASS
    values): an attribute netCDF cannot read (of several dimensions) decides nothing, so
    the answer does not depend on which object holds it."""
    root = backend.root()
    if set(backend.attribute_names(root)) & _NETCDF4_MARKERS:
        return True
    queue = [root]
    seen = 0
    while queue and seen < SNIFF_OBJECTS:
        group = queue.pop(0)
        for _, kind, obj in backend.members(group):
            seen += 1
            if seen > SNIFF_OBJECTS:
                break
            if kind == "group":
                queue.append(obj)
            elif kind == "dataset":
                names = backend.attribute_names(obj)
                if set(names) & _NETCDF4_MARKERS:
                    return True
                if "CLASS" in names and _is_dimension_scale(backend, obj):
                    return True
    return False


EXTRACTOR = Extractor(format="netcdf", extract=extract, tables=SchemaTables(netcdf="NETCDF"),
                      open_arrays=open_netcdf_arrays)
