"""The whole pipeline on a generated corpus, read back with pyarrow and DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import os

import fsspec
import pyarrow.parquet as pq
import pytest

from pipelines._version import __version__
from tests.catalog_helpers import duck, files_by_name, metadata, read_table, run_catalog
from transforms import schemas

EXPECTED = {  # file name -> (format, status)
    "ct_chest.dcm": ("dicom", "ok"),
    "mr_brain_implicit.dcm": ("dicom", "ok"),
    "m31_sample.fits": ("fits", "ok"),
    "nexus_scan.h5": ("hdf5", "ok"),
    "sst_cf.nc": ("netcdf", "ok"),
    "precip_classic.nc": ("netcdf", "ok"),
    "truncated_scan.h5": ("hdf5", "error"),
    "notes.txt": ("unknown", "unsupported"),
    "really_fits.h5": ("fits", "ok"),
    "scan.txt": ("dicom", "ok"),
    "empty.dat": ("unknown", "error"),
    "garbage.fits": ("fits", "error"),
}


@pytest.fixture(scope="module")
def catalog(mixed_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog")
    manifest = run_catalog([mixed_corpus], out)
    return out, manifest


def comparable(rows, drop=("extracted_at", "first_seen", "extract_seconds")):
    return sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, default=str, sort_keys=True) for r in rows)


def test_every_file_has_exactly_one_row(catalog, mixed_corpus):
    out, _ = catalog
    rows = read_table(out, "files").to_pylist()
    on_disk = sorted(str(p) for p in mixed_corpus.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in rows) == on_disk
    assert {k: (v["format"], v["status"]) for k, v in files_by_name(out).items()} == EXPECTED


def test_tables_have_the_contract_schemas(catalog):
    out, _ = catalog
    for name, schema in schemas.TABLES.items():
        written = pq.read_schema(next((out / name).glob("*.parquet")))
        assert written.remove_metadata().equals(schema, check_metadata=False), name


def test_error_rows_say_why_and_ok_rows_do_not(catalog):
    out, _ = catalog
    by_name = files_by_name(out)
    for name, row in by_name.items():
        assert row["metadata"] is not None
        json.loads(row["metadata"])
        if row["status"] == "error":
            assert row["error"] and ": " in row["error"] or row["error"].isidentifier(), (name, row["error"])
        else:
            assert row["error"] is None, name
    assert by_name["empty.dat"]["error"].startswith("EmptyFileError")
    assert by_name["notes.txt"]["format_version"] is None


def test_files_columns(catalog, mixed_corpus):
    out, _ = catalog
    row = files_by_name(out)["m31_sample.fits"]
    path = mixed_corpus / "fits" / "m31_sample.fits"
    assert row["size_bytes"] == path.stat().st_size
    assert abs(row["modified"].timestamp() - path.stat().st_mtime) < 1e-3
    assert row["modified"].tzinfo is not None
    assert row["extracted_at"] > dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    assert row["extractor_version"] == __version__


def test_duckdb_reads_every_table_and_parses_metadata(catalog):
    out, _ = catalog
    (n, valid) = duck(out, "select count(*), count(*) filter (where json_valid(metadata)) from {files}")[0]
    assert n == valid == len(EXPECTED)
    assert duck(out, "select modality, count(*) from {dicom} group by 1 order by 1") == [("CT", 2), ("MR", 1)]
    titles = duck(
        out,
        "select json_extract_string(metadata, '$.attributes.title') from {files} "
        "where path like '%sst_cf.nc'",
    )
    assert titles == [("sample sea surface temperature",)]


def test_dicom_rows(catalog):
    out, _ = catalog
    rows = {os.path.basename(r["path"]): r for r in read_table(out, "dicom").to_pylist()}
    ct = rows["ct_chest.dcm"]
    assert ct["modality"] == "CT"
    assert ct["sop_instance_uid"] == "1.2.826.0.1.3680043.8.498.100.1.1"
    assert ct["study_date"] == dt.date(2024, 3, 15)
    assert (ct["rows"], ct["columns"], ct["number_of_frames"]) == (32, 32, None)
    assert ct["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    tags = json.loads(ct["tags"])
    assert tags["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"
    assert "7FE00010" not in tags or "Value" not in tags["7FE00010"]
    assert rows["mr_brain_implicit.dcm"]["transfer_syntax_uid"] == "1.2.840.10008.1.2"
    assert files_by_name(out)["ct_chest.dcm"]["format_version"] == "Explicit VR Little Endian"


def test_fits_rows(catalog):
    out, _ = catalog
    rows = [r for r in read_table(out, "fits").to_pylist() if r["path"].endswith("m31_sample.fits")]
    rows.sort(key=lambda r: r["hdu_index"])
    assert [(r["hdu_index"], r["hdu_type"], r["extname"]) for r in rows] == [
        (0, "PRIMARY", None),
        (1, "IMAGE", "SCI"),
        (2, "BINTABLE", "CATALOG"),
    ]
    assert rows[0]["shape"] == [16, 16] and rows[0]["bitpix"] == 16 and rows[0]["naxis"] == 2
    assert rows[1]["shape"] == [8, 4]  # NAXIS1..NAXISn, as in the header
    header = json.loads(rows[0]["header"])
    cards = {c["keyword"]: c for c in header}
    assert cards["TELESCOP"]["value"] == "SAMPLE-T" and cards["TELESCOP"]["comment"] == "telescope"
    assert cards["SIMPLE"]["value"] is True and cards["EXPTIME"]["value"] == 30.0
    assert any(c["keyword"] == "HISTORY" for c in header)


def test_hdf5_rows(catalog):
    out, _ = catalog
    rows = {r["object_path"]: r for r in read_table(out, "hdf5").to_pylist() if r["path"].endswith("nexus_scan.h5")}
    assert rows["/entry"]["kind"] == "group"
    counts = rows["/entry/data/counts"]
    assert (counts["kind"], counts["shape"], counts["dtype"], counts["chunks"], counts["compression"]) == (
        "dataset", [8, 8], "int32", [4, 8], "gzip",
    )
    assert json.loads(counts["attributes"]) == {"units": "counts"}
    assert rows["/entry/data/x"]["chunks"] is None
    assert rows["/entry/data_link"]["kind"] == "soft_link"
    assert rows["/entry/data_link"]["link_target"] == "/entry/data"
    assert "/" not in rows


def test_netcdf_rows(catalog):
    out, _ = catalog
    rows = read_table(out, "netcdf").to_pylist()
    sst = {(r["group"], r["variable"]): r for r in rows if r["path"].endswith("sst_cf.nc")}
    assert set(sst) == {("/", "time"), ("/", "lat"), ("/", "lon"), ("/", "sst"), ("/quality", "sst_flag")}
    v = sst[("/", "sst")]
    assert (v["dimensions"], v["shape"], v["dtype"], v["units"], v["standard_name"]) == (
        ["time", "lat", "lon"], [2, 4, 5], "float32", "K", "sea_surface_temperature",
    )
    assert json.loads(v["attributes"])["_FillValue"] == -999.0
    classic = [r for r in rows if r["path"].endswith("precip_classic.nc")]
    assert {r["variable"] for r in classic} == {"time", "precip"}
    assert not [r for r in read_table(out, "hdf5").to_pylist() if r["path"].endswith(".nc")]
    meta = metadata(files_by_name(out)["sst_cf.nc"])
    assert meta["dimensions"]["/"]["time"] == {"size": 2, "unlimited": True}
    assert files_by_name(out)["sst_cf.nc"]["format_version"] == "NETCDF4"
    assert files_by_name(out)["precip_classic.nc"]["format_version"] == "NETCDF3_CLASSIC"


def test_manifest(catalog):
    out, manifest = catalog
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for key in ("started_at", "finished_at", "options", "files_total", "bytes_total", "counts"):
        assert key in manifest
    assert manifest["files_total"] == len(EXPECTED)
    assert manifest["counts"]["hdf5"] == {"error": 1, "ok": 1}
    assert manifest["rows"]["files"] == len(EXPECTED)
    assert not [p for p in out.iterdir() if p.name.startswith(".metaextract-staging")]


def test_rerun_replaces_tables_and_keeps_other_files(mixed_corpus, tmp_path):
    out = tmp_path / "out"
    run_catalog([mixed_corpus / "fits"], out)
    (out / "README.txt").write_text("mine")
    (out / "files" / "stale.parquet").write_bytes(b"old")
    run_catalog([mixed_corpus / "netcdf"], out)
    assert (out / "README.txt").read_text() == "mine"
    assert not (out / "files" / "stale.parquet").exists()
    assert sorted(os.path.basename(r["path"]) for r in read_table(out, "files").to_pylist()) == [
        "precip_classic.nc", "sst_cf.nc",
    ]
    assert read_table(out, "fits").num_rows == 0  # an empty table still reads


def test_multi_processing_runner_gives_the_same_catalog(catalog, mixed_corpus, tmp_path):
    out, _ = catalog
    other = tmp_path / "mp"
    run_catalog([mixed_corpus], other, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    for table in schemas.TABLES:
        assert comparable(read_table(other, table).to_pylist()) == comparable(read_table(out, table).to_pylist()), table


def _strip_paths(rows, prefix):
    return comparable([{**r, "path": r["path"].split(prefix, 1)[-1]} for r in rows], drop=("extracted_at", "first_seen", "modified", "etag", "extract_seconds", "bytes_read", "read_requests"))


def test_memory_filesystem(catalog, mixed_corpus, tmp_path):
    out, _ = catalog
    fs = fsspec.filesystem("memory")
    for p in mixed_corpus.rglob("*"):
        if p.is_file():
            fs.pipe(f"/pipeline-test/{p.relative_to(mixed_corpus)}", p.read_bytes())
    try:
        mem_out = tmp_path / "mem"
        run_catalog(["memory://pipeline-test"], mem_out)
        for table in schemas.TABLES:
            assert _strip_paths(read_table(mem_out, table).to_pylist(), "pipeline-test/") == _strip_paths(
                read_table(out, table).to_pylist(), str(mixed_corpus) + "/"
            ), table
    finally:
        fs.rm("/pipeline-test", recursive=True)


def test_s3_via_local_server(catalog, mixed_corpus, s3_server, tmp_path):
    out, _ = catalog
    endpoint, storage_options = s3_server
    fs = fsspec.filesystem("s3", **storage_options)
    fs.mkdir("metaextract-test")
    for p in mixed_corpus.rglob("*"):
        if p.is_file():
            fs.pipe(f"metaextract-test/corpus/{p.relative_to(mixed_corpus)}", p.read_bytes())
    s3_out = "s3://metaextract-test/catalog"
    run_catalog(["s3://metaextract-test/corpus"], s3_out, "--storage_options", json.dumps(storage_options))
    local = tmp_path / "from-s3"
    fs.get("metaextract-test/catalog", str(local), recursive=True)
    for table in schemas.TABLES:
        got = pq.read_table(local / table).to_pylist()
        assert all(r["path"].startswith("s3://metaextract-test/corpus/") for r in got), table
        assert _strip_paths(got, "corpus/") == _strip_paths(
            read_table(out, table).to_pylist(), str(mixed_corpus) + "/"
        ), table
    manifest = json.loads((local / "manifest.json").read_text())
    assert endpoint not in json.dumps(manifest["options"].get("storage_options", {}))


def test_catalog_writer_writes_a_shard_when_pending_rows_hold_too_much_text(tmp_path):
    """Rows with huge JSON (files with 100,000 attributes) do not pile up until 50,000 rows."""
    from transforms import sink

    writer = sink.CatalogWriterFn({"hdf5": schemas.TABLES["hdf5"]}, str(tmp_path), max_rows=50_000)
    acc = writer.create_accumulator()
    big = "x" * (sink.MAX_PENDING_BYTES // 4 + 1)
    for i in range(9):
        writer.add_input(acc, ("hdf5", {"path": f"/f{i}", "object_path": "/", "kind": "group", "attributes": big}))
    assert len(acc["shards"]) == 2  # after rows 4 and 8
    assert len(acc["pending"]["hdf5"]) == 1


def test_catalog_writer_takes_each_files_rows_as_one_element(tmp_path):
    """``FILE_ROWS``: one dict per file (tables -> rows); keys that are not tables are ignored."""
    from transforms import sink

    writer = sink.CatalogWriterFn({"hdf5": schemas.TABLES["hdf5"]}, str(tmp_path))
    acc = writer.create_accumulator()
    for name in ("a", "b"):
        rows = [{"path": f"/{name}.h5", "object_path": p, "kind": "group"} for p in ("/", "/g")]
        writer.add_input(acc, (sink.FILE_ROWS, {"hdf5": rows, "dicom": [], "_governor": [{"checks": 1}]}))
    (shard,) = writer.extract_output(acc)["shards"]
    assert (shard["table"], shard["rows"]) == ("hdf5", 4)
    assert sorted(pq.read_table(shard["path"]).column("path").to_pylist()) == ["/a.h5", "/a.h5", "/b.h5", "/b.h5"]


def test_catalog_writer_keeps_each_files_rows_in_one_shard(tmp_path):
    """A batch of files (FILE_ROWS): a shard is written between files, never inside one file's rows
    (the roll-ups of carried-forward shards count each file once per shard)."""
    from transforms import sink
    from transforms.work import FileRows

    writer = sink.CatalogWriterFn({"hdf5": schemas.TABLES["hdf5"]}, str(tmp_path), max_rows=2)
    acc = writer.create_accumulator()
    batch = FileRows()
    for name, n in (("a", 3), ("b", 1), ("c", 2), ("d", 1)):
        batch.extend({"hdf5": [{"path": f"/{name}.h5", "object_path": f"/{i}", "kind": "group"} for i in range(n)]})
    writer.add_input(acc, (sink.FILE_ROWS, batch))
    shards = writer.extract_output(acc)["shards"]
    paths = [sorted(set(pq.read_table(s["path"]).column("path").to_pylist())) for s in shards]
    assert paths == [["/a.h5"], ["/b.h5", "/c.h5"], ["/d.h5"]]


def test_file_rows_pickle_compressed_and_equal():
    """A file's rows travel between stages compressed (the in-process runner holds them all)."""
    import pickle

    from transforms.work import FileRows

    rows = {"files": [{"path": f"/f{i}", "metadata": json.dumps({"k": ["v" * 50] * 200})} for i in range(20)]}
    packed = pickle.dumps(FileRows(rows))
    assert len(packed) * 5 < len(pickle.dumps(rows))
    back = pickle.loads(packed)
    assert type(back) is FileRows and back == rows


def test_small_file_rows_pickle_plain():
    import pickle

    from transforms.work import FileRows

    rows = {"files": [{"path": "/a", "size_bytes": 1}]}
    back = pickle.loads(pickle.dumps(FileRows(rows)))
    assert type(back) is FileRows and back == rows


def test_file_rows_encoded_once_and_again_after_a_change():
    """The runner pickles an element at each transform it passes (size sampling): encoded once,
    unless rows were added meanwhile."""
    import pickle

    from transforms.work import FileRows

    batch = FileRows({"files": [{"path": "/a", "metadata": "x" * 10_000}]})
    first = pickle.dumps(batch)
    assert pickle.dumps(batch) == first and "_encoded" in batch.__dict__
    batch.extend({"files": [{"path": "/b", "metadata": "{}"}]})
    assert [r["path"] for r in pickle.loads(pickle.dumps(batch))["files"]] == ["/a", "/b"]
    batch["hdf5"] = []
    assert set(pickle.loads(pickle.dumps(batch))) == {"files", "hdf5"}


def test_shards_written_upstream_make_the_same_catalog(tmp_path):
    """WriteShardsFn (rows written where they are made, WRITTEN) and FILE_ROWS (rows sent to
    the writer's combine) publish the same tables and counts."""
    import apache_beam as beam

    from transforms import sink
    from transforms.work import FileRows

    tables = {"files": schemas.TABLES["files"], "hdf5": schemas.TABLES["hdf5"]}
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def batch(names):
        rows = FileRows()
        for name in names:
            rows.extend({
                "files": [{"path": f"/{name}.h5", "format": "hdf5", "size_bytes": 10, "status": "ok",
                           "metadata": "{}", "extracted_at": now, "extractor_version": "t", "change": "new"}],
                "hdf5": [{"path": f"/{name}.h5", "object_path": "/g", "kind": "group"}],
                "_governor": [{"checks": 1}],
            })
        return rows

    manifests = {}
    for way in ("written", "file_rows"):
        out = str(tmp_path / way)
        writer = sink.WriteCatalog(out, tables, {"options": {}, "started_at": now.isoformat()})
        with beam.Pipeline() as p:
            batches = p | beam.Create([batch("ab"), batch("c")])
            if way == "written":
                inputs = {sink.WRITTEN: batches | beam.ParDo(sink.WriteShardsFn(tables, writer.staging))}
            else:
                inputs = {sink.FILE_ROWS: batches}
            _ = inputs | writer
        manifests[way] = json.loads((tmp_path / way / "manifest.json").read_text())
        assert sorted(read_table(out, "hdf5").column("path").to_pylist()) == ["/a.h5", "/b.h5", "/c.h5"]
    for key in ("files_total", "bytes_total", "counts", "changes", "memory_governor"):
        assert manifests["written"].get(key) == manifests["file_rows"].get(key), key
    assert manifests["written"]["files_total"] == 3
    assert manifests["written"]["memory_governor"], "the governor figures among the rows count"


def test_s3_object_names_folder_markers_glob_characters_and_buckets(s3_server, tmp_path):
    """Object stores as a scheduled cloud job meets them: object names that look like
    credentials in free text are kept as they are ("Basic Research/", ASIA...: two such names
    collided and a file was dropped); a folder marker (an empty dir/ object, as the S3
    console's "Create folder" makes) is skipped, not an error row; an existing key with glob
    characters is listed as it is; a file under 16 MiB with a digest and --stats is one request;
    an --output in a bucket that does not exist is a usage error (s3fs created the bucket)."""
    import numpy as np
    from netCDF4 import Dataset

    from pipelines.options import UsageError
    from transforms.listing import InputError, list_inputs

    _, storage_options = s3_server
    fs = fsspec.filesystem("s3", **storage_options)
    fs.mkdir("names")
    sample = os.path.join(os.path.dirname(schemas.__file__), "..", "pipelines", "sample_data")
    fits_bytes = next(open(os.path.join(r, f), "rb").read() for r, _, fs_ in os.walk(sample)
                      for f in fs_ if f.endswith(".fits"))
    names = ["lab/Basic Research/2024/obs1.fits", "lab/Basic Research/2024/obs2.fits",
             "lab/R&D&authors=jd/a.fits", "lab/proj&session=4/b.fits",  # query-like, not a query
             "lab/scans/ASIAPACIFIC2024RUN01.fits", "run[2024]/data[1].fits", "run[2024]/data1.fits"]
    for name in names:
        fs.pipe(f"names/{name}", fits_bytes)
    fs.pipe("names/lab/empty_folder/", b"")  # folder markers
    fs.pipe("names/lab/scans/", b"")
    nc = tmp_path / "small.nc"
    with Dataset(nc, "w") as ds:
        ds.createDimension("x", 300_000)
        ds.createVariable("v", "f4", ("x",))[:] = np.arange(300_000, dtype="f4")
    fs.put(str(nc), "names/nc/small.nc")

    opts = json.dumps(storage_options)
    skipped = []
    listed = list_inputs(["s3://names/lab"], storage_options, skipped=skipped)
    assert sorted(listed) == sorted(f"s3://names/{n}" for n in names[:5])
    assert all(info.open_path is None for info in listed.values())
    assert sorted((s.path, s.reason) for s in skipped) == [
        ("s3://names/lab/empty_folder/", "not a regular file (folder marker)"),
        ("s3://names/lab/scans/", "not a regular file (folder marker)"),
    ]
    skipped = []
    list_inputs(["s3://names/lab/**"], storage_options, skipped=skipped)  # a glob: each marker once
    assert sorted(s.path for s in skipped) == ["s3://names/lab/empty_folder/", "s3://names/lab/scans/"]
    with pytest.raises(InputError):  # nothing but a marker: matches no file
        list_inputs(["s3://names/lab/empty_folder/"], storage_options)
    assert list(list_inputs(["s3://names/run[2024]/data[1].fits"], storage_options)) == ["s3://names/run[2024]/data[1].fits"]
    assert len(list_inputs(["s3://names/run[2024]"], storage_options)) == 2  # an existing prefix
    assert len(list_inputs(["s3://names/lab/*/2024/obs?.fits"], storage_options)) == 2  # a glob

    out = tmp_path / "out"
    run_catalog(["s3://names/nc"], out, "--storage_options", opts, "--stats")
    (row,) = read_table(out, "files").to_pylist()
    assert row["status"] == "ok", row["error"]
    assert row["read_requests"] <= 3  # the whole file in one request (its header read before)

    with pytest.raises(UsageError, match="bucket 'no-such-bucket' does not exist"):
        run_catalog(["s3://names/nc"], "s3://no-such-bucket/catalog", "--storage_options", opts)
    assert not fs.exists("no-such-bucket")
