"""Incremental runs: the previous catalog as a cache, held as a Beam side input.

A listed file whose path, size and modification time (and etag, when both listings have one)
match the cache is not opened: its rows in every table are carried forward from the previous
catalog unchanged (only ``files.change`` becomes ``unchanged``). Carrying forward works on whole
Parquet files with vectorized pyarrow filters, never row by row through the pipeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import posixpath
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.runners.worker import statecache
from fsspec.core import url_to_fs

from transforms import partials
from transforms.formats.base import FileInfo
from transforms.listing import FOLDER_NOT_LISTED, FileBatch
from transforms.sink import MANIFEST, join, stage_table

#: files-table columns the cache needs (the whole row is never held in memory).
CACHE_COLUMNS = ["path", "size_bytes", "modified", "status", "extractor_version", "extracted_at", "format"]
OPTIONAL_CACHE_COLUMNS = ["first_seen", "etag", "settings"]

NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"


class CacheEntry(NamedTuple):
    """What the previous catalog knew about one path (small: a million fit in a few hundred MB)."""

    size: int
    modified_us: int | None
    etag: str | None
    status: str
    extractor_version: str
    first_seen_us: int | None
    settings: str | None = None
    format: str | None = None


def _us(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(round(value.timestamp() * 1_000_000))


def _from_us(value: int | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=value)


@dataclasses.dataclass(frozen=True)
class CachePolicy:
    """When a cached file is read again.

    Args:
      version: the running extractor version; rows written by another version are refreshed.
      full: re-extract every file (``--full``); ``change`` is still labelled from the cache.
      retry_errors: re-extract files whose previous status was ``error``.
      settings: this run's ``files.settings`` (checksum, statistics, PHI mode); rows made with
        other settings are refreshed. None: settings are not compared.
    """

    version: str
    full: bool = False
    retry_errors: bool = False
    settings: str | None = None


def compare(info: FileInfo, entry: CacheEntry | None) -> str:
    """``new``, ``changed`` or ``unchanged`` for a listed file against its cache entry."""
    if entry is None:
        return NEW
    if entry.size != info.size or entry.modified_us != _us(info.modified):
        return CHANGED
    if entry.etag and info.etag and entry.etag != info.etag:
        return CHANGED
    return UNCHANGED


def can_carry(info: FileInfo, entry: CacheEntry | None, policy: CachePolicy) -> bool:
    """Whether ``info``'s rows can be carried forward from its cache entry."""
    return (
        entry is not None
        and compare(info, entry) == UNCHANGED
        and not policy.full
        and entry.extractor_version == policy.version
        and not (policy.retry_errors and entry.status == "error")
        and (policy.settings is None or entry.settings == policy.settings)
    )


def label(info: FileInfo, entry: CacheEntry | None) -> FileInfo:
    """``info`` with its ``change`` and ``first_seen`` from its cache entry."""
    first_seen = _from_us(entry.first_seen_us) if entry is not None else None
    return dataclasses.replace(info, change=compare(info, entry), first_seen=first_seen)



# --- reading the previous catalog ------------------------------------------------------------


def table_files(catalog: str, table: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The Parquet files of one table of a published catalog (the manifest's list when it has one)."""
    fs, root = url_to_fs(catalog, **dict(storage_options or {}))
    manifest_path = posixpath.join(root, MANIFEST)
    listed = None
    if fs.exists(manifest_path):
        with fs.open(manifest_path, "r") as f:
            listed = (json.load(f).get("table_files") or {}).get(table)
    if listed is None:
        listed = sorted(posixpath.basename(p) for p in fs.glob(posixpath.join(root, table, "*.parquet")))
    return [join(catalog, table, name) for name in listed]


def previous_parts(
    previous: str | None, tables: Iterable[str], storage_options: Mapping[str, Any] | None = None
) -> list[tuple[str, str]]:
    """``(table, parquet file)`` for every listed table of the previous catalog (none without one)."""
    if not previous:
        return []
    return [(name, p) for name in tables for p in table_files(previous, name, storage_options)]


def has_catalog(path: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, root = url_to_fs(path, **dict(storage_options or {}))
    return fs.exists(posixpath.join(root, MANIFEST)) and fs.isdir(posixpath.join(root, "files"))


def check_catalog(path: str, tables: Iterable[str], storage_options: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError saying what is wrong when the catalog at ``path`` cannot serve as the
    cache: its manifest does not parse, or a Parquet file it lists is missing or has no
    readable footer (a part cut short: every later run failed on it, --full included)."""
    fs, root = url_to_fs(path, **dict(storage_options or {}))
    try:
        with fs.open(posixpath.join(root, MANIFEST), "r") as f:
            listed_files = json.load(f).get("table_files") or {}
    except ValueError as exc:
        raise ValueError(f"its {MANIFEST} is not valid JSON ({exc})") from None
    for table in tables:
        present = {posixpath.basename(p) for p in fs.glob(posixpath.join(root, table, "*.parquet"))}
        names = listed_files.get(table)
        if names is None:  # an older manifest without the list: the folder's files (as table_files)
            names = sorted(present)
        missing = [name for name in names if name not in present]
        if missing:
            raise ValueError(f"{table}/{missing[0]} is listed in its {MANIFEST} but missing")
        for name in names:
            try:
                with fs.open(posixpath.join(root, table, name), "rb") as f:
                    pq.read_metadata(f)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ValueError(f"{table}/{name} is not readable Parquet ({exc})") from None


def read_previous_manifest(path: str, storage_options: Mapping[str, Any] | None = None) -> dict | None:
    fs, root = url_to_fs(path, **dict(storage_options or {}))
    try:
        with fs.open(posixpath.join(root, MANIFEST), "r") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read(path: str, columns: list[str] | None, storage_options) -> pa.Table:
    fs, fpath = url_to_fs(path, **dict(storage_options or {}))
    with fs.open(fpath, "rb") as f:
        if columns is None:
            return pq.read_table(f)
        available = set(pq.read_schema(f).names)
        f.seek(0)
        return pq.read_table(f, columns=[c for c in columns if c in available])


def read_cache_columns(path: str, storage_options=None) -> pa.Table:
    """The columns of one Parquet file of a previous ``files`` table that the cache needs."""
    return _read(path, CACHE_COLUMNS + OPTIONAL_CACHE_COLUMNS, storage_options)


def cache_entries(path: str | pa.Table, storage_options=None) -> Iterable[tuple[str, CacheEntry]]:
    """(path, CacheEntry) for every row of one Parquet file of a previous ``files`` table (or
    of the columns :func:`read_cache_columns` read from it)."""
    table = path if isinstance(path, pa.Table) else read_cache_columns(path, storage_options)
    n = table.num_rows
    names = set(table.column_names)
    first_seen = table.column("extracted_at")
    if "first_seen" in names:
        first_seen = pc.coalesce(_as_us(table.column("first_seen")), _as_us(first_seen))
    paths = table.column("path").to_pylist()
    sizes = table.column("size_bytes").to_pylist()
    modified = _micros(table.column("modified"))
    first = _micros(first_seen)
    etags = table.column("etag").to_pylist() if "etag" in names else [None] * n
    settings = (
        [v if v is None else sys.intern(v) for v in table.column("settings").to_pylist()]
        if "settings" in names
        else [None] * n
    )
    # Few distinct values: one shared string each instead of one per row (~100 bytes a row).
    status = [v if v is None else sys.intern(v) for v in table.column("status").to_pylist()]
    versions = [v if v is None else sys.intern(v) for v in table.column("extractor_version").to_pylist()]
    formats = [v if v is None else sys.intern(v) for v in table.column("format").to_pylist()]
    for i in range(n):
        yield paths[i], CacheEntry(
            sizes[i], modified[i], etags[i], status[i], versions[i], first[i], settings[i], formats[i]
        )


def cache_part(path: str, storage_options=None) -> dict[str, CacheEntry]:
    """``{path: CacheEntry}`` for one Parquet file of a previous ``files`` table."""
    return dict(cache_entries(path, storage_options))


class CachePart(statecache.CacheAware):
    """The cache entries of one previous ``files`` Parquet file, as a side-input value.

    Travels and is stored as Arrow columns (compact to encode, and the runner's side-input
    cache weighs it by their bytes instead of walking a million Python objects); the
    ``{path: CacheEntry}`` index is built on the first lookup in each worker process and kept
    with the object while the runner caches it. A read-only mapping.
    """

    def __init__(self, columns: pa.Table):
        self._columns = columns
        self._index: dict[str, CacheEntry] | None = None

    @classmethod
    def read(cls, path: str, storage_options=None) -> CachePart:
        return cls(read_cache_columns(path, storage_options))

    def _entries(self) -> dict[str, CacheEntry]:
        if self._index is None:
            self._index = dict(cache_entries(self._columns))
        return self._index

    def get(self, path: str, default=None) -> CacheEntry | None:
        return self._entries().get(path, default)

    def __getitem__(self, path: str) -> CacheEntry:
        return self._entries()[path]

    def __contains__(self, path: object) -> bool:
        return path in self._entries()

    def __len__(self) -> int:
        return self._columns.num_rows

    def __getstate__(self):
        return {"columns": self._columns}

    def __setstate__(self, state):
        self.__init__(state["columns"])

    def get_referents_for_cache(self) -> list[Any]:
        return [self._columns]


def _as_us(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp column in microseconds since the epoch, UTC (a naive one is taken as UTC)."""
    return column.cast(pa.timestamp("us", tz="UTC"))


def _micros(column: pa.ChunkedArray) -> list[int | None]:
    """Vectorized ``_us``: a timestamp column -> microseconds since the epoch (None for null)."""
    return _as_us(column).cast(pa.int64()).to_pylist()


def conform(rows: pa.Table, table: str, schema: pa.Schema) -> pa.Table:
    """Previous rows in this run's ``schema``: ``files`` rows get ``change=unchanged``; a column
    the previous catalog did not have yet is filled with nulls (``first_seen`` with the row's
    ``extracted_at``)."""
    columns = []
    for field in schema:
        if field.name == "change" and table == "files":
            columns.append(pa.array([UNCHANGED] * rows.num_rows, pa.string()))
        elif field.name in rows.column_names:
            columns.append(rows.column(field.name).cast(field.type))
        elif field.name == "first_seen" and "extracted_at" in rows.column_names:
            columns.append(rows.column("extracted_at").cast(field.type))
        else:
            columns.append(pa.nulls(rows.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def carry_forward(
    path: str, table: str, schema: pa.Schema, keep: Iterable[str] | pa.Array, storage_options=None
) -> pa.Table:
    """The rows of one previous Parquet file whose path is in ``keep``, conformed to ``schema``."""
    if not isinstance(keep, pa.Array):
        keep = pa.array(list(keep), pa.string())
    previous = _read(path, None, storage_options)
    if len(keep) == 0 or previous.num_rows == 0:
        return schema.empty_table()
    return conform(previous.filter(pc.is_in(previous.column("path"), value_set=keep)), table, schema)


def carry_whole(path: str, table: str, schema: pa.Schema, storage_options=None) -> pa.Table:
    """Every row of one previous Parquet file, conformed to ``schema``."""
    return conform(_read(path, None, storage_options), table, schema)


def stage_carried(staging: str, table: str, rows: pa.Table, storage_options=None) -> dict | None:
    """Write carried rows as a staged shard; its record (``files`` shards also carry their
    outcome sums for the manifest). None when there are no rows."""
    if rows.num_rows == 0:
        return None
    record = stage_table(staging, table, rows, storage_options, prefix="carried")
    if table == "files":
        record["outcomes"] = _outcomes(rows)
    return record


#: What the roll-ups read of each per-format table: the columns, and the rows they keep
#: (column, values). Keep in step with ``transforms/partials.py``.
ROLLUP_READS: dict[str, tuple[list[str], tuple[str, list[str]] | None]] = {
    "dicom": (
        ["path", "tags", "study_instance_uid", "series_instance_uid", "modality", "patient_id", "study_date"],
        None,
    ),
    "netcdf": (["path", "variable", "units", "standard_name"], None),
    "hdf5": (["path", "kind", "object_path", "attributes"], ("kind", ["dataset"])),
}


def cache_lookup(cache, path: str) -> CacheEntry | None:
    """``path``'s entry in one cache mapping or in the list of ``ReadCache`` parts (``AsList``)."""
    if isinstance(cache, (Mapping, CachePart)):
        return cache.get(path)
    for part in cache:
        entry = part.get(path)
        if entry is not None:
            return entry
    return None


def carried_rows(shard: Mapping[str, Any], cache, storage_options=None) -> tuple[str, list[dict], dict] | None:
    """What rolling up a carried-forward shard takes: ``(table, rows, {path: (format, size)})``,
    the rows with the columns the roll-ups read and their files' formats and sizes from the
    cache; None for a table the roll-ups do not read.

    The rows of a carried shard are the previous catalog's, and so are their files' sizes and
    formats: the cache has them, so these rows need no join (``RollUps`` merges their partial
    roll-ups with those of the files read in this run). A file's rows of one table lie in one
    shard (the writer writes each file's rows together and a carried shard is a filtered copy
    of one previous shard), which the variable counts rely on.
    """
    table = shard["table"]
    if table not in ROLLUP_READS:
        return None
    columns, keep = ROLLUP_READS[table]
    rows = _read(shard["path"], columns, storage_options)
    if keep is not None:
        column, values = keep
        rows = rows.filter(pc.is_in(rows.column(column), value_set=pa.array(values, pa.string())))
    rows = rows.to_pylist()
    sizes = {}
    for row in rows:
        path = row["path"]
        if path not in sizes:
            entry = cache_lookup(cache, path)
            sizes[path] = (entry.format, int(entry.size or 0)) if entry is not None else (None, 0)
    return table, rows, sizes


def carried_partials(shard: Mapping[str, Any], cache, storage_options=None) -> list[tuple[str, Any, Any]]:
    """A carried-forward shard -> its partial roll-ups, ``(roll-up table, key, partial)``, in
    this process."""
    got = carried_rows(shard, cache, storage_options)
    return [] if got is None else partials.shard_partials(*got)


# --- Beam ------------------------------------------------------------------------------------


@dataclasses.dataclass
class ReadCache(beam.PTransform):
    """The previous catalog's ``files`` table as :class:`CachePart` mappings (``{path:
    CacheEntry}``), one per Parquet file.

    One element per Parquet file rather than one per path: a million cached paths are a handful
    of elements instead of a million trips through the runner. Consume it with
    ``beam.pvalue.AsList`` (``PlanAgainstCacheFn`` looks a path up in each part). Memory: about
    0.5 GB per million paths for the dicts, about 2 GB per million for a whole DirectRunner run
    (``benchmarks/bench_cache_memory.py``).

    Args:
      previous: a catalog folder or URL, or None.
      storage_options: passed to fsspec.
    """

    previous: str | None
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def expand(self, pbegin):
        parts = table_files(self.previous, "files", self.storage_options) if self.previous else []
        return (
            pbegin
            | "ListCacheFiles" >> beam.Create(parts)
            | "ReadCacheParts" >> beam.Map(CachePart.read, self.storage_options)
        )


class PlanAgainstCacheFn(beam.DoFn):
    """Labels each file of a batch (``ListFileBatches``): emits ``("extract", [file, ...])`` and
    ``("carry", [path, ...])`` once per batch (when not empty).

    Routed pairs, split downstream with :func:`routed`, rather than tagged outputs: Beam 2.77's
    DaskRunner sends every output of a multi-output ParDo to each of its PCollections.
    """

    EXTRACT = "extract"
    CARRY = "carry"

    def __init__(self, policy: CachePolicy):
        self._policy = policy

    def process(self, batch: list[FileInfo], cache):
        """``cache``: one mapping, or the list of ``ReadCache`` parts (``AsList``)."""
        extract, carried = FileBatch(), []
        for info in batch:
            entry = cache_lookup(cache, info.path)
            if can_carry(info, entry, self._policy):
                carried.append(info.path)
            else:
                extract.append(label(info, entry))
        if extract:
            yield self.EXTRACT, extract
        if carried:
            yield self.CARRY, carried


def routed(item: tuple[str, Any], route: str):
    """The value of a ``(route, value)`` pair when its route is ``route`` (use with FlatMap)."""
    if item[0] == route:
        yield item[1]


class CarryForwardFn(beam.DoFn):
    """One previous Parquet file -> a staged shard holding the rows of unchanged files."""

    def __init__(self, staging: str, tables: Mapping[str, pa.Schema], storage_options=None):
        self._staging = staging
        self._tables = dict(tables)
        self._storage_options = dict(storage_options or {})
        self._keep_list = self._keep_array = None

    def process(self, part: tuple[str, str], keep: list[list[str]]):
        """``keep``: the batches of paths to carry (``AsList``)."""
        table_name, path = part
        if table_name not in self._tables:
            return
        if keep is not self._keep_list:  # build the value set once per side-input value
            self._keep_list = keep
            self._keep_array = pa.array([p for batch in keep for p in batch], pa.string())
        rows = carry_forward(path, table_name, self._tables[table_name], self._keep_array, self._storage_options)
        record = stage_carried(self._staging, table_name, rows, self._storage_options)
        if record is not None:
            yield record


class RollUpCarriedShardsFn(beam.DoFn):
    """Carried-forward shard records -> their partial roll-ups (:func:`carried_partials`).

    The rolling up (DICOM tags parsed, attributes compared: the costly part of carrying a file
    forward) runs in the extraction process, on a core of its own and with the format libraries
    it has loaded, while this worker reads and copies the next shards; the results are emitted
    when they come, at most :data:`IN_FLIGHT` shards waiting. In this process instead when
    extraction is not isolated (``--file_timeout_s 0``), on runners that drop what
    ``finish_bundle`` emits (``batch_calls`` False), or if the extraction process fails.

    Args:
      options: the extraction's options (its time limit picks the extraction pool).
      storage_options: passed to fsspec.
    """

    IN_FLIGHT = 2
    #: Rows sent in one call (whole files: a call never splits one file's rows).
    ROWS_PER_CALL = 5000

    def __init__(self, options, storage_options=None):
        self._options = options
        self._storage_options = dict(storage_options or {})

    def setup(self):
        self._executor = self._pool = None
        if self._options.file_timeout_s > 0 and self._options.batch_calls:
            from concurrent.futures import ThreadPoolExecutor

            from transforms.extract import _acquire_pool

            self._pool = _acquire_pool(self._options.file_timeout_s)
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="metaextract-rollups")

    def start_bundle(self):
        self._waiting: list = []

    def process(self, shard: Mapping[str, Any], cache):
        got = carried_rows(shard, cache, self._storage_options)
        if got is None:
            return
        table, rows, sizes = got
        if self._executor is None:
            yield from partials.shard_partials(table, rows, sizes)
            return
        for piece in _whole_files(rows, self.ROWS_PER_CALL):
            self._waiting.append(self._executor.submit(self._in_extraction_process, table, piece, sizes))
        while len(self._waiting) > self.IN_FLIGHT:
            yield from self._waiting.pop(0).result()

    def _in_extraction_process(self, table: str, rows: list[dict], sizes: dict) -> list:
        try:
            with self._pool.borrow() as runner:
                return runner.call(partials.shard_partials, table, rows, sizes)
        except Exception:  # noqa: BLE001 - a crash or hang there: roll up here instead
            return partials.shard_partials(table, rows, sizes)

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        waiting, self._waiting = self._waiting, []
        for future in waiting:
            for partial in future.result():
                yield GlobalWindows.windowed_value(partial)

    def teardown(self):
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if getattr(self, "_pool", None) is not None:
            from transforms.extract import _release_pool

            self._pool = None
            _release_pool(self._options.file_timeout_s)


def _whole_files(rows: list[dict], limit: int) -> Iterable[list[dict]]:
    """``rows`` (each file's contiguous) in pieces of about ``limit`` rows, never splitting a file."""
    start = 0
    while start < len(rows):
        end = min(start + limit, len(rows))
        while end < len(rows) and rows[end]["path"] == rows[end - 1]["path"]:
            end += 1
        yield rows[start:end]
        start = end


def _outcomes(files: pa.Table) -> list:
    """``((format, status), (files, bytes))`` sums of carried ``files`` rows."""
    grouped = files.group_by(["format", "status"]).aggregate([("size_bytes", "sum"), ("size_bytes", "count")])
    return [
        ((r["format"], r["status"]), (r["size_bytes_count"], r["size_bytes_sum"] or 0))
        for r in grouped.to_pylist()
    ]


@dataclasses.dataclass
class CarryForward(beam.PTransform):
    """Batches of paths of unchanged files -> staged shards with their previous rows, for every table.

    Args:
      previous: the previous catalog (folder or URL), or None.
      staging: where the shards go (the sink's staging folder).
      tables: table name -> schema of this run.
      storage_options: passed to fsspec.
    """

    previous: str | None
    staging: str
    tables: dict[str, pa.Schema]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def expand(self, unchanged_paths):
        parts = previous_parts(self.previous, self.tables, self.storage_options)
        return (
            unchanged_paths.pipeline
            | "ListPreviousParts" >> beam.Create(parts)
            | "CopyUnchangedRows"
            >> beam.ParDo(
                CarryForwardFn(self.staging, self.tables, self.storage_options),
                keep=beam.pvalue.AsList(unchanged_paths),
            )
        )



# --- nothing changed: no pipeline at all -------------------------------------------------------


def previous_files(previous: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, CacheEntry]:
    """The previous catalog's files, by path, as the cache sees them."""
    cache: dict[str, CacheEntry] = {}
    for _, part in previous_parts(previous, ["files"], storage_options):
        cache.update(cache_part(part, storage_options))
    return cache


def keep_unlisted_folders(listed: dict[str, FileInfo], cache: Mapping[str, CacheEntry], skipped: Iterable[Any]) -> int:
    """Add to ``listed`` the cached files under folders this run could not list (a permission
    denied for one night is no evidence that their files were deleted, as rsync refuses to
    delete after an I/O error): listed as the cache knew them, they are carried forward
    unchanged when nothing else calls for re-reading them. Returns how many were added."""
    folders = tuple(s.path.rstrip("/") + "/" for s in skipped if s.reason.startswith(FOLDER_NOT_LISTED))
    if not folders:
        return 0
    added = 0
    for path, entry in cache.items():
        if path not in listed and path.startswith(folders):
            listed[path] = FileInfo(path, entry.size, _from_us(entry.modified_us), entry.etag)
            added += 1
    return added


def files_to_read(listed: Mapping[str, FileInfo], cache: Mapping[str, CacheEntry], policy: CachePolicy) -> list[FileInfo]:
    """The listed files this run reads: those the cache cannot carry forward."""
    return [info for info in listed.values() if policy.full or not can_carry(info, cache.get(info.path), policy)]


def publish_if_unchanged(
    listed: Mapping[str, FileInfo],
    output: str,
    previous: str | None,
    policy: CachePolicy,
    tables: Mapping[str, pa.Schema],
    rollup_tables: Iterable[str],
    manifest: dict[str, Any],
    run_id: str,
    storage_options: Mapping[str, Any] | None = None,
    cache: Mapping[str, CacheEntry] | None = None,
) -> dict[str, Any] | None:
    """When no file is new, changed, deleted or due for re-extraction, publish the previous
    catalog as this run's (rows identical but ``change=unchanged``) without starting Beam.

    A nightly run over a quiet archive then costs a listing and a few Parquet copies, not a
    pipeline's start-up. Returns the manifest published, or None when there is work to do.
    ``cache``: :func:`previous_files` of ``previous``, when the caller has read it already.
    """
    from transforms.publish import publish_catalog
    from transforms.sink import build_manifest, staging_folder

    if not previous or policy.full:
        return None
    if cache is None:
        cache = previous_files(previous, storage_options)
    if len(listed) != len(cache) or files_to_read(listed, cache, policy):
        return None
    staging = staging_folder(output, run_id)
    rollups = set(rollup_tables)
    keep = pa.array(list(listed), pa.string())
    shards, outcomes = [], []
    for table, part in previous_parts(previous, tables, storage_options):
        schema = tables[table]
        if table in rollups:
            rows = carry_whole(part, table, schema, storage_options)
        else:
            rows = carry_forward(part, table, schema, keep, storage_options)
        record = stage_carried(staging, table, rows, storage_options)
        if record is not None:
            shards.append(record)
            outcomes.extend(record.get("outcomes", []))
    rows_per_table = {name: 0 for name in tables}
    for shard in shards:
        rows_per_table[shard["table"]] += shard["rows"]
    document = build_manifest(
        {**manifest, "pipeline": "skipped: nothing new, changed or deleted"},
        outcomes,
        [(UNCHANGED, len(listed))],
        [],
        len(cache),
        rows_per_table,
        dt.datetime.now(dt.timezone.utc),
    )
    return publish_catalog(output, staging, run_id, shards, tables, document, storage_options)
