"""Helpers to run the pipeline and read the catalog back in tests."""

from __future__ import annotations

import json
import os

import duckdb
import pyarrow.parquet as pq

from pipelines.catalog import run
from transforms import schemas


#: The test process holds every library the suite imports (about 400 MB before any file is
#: read), above the default worker budget: the memory governor would see CRITICAL pressure in
#: every run. Tests of the governor itself set their own budget.
TEST_BUDGET = ("--max_memory_per_worker_mb", "8000")


def run_catalog(inputs, output, *extra, capsys=None) -> dict:
    argv = [a for i in inputs for a in ("--input", str(i))] + ["--output", str(output), "--progress", "off", *extra]
    if "--max_memory_per_worker_mb" not in extra:
        argv += TEST_BUDGET
    return run(argv)


def read_table(output, table: str):
    return pq.read_table(os.path.join(str(output), table))


def duck(output, sql: str):
    """Run SQL where {files}, {dicom}, ... stand for the tables' Parquet globs."""
    globs = {t: f"read_parquet('{os.path.join(str(output), t)}/*.parquet')" for t in schemas.TABLES}
    return duckdb.sql(sql.format(**globs)).fetchall()


def files_by_name(output) -> dict[str, dict]:
    rows = read_table(output, "files").to_pylist()
    return {os.path.basename(r["path"]): r for r in rows}


def metadata(row) -> dict:
    return json.loads(row["metadata"])
