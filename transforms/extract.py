"""Turn a detected file into catalog rows: one ``files`` row plus the format's own rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import apache_beam as beam

from pipelines import __version__
from transforms.detect import Detected
from transforms.formats import registry
from transforms.formats.base import Extraction, Source, dumps, format_error

FILES_TABLE = "files"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def catalog_rows(
    detected: Detected,
    storage_options: Mapping[str, Any] | None = None,
    extract_options: Mapping[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every catalog row for one file: ``{"files": [row], "<format>": [rows...]}``.

    Never raises for a file's content: a failure becomes ``status="error"`` with whatever the
    extractor read before it failed.
    """
    info = detected.info
    out = Extraction(format=detected.format)
    error = detected.error
    status = "error" if error else "ok"
    extractor = registry().get(detected.format)
    if error is None:
        if extractor is None:
            status = "unsupported"
        else:
            source = Source(
                info.path, info.size, storage_options or {}, detected.head, extract_options or {}
            )
            try:
                extractor.extract(source, out)
            except Exception as exc:  # errors are data
                status, error = "error", format_error(exc)
    try:
        metadata = dumps(out.metadata)
    except (TypeError, ValueError) as exc:
        metadata, status = "{}", "error"
        error = error or format_error(exc)
    now = _now()
    rows: dict[str, list[dict[str, Any]]] = {
        FILES_TABLE: [
            {
                "path": info.path,
                "format": detected.format,
                "format_version": out.format_version,
                "size_bytes": info.size,
                "modified": info.modified,
                "status": status,
                "error": error,
                "metadata": metadata,
                "extracted_at": now,
                "extractor_version": __version__,
                "first_seen": info.first_seen or now,
                "change": info.change or "new",
                "etag": info.etag,
            }
        ]
    }
    for table, table_rows in out.rows.items():
        rows[table] = [{"path": info.path, **row} for row in table_rows]
    return rows


class ExtractMetadataFn(beam.DoFn):
    """Runs the format's extractor on one file; emits its rows as ``{table: [rows]}``."""

    def __init__(
        self,
        storage_options: Mapping[str, Any] | None = None,
        extract_options: Mapping[str, Any] | None = None,
        progress_dir: str | None = None,
    ):
        self._storage_options = dict(storage_options or {})
        self._extract_options = dict(extract_options or {})
        self._progress_dir = progress_dir

    def setup(self):
        from pipelines.progress import ProgressReporter
        from transforms.metrics import ExtractMetrics

        self._metrics = ExtractMetrics()
        self._progress = ProgressReporter(self._progress_dir) if self._progress_dir else None

    def process(self, detected: Detected):
        start = time.perf_counter()
        rows = catalog_rows(detected, self._storage_options, self._extract_options)
        file_row = rows[FILES_TABLE][0]
        self._metrics.record(file_row, time.perf_counter() - start)
        if self._progress is not None:
            self._progress.add(1, file_row["size_bytes"])
        yield rows

    def finish_bundle(self):
        if self._progress is not None:
            self._progress.flush()

    def teardown(self):
        if getattr(self, "_progress", None) is not None:
            self._progress.flush()


@dataclasses.dataclass
class ExtractMetadata(beam.PTransform):
    """:class:`Detected` files -> a dict of PCollections of rows, one per catalog table.

    Args:
      tables: the table names to output (``files`` plus every registered format's tables).
      storage_options: passed to fsspec when a file is opened.
      extract_options: format-specific settings (``Source.options``), e.g. ``bulk_data_threshold``.
      progress_dir: a local folder where each worker process reports its progress.
    """

    tables: list[str]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    extract_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress_dir: str | None = None

    def __post_init__(self):
        super().__init__()

    def expand(self, detected):
        # One element per file ({table: rows}), split by a FlatMap per table, not tagged
        # outputs: Beam 2.77's DaskRunner sends every output of a multi-output ParDo to each
        # tagged PCollection.
        rows = detected | "ExtractFile" >> beam.ParDo(
            ExtractMetadataFn(self.storage_options, self.extract_options, self.progress_dir)
        )
        return {
            table: rows | f"Select{table.title()}Rows" >> beam.FlatMap(_rows_of, table)
            for table in self.tables
        }


def _rows_of(rows_by_table: dict[str, list[dict[str, Any]]], table: str):
    return rows_by_table.get(table, ())
