"""Write the catalog: Parquet shards written by a DoFn, published together at the end.

Beam's file-based ``WriteToParquet`` writes no rows on the DaskRunner (its finalization step
does not run there), so the sink uses only ParDo and Combine, which every runner supports:
each bundle writes its rows to a staging folder with pyarrow and emits the shard's name; one
final step, which sees every shard name, publishes them with ``manifest.json`` (see
:mod:`transforms.publish` for how a reader never sees a half-written catalog). A shard written by a bundle that the runner retried is never emitted, so it
is never published: each row lands exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import posixpath
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindows
from fsspec.core import url_to_fs

from transforms.extract import FILES_TABLE
from transforms.publish import MANIFEST, PARQUET_COMPRESSION, STAGING_PREFIX, publish_catalog
from transforms.redact import redact_url

NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"

#: Rows a writer buffers before it writes a shard (bounds the writer's memory).
MAX_ROWS_PER_SHARD = 50_000


def join(base: str, *parts: str) -> str:
    """Join a local path or a URL with more parts."""
    return posixpath.join(base.rstrip("/") or "/", *parts)


def write_table(path: str, table: pa.Table, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write one Parquet file (pyarrow's compliant nested types: list elements are ``element``)."""
    fs, fpath = url_to_fs(path, **dict(storage_options or {}))
    fs.makedirs(posixpath.dirname(fpath), exist_ok=True)
    with fs.open(fpath, "wb") as f:
        pq.write_table(table, f, compression=PARQUET_COMPRESSION)


def stage_table(staging: str, table_name: str, rows: pa.Table, storage_options=None, prefix: str = "shard") -> dict:
    """Write ``rows`` as a uniquely named shard under ``staging/<table>/``; the shard's record."""
    path = join(staging, table_name, f"{prefix}-{uuid.uuid4().hex}.parquet")
    write_table(path, rows, storage_options)
    return {"table": table_name, "path": path, "rows": rows.num_rows}


def write_shard(staging: str, table_name: str, schema: pa.Schema, rows: list[dict], storage_options=None) -> dict:
    return stage_table(staging, table_name, pa.Table.from_pylist(rows, schema=schema), storage_options)


class ParquetShardWriter(beam.CombineFn):
    """Writes one table's rows as Parquet shards; the combined result is the list of shard records.

    A CombineFn rather than a DoFn that flushes in ``finish_bundle``: Beam 2.77's DaskRunner
    drops whatever ``finish_bundle`` emits (it collects a bundle's outputs before calling it).
    An accumulator is ``(shard records, pending rows)``; it writes a shard whenever ``max_rows``
    rows are pending, and ``compact`` (called before a shuffle) writes the rest, so that only
    shard records cross the network on runners that lift combiners. A shard written by an
    attempt that the runner retried is in no surviving accumulator, so it is never published.
    """

    def __init__(self, table: str, schema: pa.Schema, staging: str, storage_options=None, max_rows: int = MAX_ROWS_PER_SHARD):
        self._table = table
        self._schema = schema
        self._staging = staging
        self._storage_options = dict(storage_options or {})
        self._max_rows = max_rows

    def _flush(self, accumulator):
        shards, rows = accumulator
        if rows:
            shards.append(write_shard(self._staging, self._table, self._schema, rows, self._storage_options))
        return shards, []

    def create_accumulator(self):
        return [], []

    def add_input(self, accumulator, row: dict):
        accumulator[1].append(row)
        return self._flush(accumulator) if len(accumulator[1]) >= self._max_rows else accumulator

    def merge_accumulators(self, accumulators):
        shards, rows = [], []
        for more_shards, more_rows in accumulators:
            shards.extend(more_shards)
            rows.extend(more_rows)
            if len(rows) >= self._max_rows:
                shards, rows = self._flush((shards, rows))
        return shards, rows

    def compact(self, accumulator):
        return self._flush(accumulator)

    def extract_output(self, accumulator) -> list[dict]:
        return self._flush(accumulator)[0]


@dataclasses.dataclass
class WriteParquetShards(beam.PTransform):
    """One table's rows -> one record per Parquet shard written to ``staging/<table>/``.

    Args:
      table: the table name.
      schema: its explicit pyarrow schema.
      staging: the run's staging folder.
      storage_options: passed to fsspec.
    """

    table: str
    schema: pa.Schema
    staging: str
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def expand(self, rows):
        writer = ParquetShardWriter(self.table, self.schema, self.staging, self.storage_options)
        return (
            rows
            | "WriteShards" >> beam.CombineGlobally(writer).without_defaults()
            | "ShardRecords" >> beam.FlatMap(lambda shards: shards)
        )


def _outcome(row: dict) -> tuple[tuple[str, str], tuple[int, int]]:
    return (row["format"], row["status"]), (1, row["size_bytes"])


def _sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    files = nbytes = 0
    for f, b in pairs:
        files += f
        nbytes += b
    return files, nbytes


def summarize(outcomes: Iterable[tuple[tuple[str, str], tuple[int, int]]]) -> dict[str, Any]:
    """Manifest counts from ``((format, status), (files, bytes))`` pairs."""
    counts: dict[str, dict[str, int]] = {}
    nbytes: dict[str, dict[str, int]] = {}
    for (fmt, status), (files, size) in sorted(outcomes):
        counts.setdefault(fmt, {})[status] = counts.get(fmt, {}).get(status, 0) + files
        nbytes.setdefault(fmt, {})[status] = nbytes.get(fmt, {}).get(status, 0) + size
    return {
        "files_total": sum(n for by in counts.values() for n in by.values()),
        "bytes_total": sum(n for by in nbytes.values() for n in by.values()),
        "counts": counts,
        "bytes": nbytes,
    }


def _reads(row: dict) -> tuple[str, tuple[int, int]]:
    return "reads", (row.get("bytes_read") or 0, row.get("read_requests") or 0)


def _seconds(row: dict) -> tuple[str, tuple[float, str]]:
    return "slowest", (row.get("extract_seconds") or 0.0, row["path"])


def merge_governor(figures: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The memory governor's figures of every file and data unit, summed for the manifest:
    counts and seconds add up, ``*_min``/``*_max`` keep the extremes, the rest the latest."""
    out: dict[str, Any] = {}
    for fig in figures:
        for key, value in fig.items():
            if key not in out or value is None:
                out.setdefault(key, value)
            elif key.endswith("_min"):
                out[key] = min(out[key], value)
            elif key.endswith("_max") or key.startswith("max_"):
                out[key] = max(out[key], value)
            elif key in ("level", "chunk_bytes_last", "batch_size_last"):
                out[key] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out[key] + value
            else:
                out[key] = value
    return out


PRESSURE_LEVELS = ("NORMAL", "ELEVATED", "HIGH", "CRITICAL")


def _data_units_summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The large files' data units (``extract.data_phase_figures``, taken out of ``figures``):
    how many, their bytes, and the wall time from the first call's start to the last one's end."""
    started = figures.pop("data_units_started_min", None)
    finished = figures.pop("data_units_finished_max", None)
    count, nbytes = figures.pop("data_units", 0), figures.pop("data_unit_bytes", 0)
    wall = round(finished - started, 3) if started is not None and finished is not None else 0.0
    return {"count": count, "bytes": nbytes, "wall_seconds": wall}


def _governor_summary(figures: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in figures.items() if k not in ("level", "chunk_bytes_last", "batch_size_last")}
    if "max_level" in out:
        out["max_level"] = PRESSURE_LEVELS[out["max_level"]]
    if "pause_seconds" in out:
        out["pause_seconds"] = round(out["pause_seconds"], 3)
    return out


def build_manifest(
    base: Mapping[str, Any],
    outcomes: list,
    changes: list,
    extracted: list,
    cache_size: int,
    rows: Mapping[str, int],
    finished: dt.datetime,
    reads: list | None = None,
    slowest: list | None = None,
    governor: list | None = None,
) -> dict[str, Any]:
    """The run's manifest: base info, counts, changes against the cache, and the comparison
    with the previous run."""
    started = dt.datetime.fromisoformat(base["started_at"])
    duration = max((finished - started).total_seconds(), 1e-9)
    summary = summarize(outcomes)
    change_counts = {NEW: 0, CHANGED: 0, UNCHANGED: 0}
    for change, n in changes:
        change_counts[change] = change_counts.get(change, 0) + n
    change_counts["deleted"] = max(cache_size - change_counts[CHANGED] - change_counts[UNCHANGED], 0)
    files_read = sum(n for _, n in extracted)
    errors_read = sum(n for status, n in extracted if status == "error")
    document = {
        **base,
        "finished_at": finished.isoformat(),
        "duration_s": round(duration, 3),
        **summary,
        "files_per_s": round(summary["files_total"] / duration, 2),
        "changes": change_counts,
        "files_extracted": files_read,
        "files_carried_forward": summary["files_total"] - files_read,
        "errors_extracted": errors_read,
        "error_fraction": round(errors_read / files_read, 6) if files_read else 0.0,
        "rows": dict(rows),
    }
    bytes_read, read_requests = _sum_pairs(pair for _, pair in reads or [])
    document["bytes_read"] = bytes_read
    document["read_requests"] = read_requests
    if slowest:
        seconds, path = max(pair for _, pair in slowest)
        document["slowest_file"] = {"path": redact_url(path), "extract_seconds": round(seconds, 3)}
    figures = merge_governor(governor or [])
    document["data_units"] = _data_units_summary(figures)
    document["memory_governor"] = _governor_summary(figures)
    previous = base.get("previous_run")
    if previous:
        document["compared_with_previous"] = compare_runs(document, previous)
    return document


def _errors(manifest: Mapping[str, Any]) -> int:
    return sum(by.get("error", 0) for by in manifest.get("counts", {}).values())


def compare_runs(current: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """This run against the previous one: what a scheduler's log should show at a glance."""
    out = {"previous_run_id": previous.get("run_id"), "previous_finished_at": previous.get("finished_at")}
    for key, value in (
        ("files_total", lambda m: m.get("files_total", 0)),
        ("errors", _errors),
        ("files_per_s", lambda m: m.get("files_per_s", 0.0)),
        ("bytes_total", lambda m: m.get("bytes_total", 0)),
        ("bytes_read", lambda m: m.get("bytes_read", 0)),
        ("files_extracted", lambda m: m.get("files_extracted", m.get("files_total", 0))),
    ):
        now, before = value(current), value(previous)
        out[key] = {"previous": before, "current": now, "delta": round(now - before, 6)}
    return out


def publish(
    shards: list[dict],
    outcomes: list,
    changes: list,
    extracted: list,
    cache_size: int,
    output: str,
    staging: str,
    run_id: str,
    tables: Mapping[str, pa.Schema],
    manifest: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
    reads: list | None = None,
    slowest: list | None = None,
    governor: list | None = None,
) -> dict[str, Any]:
    """Publish every staged table and the manifest (see :mod:`transforms.publish`)."""
    rows = {name: 0 for name in tables}
    for shard in shards:
        rows[shard["table"]] = rows.get(shard["table"], 0) + shard["rows"]
    document = build_manifest(
        manifest, outcomes, changes, extracted, cache_size, rows, dt.datetime.now(dt.timezone.utc),
        reads, slowest, governor,
    )
    return publish_catalog(output, staging, run_id, shards, tables, document, storage_options)


#: Optional extra inputs of WriteCatalog: shards of rows carried forward from the previous
#: catalog, and the number of paths in the cache (a single int).
CARRIED = "_carried_shards"
CACHE_SIZE = "_cache_size"
#: Optional input of WriteCatalog: the memory governor's figures (dicts) from the extraction.
GOVERNOR = "_governor"
#: Optional input of WriteCatalog: rows by table, one dict per file or batch of files (keys that
#: are not tables are ignored), instead of, or besides, one PCollection of rows per table.
FILE_ROWS = "_file_rows"
#: Optional input of WriteCatalog: what :class:`WriteShardsFn` wrote (shard records and figures).
WRITTEN = "_written"


def _carried_outcomes(shard: dict):
    for (fmt, status), (files, nbytes) in shard.get("outcomes", []):
        yield (fmt, status), (files, nbytes)


def _carried_changes(shard: dict):
    if shard["table"] == FILES_TABLE:
        yield UNCHANGED, shard["rows"]


#: A table's pending rows are written as a shard once they hold about this much text (a
#: catalog of files with 100,000 attributes each would otherwise sit in memory up to 50,000 rows).
MAX_PENDING_BYTES = 8 << 20


def _text_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The string and binary columns of a table: what makes its rows large."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return tuple(f.name for f in schema if any(is_text(f.type) for is_text in text))


class CatalogWriterFn(beam.CombineFn):
    """Every table's rows -> their Parquet shards, and the figures of the manifest, in one combine.

    Input: ``(table, row)`` pairs for the tables, ``(FILE_ROWS, rows by table)`` (governor
    figures among them count), ``(WRITTEN, accumulator)``, ``(CARRIED, shard record)``,
    ``(GOVERNOR, figures)`` and ``(CACHE_SIZE, n)``. Output: a :class:`CatalogFigures`-like dict with the
    shard records of every table and what :func:`build_manifest` needs.

    One combine rather than one per table and one per figure: each is a dozen Beam transforms
    and a few stages, which on the DirectRunner cost more than a small run's work. Shards are
    written as :class:`ParquetShardWriter` writes them: whenever a table has ``max_rows`` rows
    pending (or :data:`MAX_PENDING_BYTES` of text), and in ``compact`` (before a shuffle), so that only shard records and sums cross
    the network; a shard written by a retried attempt is in no surviving accumulator.
    """

    def __init__(self, tables: Mapping[str, pa.Schema], staging: str, storage_options=None, max_rows: int = MAX_ROWS_PER_SHARD):
        self._tables = dict(tables)
        self._staging = staging
        self._storage_options = dict(storage_options or {})
        self._max_rows = max_rows
        self._text_columns = {name: _text_columns(schema) for name, schema in self._tables.items()}

    def create_accumulator(self):
        return {
            "shards": [],
            "pending": {},  # table -> rows not yet written
            "pending_bytes": {},  # table -> about how much memory they hold
            "outcomes": {},  # (format, status) -> [files, bytes]
            "changes": {},  # change -> files
            "extracted": {},  # status -> files read in this run
            "reads": [0, 0],  # bytes read, read requests
            "slowest": None,  # (extract seconds, path)
            "governor": None,  # merged figures
            "cache_size": 0,
        }

    def _flush(self, acc, table: str):
        acc["pending_bytes"].pop(table, None)
        rows = acc["pending"].pop(table, None)
        if rows:
            acc["shards"].append(write_shard(self._staging, table, self._tables[table], rows, self._storage_options))

    def _count_file(self, acc, row: dict) -> None:
        (key, (files, nbytes)) = _outcome(row)
        _add_outcome(acc, key, files, nbytes)
        acc["changes"][row["change"]] = acc["changes"].get(row["change"], 0) + 1
        acc["extracted"][row["status"]] = acc["extracted"].get(row["status"], 0) + 1
        _, (nread, requests) = _reads(row)
        acc["reads"][0] += nread
        acc["reads"][1] += requests
        _, seconds = _seconds(row)
        acc["slowest"] = seconds if acc["slowest"] is None else max(acc["slowest"], seconds)

    def add_input(self, acc, item: tuple[str, Any]):
        kind, value = item
        if kind == CARRIED:
            acc["shards"].append(value)
            for key, (files, nbytes) in _carried_outcomes(value):
                _add_outcome(acc, key, files, nbytes)
            for change, n in _carried_changes(value):
                acc["changes"][change] = acc["changes"].get(change, 0) + n
        elif kind == GOVERNOR:
            acc["governor"] = value if acc["governor"] is None else merge_governor([acc["governor"], value])
        elif kind == CACHE_SIZE:
            acc["cache_size"] += value
        elif kind == WRITTEN:
            return self.merge_accumulators([acc, value])
        elif kind == FILE_ROWS:
            for table, rows in value.items():
                if table in self._tables:
                    self._add_rows(acc, table, rows)
                elif table == GOVERNOR:
                    for figures in rows:
                        self.add_input(acc, (GOVERNOR, figures))
        else:
            self._add_rows(acc, kind, (value,))
        return acc

    def _add_rows(self, acc, table: str, rows: Iterable[dict]) -> None:
        """Append rows to a table's pending rows; write them as a shard when full, but only
        before a file's first row, so that a file's rows of a table (contiguous in a FILE_ROWS
        element) stay in one shard: the roll-ups of carried-forward shards count each file
        once per shard. (The hot loop of the writer: one pass, no call per row.)"""
        if table == FILES_TABLE:
            for row in rows:
                self._count_file(acc, row)
        text_columns = self._text_columns[table]
        pending = acc["pending"].setdefault(table, [])
        held = acc["pending_bytes"].get(table, 0)
        last = pending[-1].get("path") if pending else None
        for row in rows:
            path = row.get("path")
            if path != last:
                last = path
                if pending and (len(pending) >= self._max_rows or held >= MAX_PENDING_BYTES):
                    acc["pending_bytes"][table] = held
                    self._flush(acc, table)
                    pending, held = acc["pending"].setdefault(table, []), 0
            pending.append(row)
            held += 64 * len(row)
            for name in text_columns:
                value = row.get(name)
                if value:
                    held += len(value)
        acc["pending_bytes"][table] = held

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        acc = next(accumulators)
        for other in accumulators:
            acc["shards"].extend(other["shards"])
            for table, rows in other["pending"].items():
                pending = acc["pending"].setdefault(table, [])
                pending.extend(rows)
                held = acc["pending_bytes"].get(table, 0) + other.get("pending_bytes", {}).get(table, 0)
                acc["pending_bytes"][table] = held
                if len(pending) >= self._max_rows or held >= MAX_PENDING_BYTES:
                    self._flush(acc, table)
            for key, (files, nbytes) in other["outcomes"].items():
                _add_outcome(acc, key, files, nbytes)
            for name in ("changes", "extracted"):
                for key, n in other[name].items():
                    acc[name][key] = acc[name].get(key, 0) + n
            acc["reads"][0] += other["reads"][0]
            acc["reads"][1] += other["reads"][1]
            if other["slowest"] is not None:
                acc["slowest"] = other["slowest"] if acc["slowest"] is None else max(acc["slowest"], other["slowest"])
            if other["governor"] is not None:
                acc["governor"] = (
                    other["governor"] if acc["governor"] is None else merge_governor([acc["governor"], other["governor"]])
                )
            acc["cache_size"] += other["cache_size"]
        return acc

    def compact(self, acc):
        for table in list(acc["pending"]):
            self._flush(acc, table)
        return acc

    def extract_output(self, acc) -> dict[str, Any]:
        acc = self.compact(acc)
        return {
            "shards": acc["shards"],
            "outcomes": [(key, tuple(pair)) for key, pair in acc["outcomes"].items()],
            "changes": list(acc["changes"].items()),
            "extracted": list(acc["extracted"].items()),
            "cache_size": acc["cache_size"],
            "reads": [("reads", tuple(acc["reads"]))] if acc["extracted"] else [],
            "slowest": [("slowest", acc["slowest"])] if acc["slowest"] is not None else [],
            "governor": [acc["governor"]] if acc["governor"] is not None else [],
        }


class WriteShardsFn(beam.DoFn):
    """Batches of files' rows (rows by table, like ``FILE_ROWS``) -> their Parquet shards,
    written where the rows are made; emits, once per bundle, what was written (for
    ``WriteCatalog``'s ``WRITTEN`` input: shard records and the figures of the manifest).

    The rows then never cross the runner: a runner materializes a PCollection between stages
    (the in-process runner encodes and decodes each element there, and a Flatten is such a
    boundary), and only the shard records and sums travel on. Governor figures among the rows
    (``GOVERNOR``) are counted, as in ``FILE_ROWS``. Emits in ``finish_bundle``: not for runners
    that drop what is emitted there (Beam 2.77's DaskRunner), which send ``FILE_ROWS`` instead.
    """

    def __init__(self, tables: Mapping[str, pa.Schema], staging: str, storage_options=None, max_rows: int = MAX_ROWS_PER_SHARD):
        self._writer = CatalogWriterFn(tables, staging, storage_options, max_rows)

    def start_bundle(self):
        self._acc = None

    def process(self, rows: Mapping[str, list]):
        if self._acc is None:
            self._acc = self._writer.create_accumulator()
        self._writer.add_input(self._acc, (FILE_ROWS, rows))

    def finish_bundle(self):
        if self._acc is not None:
            acc, self._acc = self._writer.compact(self._acc), None
            yield GlobalWindows.windowed_value(acc)


def _add_outcome(acc, key, files: int, nbytes: int) -> None:
    pair = acc["outcomes"].setdefault(key, [0, 0])
    pair[0] += files
    pair[1] += nbytes


def _tagged(value, kind: str):
    return kind, value


def publish_figures(figures: Mapping[str, Any], **kwargs) -> dict[str, Any]:
    """:func:`publish` with what :class:`CatalogWriterFn` gathered."""
    return publish(**figures, **kwargs)


@dataclasses.dataclass
class WriteCatalog(beam.PTransform):
    """Dict of table name -> PCollection of rows  ->  the published catalog's manifest.

    The input dict may also hold ``FILE_ROWS`` (rows by table, one dict per file or batch of
    files: one element per batch crosses the runner instead of one per row; the rows of one file
    in one element stay in one shard of each table), ``WRITTEN`` (what :class:`WriteShardsFn`
    wrote upstream: then no row crosses the runner), ``CARRIED`` (shard records of
    rows carried forward from the previous catalog), ``CACHE_SIZE`` (ints that sum to the paths
    in that catalog) and ``GOVERNOR``.

    Args:
      output: the catalog folder (local path or fsspec URL).
      tables: table name -> explicit pyarrow schema.
      manifest: run information to record (``started_at``, ``options``, ...).
      storage_options: passed to fsspec.
      run_id: names the staging folder ``<output>/.metaextract-staging-<run_id>``.
    """

    output: str
    tables: dict[str, pa.Schema]
    manifest: dict[str, Any]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self):
        super().__init__()
        self.staging = staging_folder(self.output, self.run_id)

    def expand(self, inputs: dict):
        tagged = [
            inputs[name] | f"Tag{name.title().replace('_', '')}" >> beam.Map(_tagged, name)
            for name in (*self.tables, FILE_ROWS, WRITTEN, CARRIED, GOVERNOR, CACHE_SIZE)
            if inputs.get(name) is not None
        ]
        return (
            tagged
            | "AllRowsAndFigures" >> beam.Flatten()
            | "WriteShardsAndCount"
            >> beam.CombineGlobally(CatalogWriterFn(self.tables, self.staging, self.storage_options))
            | "PublishCatalog"
            >> beam.Map(
                publish_figures,
                output=self.output,
                staging=self.staging,
                run_id=self.run_id,
                tables=self.tables,
                manifest=self.manifest,
                storage_options=self.storage_options,
            )
        )


def staging_folder(output: str, run_id: str) -> str:
    return join(output, f"{STAGING_PREFIX}{run_id}")
