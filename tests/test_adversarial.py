"""Hostile files (issue 5): every one gives exactly one ``files`` row, never an exception, with
bounded memory; see tests/adversarial.py for the cases."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc

import pyarrow as pa
import pytest

from tests.adversarial import ALL_CASES, SLOW_CASES, VALID, case_format, valid_bytes
from tests.catalog_helpers import files_by_name, run_catalog
from transforms import schemas
from transforms.detect import Detected, detect
from transforms.extract import catalog_rows
from transforms.formats import registry
from transforms.formats.base import FileInfo
from transforms.listing import list_input

ERROR = re.compile(r"^[A-Za-z_][\w.]*(: \S.*)?$")  # "Type: message" on one line
MiB = 1 << 20

#: What each case must give (cases not listed: any status, the guarantees still hold).
EXPECTED_STATUS = {
    "dicom_deep_sequences": "ok",  # dcmdump reads it
    "dicom_deep_sequences_defined": "ok",
    "dicom_nested_large_payload": "ok",
    "dicom_huge_length": "error",
    "dicom_huge_length_text": "error",
    "dicom_huge_length_in_meta": "error",
    "dicom_huge_length_in_sequence": "error",
    "fits_huge_naxis": "error",
    "fits_huge_naxis_extension": "error",
    "fits_many_cards": "ok",
    "hdf5_many_attributes": "ok",
    "hdf5_many_attributes_compact": "ok",
    "hdf5_huge_attribute": "ok",  # the one attribute is an error value
    "hdf5_huge_attribute_v3": "ok",
    "hdf5_huge_dataset": "ok",
    "hdf5_dims_beyond_int64": "error",  # h5dump fails too
    "netcdf3_huge_dims": "ok",  # ncdump reads it
    "netcdf3_huge_dims_cdf5": "ok",
    "netcdf3_dims_beyond_int64": "ok",
    "netcdf3_huge_numrecs": "ok",
    "netcdf3_huge_attribute": "error",
    "netcdf3_truncated_header": "error",
    "empty": "error",
}

#: The C tool that is ground truth for each format: a file it reads must not be an error row.
C_TOOLS = {
    "dicom": ["dcmdump", "-q"],
    "fits": ["fitsverify", "-q", "-e"],
    "hdf5": ["h5dump", "-H"],
    "netcdf": ["ncdump", "-h"],
}


@pytest.fixture(scope="session")
def cases(tmp_path_factory):
    """Every adversarial case written to one folder: name -> path."""
    folder = tmp_path_factory.mktemp("adversarial")
    paths = {}
    for name, make in ALL_CASES.items():
        make(str(folder / name))
        paths[name] = str(folder / name)
    return paths


def rows_of(path: str, fmt: str | None = None) -> dict[str, list[dict]]:
    """catalog_rows for one file, detected from its bytes (or forced to ``fmt``)."""
    (info,) = list(list_input(path))
    detected = detect(info) if fmt is None else Detected(info, fmt, _head(path))
    return catalog_rows(detected)


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096)


def check_rows(rows: dict[str, list[dict]], path: str) -> dict:
    """The guarantees every file's rows keep; returns the ``files`` row."""
    (row,) = rows["files"]
    assert row["path"] == path
    assert row["status"] in ("ok", "error", "unsupported")
    if row["status"] == "error":
        assert row["error"] and ERROR.match(row["error"]), row["error"]
    else:
        assert row["error"] is None
    json.loads(row["metadata"])
    for table, table_rows in rows.items():  # the sink can write them
        if table in schemas.TABLES:
            pa.Table.from_pylist(table_rows, schema=schemas.TABLES[table])
    return row


@pytest.mark.parametrize("name", sorted(set(ALL_CASES) - SLOW_CASES))
def test_case_gives_one_row_in_bounded_memory(cases, name):
    path = cases[name]
    tracemalloc.start()
    try:
        rows = rows_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    row = check_rows(rows, path)
    if name in EXPECTED_STATUS:
        assert row["status"] == EXPECTED_STATUS[name], row["error"]
    if case_format(name) and row["format"] != "unknown":
        assert row["format"] == case_format(name) or name.startswith("netcdf4_"), row["format"]
    # Nothing allocated in proportion to a claimed size: a small multiple of the file at most.
    assert peak < 64 * MiB + 16 * os.path.getsize(path), f"{peak / MiB:.0f} MiB"


def test_many_attributes_and_cards_in_seconds(cases, capsys):
    """100,000 HDF5 attributes and 100,000 FITS cards are all kept, in linear time (measured and
    printed, not asserted), without growing the process by more than a few times the file."""
    report = []
    for name in ("hdf5_many_attributes", "fits_many_cards", "dicom_deep_sequences"):
        path = cases[name]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        rows = rows_of(path)
        seconds = time.perf_counter() - start
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss
        row = check_rows(rows, path)
        assert row["status"] == "ok", row["error"]
        assert growth < 256 * MiB + 32 * os.path.getsize(path)
        report.append(f"{name}: {seconds:.2f} s, max RSS growth {growth / MiB:.0f} MiB")
    attributes = json.loads(files_row_metadata(cases["hdf5_many_attributes"]))["attributes"]
    assert len(attributes) == 100_000 and attributes["a099999"] == 99_999
    (fits_row,) = rows_of(cases["fits_many_cards"])["fits"]
    assert len(json.loads(fits_row["header"])) == 100_003
    with capsys.disabled():
        print("\n" + "\n".join(report))


def files_row_metadata(path: str) -> str:
    return rows_of(path)["files"][0]["metadata"]


def test_claims_are_reported_not_allocated(cases):
    hdf5_row = rows_of(cases["hdf5_huge_attribute"])["hdf5"][0]
    value = json.loads(hdf5_row["attributes"])["huge_claim"]
    assert "1073741824 bytes" in value["error"]
    assert json.loads(hdf5_row["attributes"])["after"] == "still readable"
    nc = rows_of(cases["netcdf3_huge_dims"])
    assert json.loads(nc["files"][0]["metadata"])["dimensions"]["/"]["huge_dim"]["size"] == 2**31 - 1
    assert {r["variable"]: r["shape"] for r in nc["netcdf"]}["v"] == [2, 2**31 - 1]
    beyond = rows_of(cases["netcdf3_dims_beyond_int64"])
    assert {r["variable"]: r["shape"] for r in beyond["netcdf"]}["v"] is None
    fits = rows_of(cases["fits_huge_naxis"])
    assert "1000000000000 bytes of data" in fits["files"][0]["error"]
    assert fits["fits"][0]["shape"] == [10**12]  # what the header says is kept
    error = rows_of(cases["dicom_huge_length"])["files"][0]["error"]
    assert "4294967280 bytes" in error


@pytest.mark.parametrize("name", ["dicom_deep_sequences", "dicom_deep_sequences_defined"])
def test_deep_sequences_keep_every_level(cases, name):
    """Every level is kept; every 100th holds its items as JSON text (json.loads them)."""
    limit = sys.getrecursionlimit()
    (row,) = rows_of(cases[name])["dicom"]
    depth, level = 0, json.loads(row["tags"])  # Python's default recursion limit suffices
    while "0040A730" in level:
        sequence = level["0040A730"]
        items = json.loads(sequence["NestedJSON"]) if "NestedJSON" in sequence else sequence["Value"]
        level = items[0]
        depth += 1
    assert depth == 1000 and level["00080100"]["Value"] == ["DEEP"]
    assert sys.getrecursionlimit() == limit


def test_deeper_than_the_limit_is_an_error_row(tmp_path):
    from tests.adversarial import _dicom_body, _dicom_meta, _nested_defined, _nested_undefined, _write

    for kind, nested in (("undefined", _nested_undefined), ("defined", _nested_defined)):
        path = str(tmp_path / kind)
        _write(path, _dicom_meta() + _dicom_body() + nested(20_000))
        row = check_rows(rows_of(path), path)
        assert row["error"] == "InvalidDicomError: sequences nested more than 1000 levels deep"


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_truncated_at_every_offset(tmp_path, fmt):
    """The seed file cut at the first 140 offsets and at 60 more spread over the file."""
    data = valid_bytes(fmt)
    offsets = sorted(set(range(140)) | set(range(0, len(data), max(1, len(data) // 60))))
    path = str(tmp_path / "cut")
    for offset in offsets:
        with open(path, "wb") as f:
            f.write(data[:offset])
        row = check_rows(rows_of(path), path)
        assert row["status"] != "ok" or fmt in ("netcdf3", "fits") or offset == len(data), offset


@pytest.mark.parametrize("fmt", sorted(registry()))
@pytest.mark.parametrize("content", [b"", b"\0", b"CDF\x01", b"\x89HDF\r\n\x1a\n", b"SIMPLE  =  T"])
def test_any_extractor_on_tiny_files(tmp_path, fmt, content):
    """Each extractor, whatever the detector said, on a few bytes: an error row, not a crash."""
    path = str(tmp_path / "tiny")
    with open(path, "wb") as f:
        f.write(content)
    info = FileInfo(path=path, size=len(content))
    row = check_rows(catalog_rows(Detected(info, fmt, content)), path)
    assert row["status"] == "error"


def _c_tool_reads(fmt: str, path: str) -> bool | None:
    tool = C_TOOLS.get(fmt)
    if tool is None or shutil.which(tool[0]) is None:
        return None
    try:
        done = subprocess.run([*tool, path], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    return done.returncode == 0


@pytest.mark.parametrize("name", sorted(set(ALL_CASES) - SLOW_CASES))
def test_a_file_the_c_tool_reads_is_not_an_error(cases, name):
    row = rows_of(cases[name])["files"][0]
    reads = _c_tool_reads(row["format"], cases[name])
    if reads is None:
        pytest.skip(f"no C tool for {row['format']}")
    if reads:
        assert row["status"] != "error", row["error"]


def test_pipeline_end_to_end(cases, tmp_path):
    """The whole adversarial folder through the pipeline: one row per file, as in-process."""
    folder = os.path.dirname(next(iter(cases.values())))
    run_catalog([folder], tmp_path / "out")
    by_name = files_by_name(tmp_path / "out")
    assert sorted(by_name) == sorted(os.listdir(folder))
    for name, expected in EXPECTED_STATUS.items():
        assert by_name[name]["status"] == expected, (name, by_name[name]["error"])
