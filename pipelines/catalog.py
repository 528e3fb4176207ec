"""The catalog pipeline and the ``metaextract`` command line.

    metaextract [--input PATH_OR_URL ...] [--output DIR] [Beam options]

With no ``--input`` it catalogs the sample corpus that ships with the package.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from fsspec.core import url_to_fs

from pipelines import __version__
from pipelines.options import MetaextractOptions, UsageError, die, parse_flags, public_options
from pipelines.progress import ProgressDisplay, human_bytes
from transforms import schemas
from transforms.detect import DetectFormat
from transforms.extract import FILES_TABLE, ExtractMetadata
from transforms.formats import registry
from transforms.listing import InputError, ListFiles, check_inputs
from transforms.redact import redact_url
from transforms.sink import MANIFEST, WriteCatalog

SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
LOCAL_RUNNERS = {None, "DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}


def catalog_tables() -> dict[str, pa.Schema]:
    """``files`` plus every table of every registered extractor, in a stable order."""
    tables = {FILES_TABLE: schemas.FILES}
    for extractor in registry().values():
        tables.update(extractor.tables)
    return tables


def normalize_output(output: str) -> str:
    return output if "://" in output else os.path.abspath(output)


@dataclasses.dataclass
class CatalogFiles(beam.PTransform):
    """The whole recipe: list -> detect -> extract -> write; applies to any pipeline and runner.

    Args:
      inputs: ``--input`` values.
      output: catalog folder or URL.
      manifest: run information recorded in ``manifest.json``.
      storage_options: passed to fsspec.
      extract_options: format-specific settings handed to extractors (``Source.options``).
      progress_dir: local folder for live progress, or None.
    """

    inputs: list[str]
    output: str
    manifest: dict[str, Any]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    extract_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    progress_dir: str | None = None

    def __post_init__(self):
        super().__init__()

    def expand(self, pbegin):
        tables = catalog_tables()
        return (
            pbegin
            | "ListFiles" >> ListFiles(self.inputs, self.storage_options)
            | "DetectFormat" >> DetectFormat(self.storage_options)
            | "ExtractMetadata" >> ExtractMetadata(
                list(tables), self.storage_options, self.extract_options, self.progress_dir
            )
            | "WriteCatalog" >> WriteCatalog(self.output, tables, self.manifest, self.storage_options)
        )


def check_output(output: str, storage_options: dict[str, Any]) -> None:
    """Fail early, with a clear message, when the output cannot be written."""
    try:
        fs, path = url_to_fs(output, **storage_options)
        fs.makedirs(path, exist_ok=True)
        if "file" in fs.protocol or "local" in fs.protocol:
            probe = os.path.join(path, f".metaextract-write-test-{uuid.uuid4().hex[:8]}")
            with open(probe, "wb"):
                pass
            os.remove(probe)
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot write --output {output!r}: {exc}") from None


def run(argv: list[str] | None = None, *, stdout=sys.stdout, stderr=sys.stderr) -> dict[str, Any]:
    """Run the pipeline for ``argv`` and return the manifest. Raises UsageError/InputError."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts, pipeline_options = parse_flags(argv)
    inputs = opts.input or [SAMPLE_DATA]
    storage_options = dict(opts.storage_options or {})
    output = normalize_output(opts.output)
    runner = pipeline_options.view_as(StandardOptions).runner
    local = runner in LOCAL_RUNNERS
    total_files, total_bytes = check_inputs(inputs, storage_options)
    check_output(output, storage_options)
    extract_options = {"bulk_data_threshold": opts.bulk_data_threshold}
    manifest = {
        "run_id": uuid.uuid4().hex[:12],
        "extractor_version": __version__,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "options": public_options(pipeline_options)
        | {"input": [redact_url(i) for i in inputs], "output": redact_url(output)},
    }
    show_progress = local and (opts.progress == "on" or (opts.progress == "auto" and stderr.isatty()))
    with tempfile.TemporaryDirectory(prefix="metaextract-progress-") as progress_dir:
        recipe = CatalogFiles(
            inputs,
            output,
            manifest,
            storage_options,
            extract_options,
            progress_dir if show_progress else None,
        )
        start = time.monotonic()
        pipeline = beam.Pipeline(options=pipeline_options)
        _ = pipeline | "Catalog" >> recipe
        if show_progress:
            with ProgressDisplay(progress_dir, total_files, total_bytes, stream=stderr):
                pipeline.run().wait_until_finish()
        else:
            pipeline.run().wait_until_finish()
        elapsed = time.monotonic() - start
    fs, root = url_to_fs(output, **storage_options)
    with fs.open(f"{root.rstrip('/')}/{MANIFEST}", "r") as f:
        result = json.load(f)
    print(summary_table(result, output, elapsed), file=stdout)
    return result


def summary_table(manifest: dict[str, Any], output: str, elapsed: float) -> str:
    """Files and bytes per format and status, then totals, time and rate."""
    lines = [f"{'format':<10} {'status':<12} {'files':>9} {'bytes':>12}"]
    for fmt, by_status in sorted(manifest["counts"].items()):
        for status, files in sorted(by_status.items()):
            nbytes = manifest["bytes"][fmt][status]
            lines.append(f"{fmt:<10} {status:<12} {files:>9,} {human_bytes(nbytes):>12}")
    lines.append(f"{'total':<10} {'':<12} {manifest['files_total']:>9,} {human_bytes(manifest['bytes_total']):>12}")
    rate = manifest["files_total"] / elapsed if elapsed > 0 else 0.0
    rows = ", ".join(f"{k} {v:,}" for k, v in manifest.get("rows", {}).items())
    lines.append(f"{elapsed:.1f} s, {rate:,.0f} files/s; catalog: {output} ({rows})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad flags, inputs or outputs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    try:
        run(argv)
    except (UsageError, InputError) as exc:
        die(str(exc))
    except KeyboardInterrupt:
        print("metaextract: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
