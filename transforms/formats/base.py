"""Beam-free building blocks shared by the per-format extractors.

An extractor is a function ``extract(source: Source, out: Extraction) -> None`` that reads
headers only and fills ``out`` as it goes, so that whatever it read before a failure is kept.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import io
import json
import math
import os
import struct
from urllib.parse import unquote_to_bytes
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, ContextManager, Protocol

if TYPE_CHECKING:
    import pyarrow as pa


#: How many bytes of a file the detector reads (and hands to the extractor as ``head``).
HEAD_BYTES = 4096

#: Block size used for remote reads: a header read fetches a few of these, never the file.
REMOTE_BLOCK_SIZE = 256 * 1024


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """One listed file, as the listing described it."""

    path: str  # absolute local path or full URL (gs://b/k, memory://x)
    size: int
    modified: dt.datetime | None = None  # tz-aware UTC
    etag: str | None = None
    # Set by the comparison with the previous catalog (incremental runs).
    change: str | None = None  # new, changed, unchanged
    first_seen: dt.datetime | None = None
    #: "file", or what the listing found instead and never opens: "fifo", "socket",
    #: "character device", "block device", "broken symlink".
    kind: str = "file"
    #: Where to open the file when ``path`` (the catalog's text) differs: the OS name of a local
    #: file whose name is not UTF-8, or a URL whose credentials ``path`` leaves out.
    open_path: str | None = None


def openable(location: str) -> str:
    """The name to open a listed file by, from ``FileInfo.open_path or FileInfo.path``: a
    ``file://`` URL with percent-encoded bytes (a local name that is not UTF-8) becomes the OS
    name (:func:`os.fsdecode`); anything else is returned as is. Call it where the file is
    opened: the OS name is not valid UTF-8 text, which Beam's coders and pyarrow refuse."""
    if location.startswith("file://") and "%" in location:
        return os.fsdecode(unquote_to_bytes(location[len("file://") :]))
    return location


@dataclasses.dataclass
class ReadCounter:
    """Bytes read from one file and the read calls made (object store requests when remote)."""

    bytes_read: int = 0
    read_requests: int = 0

    def add(self, nbytes: int) -> None:
        self.bytes_read += nbytes
        self.read_requests += 1


class CountingFile(io.RawIOBase):
    """A local binary file whose reads are counted in a :class:`ReadCounter`."""

    def __init__(self, raw: IO[bytes], counter: ReadCounter):
        super().__init__()
        self._raw = raw
        self._counter = counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        self._counter.add(n or 0)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._counter.add(len(data))
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def _count_remote(f: Any, counter: ReadCounter) -> None:
    """Count every range an fsspec buffered file fetches (each fetch is one request)."""
    cache = getattr(f, "cache", None)
    fetcher = getattr(cache, "fetcher", None)
    if fetcher is None:
        return

    def counted(start, end):
        data = fetcher(start, end)
        counter.add(len(data))
        return data

    cache.fetcher = counted


@dataclasses.dataclass
class Source:
    """A file to read: its URL, local path when it has one, and the first bytes."""

    url: str
    size: int
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    head: bytes = b""
    #: Format-specific settings from the command line, e.g. ``{"bulk_data_threshold": 1024}``.
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Every read through :meth:`open` is counted here (files.bytes_read, files.read_requests).
    counter: ReadCounter = dataclasses.field(default_factory=ReadCounter)

    @property
    def local_path(self) -> str | None:
        """The OS path for local files (C libraries read these natively), else None."""
        if "://" not in self.url:
            return self.url
        if self.url.startswith("file://"):
            return self.url[len("file://") :]
        return None

    @contextlib.contextmanager
    def open(self, block_size: int = REMOTE_BLOCK_SIZE) -> Iterator[IO[bytes]]:
        """A seekable binary file object whose reads are counted; remote files are read in
        cached blocks of ``block_size`` bytes (one request each)."""
        path = self.local_path
        if path is not None:
            with open(path, "rb", buffering=0) as raw, CountingFile(raw, self.counter) as f:
                yield f
            return
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(self.url, **dict(self.storage_options))
        with fs.open(path, "rb", block_size=block_size, cache_type="blockcache") as f:
            _count_remote(f, self.counter)
            yield f


@dataclasses.dataclass
class Extraction:
    """What an extractor found in one file.

    ``metadata`` becomes ``files.metadata`` (JSON); ``rows`` maps a table name to its rows
    (dicts keyed by column, ``path`` filled in by the caller).
    """

    format: str
    format_version: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def add_row(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)


ExtractFn = Callable[[Source, Extraction], None]

#: A hyperslab: ``(start, stop)`` along every axis of an array.
Slab = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class ArrayRef:
    """One numeric array of a file (``--stats``): the row its statistics go to, and how to read it.

    ``key`` holds the column values that identify the row in ``table`` (e.g.
    ``(("object_path", "/temperature"),)`` for hdf5, ``(("hdu_index", 0),)`` for fits, ``()``
    for the one dicom row). ``chunks`` is the storage chunk shape (slabs are aligned to it so
    each chunk is read and decompressed once); ``locator`` is format-specific plain data.
    """

    table: str
    key: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]
    itemsize: int
    chunks: tuple[int, ...] | None = None
    locator: Any = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


class ArrayReader(Protocol):
    """Reads the numeric arrays of one open file, slab by slab."""

    def arrays(self) -> list[ArrayRef]:
        """Every numeric array, in file order (metadata reads only)."""

    def read(self, ref: ArrayRef, slab: Slab) -> Any:
        """The values of ``slab`` as a numpy array, as the format's library returns them by
        default (scaled); missing values (fill values, BLANK) masked (``numpy.ma``) or NaN."""

    # Optional: ``pieces(ref, slab)`` yields the values of ``slab`` in several arrays (every
    # value once, any order, each valid until the next is asked for) where that saves a copy;
    # statistics use it when a reader has it (:func:`transforms.stats.slab_values`).
    # Optional: ``offset(ref, slab)``, the file offset where the stored bytes of ``slab`` start
    # (None when unknown): statistics read slabs in file order when a reader has it.


#: ``open_arrays(source, fileobj)``: an ArrayReader over an already open (counted) file.
OpenArraysFn = Callable[[Source, IO[bytes]], ContextManager[ArrayReader]]


class SchemaTables(Mapping):
    """Table name -> pyarrow schema of :mod:`transforms.schemas`, looked up when first used:
    the extraction process never needs the schemas, so it never imports pyarrow (tens of MB)."""

    def __init__(self, **attributes: str) -> None:
        self._attributes = attributes  # table name -> name in transforms.schemas

    def __getitem__(self, table: str) -> pa.Schema:
        from transforms import schemas

        return getattr(schemas, self._attributes[table])

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)

    def __repr__(self) -> str:
        return f"SchemaTables({self._attributes})"


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A registered format: its name, extract function and the tables it fills.

    ``sniff`` lets a third-party format claim files the built-in detector calls ``unknown``:
    it gets the first ``HEAD_BYTES`` bytes and returns True to claim the file.
    """

    format: str
    extract: ExtractFn
    tables: Mapping[str, pa.Schema]
    sniff: Callable[[bytes], bool] | None = None
    #: ``--stats`` support: opens the file's numeric arrays (None: the format has none).
    open_arrays: OpenArraysFn | None = None


# --- JSON ------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Convert numpy/bytes/datetime values to plain JSON-compatible Python values.

    Non-finite floats become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; bytes
    become a string when they are valid UTF-8 (trailing NULs stripped) and ``{"base64": ...}``
    otherwise.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, complex):
        return {"real": jsonable(value.real), "imag": jsonable(value.imag)}
    # numpy, without importing it here
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        converted = tolist()
        if type(converted) is not type(value):  # numpy long double: tolist() gives one back
            return jsonable(converted)
        try:
            return jsonable(float(value))
        except (TypeError, ValueError):
            return str(value)
    item = getattr(value, "item", None)
    if item is not None:
        converted = item()
        if type(converted) is not type(value):
            return jsonable(converted)
    return str(value)


def _default(value: Any) -> Any:
    converted = jsonable(value)
    if converted is value:
        raise TypeError(f"not JSON serializable: {type(value).__name__}")
    return converted


def cf_text(attributes: Mapping[str, Any], name: str, encode: Callable[[Any], str] | None = None) -> str | None:
    """A CF attribute (``units``, ``standard_name``, ...) as text: a string as it is, a list of
    strings joined with spaces, any other value as ``encode`` writes it (default :func:`dumps`)."""
    value = attributes.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return (encode or dumps)(value)


def dumps(value: Any) -> str:
    """Strict JSON text (no NaN/Infinity literals) that DuckDB's json functions parse."""
    try:  # fast path: plain values need no conversion pass
        return json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
        )
    except ValueError:  # a non-finite float somewhere
        return json.dumps(
            jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )


#: ``--bulk_data_threshold``'s default: DICOM binary values longer than this many bytes are
#: left out of ``dicom.tags``.
DEFAULT_BULK_DATA_THRESHOLD = 1024

_FLOAT32_TINY = 2.0**-126  # the smallest normal float32


def shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (what ncdump, h5dump and
    numpy print: 0.1, not the double 0.10000000149011612); a subnormal exactly (its shortest
    decimal is far off: 1e-45 for 1.401298e-45). NetCDF and HDF5 attributes, DICOM FL values."""
    value = struct.unpack("f", struct.pack("f", value))[0]
    if not math.isfinite(value) or abs(value) < _FLOAT32_TINY:
        return value
    for digits in range(6, 10):  # 6 significant digits are coarser than a float32's; 9 always read back
        short = float(f"{value:.{digits}g}")
        if struct.unpack("f", struct.pack("f", short))[0] == value:
            return short
    return value


def format_error(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line."""
    from transforms.redact import redact_text

    message = " ".join(str(exc).split())
    return redact_text(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
