"""List the files behind ``--input`` values: paths, folders, globs and fsspec URLs.

The listing's own size and modification time (or etag) are used: no extra stat per file.

Local inputs are walked with :func:`os.scandir`, so that nothing in the tree can hang or fool
the listing: FIFOs, sockets, devices and broken symlinks are listed with their ``kind`` (they
become error rows, never opened); symlinked folders are not entered unless ``follow_symlinks``,
and then each real folder is walked once (loops end); unreadable folders are reported in
``skipped``. Names that are not UTF-8 are catalogued as text with ``\\xNN`` escapes
(:func:`transforms.redact.printable`) and opened by their real name (``FileInfo.open_path``, a percent-encoded ``file://`` URL: see :func:`openable`).
Remote listings keep fsspec's; URL credentials never reach ``FileInfo.path``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import pickle
import re
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote_from_bytes

import apache_beam as beam
import fsspec
from fsspec.core import url_to_fs
from fsspec.utils import glob_translate

from transforms.formats.base import FileInfo, format_error
from transforms.redact import (
    printable,
    redact_text,
    redact_url,
    redact_userinfo,
    secret_values,
)

GLOB_CHARS = frozenset("*?[")
#: How many skipped entries :func:`list_inputs` logs one by one (the rest are counted).
LOGGED_SKIPPED = 20
#: How many skipped entries the manifest lists (all are counted).
MANIFEST_SKIPPED = 1000
_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)
#: Files per element of :class:`ListFileBatches`; paths are de-duplicated in this many buckets.
BATCH_FILES = 1000
PATH_BUCKETS = 64
logger = logging.getLogger(__name__)


class InputError(ValueError):
    """An ``--input`` that does not exist or matches nothing."""


#: The reason given for a folder the listing could not read (followed by the error).
FOLDER_NOT_LISTED = "folder not listed: "


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Something the listing saw but did not list or enter: a folder it could not read, a
    symlinked folder it did not follow, an entry that vanished meanwhile."""

    path: str
    reason: str


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local file system (fsspec's ``file``/``local`` protocol)."""
    return "file" in fs.protocol or "local" in fs.protocol


def _modified(entry: Mapping[str, Any]) -> dt.datetime | None:
    """The modification time from a listing entry, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created", "mtime_ns"):
        value = entry.get(key)
        if value is None:
            continue
        if key == "mtime_ns":
            value = value / 1e9
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        if isinstance(value, (int, float)):
            return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


def _etag(entry: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "generation"):
        if entry.get(key) is not None:
            return str(entry[key]).strip('"')
    return None


# --- local inputs ------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def _local_info(path: str, st: os.stat_result, kind: str) -> FileInfo:
    shown = printable(path)
    return FileInfo(
        path=shown,
        size=st.st_size if kind == "file" else 0,
        modified=dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc),
        kind=kind,
        open_path=None if shown == path else "file://" + quote_from_bytes(os.fsencode(path), safe="/"),
    )


def _entry_info(path: str, skipped: list[Skipped]) -> tuple[FileInfo | None, os.stat_result | None]:
    """(FileInfo, None) for a non-folder at ``path``, (None, stat) for a folder (symlinks
    followed), (None, None) when it vanished; a broken symlink is listed as such."""
    try:
        st = os.stat(path)
    except OSError as exc:  # vanished, a broken or looping symlink
        try:
            lst = os.lstat(path)
        except OSError:
            skipped.append(Skipped(printable(path), f"vanished while listing: {format_error(exc)}"))
            return None, None
        if stat.S_ISLNK(lst.st_mode):
            return _local_info(path, lst, "broken symlink"), None
        skipped.append(Skipped(printable(path), format_error(exc)))
        return None, None
    if stat.S_ISDIR(st.st_mode):
        return None, st
    return _local_info(path, st, _kind(st.st_mode)), None


@dataclasses.dataclass
class _Walk:
    """Walks local folders; each real folder (device, inode) once when following symlinks."""

    follow_symlinks: bool
    skipped: list[Skipped]
    visited: set[tuple[int, int]] = dataclasses.field(default_factory=set)

    def files(self, root: str, root_stat: os.stat_result, keep=None, max_depth: int | None = None) -> Iterator[FileInfo]:
        """Every non-folder under ``root``. ``keep(path)`` (globs) selects entries: a kept
        folder is listed whole; folders deeper than ``max_depth`` are entered only when kept."""
        self.visited.add((root_stat.st_dev, root_stat.st_ino))
        folders = [(root, 0, keep is None)]
        linked: list[tuple[str, int, bool]] = []  # entered after every real folder: real paths win
        while folders or linked:
            folder, depth, whole = folders.pop() if folders else linked.pop()
            try:
                with os.scandir(folder) as entries:
                    names = sorted(entry.name for entry in entries)
            except OSError as exc:
                if folder == root:  # the input itself: a clear error for the whole run
                    raise
                self.skipped.append(Skipped(printable(folder), f"{FOLDER_NOT_LISTED}{format_error(exc)}"))
                continue
            for name in names:
                path = os.path.join(folder, name)
                kept = whole or keep(path)
                info, folder_stat = _entry_info(path, self.skipped)
                if info is not None:
                    if kept:
                        yield info
                    continue
                if folder_stat is None or not (kept or max_depth is None or depth + 1 < max_depth):
                    continue
                if not os.path.islink(path):
                    if self.follow_symlinks:
                        self.visited.add((folder_stat.st_dev, folder_stat.st_ino))
                    folders.append((path, depth + 1, kept))
                elif not self.follow_symlinks:
                    self.skipped.append(Skipped(printable(path), "symlink to a folder, not followed (--follow_symlinks)"))
                else:
                    linked.append((path, depth + 1, kept))
            while linked and not folders:  # drop links to folders listed meanwhile (loops)
                path, depth, whole = linked[-1]
                try:
                    st = os.stat(path)
                except OSError:
                    linked.pop()
                    continue
                if (st.st_dev, st.st_ino) not in self.visited:
                    self.visited.add((st.st_dev, st.st_ino))
                    break
                linked.pop()
                self.skipped.append(Skipped(printable(path), "symlink to a folder already listed (a loop or a second link), not followed again"))


def _glob_root(pattern: str) -> str:
    """The folder above the first glob character of ``pattern``."""
    first = min(pattern.index(c) for c in GLOB_CHARS if c in pattern)
    return os.path.dirname(pattern[:first]) or os.sep


def _list_local(path: str, follow_symlinks: bool, skipped: list[Skipped]) -> Iterator[FileInfo]:
    walk = _Walk(follow_symlinks, skipped)
    if GLOB_CHARS & set(path) and not os.path.lexists(path):  # an existing name is taken as it is
        root = _glob_root(path)
        try:
            root_stat = os.stat(root)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(root_stat.st_mode):
            return
        matches = re.compile(glob_translate(path)).match
        max_depth = None if "**" in path else path.count(os.sep) - root.rstrip(os.sep).count(os.sep)
        yield from walk.files(root, root_stat, lambda p: matches(p) is not None, max_depth)
        return
    info, folder_stat = _entry_info(path, [])
    if info is not None:
        yield info
    elif folder_stat is not None:  # the input itself is entered even when it is a symlink
        yield from walk.files(path, folder_stat)


# --- any input ---------------------------------------------------------------------------------


def _remote_entries(fs: fsspec.AbstractFileSystem, path: str, skipped: list[Skipped]) -> Iterator[tuple[str, dict]]:
    """(name, info) for every regular file at ``path``: a file, a folder (recursive) or a glob.
    A path that exists as it is written is taken as it is, glob characters or not (``run[1]/``),
    as local paths are."""
    if fs.isdir(path):
        matches = {path: {"type": "directory"}}
    else:
        try:
            matches = {path: fs.info(path)}
        except FileNotFoundError:
            if not GLOB_CHARS & set(path):
                return
            matches = fs.glob(path, detail=True)
    seen: set[str] = set()  # a glob can match a folder and, again, what find() lists in it
    for name, info in sorted(matches.items()):
        found = fs.find(name, detail=True, withdirs=False) if info.get("type") == "directory" else {name: info}
        for n, i in sorted(found.items()):
            if n in seen:
                continue
            seen.add(n)
            if i.get("type") == "file" and not (n.endswith("/") and not i.get("size")):
                yield n, i
            else:
                # a "folder marker" (an empty object named dir/, as the S3 console's "Create
                # folder" makes) is a folder, not a file
                kind = "folder marker" if i.get("type") == "file" else i.get("type")
                skipped.append(Skipped(_shown(fs.unstrip_protocol(n)), f"not a regular file ({kind})"))


def _shown(url: str) -> str:
    """A listed remote URL as the catalog shows it. An object store's key is a name, shown as it
    is ("Basic Research/", "R&D&authors=x"): no mask may rewrite it (two masked names collided,
    and one file was dropped). URL credentials (user:password@, signed-URL query parameters)
    are masked in http(s) URLs only."""
    return printable(redact_url(url) if url.startswith(("http://", "https://")) else redact_userinfo(url))


def _remote_info(fs: fsspec.AbstractFileSystem, name: str, entry: Mapping[str, Any]) -> FileInfo:
    url = fs.unstrip_protocol(name)
    shown = _shown(url)
    return FileInfo(
        path=shown,
        size=int(entry.get("size") or 0),
        modified=_modified(entry),
        etag=_etag(entry),
        open_path=None if shown == url else url,
    )


def list_input(
    spec: str,
    storage_options: Mapping[str, Any] | None = None,
    follow_symlinks: bool = False,
    skipped: list[Skipped] | None = None,
) -> Iterator[FileInfo]:
    """Every file behind one ``--input`` value, in a stable order (by path).

    Args:
      follow_symlinks: enter symlinked local folders (each real folder once).
      skipped: receives what was seen but not listed (unreadable or linked folders...).
    """
    skipped = [] if skipped is None else skipped
    fs, path = url_to_fs(spec, **dict(storage_options or {}))
    if is_local(fs):
        yield from sorted(_list_local(os.path.abspath(path), follow_symlinks, skipped), key=lambda i: i.path)
        return
    for name, info in _remote_entries(fs, path, skipped):
        yield _remote_info(fs, name, info)


def list_inputs(
    specs: Iterable[str],
    storage_options: Mapping[str, Any] | None = None,
    follow_symlinks: bool = False,
    skipped: list[Skipped] | None = None,
    exclude: str | None = None,
) -> dict[str, FileInfo]:
    """Every distinct file behind the inputs, by path; :class:`InputError` unless every input
    matches at least one file. What was seen but not listed goes to ``skipped`` and is logged
    as warnings. ``exclude``: a folder whose files are not listed (the catalog's own output,
    when it lies inside an input: a run must not catalog its own Parquet files)."""
    listed: dict[str, FileInfo] = {}
    skipped = [] if skipped is None else skipped
    secrets = secret_values(storage_options)
    inside = excluded(exclude)
    for spec in specs:
        shown = redact_text(spec, secrets)
        matched = False
        try:
            for info in list_input(spec, storage_options, follow_symlinks, skipped):
                matched = True
                if inside(info.path):
                    if not any(s.reason == OUTPUT_SKIPPED for s in skipped):
                        skipped.append(Skipped(redact_text(exclude, secrets), OUTPUT_SKIPPED))
                    continue
                first = listed.setdefault(info.path, info)
                if first.open_path != info.open_path:
                    skipped.append(Skipped(info.path, "another file has the same catalog path (escaped name)"))
        except Exception as exc:  # fsspec backends raise their own types (aiohttp, botocore...)
            raise InputError(f"cannot list --input {shown!r}: {redact_text(format_error(exc), secrets)}") from exc
        if not matched:
            raise InputError(f"--input {shown!r} does not exist or matches no file")
    for item in skipped[:LOGGED_SKIPPED]:
        logger.warning("not listed: %s: %s", item.path, item.reason)
    if len(skipped) > LOGGED_SKIPPED:
        logger.warning("not listed: %d more (see the manifest's listing_skipped)", len(skipped) - LOGGED_SKIPPED)
    return listed


OUTPUT_SKIPPED = "the catalog's own folder (--output), inside an input: not listed"


def excluded(folder: str | None):
    """A test: is this listed path inside ``folder`` (None: never)."""
    if not folder:
        return lambda path: False
    prefix = folder.rstrip("/") + "/"
    if not os.path.isabs(folder):  # an object store: names as written
        return lambda path: path.startswith(prefix)
    # a local folder is also found through symlinks (an --input that links to the output's
    # parent): each listed folder is resolved once
    real = os.path.realpath(folder).rstrip("/") + "/"
    resolve = functools.lru_cache(maxsize=4096)(lambda d: os.path.realpath(d).rstrip("/") + "/")
    return lambda path: path.startswith(prefix) or (
        os.path.isabs(path) and resolve(os.path.dirname(path)).startswith(real))


class FileBatch(list):
    """A list of :class:`FileInfo` that Beam encodes with one pickle call: its coders encode a
    plain ``list[FileInfo]`` item by item, at about 15 microseconds a file."""

    def __reduce__(self):
        return FileBatch, (list(self),)


def path_bucket(path: str, buckets: int = PATH_BUCKETS) -> int:
    """A bucket for ``path`` that every worker computes alike (``hash`` differs per process)."""
    return zlib.crc32(path.encode("utf-8", "surrogatepass")) % buckets


def bucketed(
    spec: str,
    storage_options: Mapping[str, Any] | None = None,
    follow_symlinks: bool = False,
    batch_files: int = BATCH_FILES,
    exclude: str | None = None,
) -> Iterator[tuple[int, FileBatch]]:
    """:func:`list_input` as ``(path bucket, [FileInfo, ...])`` pieces of at most ``batch_files``."""
    pending: dict[int, FileBatch] = {}
    inside = excluded(exclude)
    for info in list_input(spec, storage_options, follow_symlinks):
        if inside(info.path):
            continue
        bucket = path_bucket(info.path)
        pending.setdefault(bucket, FileBatch()).append(info)
        if len(pending[bucket]) >= batch_files:
            yield bucket, pending.pop(bucket)
    yield from pending.items()


def distinct_batches(bucket: tuple[int, Iterable[FileBatch]], batch_files: int = BATCH_FILES) -> Iterator[FileBatch]:
    """The pieces of one path bucket -> batches of at most ``batch_files`` files, each path once."""
    _, pieces = bucket
    seen: set[str] = set()
    batch = FileBatch()
    for piece in pieces:
        for info in piece:
            if info.path in seen:
                continue
            seen.add(info.path)
            batch.append(info)
            if len(batch) >= batch_files:
                yield batch
                batch = FileBatch()
    if batch:
        yield batch


@dataclasses.dataclass
class ListFileBatches(beam.PTransform):
    """Expand ``--input`` values into lists of distinct :class:`FileInfo` (at most ``batch_files``
    each), spread over workers.

    Batches, not one element per file: a re-run that opens few files handles every listed file
    once in planning, and per-element costs of the runner (tens of microseconds each, per step)
    would dominate it. Paths are de-duplicated within :data:`PATH_BUCKETS` buckets.

    Args:
      inputs: paths, folders (walked recursively), globs (``**`` allowed) or fsspec URLs.
      storage_options: passed to fsspec (credentials come from the environment as usual).
      follow_symlinks: enter symlinked local folders (each real folder once).
      batch_files: most files per element.
    """

    inputs: list[str]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    follow_symlinks: bool = False
    batch_files: int = BATCH_FILES
    #: a folder whose files are not listed (the catalog's output; see :func:`list_inputs`)
    exclude: str | None = None

    def __post_init__(self):
        super().__init__()
        if not self.inputs:
            raise InputError("at least one input is required")

    def expand(self, pbegin):
        return (
            pbegin
            | "CreateInputs" >> beam.Create(list(self.inputs))
            | "ExpandInputs" >> beam.FlatMap(bucketed, self.storage_options, self.follow_symlinks, self.batch_files, self.exclude)
            | "GroupByPathBucket" >> beam.GroupByKey()
            | "DistinctPaths" >> beam.FlatMap(distinct_batches, self.batch_files)
        )


#: A saved listing's record: a batch's pickle after its length, so that any batch can be found
#: without reading the ones before it.
_RECORD_LENGTH = struct.Struct("<Q")


def write_listing(listed: Iterable[FileInfo], path: str, batch_files: int = BATCH_FILES, workers: int = 1) -> None:
    """Save a listing (:func:`list_inputs`'s values) to a local file as :class:`FileBatch` records.

    With ``workers`` > 1 (a local run on several worker processes or threads) the batches are
    as many as needed for ``batch_files``, rounded up to a multiple of ``workers``, and file
    ``i`` goes to batch ``i % batches``: each batch holds the same share of every folder of the
    listing, so that workers given the same number of batches get the same work (a listing in
    path order would give one worker the DICOM folder and the other the NetCDF one). The
    in-process runner hands the batches out round-robin (:class:`ListedFileBatches`)."""
    listed = list(listed)
    if workers > 1 and len(listed) > 1:
        batches = -(-len(listed) // batch_files)
        batches = min(len(listed), -(-batches // workers) * workers)
        parts = [FileBatch(listed[k::batches]) for k in range(batches)]
    else:
        parts = [FileBatch(listed[k : k + batch_files]) for k in range(0, len(listed), batch_files)]
    with open(path, "wb") as f:
        for batch in parts:
            data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            f.write(_RECORD_LENGTH.pack(len(data)))
            f.write(data)


def listing_offsets(path: str) -> list[tuple[str, int]]:
    """``(path, offset)`` of each batch in a listing :func:`write_listing` saved (its records'
    lengths are read, not the batches)."""
    offsets, at, size = [], 0, os.path.getsize(path)
    with open(path, "rb") as f:
        while at < size:
            offsets.append((path, at))
            f.seek(at)
            (length,) = _RECORD_LENGTH.unpack(f.read(_RECORD_LENGTH.size))
            at += _RECORD_LENGTH.size + length
    return offsets


def read_listing_batch(where: tuple[str, int]) -> FileBatch:
    """One batch of a saved listing, at ``(path, offset)`` (:func:`listing_offsets`)."""
    path, offset = where
    with open(path, "rb") as f:
        f.seek(offset)
        (length,) = _RECORD_LENGTH.unpack(f.read(_RECORD_LENGTH.size))
        return pickle.loads(f.read(length))


@dataclasses.dataclass
class ListedFileBatches(beam.PTransform):
    """The batches of a listing the launcher made and saved (:func:`write_listing`): a run on
    this machine's in-process runner lists its inputs once, not twice.

    Args:
      path: the local file :func:`write_listing` wrote.
    """

    path: str

    def __post_init__(self):
        super().__init__()

    def expand(self, pbegin):
        # One element per batch (where it starts in the file): the runner can give the batches
        # to different workers, which one element holding the whole listing would prevent.
        return pbegin | "ListingBatches" >> beam.Create(listing_offsets(self.path)) | "ReadBatch" >> beam.Map(read_listing_batch)


def _each(batch: FileBatch) -> list[FileInfo]:
    return batch


class ListFiles(ListFileBatches):
    """Expand ``--input`` values into one :class:`FileInfo` per distinct file, spread over
    workers: :class:`ListFileBatches`, one file per element."""

    def expand(self, pbegin):
        return super().expand(pbegin) | "OneFilePerElement" >> beam.FlatMap(_each)


def skipped_summary(skipped: list[Skipped], limit: int = MANIFEST_SKIPPED) -> dict[str, Any]:
    """``{"count": n, "first": [{"path", "reason"}, ...]}`` (at most ``limit``) for the manifest."""
    return {"count": len(skipped), "first": [dataclasses.asdict(item) for item in skipped[:limit]]}
