"""Write the catalog: Parquet shards written by a DoFn, published together at the end.

Beam's file-based ``WriteToParquet`` writes no rows on the DaskRunner (its finalization step
does not run there), so the sink uses only ParDo and Combine, which every runner supports:
each bundle writes its rows to a staging folder with pyarrow and emits the shard's name; one
final step, which sees every shard name, moves the shards into place table by table and writes
``manifest.json``. A shard written by a bundle that the runner retried is never emitted, so it
is never published: each row lands exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
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

MANIFEST = "manifest.json"
#: Rows a writer buffers before it writes a shard (bounds the writer's memory).
MAX_ROWS_PER_SHARD = 50_000
PARQUET_COMPRESSION = "zstd"


def join(base: str, *parts: str) -> str:
    """Join a local path or a URL with more parts."""
    return posixpath.join(base.rstrip("/") or "/", *parts)


def write_table(path: str, table: pa.Table, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write one Parquet file (pyarrow's compliant nested types: list elements are ``element``)."""
    fs, fpath = url_to_fs(path, **dict(storage_options or {}))
    fs.makedirs(posixpath.dirname(fpath), exist_ok=True)
    with fs.open(fpath, "wb") as f:
        pq.write_table(table, f, compression=PARQUET_COMPRESSION)


def write_shard(staging: str, table_name: str, schema: pa.Schema, rows: list[dict], storage_options=None) -> dict:
    path = join(staging, table_name, f"shard-{uuid.uuid4().hex}.parquet")
    write_table(path, pa.Table.from_pylist(rows, schema=schema), storage_options)
    return {"table": table_name, "path": path, "rows": len(rows)}


class WriteParquetShardsFn(beam.DoFn):
    """Buffers one table's rows and writes them as Parquet shards; emits each shard's record."""

    def __init__(self, table: str, schema: pa.Schema, staging: str, storage_options=None, max_rows: int = MAX_ROWS_PER_SHARD):
        self._table = table
        self._schema = schema
        self._staging = staging
        self._storage_options = dict(storage_options or {})
        self._max_rows = max_rows

    def start_bundle(self):
        self._rows: list[dict] = []

    def _flush(self) -> dict | None:
        if not self._rows:
            return None
        shard = write_shard(self._staging, self._table, self._schema, self._rows, self._storage_options)
        self._rows = []
        return shard

    def process(self, row: dict):
        self._rows.append(row)
        if len(self._rows) >= self._max_rows:
            yield self._flush()

    def finish_bundle(self):
        shard = self._flush()
        if shard is not None:
            yield GlobalWindows.windowed_value(shard)


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
        counts.setdefault(fmt, {})[status] = files
        nbytes.setdefault(fmt, {})[status] = size
    return {
        "files_total": sum(n for by in counts.values() for n in by.values()),
        "bytes_total": sum(n for by in nbytes.values() for n in by.values()),
        "counts": counts,
        "bytes": nbytes,
    }


def publish(
    shards: list[dict],
    outcomes: list,
    output: str,
    staging: str,
    tables: Mapping[str, pa.Schema],
    manifest: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Move every table's shards from staging into ``output/<table>/`` and write the manifest.

    Each table folder is replaced as a whole; other files under ``output`` are left alone. A
    table without rows still gets one empty Parquet file, so that ``output/<table>/*.parquet``
    always matches.
    """
    fs, root = url_to_fs(output, **dict(storage_options or {}))
    _, staging_root = url_to_fs(staging, **dict(storage_options or {}))
    by_table: dict[str, list[dict]] = {name: [] for name in tables}
    for shard in shards:
        by_table.setdefault(shard["table"], []).append(shard)
    rows_per_table = {}
    for name, schema in tables.items():
        target = posixpath.join(root, name)
        if fs.exists(target):
            fs.rm(target, recursive=True)
        fs.makedirs(target, exist_ok=True)
        table_shards = sorted(by_table[name], key=lambda s: s["path"])
        if not table_shards:
            with fs.open(posixpath.join(target, "part-00000.parquet"), "wb") as f:
                pq.write_table(schema.empty_table(), f, compression=PARQUET_COMPRESSION)
        for i, shard in enumerate(table_shards):
            _, shard_path = url_to_fs(shard["path"], **dict(storage_options or {}))
            fs.mv(shard_path, posixpath.join(target, f"part-{i:05d}.parquet"))
        rows_per_table[name] = sum(s["rows"] for s in table_shards)
    finished = dt.datetime.now(dt.timezone.utc)
    started = dt.datetime.fromisoformat(manifest["started_at"])
    duration = max((finished - started).total_seconds(), 1e-9)
    summary = summarize(outcomes)
    document = {
        **manifest,
        "finished_at": finished.isoformat(),
        "duration_s": round(duration, 3),
        **summary,
        "files_per_s": round(summary["files_total"] / duration, 2),
        "rows": rows_per_table,
    }
    with fs.open(posixpath.join(root, MANIFEST), "w") as f:
        json.dump(document, f, indent=2, sort_keys=False)
    if fs.exists(staging_root):
        fs.rm(staging_root, recursive=True)
    return document


@dataclasses.dataclass
class WriteCatalog(beam.PTransform):
    """Dict of table name -> PCollection of rows  ->  the published catalog's manifest.

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
        self.staging = join(self.output, f".metaextract-staging-{self.run_id}")

    def expand(self, rows_by_table: dict):
        shard_lists = []
        for name, schema in self.tables.items():
            shard_lists.append(
                rows_by_table[name]
                | f"Write{name.title()}Shards"
                >> beam.ParDo(WriteParquetShardsFn(name, schema, self.staging, self.storage_options))
            )
        outcomes = (
            rows_by_table[FILES_TABLE]
            | "FileOutcome" >> beam.Map(_outcome)
            | "SumByFormatAndStatus" >> beam.CombinePerKey(_sum_pairs)
        )
        return (
            shard_lists
            | "FlattenShards" >> beam.Flatten()
            | "CollectShards" >> beam.combiners.ToList()
            | "PublishCatalog"
            >> beam.Map(
                publish,
                outcomes=beam.pvalue.AsList(outcomes),
                output=self.output,
                staging=self.staging,
                tables=self.tables,
                manifest=self.manifest,
                storage_options=self.storage_options,
            )
        )
