"""Issue 3 end to end: checksums, statistics, data units of large files, bytes read, manifest.

Files are written by the real libraries; checksums are compared with the command-line tools,
statistics with numpy on the library's own full read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import duckdb
import h5py
import netCDF4
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.catalog import run
from tests.catalog_helpers import TEST_BUDGET
from transforms.detect import detect
from transforms.extract import ExtractOptions, catalog_rows
from transforms.formats.base import FileInfo
from transforms.listing import list_input
from transforms.work import Settings

MiB = 1 << 20


def _table(out, name):
    return pq.read_table(out / name).to_pylist()


def _run(tmp_path, inputs, *flags):
    out = tmp_path / "catalog"
    budget = () if "--max_memory_per_worker_mb" in flags else TEST_BUDGET
    run(["--output", str(out), *sum((["--input", str(i)] for i in inputs), []), *budget, *flags])
    return out, json.loads((out / "manifest.json").read_text())


def _hdf5(path, shape=(300, 1000), chunks=(50, 1000), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(10, 3, size=shape).astype("float32")
    data[rng.random(shape) < 0.01] = np.nan
    with h5py.File(path, "w") as f:
        f.create_dataset("temperature", data=data, chunks=chunks)
        f.create_dataset("counts", data=rng.integers(0, 1000, size=(4000,), dtype="int32"))
        f.create_dataset("label", data="not numeric")
    return data


def _netcdf(path, seed=1):
    rng = np.random.default_rng(seed)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 500)
        v = ds.createVariable("sst", "f4", ("time", "x"), fill_value=-999.0, chunksizes=(16, 500))
        data = rng.normal(280, 5, size=(600, 500)).astype("float32")
        data[rng.random(data.shape) < 0.02] = -999.0
        v[:] = data
    with netCDF4.Dataset(path) as ds:
        return ds["sst"][:]


def _tool(cmd, path):
    if shutil.which(cmd) is None:
        pytest.skip(f"{cmd} is not installed")
    return subprocess.run([cmd, str(path)], check=True, capture_output=True, text=True).stdout.split()[0]


@pytest.mark.parametrize("algorithm,tool", [("blake3", "b3sum"), ("sha256", "sha256sum"), ("md5", "md5sum")])
def test_small_file_checksum_matches_the_command_line_tool(tmp_path, algorithm, tool):
    path = tmp_path / "a.h5"
    _hdf5(path)
    info = FileInfo(str(path), path.stat().st_size)
    rows = catalog_rows(detect(info), settings=Settings(checksum=algorithm))
    assert rows["files"][0]["checksum"] == f"{algorithm}:{_tool(tool, path)}"
    assert rows["files"][0]["bytes_read"] >= path.stat().st_size


def test_crc32c_as_object_stores_report_it(tmp_path):
    import google_crc32c

    path = tmp_path / "a.h5"
    _hdf5(path)
    data = path.read_bytes()
    for threshold in (64 * MiB, 100_000):  # one unit, then byte ranges merged
        settings = Settings(checksum="crc32c", chunk_threshold_bytes=threshold, unit_bytes=threshold)
        rows = catalog_rows(detect(FileInfo(str(path), len(data))), settings=settings)
        assert rows["files"][0]["checksum"] == f"crc32c:{google_crc32c.value(data):08x}"


def _expected(values):
    a = np.ma.masked_invalid(np.ma.asarray(values, dtype="float64")).compressed()
    return {
        "stat_count": a.size,
        "stat_min": a.min(),
        "stat_max": a.max(),
        "stat_mean": a.mean(),
        "stat_std": a.std(),
    }


def _assert_stats(row, values, nan_count):
    for key, value in _expected(values).items():
        assert row[key] == pytest.approx(value, rel=1e-9), key
    assert row["stat_nan_count"] == nan_count


@pytest.mark.parametrize("threshold", [64 * MiB, 200_000])
def test_statistics_of_small_and_split_files_equal_numpy(tmp_path, threshold):
    h5 = tmp_path / "a.h5"
    data = _hdf5(h5)
    nc = tmp_path / "b.nc"
    sst = _netcdf(nc)
    settings = Settings(checksum="blake3", stats=True, chunk_threshold_bytes=threshold, unit_bytes=threshold)
    rows = catalog_rows(detect(FileInfo(str(h5), h5.stat().st_size)), settings=settings)
    by_path = {r["object_path"]: r for r in rows["hdf5"]}
    _assert_stats(by_path["/temperature"], data, int(np.isnan(data).sum()))
    assert by_path["/label"].get("stat_count") is None
    rows = catalog_rows(detect(FileInfo(str(nc), nc.stat().st_size)), settings=settings)
    (row,) = [r for r in rows["netcdf"] if r["variable"] == "sst"]
    _assert_stats(row, sst.compressed(), int(np.ma.count_masked(sst)))


@pytest.mark.parametrize("checksum", ["crc32c", "blake3"])
def test_pipeline_splits_a_large_file_into_units_and_merges_them(tmp_path, checksum):
    """crc32c: byte ranges and statistics units apart; blake3: one unit, one pass over the
    file (the digest takes the statistics' reads)."""
    import google_crc32c

    h5 = tmp_path / "in" / "big.h5"
    h5.parent.mkdir()
    data = _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))  # 3.2 MB
    small = tmp_path / "in" / "small.h5"
    _hdf5(small, shape=(10, 10), chunks=(5, 10))
    out, manifest = _run(tmp_path, [tmp_path / "in"], "--stats", "--chunk_threshold_mb", "1", "--checksum", checksum)
    files = {r["path"]: r for r in _table(out, "files")}
    for path in (h5, small):
        expected = _tool("b3sum", path) if checksum == "blake3" else f"{google_crc32c.value(path.read_bytes()):08x}"
        assert files[str(path)]["checksum"] == f"{checksum}:{expected}"
    assert all(r["status"] == "ok" for r in files.values())
    (row,) = [r for r in _table(out, "hdf5") if r["path"] == str(h5) and r["object_path"] == "/temperature"]
    _assert_stats(row, data, int(np.isnan(data).sum()))
    assert manifest["bytes_read"] == sum(r["bytes_read"] for r in files.values())
    assert manifest["read_requests"] == sum(r["read_requests"] for r in files.values())
    assert manifest["bytes_read"] >= h5.stat().st_size + small.stat().st_size
    assert "memory_governor" in manifest
    units = manifest["data_units"]  # the big file's units only: the small one is a single unit
    if checksum == "crc32c":
        assert units["count"] >= 3 and units["bytes"] >= h5.stat().st_size
        assert files[str(h5)]["bytes_read"] > 2 * h5.stat().st_size - 100_000
    else:
        assert units["count"] == 1
        for path in (h5, small):  # each byte once (and the few metadata reads of the library)
            assert path.stat().st_size <= files[str(path)]["bytes_read"] < 1.1 * path.stat().st_size + 100_000
    assert 0 < units["wall_seconds"] < manifest["duration_s"]
    assert not any(k.startswith("data_unit") for k in manifest["memory_governor"])
    assert json.loads(files[str(h5)]["settings"]) == {"checksum": checksum, "stats": True}
    # one line of SQL over the statistics
    sql = f"select stat_mean from '{out}/hdf5/*.parquet' where object_path = '/temperature' and path = '{h5}'"
    assert duckdb.sql(sql).fetchall()[0][0] == pytest.approx(float(np.nanmean(data.astype('float64'))), rel=1e-9)


def test_a_run_without_large_files_has_no_data_unit_branch_and_reads_any_file_whole(tmp_path):
    """The launcher's listing holds no file above the threshold: no data-unit branch in the
    graph. A file that is larger when read (it grew after the listing) is read in one unit."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that

    from pipelines.catalog import CatalogFiles
    from transforms.extract import FILE_ROWS_KEY, GOVERNOR_KEY, LARGE_FILE_ROWS_KEY, ExtractMetadata

    p = beam.Pipeline()
    _ = p | CatalogFiles([str(tmp_path)], str(tmp_path / "out"), {}, data_units=False)
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert not any("SpreadUnits" in n or "JoinUnitsToFile" in n for n in names)

    h5 = tmp_path / "in" / "grown.h5"
    h5.parent.mkdir()
    data = _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))  # 3.2 MB, above a 1 MiB threshold
    (info,) = list_input(str(h5))
    settings = Settings(stats=True, chunk_threshold_bytes=1 << 20, unit_bytes=1 << 20)
    expected = f"blake3:{_tool('b3sum', h5)}"

    def check(batches):
        ((files, (row,)),) = [(b["files"], [r for r in b["hdf5"] if r["object_path"] == "/temperature"]) for b in batches]
        assert files[0]["status"] == "ok" and files[0]["checksum"] == expected
        _assert_stats(row, data, int(np.isnan(data).sum()))

    with beam.Pipeline() as p:
        out = p | beam.Create([[info]]) | ExtractMetadata([], settings, ExtractOptions(file_timeout_s=0), data_units=False)
        assert set(out) == {FILE_ROWS_KEY} and LARGE_FILE_ROWS_KEY not in out and GOVERNOR_KEY not in out
        assert_that(out[FILE_ROWS_KEY], check)


def test_checksum_none_reads_headers_only_of_a_4_gib_file(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:  # contiguous, allocated at the end: a sparse 4 GiB file
        ds = f.create_dataset("x", shape=(1 << 30,), dtype="float32")
        ds[-1] = 1.0
        f.attrs["title"] = "huge"
    size = path.stat().st_size
    assert size > 4 * 10**9
    rows = catalog_rows(detect(FileInfo(str(path), size)), settings=Settings(checksum="none"))
    assert rows["files"][0]["status"] == "ok"
    assert 0 < rows["files"][0]["bytes_read"] < 2 * MiB


def test_header_only_bound_over_s3(tmp_path, s3_server):
    import s3fs

    endpoint, storage_options = s3_server
    fs = s3fs.S3FileSystem(**storage_options)
    fs.mkdir("large-files")
    h5 = tmp_path / "big.h5"
    _hdf5(h5, shape=(4000, 1000), chunks=(100, 1000))  # 16 MB
    nc = tmp_path / "big.nc"
    _netcdf(nc)
    fs.put(str(h5), "large-files/big.h5")
    fs.put(str(nc), "large-files/big.nc")
    out, manifest = _run(
        tmp_path, ["s3://large-files/"], "--checksum", "none", "--storage_options", json.dumps(storage_options)
    )
    files = _table(out, "files")
    assert {r["status"] for r in files} == {"ok"}
    for row in files:
        assert 0 < row["bytes_read"] < 2 * MiB, row["path"]
        assert row["read_requests"] >= 1
    assert manifest["bytes_read"] < 4 * MiB


def test_checksum_and_statistics_over_s3_fetch_each_byte_once(tmp_path, s3_server):
    import s3fs

    _, storage_options = s3_server
    fs = s3fs.S3FileSystem(**storage_options)
    fs.mkdir("one-pass")
    h5 = tmp_path / "big.h5"
    data = _hdf5(h5, shape=(2000, 1000), chunks=(100, 1000))  # 8 MB
    fs.put(str(h5), "one-pass/big.h5")
    out, _ = _run(tmp_path, ["s3://one-pass/"], "--stats", "--chunk_threshold_mb", "2",
                         "--storage_options", json.dumps(storage_options))
    (row,) = _table(out, "files")
    assert row["status"] == "ok", row["error"]
    assert row["checksum"] == f"blake3:{_tool('b3sum', h5)}"
    size = h5.stat().st_size
    assert size <= row["bytes_read"] < size + 2 * MiB  # blocks of the header walk fetched again
    (stats_row,) = [r for r in _table(out, "hdf5") if r["object_path"] == "/temperature"]
    _assert_stats(stats_row, data, int(np.isnan(data).sum()))


def test_settings_change_re_extracts_on_an_incremental_run(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _hdf5(folder / "a.h5", shape=(10, 10), chunks=(5, 10))
    out, first = _run(tmp_path, [folder], "--checksum", "none")
    assert _table(out, "files")[0]["checksum"] is None
    out, second = _run(tmp_path, [folder], "--checksum", "sha256")
    assert second["files_extracted"] == 1
    assert _table(out, "files")[0]["checksum"].startswith("sha256:")
    out, third = _run(tmp_path, [folder], "--checksum", "sha256")
    assert third["files_extracted"] == 0


def test_in_process_and_isolated_extraction_agree(tmp_path):
    path = tmp_path / "a.h5"
    _hdf5(path, shape=(20, 10), chunks=(5, 10))
    from transforms.extract import _Reader

    settings = Settings(checksum="md5", stats=True)
    info = FileInfo(str(path), path.stat().st_size)
    rows = []
    for timeout in (0, 60):
        reader = _Reader(settings, ExtractOptions(file_timeout_s=timeout))
        try:
            result, _ = reader.read(detect(info))
        finally:
            reader.close()
        row = result.rows["files"][0]
        rows.append({k: v for k, v in row.items() if k not in ("extracted_at", "first_seen", "extract_seconds")})
        rows.append(sorted(str(r) for r in result.rows["hdf5"]))
    assert rows[0] == rows[2] and rows[1] == rows[3]
    assert rows[0]["checksum"] == "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def test_units_on_several_threads_equal_units_one_by_one(tmp_path):
    """work.run_units: the same partials, in the order of the units, whatever the threads."""
    from transforms import work

    h5 = tmp_path / "a.h5"
    _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))
    import google_crc32c

    settings = Settings(checksum="crc32c", stats=True, chunk_threshold_bytes=MiB, unit_bytes=MiB // 2)
    fw = work.read_detected(detect(FileInfo(str(h5), h5.stat().st_size)), settings)
    assert len(fw.units) > 4 and {u.kind for u in fw.units} == {"crc32c", "stats"}
    one = work.run_units(fw.units, settings, threads=1)
    three = work.run_units(fw.units, settings, threads=3)
    assert [p.crc_parts for p in three] == [p.crc_parts for p in one]
    assert [p.moments for p in three] == [p.moments for p in one]
    # a thread opens the file once for its units (the metadata reads count on its first unit)
    assert 0 <= sum(p.bytes_read for p in three) - sum(p.bytes_read for p in one) < 3 * 100_000
    assert work._checksum(work.merge_partials(one), settings) == f"crc32c:{google_crc32c.value(h5.read_bytes()):08x}"


@pytest.mark.parametrize("threads,checksum", [("1", "blake3"), ("2", "blake3"), ("2", "sha256")])
def test_pipeline_with_one_or_two_unit_threads(tmp_path, threads, checksum):
    h5 = tmp_path / "in" / "big.h5"
    h5.parent.mkdir()
    data = _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))
    out, manifest = _run(tmp_path, [tmp_path / "in"], "--stats", "--chunk_threshold_mb", "1", "--unit_threads", threads,
                         "--checksum", checksum)
    (file_row,) = _table(out, "files")
    tool = {"blake3": "b3sum", "sha256": "sha256sum"}[checksum]
    assert file_row["checksum"] == f"{checksum}:{_tool(tool, h5)}"
    (row,) = [r for r in _table(out, "hdf5") if r["object_path"] == "/temperature"]
    _assert_stats(row, data, int(np.isnan(data).sum()))
    assert manifest["options"]["unit_threads"] == int(threads)


def test_a_failed_call_of_many_units_runs_each_unit_again_alone(tmp_path, monkeypatch):
    from transforms import child, extract, work

    h5 = tmp_path / "a.h5"
    _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))
    settings = Settings(checksum="crc32c", stats=True, chunk_threshold_bytes=MiB, unit_bytes=MiB // 2)
    units = work.read_detected(detect(FileInfo(str(h5), h5.stat().st_size)), settings).units

    def broken(*args):
        raise ConnectionError("the extraction process went away")

    monkeypatch.setattr(child, "run_units", broken)
    reader = extract._Reader(settings, ExtractOptions(file_timeout_s=0))
    results = reader.run_units(units)
    assert len(results) == len(units) and not any(p.error for p, _ in results)
    merged = work.merge_partials(p for p, _ in results)
    expected = work._checksum(work.merge_partials(work.run_units(units, settings)), settings)
    assert work._checksum(merged, settings) == expected


def test_small_files_go_to_the_extraction_process_in_governed_batches(tmp_path, monkeypatch):
    """ExtractFile sends files in batches (the first of FIRST_BATCH, then the governor's batch
    size); every file gets its own rows, in one call per batch, and each call's complete files
    leave as one element."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from transforms import child, extract

    paths = []
    for i in range(7):
        path = tmp_path / f"f{i}.h5"
        _hdf5(path, shape=(4, 5), chunks=(2, 5), seed=i)
        paths.append(path)
    calls = []
    real = child.read_many

    def counting(items, *args):
        calls.append(len(items))
        results, figures = real(items, *args)
        return results, {**figures, "batch_size_last": 2}  # the governor's next batch size

    monkeypatch.setattr(child, "read_many", counting)
    monkeypatch.setattr(extract, "FIRST_BATCH", 3)
    settings = Settings(checksum="md5")
    fn = extract.ExtractFileFn(settings, ExtractOptions(file_timeout_s=0))
    infos = [FileInfo(str(p), p.stat().st_size) for p in paths]
    with beam.Pipeline() as p:
        done = p | beam.Create(infos, reshuffle=False) | beam.ParDo(fn) | beam.Filter(lambda kv: kv[0] == "done")
        files = done | beam.FlatMap(lambda kv: [(r["path"], r["status"], r["attempts"]) for r in kv[1]["files"]])
        assert_that(files, equal_to([(str(p), "ok", 1) for p in paths]))
        assert_that(done | beam.Map(lambda kv: len(kv[1]["files"])), equal_to([3, 2, 2]), label="OneElementPerCall")
    assert calls == [3, 2, 2]


def _one_pass_files(folder):
    """Files of every format whose arrays are stored as they are (one pass reads each byte
    once), written by their libraries; HDF5 datasets created in another order than their
    names sort, so file order differs from the order the reader lists them."""
    from astropy.io import fits

    rng = np.random.default_rng(7)
    paths = {}
    paths["hdf5"] = folder / "a.h5"
    with h5py.File(paths["hdf5"], "w") as f:
        f.create_dataset("z_first", data=rng.normal(size=(200, 500)).astype("f4"), chunks=(20, 500))
        f.create_dataset("m_contiguous", data=rng.integers(0, 9, size=(300, 300), dtype="i2"))
        f.create_dataset("a_last", data=rng.normal(size=(100, 400)), chunks=(10, 400))
    paths["netcdf4"] = folder / "b.nc"
    _netcdf(paths["netcdf4"])
    paths["classic"] = folder / "c.nc"
    with netCDF4.Dataset(paths["classic"], "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("y", 300)
        ds.createDimension("x", 400)
        for name in ("w", "v", "u"):
            ds.createVariable(name, "f4", ("y", "x"))[:] = rng.normal(size=(300, 400))
    paths["fits"] = folder / "d.fits"
    fits.HDUList([fits.PrimaryHDU(rng.normal(size=(300, 300)).astype(">f4")),
                  fits.ImageHDU(rng.integers(0, 1000, size=(200, 300)).astype(">i2"), name="SCI")]).writeto(paths["fits"])
    return paths


@pytest.mark.parametrize("threshold", [200_000, 64 * MiB])  # data units, or one read of a small file
@pytest.mark.parametrize("algorithm,background", [("blake3", True), ("blake3", False), ("sha256", True)])
def test_checksum_and_statistics_in_one_pass_read_each_byte_once(tmp_path, monkeypatch, threshold, algorithm, background):
    """A sequential digest with --stats: one unit whose statistics' reads feed the digest (on a
    thread of its own, or in the reading thread as for small files). The checksum is the file's
    (command-line tool), the statistics those of a statistics-only run, and the file is read
    once (plus the libraries' metadata reads)."""
    from transforms import work

    monkeypatch.setattr(work, "BACKGROUND_DIGEST_BYTES", 0 if background else 1 << 62)
    tools = {"blake3": "b3sum", "sha256": "sha256sum"}
    for kind, path in _one_pass_files(tmp_path).items():
        info = detect(FileInfo(str(path), path.stat().st_size))
        both = catalog_rows(info, settings=Settings(checksum=algorithm, stats=True,
                                                    chunk_threshold_bytes=threshold, unit_bytes=threshold))
        alone = catalog_rows(info, settings=Settings(checksum="none", stats=True,
                                                     chunk_threshold_bytes=threshold, unit_bytes=threshold))
        (row,) = both["files"]
        assert row["status"] == "ok", (kind, row["error"])
        assert row["checksum"] == f"{algorithm}:{_tool(tools[algorithm], path)}", kind
        size = path.stat().st_size
        assert size <= row["bytes_read"] < size + 200_000, (kind, row["bytes_read"], size)
        table = next(t for t in both if t not in ("files",) and both[t])
        stat_keys = [k for k in both[table][0] if k.startswith("stat_")]
        assert any(r.get("stat_count") for r in both[table]), kind
        assert [{k: r.get(k) for k in stat_keys} for r in both[table]] == \
            [{k: r.get(k) for k in stat_keys} for r in alone[table]], kind


def test_one_pass_digest_of_a_compressed_file_reads_it_again(tmp_path):
    """Filtered (compressed) chunks are read by h5py: the digest reads the file on its own."""
    path = tmp_path / "z.h5"
    data = np.random.default_rng(3).normal(size=(400, 500)).astype("f4")
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=data, chunks=(50, 500), compression="gzip")
    rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)),
                        settings=Settings(checksum="blake3", stats=True, chunk_threshold_bytes=100_000, unit_bytes=100_000))
    assert rows["files"][0]["checksum"] == f"blake3:{_tool('b3sum', path)}"
    (row,) = rows["hdf5"]
    _assert_stats(row, data, 0)


def test_a_thread_reads_the_units_of_one_file_through_one_open_reader(tmp_path, monkeypatch):
    """work.OpenArrays: one open file and array reader per thread for the stats units of one
    file; a unit that fails drops it (the next unit opens the file again and reads right)."""
    from transforms import work
    from transforms.formats.base import Source

    h5 = tmp_path / "a.h5"
    _hdf5(h5, shape=(800, 1000), chunks=(50, 1000))
    settings = Settings(checksum="none", stats=True, chunk_threshold_bytes=MiB, unit_bytes=MiB // 2)
    fw = work.read_detected(detect(FileInfo(str(h5), h5.stat().st_size)), settings)
    assert len(fw.units) > 4 and {u.kind for u in fw.units} == {"stats"}
    opened = []
    real_open = Source.open
    monkeypatch.setattr(Source, "open", lambda self, *a, **k: opened.append(self.url) or real_open(self, *a, **k))
    reference = work.merge_partials(work.run_unit(u, settings) for u in fw.units)  # one open per unit
    assert len(opened) == len(fw.units)
    opened.clear()
    by_one = [work.run_unit(u, settings) for u in fw.units]
    opened.clear()
    one = work.run_units(fw.units, settings, threads=1)
    assert len(opened) == 1 and work.merge_partials(one).moments == reference.moments
    # the first unit counts the reads that opened the file; the others only their data
    assert one[0].bytes_read == by_one[0].bytes_read
    assert all(p.bytes_read < q.bytes_read for p, q in zip(one[1:], by_one[1:]))
    opened.clear()
    two = work.run_units(fw.units, settings, threads=2)
    assert len(opened) <= 2 and work.merge_partials(two).moments == reference.moments

    calls = []
    real_moments = work.slab_moments

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk went away")
        return real_moments(*args, **kwargs)

    monkeypatch.setattr(work, "slab_moments", fail_once)
    opened.clear()
    parts = work.run_units(fw.units, settings, threads=1)
    failed = [p for p in parts if p.error]
    assert len(failed) == 1 and failed[0].error == "OSError: disk went away"
    assert len(opened) == 2  # opened again after the failure
    ok = [p for p, q in zip(parts, one) if not p.error]
    assert [p.moments for p in ok] == [q.moments for p, q in zip(parts, one) if not p.error]


@pytest.mark.parametrize("checksum", ["none", "blake3", "crc32c"])
@pytest.mark.parametrize("kind", ["hdf5", "netcdf4"])
def test_a_small_file_lists_its_arrays_once_for_its_statistics(tmp_path, monkeypatch, kind, checksum):
    """A file read in one unit plans its statistics when it has the file open
    (``Unit.all_arrays``, work.plan_units(whole=True)): one listing of its arrays and one open for
    them, not one to plan and one to read; the same statistics as units planned beforehand."""
    from transforms import work
    from transforms.formats import arrays
    from transforms.formats.base import Source

    path = tmp_path / ("a.h5" if kind == "hdf5" else "a.nc")
    if kind == "hdf5":
        _hdf5(path, shape=(200, 300), chunks=(50, 300))
    else:
        with netCDF4.Dataset(path, "w") as nc:
            nc.createDimension("y", 200)
            nc.createDimension("x", 300)
            v = nc.createVariable("t", "f4", ("y", "x"), fill_value=-999.0)
            data = np.arange(60_000, dtype="f4").reshape(200, 300)
            data[::7] = -999.0
            v[:] = data
    reader = arrays._HDF5Reader if kind == "hdf5" else arrays._NetCDF4Reader
    listings = []
    real_arrays = reader.arrays
    monkeypatch.setattr(reader, "arrays", lambda self: listings.append(1) or real_arrays(self))
    settings = Settings(checksum=checksum, stats=True)
    detected = detect(FileInfo(str(path), path.stat().st_size))
    fw = work.read_detected(detected, settings)
    assert fw.units == [] and fw.rows["files"][0]["status"] == "ok"
    assert len(listings) == 1
    # the same statistics as the units planned beforehand (what a large file gets)
    source = Source(str(path), path.stat().st_size, {}, detected.head, {})
    planned = work.plan_units(detected.info, detected.format, source, settings)
    partial = work.merge_partials(work.run_unit(u, settings) for u in planned)
    table = "hdf5" if kind == "hdf5" else "netcdf"
    rows = {tuple((k, r[k]) for k, _ in key): r for (t, key), _ in partial.moments.items() for r in fw.rows[t]
            if all(r.get(k) == v for k, v in key)}
    assert len(rows) == len(partial.moments) >= 1
    for (t, key), moments in partial.moments.items():
        row = rows[key]
        assert t == table and row["stat_count"] == moments.count
        assert row["stat_mean"] == pytest.approx(moments.mean, rel=1e-12)


def test_a_small_file_with_a_digest_and_statistics_is_read_once_in_one_request(tmp_path):
    """Below work.IN_MEMORY_BYTES a one-pass unit reads the file whole in one read and parses
    its arrays from memory: compressed chunks (read by h5py) are not read a second time for
    the digest; the digest is sha256sum's, the statistics those of a statistics-only run."""
    from transforms import work

    path = tmp_path / "gz.h5"
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=rng.normal(size=(300, 400)), chunks=(50, 400), compression="gzip")
        f.create_dataset("plain", data=np.arange(1000, dtype="i4"))
    size = path.stat().st_size
    assert size < work.IN_MEMORY_BYTES
    detected = detect(FileInfo(str(path), size))
    header = work.read_detected(detected, Settings(checksum="none")).rows["files"][0]
    both = work.read_detected(detected, Settings(checksum="sha256", stats=True))
    stats_only = work.read_detected(detected, Settings(checksum="none", stats=True))
    row = both.rows["files"][0]
    assert row["status"] == "ok" and row["checksum"] == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert row["bytes_read"] == header["bytes_read"] + size
    assert row["read_requests"] == header["read_requests"] + 1
    columns = sorted({c for r in both.rows["hdf5"] for c in r if c.startswith("stat_")})
    assert "stat_mean" in columns
    assert [[r.get(c) for c in columns] for r in both.rows["hdf5"]] == [[r.get(c) for c in columns] for r in stats_only.rows["hdf5"]]


@pytest.mark.parametrize("max_retries, attempts", [(0, 1), (2, 3)])
def test_a_file_that_fails_transiently_in_a_batch_gets_max_retries_more_attempts(tmp_path, monkeypatch, max_retries, attempts):
    """--max_retries N: at most N + 1 attempts, the batch's try included (it was N + 2: the
    file read alone after the batch got N retries of its own)."""
    from transforms import child, extract

    paths = []
    for name in ("a.h5", "b.h5"):
        _hdf5(tmp_path / name, shape=(4, 5), chunks=(2, 5))
        paths.append(tmp_path / name)
    real_many, real_read = child.read_many, child.read

    def transient(result):
        result.rows["files"][0].update(status="error", error="ConnectionError: the store went away", error_kind="transient")
        return result

    def many(items, *args):
        results, figures = real_many(items, *args)
        return [transient(r) if r.rows["files"][0]["path"].endswith("b.h5") else r for r in results], figures

    alone = []

    def one(item, *args):
        alone.append(1)
        result, figures = real_read(item, *args)
        return transient(result), figures

    monkeypatch.setattr(child, "read_many", many)
    monkeypatch.setattr(child, "read", one)
    reader = extract._Reader(Settings(checksum="none"), ExtractOptions(file_timeout_s=0, max_retries=max_retries))
    (ok, _), (failed, _) = reader.read_many([FileInfo(str(p), p.stat().st_size) for p in paths])
    assert ok.rows["files"][0]["status"] == "ok" and ok.rows["files"][0]["attempts"] == 1
    row = failed.rows["files"][0]
    assert row["error_kind"] == "transient" and row["attempts"] == attempts and len(alone) == attempts - 1
