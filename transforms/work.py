"""Beam-free work on one file: header extraction, then the data units (checksum, statistics).

A file is read in two kinds of units. The **header unit** (:func:`read_file`) runs the format's
extractor and, for a file up to ``chunk_threshold_bytes``, also computes its checksum and
statistics at once: small files stay one unit. A larger file comes back with its header rows
*pending* and a list of **data units** (:func:`plan_units`): one streaming unit for a
sequential digest (blake3, sha256 and md5 cannot be merged from ranges), byte ranges for
crc32c (ranges combine), and groups of array slabs for the statistics, each about
``unit_bytes``. Workers run the units (:func:`run_unit`) wherever the runner puts them; their
:class:`Partial` results merge per file (:func:`merge_partials`, associative and commutative) and
complete the pending rows (:func:`complete_rows`).

Everything here runs inside the isolated extraction process (:mod:`transforms.isolation`), so
this module must not import Beam.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import datetime as dt
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pipelines import __version__
from transforms import checksums, stats
from transforms.faults import classify, is_remote
from transforms.formats import registry
from transforms.formats.base import (
    DEFAULT_BULK_DATA_THRESHOLD,
    ArrayRef,
    Extraction,
    FileInfo,
    ReadCounter,
    Slab,
    Source,
    dumps,
    format_error,
    openable,
)

FILES_TABLE = "files"
MiB = 1 << 20

#: Statistics read slabs of at most this size, whatever the governor allows: numpy's reductions
#: run fastest on slabs of a few MiB (larger ones fall out of the CPU caches).
MAX_STATS_SLAB_BYTES = 8 * MiB
#: Checksum reads of at most this size: blake3 hashes 64 MiB reads at a third of its speed.
MAX_READ_BYTES = 8 * MiB
#: ... and at most this size when one thread hashes (a digest beside other units, crc32c): a
#: read that still sits in the CPU's caches when it is hashed. Measured on 4 GiB, blake3 on one
#: thread: 2.2 GB/s with 2-4 MiB reads, 1.8 GB/s with 8 MiB; on all cores 8 MiB is best.
MAX_ONE_THREAD_READ_BYTES = 4 * MiB
#: A one-pass unit (digest and statistics) hashes on a thread of its own from this size on;
#: below it, in the reading thread (starting a thread costs about 0.3 ms).
BACKGROUND_DIGEST_BYTES = 16 * MiB
#: A one-pass unit (digest and statistics) of a file below this size reads the file whole, in
#: one read, and parses its arrays from memory: each byte read once even where a library reads
#: the arrays (compressed chunks, which the one pass otherwise reads a second time for the
#: digest), and one request to an object store instead of one per chunk.
IN_MEMORY_BYTES = 16 * MiB


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run asks of every file (the options that shape its rows)."""

    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Format-specific settings (``Source.options``), e.g. ``bulk_data_threshold``.
    format_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    checksum: str = "blake3"  # or sha256, md5, crc32c, none
    stats: bool = False
    #: Files above this size are split into data units spread over the workers.
    chunk_threshold_bytes: int = 64 * MiB
    #: About how much data one data unit covers.
    unit_bytes: int = 64 * MiB

    @property
    def reads_data(self) -> bool:
        return self.checksum != "none" or self.stats

    def recorded(self) -> str:
        """``files.settings``: the settings a later incremental run compares with its own
        (``bulk_data_threshold`` when it is not the default: it changes DICOM rows)."""
        threshold = self.format_options.get("bulk_data_threshold", DEFAULT_BULK_DATA_THRESHOLD)
        bulk = {} if threshold == DEFAULT_BULK_DATA_THRESHOLD else {"bulk_data_threshold": threshold}
        return dumps({"checksum": self.checksum, "stats": self.stats, **bulk, **self.row_settings})

    #: DICOM patient data (``--phi``): a :class:`transforms.phi.PhiPolicy`, None for keep.
    phi: Any = None

    @property
    def row_settings(self) -> dict[str, Any]:
        """Further settings that change rows: the PHI mode and key id, unless ``keep``."""
        if self.phi is None or self.phi.mode == "keep":
            return {}
        return self.phi.settings


@dataclasses.dataclass(frozen=True)
class Detected:
    """A listed file with its detected format, first bytes, and the error that stopped detection."""

    info: FileInfo
    format: str
    head: bytes = b""
    error: str | None = None
    #: (bytes read, read calls) spent on detection; they count in files.bytes_read/read_requests.
    reads: tuple[int, int] = (0, 0)
    #: ``transient`` (network, throttling: worth retrying) or ``permanent``, when ``error`` is set.
    error_kind: str | None = None


@dataclasses.dataclass(frozen=True)
class Unit:
    """One data unit of a large file: a byte range to checksum, or array slabs to summarize."""

    path: str
    size: int
    format: str
    #: "digest" (sequential, whole file; with ``pieces``, their statistics in the same pass),
    #: "crc32c" (a byte range) or "stats"
    kind: str
    start: int = 0
    stop: int = 0
    pieces: tuple[tuple[ArrayRef, Slab], ...] = ()
    #: Where to open the file when it differs from ``path`` (see :func:`openable`).
    location: str | None = None
    #: The statistics of every array of the file, planned by the unit once it has the file
    #: open (a file read in one unit, ``plan_units(whole=True)``): its arrays are listed once,
    #: where planning them first took a second listing (20-35 ms of a small HDF5 or NetCDF-4
    #: file with many variables).
    all_arrays: bool = False

    @property
    def nbytes(self) -> int:
        if self.kind == "stats":
            return sum(_slab_bytes(ref, slab) for ref, slab in self.pieces)
        return self.stop - self.start


@dataclasses.dataclass
class Partial:
    """What some of a file's data units found; partials of one file merge into one."""

    digest: str | None = None
    crc_parts: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # start, length, crc
    moments: dict[tuple[str, tuple], stats.Moments] = dataclasses.field(default_factory=dict)
    #: Arrays that exist but cannot be read here (no decoder or filter), with the reason: their
    #: stats stay null (``files.metadata.stats_unreadable``).
    unreadable: dict[tuple[str, tuple], str] = dataclasses.field(default_factory=dict)
    bytes_read: int = 0
    read_requests: int = 0
    seconds: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    units: int = 0
    #: The memory governor's figures while this unit ran (for the manifest; not merged).
    governor: dict = dataclasses.field(default_factory=dict)

    def merge(self, other: Partial) -> Partial:
        moments = dict(self.moments)
        for key, m in other.moments.items():
            moments[key] = moments[key].merge(m) if key in moments else m
        unreadable = dict(self.unreadable)
        for key, reason in other.unreadable.items():  # the same reason either way; min: any order
            unreadable[key] = min(unreadable.get(key, reason), reason)
        return Partial(
            digest=self.digest or other.digest,
            crc_parts=self.crc_parts + other.crc_parts,
            moments={k: m for k, m in moments.items() if k not in unreadable},
            unreadable=unreadable,
            bytes_read=self.bytes_read + other.bytes_read,
            read_requests=self.read_requests + other.read_requests,
            seconds=self.seconds + other.seconds,
            error=self.error or other.error,
            error_kind=self.error_kind or other.error_kind,
            units=self.units + other.units,
        )


def merge_partials(partials: Iterable[Partial]) -> Partial:
    out = Partial()
    for p in partials:
        out = out.merge(p)
    return out


class FileRows(dict):
    """The rows of one file, or of a batch of files, by table (a plain dict) that pickles
    compressed when it is large. In a batch, each file's rows of a table are contiguous.

    Between the stages of a runner a file's rows travel encoded (Beam's coders pickle a dict
    subclass); the in-process runner holds every element of a materialized PCollection in
    memory. Row text (JSON headers, attribute lists) compresses about 5x with zstd level 1: a
    catalog of 2,000 mixed files held 35 MB of encoded rows, 6 MB compressed. Rows under
    :data:`COMPRESS_ABOVE` bytes stay as they are (compressing them cost more time than memory
    they held).
    """

    COMPRESS_ABOVE = 4096

    def extend(self, other: Mapping[str, list]) -> FileRows:
        """Append another file's (or batch's) rows, table by table; returns self."""
        self.__dict__.pop("_encoded", None)
        for table, rows in other.items():
            self.setdefault(table, []).extend(rows)
        return self

    def __setitem__(self, table, rows) -> None:
        self.__dict__.pop("_encoded", None)
        super().__setitem__(table, rows)

    def __reduce__(self):
        # Encoded once: an element is immutable once output (Beam's rule), and the runner
        # pickles it again to estimate its size at each transform it passes (a batch of
        # files' rows went through six encodings per run on the in-process runner).
        encoded = self.__dict__.get("_encoded")
        if encoded is None:
            data = pickle.dumps(dict(self), protocol=pickle.HIGHEST_PROTOCOL)
            if len(data) <= self.COMPRESS_ABOVE:
                encoded = (data, None)
            else:
                encoded = (_compress(data), len(data))
            self.__dict__["_encoded"] = encoded
        return _file_rows, encoded


@functools.lru_cache(maxsize=1)
def _zstd():
    """pyarrow's zstd codec, level 1: about 6x faster than zlib level 1 on row text, and smaller.
    Imported on first use: the extraction process never pickles FileRows (and has no pyarrow)."""
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=1)


def _compress(data: bytes) -> bytes:
    return _zstd().compress(data, asbytes=True)


def _file_rows(data: bytes, size: int | None = None) -> FileRows:
    if size is not None:
        data = _zstd().decompress(data, decompressed_size=size, asbytes=True)
    return FileRows(pickle.loads(data))


@dataclasses.dataclass
class FileWork:
    """The header unit's result: the file's rows, and the data units still to run (if any)."""

    rows: dict[str, list[dict[str, Any]]]
    units: list[Unit] = dataclasses.field(default_factory=list)


# --- the header unit ---------------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def file_row(info: FileInfo, fmt: str, settings: Settings, **values: Any) -> dict[str, Any]:
    """A ``files`` row with every column of the contract (values override the defaults)."""
    at = now()
    row = {
        "path": info.path,
        "format": fmt,
        "format_version": None,
        "size_bytes": info.size,
        "modified": info.modified,
        "status": "ok",
        "error": None,
        "metadata": "{}",
        "extracted_at": at,
        "extractor_version": __version__,
        "first_seen": info.first_seen or at,
        "change": info.change or "new",
        "etag": info.etag,
        "checksum": None,
        "bytes_read": 0,
        "read_requests": 0,
        "error_kind": None,
        "attempts": 1,
        "extract_seconds": 0.0,
        "settings": settings.recorded(),
    }
    row.update(values)
    return row


def read_detected(detected: Detected, settings: Settings, governor: Any = None) -> FileWork:
    """The header unit for one detected file (runs in the isolated process)."""
    if detected.error is not None:
        return FileWork(
            {
                FILES_TABLE: [
                    file_row(
                        detected.info,
                        detected.format,
                        settings,
                        status="error",
                        error=detected.error,
                        error_kind=detected.error_kind or "permanent",
                        bytes_read=detected.reads[0],
                        read_requests=detected.reads[1],
                    )
                ]
            }
        )
    return read_file(
        detected.info, detected.format, detected.head, settings, governor=governor, head_reads=detected.reads
    )


def read_file(
    info: FileInfo,
    fmt: str,
    head: bytes,
    settings: Settings,
    *,
    governor: Any = None,
    head_reads: tuple[int, int] = (0, 0),
) -> FileWork:
    """Extract one detected file's header rows; small files get their checksum and statistics
    too, large ones their data units. Never raises for a file's content: a failure becomes an
    error row with whatever was read before it."""
    start = time.perf_counter()
    out = Extraction(format=fmt)
    status, error, error_kind = "ok", None, None
    extractor = registry().get(fmt)
    source = Source(_location(info), info.size, settings.storage_options, head, settings.format_options)
    source.counter = ReadCounter(*head_reads)  # detection's reads count too
    units: list[Unit] = []
    if extractor is None:
        status = "unsupported"
    else:
        try:
            extractor.extract(source, out)
        except Exception as exc:  # errors are data
            status, error, error_kind = "error", format_error(exc), classify(exc, is_remote(info.path))
    try:
        metadata = dumps(out.metadata)
    except (TypeError, ValueError) as exc:
        metadata, status = "{}", "error"
        error, error_kind = error or format_error(exc), error_kind or "permanent"
    rows: dict[str, list[dict[str, Any]]] = {
        table: [{"path": info.path, **row} for row in table_rows] for table, table_rows in out.rows.items()
    }
    if status == "ok" and settings.reads_data:
        if info.size <= settings.chunk_threshold_bytes:
            units = plan_units(info, fmt, source, settings, whole=True)
            partial = merge_partials(run_unit(u, settings, governor=governor, source=source) for u in units)
            units = []
            rows, status, error = _apply(rows, partial, status, error, info.path)
            if partial.unreadable:
                metadata = with_stats_unreadable(metadata, partial.unreadable)
            error_kind = error_kind or partial.error_kind
            checksum = _checksum(partial, settings)
        else:
            units = plan_units(info, fmt, source, settings)
            checksum = None
    else:
        checksum = None
    rows[FILES_TABLE] = [
        file_row(
            info,
            fmt,
            settings,
            format_version=out.format_version,
            status=status,
            error=error,
            error_kind=error_kind if status == "error" else None,
            metadata=metadata,
            checksum=checksum,
            bytes_read=source.counter.bytes_read,
            read_requests=source.counter.read_requests,
            extract_seconds=time.perf_counter() - start,
        )
    ]
    if settings.phi is not None:
        from transforms.phi import apply_to_rows

        apply_to_rows(rows, settings.phi)
    return FileWork(rows, units)


def _location(info: FileInfo) -> str:
    return openable(info.open_path or info.path)


# --- planning data units -----------------------------------------------------------------------


def _slab_bytes(ref: ArrayRef, slab: Slab) -> int:
    n = ref.itemsize
    for lo, hi in slab:
        n *= hi - lo
    return n


def plan_units(info: FileInfo, fmt: str, source: Source, settings: Settings, *, whole: bool = False) -> list[Unit]:
    """The data units of one file: the checksum's, and the statistics' (array metadata is read
    here to plan their slabs). ``whole``: a file read in one go (up to
    ``chunk_threshold_bytes``), planned without opening it: its statistics cover every array
    (``all_arrays``: the unit lists them when it opens the file)."""
    units: list[Unit] = []
    size, step = info.size, max(settings.unit_bytes, 1)
    loc = _location(info) if _location(info) != info.path else None
    if settings.checksum == "crc32c":
        units += [
            Unit(info.path, size, fmt, "crc32c", lo, min(lo + step, size), location=loc)
            for lo in range(0, size, step)
        ] or [Unit(info.path, size, fmt, "crc32c", 0, 0, location=loc)]
    elif settings.checksum != "none":
        units.append(Unit(info.path, size, fmt, "digest", 0, size, location=loc))
    if settings.stats and _has_arrays(fmt):
        if whole:
            stats_units = [Unit(info.path, size, fmt, "stats", location=loc, all_arrays=True)]
        else:
            stats_units = _stats_units(info, fmt, source, step, loc)
        if units and units[0].kind == "digest":  # one pass: the digest takes the statistics' reads
            pieces = tuple(p for u in stats_units for p in u.pieces)
            units[0] = dataclasses.replace(units[0], pieces=pieces, all_arrays=whole)
        else:
            units += stats_units
    return units


def _has_arrays(fmt: str) -> bool:
    extractor = registry().get(fmt)
    return extractor is not None and extractor.open_arrays is not None


def array_pieces(refs: Iterable[ArrayRef], step: int) -> list[tuple[ArrayRef, Slab]]:
    """Every array's slabs of about ``step`` bytes (chunk-aligned), in listing order."""
    pieces: list[tuple[ArrayRef, Slab]] = []
    for ref in refs:
        if ref.nbytes == 0 or not ref.shape and ref.itemsize == 0:
            pieces.append((ref, tuple((0, n) for n in ref.shape)))
            continue
        for slab in stats.plan_slabs(ref.shape, ref.itemsize, ref.chunks, step):
            pieces.append((ref, slab))
    return pieces


def _stats_units(info: FileInfo, fmt: str, source: Source, step: int, loc: str | None) -> list[Unit]:
    with source.open() as f, _listed_arrays(fmt, source, f) as (_, refs):
        pieces = array_pieces(refs, step)
    units: list[Unit] = []
    group: list[tuple[ArrayRef, Slab]] = []
    group_bytes = 0
    for ref, slab in pieces:  # small arrays share a unit; a large one spans many
        nbytes = _slab_bytes(ref, slab)
        if group and group_bytes + nbytes > step:
            units.append(Unit(info.path, info.size, fmt, "stats", pieces=tuple(group), location=loc))
            group, group_bytes = [], 0
        group.append((ref, slab))
        group_bytes += nbytes
    if group:
        units.append(Unit(info.path, info.size, fmt, "stats", pieces=tuple(group), location=loc))
    return units


# --- running data units ------------------------------------------------------------------------


def run_units(units: list[Unit], settings: Settings, *, threads: int = 1, governor: Any = None) -> list[Partial]:
    """Run data units on up to ``threads`` threads, largest first, each thread taking the next
    unit when it is free; the partials come back in the order of ``units``.

    The work releases the GIL where the time goes (file reads, numpy's loops and BLAS, blake3),
    so threads of one process use several cores without a second copy of the libraries. With
    several threads busy, a digest hashes on its own thread only (blake3's thread pool would
    compete with them).
    """
    threads = max(1, min(threads, len(units)))
    if threads == 1:
        with OpenArrays() as open_arrays:
            return [run_unit(u, settings, governor=governor, open_arrays=open_arrays) for u in units]
    import collections
    from concurrent.futures import ThreadPoolExecutor

    queue = collections.deque(sorted(range(len(units)), key=lambda i: -units[i].nbytes))
    out: list[Partial | None] = [None] * len(units)

    def work() -> None:  # one thread: the next unit while there is one
        with OpenArrays() as open_arrays:
            while True:
                try:
                    i = queue.popleft()
                except IndexError:
                    return
                out[i] = run_unit(units[i], settings, governor=governor, hash_threads=False, open_arrays=open_arrays)

    with ThreadPoolExecutor(threads, thread_name_prefix="metaextract-unit") as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return out  # type: ignore[return-value]


@contextlib.contextmanager
def _listed_arrays(fmt: str, source: Source, f) -> Iterator[tuple[Any, list[ArrayRef]]]:
    """The format's array reader over the open file ``f`` and its arrays, listed (readers know
    only the arrays they listed)."""
    with registry()[fmt].open_arrays(source, f) as reader:
        yield reader, reader.arrays()


class OpenArrays:
    """The open file and array reader of the last file a thread's stats units read: the next
    unit of the same file reads on through them (opening a NetCDF-4 file and listing its
    arrays took 3.6 ms a unit, an HDF5 file 1 ms). One file at a time; closed on exit, and
    dropped after a unit that failed."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._stack: contextlib.ExitStack | None = None
        self._open: tuple[Any, ReadCounter, list[ArrayRef]] | None = None

    def get(self, unit: Unit, source: Source) -> tuple[Any, ReadCounter, list[ArrayRef]]:
        """(reader, the counter of its reads, the file's arrays) for ``unit``'s file, opened
        through ``source`` unless the previous unit's file is the same."""
        key = (unit.location or unit.path, unit.size, unit.format)
        if key != self._key or self._open is None:
            self.close()
            stack = contextlib.ExitStack()
            try:
                reader, refs = stack.enter_context(_listed_arrays(unit.format, source, stack.enter_context(source.open())))
            except BaseException:
                stack.close()
                raise
            self._key, self._stack, self._open = key, stack, (reader, source.counter, refs)
        return self._open

    def close(self) -> None:
        stack, self._stack, self._key, self._open = self._stack, None, None, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> OpenArrays:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_unit(
    unit: Unit,
    settings: Settings,
    *,
    governor: Any = None,
    source: Source | None = None,
    hash_threads: bool = True,
    open_arrays: OpenArrays | None = None,
) -> Partial:
    """Run one data unit; a read failure is recorded in the partial (the file becomes an error).
    ``hash_threads``: a digest may hash on several threads (see :func:`checksums.new_hasher`);
    ``open_arrays``: a stats unit reads through the previous unit's reader when it can (else
    it opens its own)."""
    start = time.perf_counter()
    if source is None:
        source = Source(unit.location or unit.path, unit.size, settings.storage_options, b"", settings.format_options)
    counter = source.counter
    before = (counter.bytes_read, counter.read_requests)
    one_thread_hash = unit.kind == "crc32c" or (unit.kind == "digest" and not hash_threads)
    cap = MAX_ONE_THREAD_READ_BYTES if one_thread_hash else MAX_READ_BYTES
    chunk = (lambda: min(governor.chunk_bytes, cap)) if governor is not None else (lambda: 2 * MiB)
    before_read = governor.before_read if governor is not None else None
    partial = Partial(units=1)
    try:
        if unit.kind == "stats":
            with OpenArrays() if open_arrays is None else contextlib.nullcontext(open_arrays) as arrays:
                try:
                    reader, counter, refs = arrays.get(unit, source)
                    if counter is not source.counter:  # an earlier unit's reader: count from here
                        before = (counter.bytes_read, counter.read_requests)
                    pieces = _pieces(unit, refs, settings)
                    partial.moments, partial.unreadable = _unit_moments(pieces, reader, chunk, before_read)
                except Exception:
                    arrays.close()  # its state after a failure is unknown
                    raise
        elif unit.kind == "digest" and (unit.pieces or unit.all_arrays) and unit.size < IN_MEMORY_BYTES:
            with source.open(block_size=max(unit.size, 2 * MiB)) as f:  # one request to an object store
                data = f.read(unit.size)
            if len(data) < unit.size:
                raise EOFError(f"file ends before byte {unit.size} (it shrank after it was listed)")
            hasher = checksums.new_hasher(settings.checksum, threads=False)
            hasher.update(data)
            partial.digest = f"{settings.checksum}:{hasher.hexdigest()}"
            with _listed_arrays(unit.format, source, io.BytesIO(data)) as (reader, refs):
                pieces = _pieces(unit, refs, settings)
                partial.moments, partial.unreadable = _unit_moments(pieces, reader, chunk, None)
        elif unit.kind == "digest" and (unit.pieces or unit.all_arrays):
            with source.open(block_size=max(chunk(), 2 * MiB)) as f, checksums.DigestingReader(
                f, settings.checksum, unit.size, chunk_size=chunk, before_read=before_read,
                background=unit.size >= BACKGROUND_DIGEST_BYTES,
            ) as digesting, _listed_arrays(unit.format, source, digesting) as (reader, refs):
                pieces = _pieces(unit, refs, settings)
                partial.moments, partial.unreadable = _unit_moments(pieces, reader, chunk, before_read)
                partial.digest = digesting.hexdigest()
        else:
            with source.open(block_size=max(chunk(), 2 * MiB)) as f:
                if unit.kind == "digest":
                    partial.digest = checksums.stream_digest(
                        f, settings.checksum, start=unit.start, stop=unit.stop, chunk_size=chunk,
                        before_read=before_read, threads=hash_threads,
                    )
                else:
                    crc = checksums.crc32c_range(
                        f, unit.start, unit.stop, chunk_size=chunk, before_read=before_read
                    )
                    partial.crc_parts = [(unit.start, unit.stop - unit.start, crc)]
    except Exception as exc:  # errors are data
        partial.error, partial.error_kind = format_error(exc), classify(exc, is_remote(unit.path))
    partial.bytes_read = counter.bytes_read - before[0]
    partial.read_requests = counter.read_requests - before[1]
    partial.seconds = time.perf_counter() - start
    return partial


def _pieces(unit: Unit, refs: list[ArrayRef], settings: Settings) -> tuple[tuple[ArrayRef, Slab], ...]:
    """The unit's array slabs: as planned, or every listed array's (``all_arrays``)."""
    if unit.all_arrays:
        return tuple(array_pieces(refs, max(settings.unit_bytes, 1)))
    return unit.pieces


def _unit_moments(pieces, reader, chunk: Callable[[], int], before_read) -> tuple[dict, dict]:
    """The moments per array of ``pieces`` (array slabs), and the arrays it could not read (no
    decoder or filter), through ``reader`` (its arrays listed)."""
    from transforms.formats.arrays import ArrayUnreadable

    out: dict[tuple[str, tuple], stats.Moments] = {}
    unreadable: dict[tuple[str, tuple], str] = {}

    def slab_bytes() -> int:
        return min(chunk(), MAX_STATS_SLAB_BYTES)

    for ref, slab in _in_file_order(reader, pieces):
        key = (ref.table, ref.key)
        if key in unreadable:
            continue
        try:
            m = slab_moments(reader, ref, slab, slab_bytes, before_read)
        except ArrayUnreadable as exc:
            unreadable[key] = str(exc)
            out.pop(key, None)
            continue
        out[key] = out[key].merge(m) if key in out else m
    return out, unreadable


def _in_file_order(reader, pieces: tuple[tuple[ArrayRef, Slab], ...]) -> list[tuple[ArrayRef, Slab]]:
    """The pieces in the order of their bytes in the file where the reader knows it (the
    others last, in planned order): reads move forward, and the digest of a one-pass unit
    (:class:`checksums.DigestingReader`) takes them as they come."""
    offset = getattr(reader, "offset", None)
    if offset is None:
        return list(pieces)

    def key(piece: tuple[ArrayRef, Slab]) -> float:
        at = offset(*piece)
        return math.inf if at is None else at

    return sorted(pieces, key=key)


def slab_moments(reader, ref: ArrayRef, slab: Slab, slab_bytes: Callable[[], int], before_read=None):
    """The moments of one (chunk-aligned) slab of an array, read in sub-slabs of about
    ``slab_bytes()`` each (the governor's current size, re-read before each sub-slab)."""
    shape = tuple(hi - lo for lo, hi in slab)
    total = stats.Moments()
    offset = tuple(lo for lo, _ in slab)
    pending = stats.plan_slabs(shape, ref.itemsize, ref.chunks, slab_bytes())
    for sub in pending:
        if before_read is not None:
            before_read()
        absolute = tuple((o + lo, o + hi) for o, (lo, hi) in zip(offset, sub))
        for values in stats.slab_values(reader, ref, absolute):
            total = total.merge(stats.Moments.of(values))
    return total


# --- completing the rows -----------------------------------------------------------------------


def _checksum(partial: Partial, settings: Settings) -> str | None:
    if partial.error:
        return None
    if settings.checksum == "crc32c":
        return f"crc32c:{checksums.merge_crc32c(partial.crc_parts):08x}"
    return partial.digest


def _apply(rows, partial: Partial, status, error, path):
    """Put a merged partial's statistics on the rows they describe."""
    for (table, key), m in partial.moments.items():
        wanted = dict(key)
        for row in rows.get(table, ()):
            if all(row.get(k) == v for k, v in wanted.items()):
                row.update(m.columns())
                break
    if partial.error and status == "ok":
        status, error = "error", partial.error
    return rows, status, error


def with_stats_unreadable(metadata: str, unreadable: Mapping[tuple[str, tuple], str]) -> str:
    """``files.metadata`` (JSON) with ``stats_unreadable``: the arrays whose statistics could not
    be computed here, ``{"table", "key", "reason"}`` each, in key order."""
    import json

    out = json.loads(metadata)
    out["stats_unreadable"] = [
        {"table": table, "key": dict(key), "reason": reason}
        for (table, key), reason in sorted(unreadable.items(), key=lambda item: repr(item[0]))
    ]
    return dumps(out)


def complete_rows(rows: dict[str, list[dict[str, Any]]], partial: Partial, settings: Settings) -> dict:
    """A large file's pending rows completed with the merged partial of all its data units."""
    rows, status, error = _apply(rows, partial, "ok", None, None)
    row = rows[FILES_TABLE][0]
    if partial.unreadable:
        row["metadata"] = with_stats_unreadable(row.get("metadata") or "{}", partial.unreadable)
    row["checksum"] = _checksum(partial, settings)
    row["bytes_read"] = (row.get("bytes_read") or 0) + partial.bytes_read
    row["read_requests"] = (row.get("read_requests") or 0) + partial.read_requests
    row["extract_seconds"] = (row.get("extract_seconds") or 0.0) + partial.seconds
    if status == "error":
        row.update(status="error", error=error, error_kind=partial.error_kind or "permanent")
    return rows
