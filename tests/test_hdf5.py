"""HDF5 extractor: fixtures written with h5py, cross-checked against h5dump."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pyarrow as pa
import pytest
from h5py import h5a, h5d, h5p, h5s, h5t, h5z
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import schemas
from transforms.formats import hdf5
from transforms.formats.base import HEAD_BYTES, REMOTE_BLOCK_SIZE, Extraction, Source

H5DUMP = shutil.which("h5dump")
UNKNOWN_FILTER = 305  # HDF5 reserves 256-511 for testing: never a registered filter
needs_h5dump = pytest.mark.skipif(H5DUMP is None, reason="h5dump (hdf5-tools) is not installed")


# --- fixtures ----------------------------------------------------------------------------


def _write_everything(path: Path, raw_only: bool = False) -> None:
    """Nested groups, every dataset layout we report, attributes of many types, links.

    ``raw_only`` leaves out the attribute types the pure-Python reader hands to libhdf5
    (references, variable-length sequences and strings inside compounds, long doubles, time),
    so that the whole file goes through the fast path.
    """
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "kitchen sink"
        f.attrs["version"] = np.int32(3)
        root = f.create_group("grp")
        sub = root.create_group("sub")
        deep = sub.create_group("deeper")
        deep.create_dataset("leaf", data=np.arange(6, dtype="<i2").reshape(2, 3))
        sub.attrs["NX_class"] = "NXentry"

        # dtypes
        cmp_dt = np.dtype([("a", "<i4"), ("b", "<f8"), ("s", h5py.string_dtype())])
        f.create_dataset("compound", (3,), dtype=cmp_dt)
        f.create_dataset("vlen_str", data=np.array(["a", "bb", "ccc"], dtype=h5py.string_dtype()))
        f.create_dataset("fixed_str", data=np.array([b"ab", b"cde"], dtype="S3"))
        f.create_dataset("big_endian", (4,), dtype=">f4")
        f.create_dataset("bools", (2,), dtype=bool)
        f.create_dataset("enum", (2,), dtype=h5py.enum_dtype({"RED": 0, "GREEN": 1}, basetype="u1"))
        f.create_dataset("array_type", (2,), dtype=np.dtype("(3,)f4"))
        f.create_dataset("vlen_int", (2,), dtype=h5py.vlen_dtype("i4"))
        f.create_dataset("refs", (2,), dtype=h5py.ref_dtype)
        f["named_type"] = np.dtype([("x", "<f4"), ("y", "<f4")])
        f.create_dataset("uses_named_type", (2,), dtype=f["named_type"])
        f["named_type"].attrs["doc"] = "a committed datatype"
        f["uses_named_type"].attrs.create("point", np.array((1.0, 2.0), dtype=f["named_type"].dtype),
                                          dtype=f["named_type"])

        # dataspaces and layouts
        f.create_dataset("scalar", data=np.float64(1.5))
        f.create_dataset("null", dtype=h5py.Empty("f4"))
        f.create_dataset("empty_1d", shape=(0,), dtype="i4")
        f.create_dataset("contiguous", data=np.zeros((4, 5), dtype="f8"))
        f.create_dataset("chunked", (100, 20), dtype="f4", chunks=(10, 20))
        f.create_dataset("gzip", (100,), dtype="i8", chunks=(25,), compression="gzip",
                         compression_opts=6, shuffle=True)
        f.create_dataset("lzf", (64, 64), dtype="u2", compression="lzf", fletcher32=True)
        f.create_dataset("unlimited", (5, 3), maxshape=(None, 3), dtype="i4")
        compact = h5p.create(h5p.DATASET_CREATE)
        compact.set_layout(h5d.COMPACT)
        f.create_dataset("compact", data=np.arange(4, dtype="u1"), dcpl=compact)
        if h5z.filter_avail(h5z.FILTER_SZIP):
            f.create_dataset("szip", (16,), dtype="i4", compression="szip")

        # attributes of many types, on a dataset
        ds = f.create_dataset("attrs", data=np.arange(3))
        a = ds.attrs
        a["int"] = np.int64(-7)
        a["uint8"] = np.uint8(200)
        a["float"] = np.float32(0.25)
        a["double"] = 1e300
        a["nan"] = np.nan
        a["inf"] = np.inf
        a["ninf"] = -np.inf
        a["float_array"] = np.array([1.0, np.nan, 3.0])
        a["int_matrix"] = np.arange(6, dtype="i4").reshape(2, 3)
        a["vlen_str"] = "héllo"
        a["vlen_str_array"] = np.array(["x", "yz"], dtype=h5py.string_dtype())
        a["fixed_str"] = np.bytes_(b"fixed")
        a["fixed_utf8"] = np.array("naïve".encode(), dtype=h5py.string_dtype("utf-8", 6))
        a["fixed_str_array"] = np.array([b"a", b"bcd"], dtype="S3")
        a["bytes_binary"] = np.void(b"\x00\xff\x10")
        a["not_utf8"] = np.bytes_(b"\xff\xfe")
        a["bool"] = np.bool_(True)
        a["bool_array"] = np.array([True, False])
        a["enum"] = np.array(2, dtype=h5py.enum_dtype({"R": 0, "G": 1, "B": 2}, basetype="i1"))
        a["compound"] = np.array((1, 2.5, b"xy"), dtype=[("i", "<i4"), ("f", "<f8"), ("s", "S2")])
        a["compound_array"] = np.array([(1, 2.0), (3, np.nan)], dtype=[("i", "<i2"), ("f", "<f4")])
        a["complex"] = np.complex128(1 - 2j)
        a["empty"] = h5py.Empty("f8")
        a["zero_length"] = np.zeros((0,), dtype="i4")
        a["big_endian"] = np.array([1, 2], dtype=">i4")
        a["scalar_1elem"] = np.array([42])
        a["float16"] = np.float16(0.5)
        a["vlen_str_matrix"] = np.array([["a", "b"], ["c", ""]], dtype=h5py.string_dtype())
        a["nul_inside"] = np.bytes_(b"ab\x00cd")
        atype = h5t.py_create(np.dtype("(3,)<i2"))  # a top-level H5T_ARRAY
        attr = h5a.create(ds.id, b"array_type", atype, h5s.create_simple((2,)))
        attr.write(np.array([[1, 2, 3], [4, 5, 6]], dtype="<i2"), mtype=atype)
        for pad, text in ((h5t.STR_SPACEPAD, b"ab    "), (h5t.STR_NULLTERM, b"ab\x00cd\x00")):
            stype = h5t.C_S1.copy()
            stype.set_size(len(text))
            stype.set_strpad(pad)
            attr = h5a.create(ds.id, b"pad%d" % pad, stype, h5s.create(h5s.SCALAR))
            attr.write(np.array(text, dtype=f"S{len(text)}"), mtype=stype)
        if not raw_only:
            a["compound_vlen"] = np.array(
                (7, "text"), dtype=[("n", "<i4"), ("t", h5py.string_dtype())]
            )
            a["vlen_seq"] = np.array([np.arange(2), np.arange(3)], dtype=h5py.vlen_dtype("i4"))
            a["ref"] = f["contiguous"].ref
            a["region_ref"] = f["contiguous"].regionref[0:2]
            a["ref_array"] = np.array([f["scalar"].ref, root.ref], dtype=h5py.ref_dtype)
            a["long_double"] = np.array([1.5, -2.25], dtype=np.longdouble)
        a["datetime"] = np.array(np.datetime64("2024-01-02T03:04:05"),
                                 dtype=h5py.opaque_dtype(np.dtype("M8[s]")))

        # links
        f["hard_alias"] = deep["leaf"]  # one dataset, two names -> two rows
        f["grp_alias"] = sub  # a group with two names: its subtree appears twice
        deep["cycle"] = root  # a hard-link cycle: listed, not followed
        f["root_again"] = f  # a link back to the root
        f["soft"] = h5py.SoftLink("/grp/sub")
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["external"] = h5py.ExternalLink("other.h5", "/some/path")

        # an attribute h5py cannot map to numpy (H5T_TIME) and a dataset of that type
        if not raw_only:
            h5a.create(root.id, b"when", h5t.UNIX_D32LE, h5s.create(h5s.SCALAR))
        h5d.create(f.id, b"time_ds", h5t.UNIX_D32LE, h5s.create_simple((2,)))

        # a third-party filter that is not installed, stored as optional (an ID from the range
        # HDF5 keeps for testing: Blosc's 32001 becomes available once netCDF4 is imported)
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(UNKNOWN_FILTER, h5z.FLAG_OPTIONAL, (0, 0, 0, 0, 5, 1, 1))
        h5d.create(f.id, b"blosc", h5t.NATIVE_INT32, h5s.create_simple((8,)), dcpl=dcpl)

        # names outside ASCII
        f.create_group("grüße").attrs["ünïcode"] = "ok"


def _write_nexus(path: Path, **kwargs) -> None:
    """A NeXus-like file: NX_class on every group, units/long_name on datasets."""
    with h5py.File(path, "w", **kwargs) as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["file_name"] = path.name
        f.attrs["creator"] = "test"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "run 42"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        d = det.create_dataset("data", (10, 64, 64), dtype="u2", chunks=(1, 64, 64),
                               compression="gzip")
        d.attrs["units"] = "counts"
        d.attrs["long_name"] = "detector counts"
        d.attrs["signal"] = np.int32(1)
        d = det.create_dataset("distance", data=1.5)
        d.attrs["units"] = "m"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["axes"] = np.array([b"frame", b".", b"."])
        data["data"] = h5py.SoftLink("/entry/instrument/detector/data")
        d = data.create_dataset("frame", data=np.arange(10))
        d.attrs["units"] = "1"
        many = entry.create_group("many_attrs")  # > 8 attributes: dense storage with libver
        for i in range(40):
            many.attrs[f"a{i:02d}"] = i


def _write_netcdf4(path: Path) -> None:
    """HDF5 as the netCDF library writes it: dimension scales, references in attributes."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", 3)
        time = nc.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        tas = nc.createVariable("tas", "f4", ("time", "lat"), zlib=True)
        tas.long_name = "temperature"
        nc.createGroup("forecast").createVariable("x", "i4", ("lat",))


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hdf5")
    out = {
        "everything": tmp / "everything.h5",
        "nexus": tmp / "nexus.h5",
        "latest": tmp / "latest.h5",
        "userblock": tmp / "userblock.h5",
        "empty": tmp / "empty.h5",
        "huge_attr": tmp / "huge_attr.h5",
        "netcdf4": tmp / "netcdf4.nc",
        "everything_raw": tmp / "everything_raw.h5",
    }
    _write_everything(out["everything"])
    _write_everything(out["everything_raw"], raw_only=True)
    _write_nexus(out["nexus"])
    _write_nexus(out["latest"], libver=("v110", "v110"), track_order=True)
    _write_nexus(out["userblock"], userblock_size=512)
    with open(out["userblock"], "r+b") as fh:
        fh.write(b"not hdf5: a user block written by another tool\n")
    with h5py.File(out["empty"], "w"):
        pass
    _write_netcdf4(out["netcdf4"])
    with h5py.File(out["huge_attr"], "w", libver=("v110", "v110")) as f:  # dense attributes
        g = f.create_group("g")
        g.attrs["huge"] = np.zeros(20_000)  # 160 kB
        g.attrs["small"] = [1, 2]
    return out


def _source(path: Path) -> Source:
    data = path.read_bytes()
    return Source(str(path), len(data), head=data[:HEAD_BYTES])


def _extract(source: Source) -> Extraction:
    out = Extraction("hdf5")
    hdf5.extract(source, out)
    return out


@pytest.fixture(scope="session")
def results(files) -> dict[str, Extraction]:
    return {name: _extract(_source(path)) for name, path in files.items()}


def _rows(out: Extraction) -> dict[str, dict]:
    rows = out.rows.get("hdf5", [])
    by_path = {r["object_path"]: r for r in rows}
    assert len(by_path) == len(rows), "object paths are unique"
    return by_path


def _attrs(row: dict) -> dict:
    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(row["attributes"], parse_constant=no_constants)


# --- rows ----------------------------------------------------------------------------------


def test_rows_fit_the_schema(results):
    for out in results.values():
        rows = out.rows.get("hdf5", [])
        table = pa.Table.from_pylist([r | {"path": "x"} for r in rows], schema=schemas.HDF5)
        assert table.num_rows == len(rows)
        for row in rows:
            assert set(row) == set(schemas.HDF5.names) - {"path"} - set(schemas.STAT_NAMES)
            if row["attributes"] is not None:
                _attrs(row)
        json.dumps(out.metadata, allow_nan=True)  # JSON-able (the caller serialises it)


def test_paths_and_kinds(results):
    rows = _rows(results["everything"])
    kinds = {path: r["kind"] for path, r in rows.items()}
    assert kinds["/grp"] == "group"
    assert kinds["/grp/sub/deeper/leaf"] == "dataset"
    assert kinds["/named_type"] == "datatype"
    assert kinds["/soft"] == "soft_link"
    assert kinds["/dangling"] == "soft_link"
    assert kinds["/external"] == "external_link"
    assert "/" not in kinds
    # An object with two names has two rows; a group's subtree appears under both names.
    assert kinds["/hard_alias"] == "dataset"
    assert kinds["/grp_alias/deeper/leaf"] == "dataset"
    assert rows["/hard_alias"]["shape"] == rows["/grp/sub/deeper/leaf"]["shape"] == [2, 3]
    # A hard-link cycle gets its row and is not followed.
    assert kinds["/grp/sub/deeper/cycle"] == "group"
    assert kinds["/grp_alias/deeper/cycle"] == "group"
    assert not any(p.startswith("/grp/sub/deeper/cycle/") for p in kinds)
    assert "/grp_alias/deeper/cycle/sub" in kinds  # /grp is not an ancestor on this path
    assert kinds["/root_again"] == "group"
    assert not any(p.startswith("/root_again/") for p in kinds)
    assert not any(p.startswith("/grp_alias/deeper/cycle/sub/deeper/cycle/") for p in kinds)
    # Depth-first, names in order (as h5dump prints them).
    paths = list(rows)
    assert paths.index("/grp") < paths.index("/grp/sub") < paths.index("/grp/sub/deeper/leaf")
    assert paths.index("/attrs") < paths.index("/blosc") < paths.index("/grp")
    assert "/grüße" in kinds


def test_links(results):
    rows = _rows(results["everything"])
    soft, ext = rows["/soft"], rows["/external"]
    assert soft["link_target"] == "/grp/sub"
    assert rows["/dangling"]["link_target"] == "/nowhere"
    assert ext["link_target"] == "other.h5:/some/path"
    for r in (soft, ext):
        assert r["attributes"] is None
        assert r["shape"] is r["dtype"] is r["chunks"] is r["compression"] is None
    assert rows["/grp"]["link_target"] is None
    nexus = _rows(results["nexus"])
    assert nexus["/entry/data/data"]["link_target"] == "/entry/instrument/detector/data"


def test_dataset_columns(results):
    rows = _rows(results["everything"])

    def cols(path):
        r = rows[path]
        return r["shape"], r["dtype"], r["chunks"], r["compression"]

    assert cols("/compound") == ([3], "[('a', '<i4'), ('b', '<f8'), ('s', 'O')]", None, None)
    assert cols("/vlen_str") == ([3], "object", None, None)
    assert cols("/fixed_str") == ([2], "|S3", None, None)
    assert cols("/big_endian") == ([4], ">f4", None, None)
    assert cols("/bools") == ([2], "bool", None, None)
    assert cols("/enum") == ([2], "uint8", None, None)
    assert cols("/array_type") == ([2], "('<f4', (3,))", None, None)
    assert cols("/vlen_int") == ([2], "object", None, None)
    assert cols("/refs") == ([2], "object", None, None)
    assert cols("/scalar") == ([], "float64", None, None)
    assert cols("/null") == (None, "float32", None, None)
    assert cols("/empty_1d") == ([0], "int32", None, None)
    assert cols("/contiguous") == ([4, 5], "float64", None, None)
    assert cols("/chunked") == ([100, 20], "float32", [10, 20], None)
    assert cols("/gzip") == ([100], "int64", [25], "gzip")
    shape, dtype, chunks, compression = cols("/lzf")
    assert (shape, dtype, compression) == ([64, 64], "uint16", "lzf") and len(chunks) == 2
    shape, _, chunks, _ = cols("/unlimited")
    assert shape == [5, 3] and len(chunks) == 2  # unlimited dimensions need chunks
    assert cols("/compact") == ([4], "uint8", None, None)
    assert cols("/blosc") == ([8], "int32", [4], f"filter:{UNKNOWN_FILTER}")
    assert cols("/time_ds") == ([2], None, None, None)
    assert rows["/named_type"]["dtype"] == "[('x', '<f4'), ('y', '<f4')]"
    assert rows["/named_type"]["shape"] is None
    assert _attrs(rows["/named_type"]) == {"doc": "a committed datatype"}
    assert cols("/uses_named_type") == ([2], "[('x', '<f4'), ('y', '<f4')]", None, None)
    assert _attrs(rows["/uses_named_type"]) == {"point": {"x": 1.0, "y": 2.0}}
    assert rows["/grp"]["dtype"] is rows["/grp"]["shape"] is None
    if h5z.filter_avail(h5z.FILTER_SZIP):
        assert cols("/szip") == ([16], "int32", [16], "szip")


def test_attribute_values(results):
    rows = _rows(results["everything"])
    a = _attrs(rows["/attrs"])
    assert a["int"] == -7 and a["uint8"] == 200
    assert a["float"] == 0.25 and a["double"] == 1e300
    assert (a["nan"], a["inf"], a["ninf"]) == ("NaN", "Infinity", "-Infinity")
    assert a["float_array"] == [1.0, "NaN", 3.0]
    assert a["int_matrix"] == [[0, 1, 2], [3, 4, 5]]
    assert a["vlen_str"] == "héllo"
    assert a["vlen_str_array"] == ["x", "yz"]
    assert a["fixed_str"] == "fixed"
    assert a["fixed_utf8"] == "naïve"
    assert a["fixed_str_array"] == ["a", "bcd"]
    assert a["bytes_binary"] == {"base64": "AP8Q"}
    assert a["not_utf8"] == {"base64": "//4="}
    assert a["bool"] is True and a["bool_array"] == [True, False]
    assert a["enum"] == "B"
    assert a["compound"] == {"i": 1, "f": 2.5, "s": "xy"}
    assert a["compound_array"] == [{"i": 1, "f": 2.0}, {"i": 3, "f": "NaN"}]
    assert a["compound_vlen"] == {"n": 7, "t": "text"}
    assert a["complex"] == {"real": 1.0, "imag": -2.0}
    assert a["empty"] is None
    assert a["zero_length"] == []
    assert a["vlen_seq"] == [[0, 1], [0, 1, 2]]
    assert a["ref"] == "/contiguous" and a["region_ref"] == "/contiguous"
    # an object with several names: HDF5 picks one of them
    assert a["ref_array"][0] == "/scalar"
    assert a["ref_array"][1] in {"/grp", "/grp/sub/deeper/cycle", "/grp_alias/deeper/cycle"}
    assert a["big_endian"] == [1, 2]
    assert a["scalar_1elem"] == [42]
    assert a["long_double"] == [1.5, -2.25] and a["float16"] == 0.5
    assert a["vlen_str_matrix"] == [["a", "b"], ["c", ""]]
    assert a["nul_inside"] == "ab\x00cd"  # NUL-padded: as stored
    assert a["pad0"] == "ab" and a["pad2"] == "ab"  # NUL-terminated; space padding dropped
    assert a["array_type"] == [[1, 2, 3], [4, 5, 6]]
    assert a["datetime"] == "2024-01-02T03:04:05"
    assert list(a) == sorted(a)  # by name, as h5dump lists them


def test_unreadable_attribute_is_reported_not_fatal(results):
    out = results["everything"]
    grp = _attrs(_rows(out)["/grp"])
    assert grp["when"] == {"error": "TypeError: No NumPy equivalent for TypeTimeID exists"}
    errors = out.metadata["read_errors"]
    assert {"object_path": "/grp", "attribute": "when",
            "error": grp["when"]["error"]} in errors
    assert any(e["object_path"] == "/time_ds" and "attribute" not in e for e in errors)


def test_nexus_attributes(results):
    rows = _rows(results["nexus"])
    assert _attrs(rows["/entry"]) == {"NX_class": "NXentry"}
    assert _attrs(rows["/entry/instrument/detector/data"]) == {
        "long_name": "detector counts", "signal": 1, "units": "counts"}
    assert _attrs(rows["/entry/data"])["axes"] == ["frame", ".", "."]
    assert _attrs(rows["/entry/title"]) == {}
    assert _attrs(rows["/entry/many_attrs"]) == {f"a{i:02d}": i for i in range(40)}


def test_netcdf4_references(results):
    """Dimension scales: a vlen of object references and a compound holding references."""
    rows = _rows(results["netcdf4"])
    tas = _attrs(rows["/tas"])
    assert tas["DIMENSION_LIST"] == [["/time"], ["/lat"]]
    assert tas["long_name"] == "temperature" and tas["_Netcdf4Coordinates"] == [0, 1]
    lat = _attrs(rows["/lat"])
    assert lat["CLASS"] == "DIMENSION_SCALE"
    assert lat["REFERENCE_LIST"] == [{"dataset": "/tas", "dimension": 1},
                                     {"dataset": "/forecast/x", "dimension": 0}]
    assert rows["/tas"]["compression"] == "gzip"
    assert results["netcdf4"].metadata["attributes"]["_NCProperties"].startswith("version=2")


def test_huge_attribute_is_left_out(results):
    rows = _rows(results["huge_attr"])
    assert _attrs(rows["/g"]) == {"huge": {"omitted_bytes": 160_000}, "small": [1, 2]}


def test_metadata_and_version(results, files):
    out = results["everything"]
    assert out.format_version == "HDF5 superblock v0"
    md = out.metadata
    assert md["superblock_version"] == 0 and md["userblock_size"] == 0
    assert md["attributes"] == {"title": "kitchen sink", "version": 3}
    assert _attrs(_rows(out)["/root_again"]) == md["attributes"]
    rows = out.rows["hdf5"]
    assert sum(md["counts"].values()) == len(rows)
    assert md["counts"]["external_link"] == 1 and md["counts"]["datatype"] == 1
    assert md["objects"] < len(rows)  # aliases and links are rows, not objects
    assert "truncated" not in md

    latest = results["latest"]
    assert latest.format_version == "HDF5 superblock v3"
    # new-style groups, creation order tracked, dense attribute storage: same rows, by name
    assert latest.rows == results["nexus"].rows

    ub = results["userblock"]
    assert ub.metadata["userblock_size"] == 512
    assert ub.format_version == "HDF5 superblock v0"
    assert ub.rows == results["nexus"].rows  # the root attributes differ: they are metadata
    assert ub.metadata["attributes"]["file_name"] == "userblock.h5"

    empty = results["empty"]
    assert empty.rows.get("hdf5", []) == []
    assert empty.metadata["counts"] == {} and empty.metadata["attributes"] == {}


def test_memory_url_gives_identical_rows(files, results):
    fs = fsspec.filesystem("memory")
    for name, path in files.items():
        data = path.read_bytes()
        key = f"/hdf5-test-{uuid.uuid4().hex}/{path.name}"
        fs.pipe(key, data)
        try:
            remote = _extract(Source(f"memory://{key}", len(data), head=data[:HEAD_BYTES]))
        finally:
            fs.rm(key)
        local = results[name]
        assert remote.rows == local.rows, name
        assert remote.metadata == local.metadata, name
        assert remote.format_version == local.format_version


def test_no_handles_left_open(files):
    h5f = h5py.h5f
    kinds = h5f.OBJ_FILE | h5f.OBJ_GROUP | h5f.OBJ_DATASET | h5f.OBJ_ATTR  # not transient types
    before = h5f.get_obj_count(h5f.OBJ_ALL, kinds)
    for path in files.values():
        _extract(_source(path))
    assert h5f.get_obj_count(h5f.OBJ_ALL, kinds) == before
    # and the files can be opened (and written) again at once
    with h5py.File(files["nexus"], "r+") as f:
        assert "entry" in f


def test_row_limit_truncates(files, monkeypatch):
    monkeypatch.setattr(hdf5, "MAX_ROWS", 5)
    out = _extract(_source(files["everything"]))
    assert len(out.rows["hdf5"]) == 5
    assert out.metadata["truncated"] is True


# --- broken inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5, 0.9])
def test_truncated_file_raises(files, tmp_path, fraction):
    data = files["nexus"].read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: max(9, int(len(data) * fraction))])
    with pytest.raises(OSError):
        _extract(_source(cut))


def test_garbage_after_signature_raises(tmp_path):
    rng = np.random.default_rng(0)
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + rng.integers(0, 256, 10000, dtype=np.uint8).tobytes())
    with pytest.raises(OSError):
        _extract(_source(bad))
    only_magic = tmp_path / "magic.h5"
    only_magic.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(OSError):
        _extract(_source(only_magic))


def test_broken_remote_file_raises(files):
    data = files["nexus"].read_bytes()[:3000]
    fs = fsspec.filesystem("memory")
    key = f"/hdf5-test-{uuid.uuid4().hex}/cut.h5"
    fs.pipe(key, data)
    try:
        with pytest.raises(OSError):
            _extract(Source(f"memory://{key}", len(data), head=data))
    finally:
        fs.rm(key)


# --- cross-check with h5dump ---------------------------------------------------------------

_NAMED = re.compile(r'^\s*(GROUP|DATASET|DATATYPE|ATTRIBUTE|SOFTLINK|EXTERNAL_LINK) "(.*)"(.*)$')
_DIMS = re.compile(r"DATASPACE\s+SIMPLE \{ \( ([^)]*) \)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_KINDS = {"GROUP": "group", "DATASET": "dataset", "DATATYPE": "datatype",
          "SOFTLINK": "soft_link", "EXTERNAL_LINK": "external_link", "ATTRIBUTE": "attribute"}


def _h5dump(path: Path) -> dict[str, dict]:
    """Objects and links from ``h5dump -A -p`` (headers, storage, attribute values).

    Returns path -> {kind, attributes: {name: {type, shape, data}}, shape, chunks, filters,
    hardlink, link_target, file, target_path}.
    """
    text = subprocess.run([H5DUMP, "-A", "-p", str(path)], capture_output=True, text=True,
                          errors="surrogateescape", check=True, timeout=60).stdout
    objects: dict[str, dict] = {}
    stack: list[tuple[str, dict | None]] = []  # (path, entry or None for anonymous blocks)
    by_indent: dict[int, dict] = {}  # the last object printed at each indentation
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        opens = _QUOTED.sub('""', line).count("{") - _QUOTED.sub('""', line).count("}")
        named = [(p, e) for p, e in stack if e is not None]
        owner = named[-1][1] if named else None
        if owner is not None and owner.get("in_data"):  # attribute values
            if stack[-1][1] is None and stack[-1][0] == "DATA" and opens >= 0:
                owner["data"].append(stripped)
            if opens < 0 and stack[-1][0] == "DATA" and len(stack) + opens <= owner["depth"]:
                owner["in_data"] = False
            if opens > 0:
                stack.extend([("", None)] * opens)
            elif opens < 0:
                del stack[len(stack) + opens:]
            continue
        match = _NAMED.match(line)
        if match:
            kind, name, _ = match.groups()
            parent = named[-1][0] if named else ""
            indent = len(line) - len(line.lstrip())
            if kind == "GROUP" and name == "/" and not stack:
                objects["/"] = by_indent[indent] = {"kind": "root", "attributes": {}}
                stack.append(("", objects["/"]))
                continue
            entry = {"kind": _KINDS[kind], "attributes": {}}
            if kind == "ATTRIBUTE":
                entry["data"] = []
                # by indentation: h5dump prints a named datatype's attributes after its block
                by_indent[indent - 3]["attributes"][name] = entry
                entry_path = parent  # attributes do not extend the path
            else:
                entry_path = objects_key = f"{parent}/{name}"
                objects[objects_key] = by_indent[indent] = entry
            if opens > 0:
                stack.append((entry_path, entry))
            continue
        if owner is not None and stripped.startswith("STRPAD") and "strpad" not in owner:
            owner["strpad"] = stripped.split()[1].rstrip(";")
        if owner is not None and stack and stack[-1][1] is owner:
            if stripped.startswith("HARDLINK"):
                owner["hardlink"] = stripped.split('"')[1]
            elif stripped.startswith("LINKTARGET"):
                owner["link_target"] = stripped.split('"')[1]
            elif stripped.startswith("TARGETFILE"):
                owner["file"] = stripped.split('"')[1]
            elif stripped.startswith("TARGETPATH"):
                owner["target_path"] = stripped.split('"')[1]
            elif stripped.startswith("DATATYPE") and "type" not in owner:
                owner["type"] = stripped.split()[1]
            elif stripped.startswith("DATASPACE"):
                if "NULL" in stripped:
                    owner["shape"] = None
                elif "SCALAR" in stripped:
                    owner["shape"] = []
                else:
                    dims = _DIMS.search(stripped).group(1)
                    owner["shape"] = [int(d) for d in dims.split(",")]
            elif stripped == "DATA {" and owner["kind"] == "attribute":
                owner["in_data"] = True
                owner["depth"] = len(stack)
                stack.append(("DATA", None))
                continue
        if owner is not None and owner["kind"] == "dataset":
            if stripped.startswith("CHUNKED"):
                dims = stripped.split("(")[1].split(")")[0]
                owner["chunks"] = [int(d) for d in dims.split(",")]
            elif stripped.startswith("COMPRESSION DEFLATE"):
                owner.setdefault("filters", []).append("gzip")
            elif stripped.startswith("COMPRESSION SZIP"):
                owner.setdefault("filters", []).append("szip")
            elif stripped.startswith("FILTER_ID"):
                code = int(stripped.split()[1])
                owner.setdefault("filters", []).append("lzf" if code == 32000 else f"filter:{code}")
        if opens > 0:
            stack.extend([("", None)] * opens)
        elif opens < 0:
            del stack[len(stack) + opens:]
    return objects


def _unescape(text: str) -> bytes:
    """An h5dump string literal's bytes (``\\ooo`` octal escapes are sign-extended chars)."""
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b"\\" and i + 1 < len(raw):
            m = re.match(rb"\\([0-7]+)", raw[i:])
            if m:
                out.append(int(m.group(1), 8) & 0xFF)
                i += len(m.group(0))
                continue
            nxt = raw[i + 1 : i + 2]
            out += {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(nxt, nxt)
            i += 2
            continue
        out += c
        i += 1
    return bytes(out)


def _dumped_values(attr: dict) -> list | None:
    """Element values of a simple (integer, float, string, enum) h5dump attribute, flat."""
    kind = attr.get("type", "")
    body = re.sub(r"\(\d+(?:,\d+)*\):", " ", " ".join(attr["data"])).strip()
    if kind == "H5T_STRING":
        values = [_unescape(s).rstrip(b"\x00") for s in _QUOTED.findall(body)]
        if attr.get("strpad") == "H5T_STR_SPACEPAD":  # padding, as h5py reads it
            values = [v.rstrip(b" ") for v in values]
        return values
    tokens = [t.strip() for t in body.split(",") if t.strip()]
    if re.fullmatch(r"H5T_STD_[IU]\d+[BL]E", kind):
        return [int(t) for t in tokens]
    if re.fullmatch(r"H5T_IEEE_F\d+[BL]E", kind):
        return [float(t) for t in tokens]
    if kind == "H5T_ENUM":
        return [t.encode("utf-8", "surrogateescape") for t in tokens]
    return None


def _ours(value):
    """Our JSON value in h5dump's terms: strings (and enum names) as bytes."""
    if isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    if isinstance(value, bool):
        return b"TRUE" if value else b"FALSE"
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _same(ours, dumped) -> bool:
    if isinstance(dumped, float):
        if math.isnan(dumped):
            return isinstance(ours, float) and math.isnan(ours)
        return isinstance(ours, (int, float)) and math.isclose(ours, dumped, rel_tol=1e-5)
    return ours == dumped


@needs_h5dump
@pytest.mark.parametrize(
    "name", ["everything", "nexus", "latest", "userblock", "empty", "huge_attr", "netcdf4",
             "everything_raw"])
def test_matches_h5dump(files, results, name):
    dumped = _h5dump(files[name])
    rows = _rows(results[name])
    root = dumped.pop("/")["attributes"]
    ours = results[name].metadata["attributes"]
    assert sorted(ours) == sorted(root)
    for key, attr in root.items():
        _check_attribute(f"/@{key}", ours[key], attr)
    # h5dump prints a second name of an object as HARDLINK and does not expand it; every row
    # it does not list must lie under such a name.
    aliases = [p for p, e in dumped.items() if "hardlink" in e]
    for path in rows:
        if path not in dumped:
            assert any(path.startswith(a + "/") for a in aliases), path
    for path, entry in dumped.items():
        row = rows[path]
        assert row["kind"] == entry["kind"], path
        if "hardlink" in entry:
            continue
        if entry["kind"] == "soft_link":
            assert row["link_target"] == entry["link_target"]
        elif entry["kind"] == "external_link":
            assert row["link_target"] == f"{entry['file']}:{entry['target_path']}"
        else:
            attrs = _attrs(row)
            assert sorted(attrs) == sorted(entry["attributes"]), path
            for key, attr in entry["attributes"].items():
                _check_attribute(f"{path}@{key}", attrs[key], attr)
        if entry["kind"] == "dataset":
            assert row["shape"] == entry["shape"], path
            assert row["chunks"] == entry.get("chunks"), path
            filters = entry.get("filters")
            assert row["compression"] == ("+".join(filters) if filters else None), path
    assert sum(1 for e in dumped.values() if e["kind"] == "dataset") <= sum(
        1 for r in rows.values() if r["kind"] == "dataset")


def _check_attribute(where: str, value, attr: dict) -> None:
    """Our JSON value against h5dump's dataspace and (for simple types) its values."""
    shape = attr.get("shape")
    if shape is None:
        assert value is None, where
        return
    if isinstance(value, dict) and ("error" in value or "omitted_bytes" in value):
        return  # reported as unreadable or left out; checked elsewhere
    if attr.get("type") in ("H5T_ARRAY",):
        return
    if shape == []:
        flat = [value]
    else:
        assert isinstance(value, list) and len(value) == shape[0], where
        flat = list(np.array(value, dtype=object).reshape(-1)) if value else []
        assert len(flat) == math.prod(shape) or attr.get("type") == "H5T_VLEN", where
    dumped = _dumped_values(attr)
    if dumped is None:
        return
    assert len(dumped) == len(flat), where
    for ours, theirs in zip(flat, dumped, strict=True):
        assert _same(_ours(ours), theirs), (where, ours, theirs)


@needs_h5dump
def test_attribute_values_were_compared(files):
    """The h5dump parser really sees values (so the cross-check is not vacuous)."""
    dumped = _h5dump(files["everything"])["/attrs"]["attributes"]
    assert _dumped_values(dumped["int_matrix"]) == [0, 1, 2, 3, 4, 5]
    assert _dumped_values(dumped["vlen_str"]) == ["héllo".encode()]
    assert _dumped_values(dumped["fixed_str_array"]) == [b"a", b"bcd"]
    assert _dumped_values(dumped["enum"]) == [b"B"]
    assert math.isnan(_dumped_values(dumped["float_array"])[1])
    assert dumped["empty"]["shape"] is None and dumped["int_matrix"]["shape"] == [2, 3]


def test_file_already_open_elsewhere_in_the_process(files, results):
    """h5py.File (or netCDF4) holding the same file open must not break us, nor we it."""
    with h5py.File(files["nexus"], "r") as held:
        dset = held["entry/instrument/detector/data"]
        out = _extract(_source(files["nexus"]))
        assert out.rows == results["nexus"].rows
        assert dset.shape == (10, 64, 64) and held.attrs["NX_class"] == "NXroot"


def test_file_url(files, results):
    path = files["nexus"]
    out = _extract(Source(path.as_uri(), path.stat().st_size))
    assert out.rows == results["nexus"].rows


class _Counting:
    """A file object that records how many bytes are read through it."""

    def __init__(self, fh, log: list[int]) -> None:
        self._fh, self._log = fh, log

    def read(self, n=-1):
        chunk = self._fh.read(n)
        self._log.append(len(chunk))
        return chunk

    def readinto(self, buf):
        n = self._fh.readinto(buf)
        self._log.append(n or 0)
        return n

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_remote_reads_headers_only(tmp_path, monkeypatch):
    """Through a file object, only metadata blocks are read, never the dataset values."""
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=np.random.default_rng(0).random(2_000_000))  # 16 MB
        f["big"].attrs["units"] = "m"  # metadata written after the data
        f.create_group("after").attrs["NX_class"] = "NXcollection"
    data = path.read_bytes()
    fs = fsspec.filesystem("memory")
    key = f"/hdf5-test-{uuid.uuid4().hex}/big.h5"
    fs.pipe(key, data)
    read = []
    real_open = Source.open

    def counting_open(self):
        import contextlib

        @contextlib.contextmanager
        def wrapped():
            with real_open(self) as fh:
                yield _Counting(fh, read)
        return wrapped()

    monkeypatch.setattr(Source, "open", counting_open)
    try:
        out = _extract(Source(f"memory://{key}", len(data), head=data[:HEAD_BYTES]))
    finally:
        fs.rm(key)
    assert _attrs(_rows(out)["/big"]) == {"units": "m"}
    assert read and sum(read) <= 2 * REMOTE_BLOCK_SIZE < len(data) // 8, sum(read)


def test_long_double_values_serialise():
    # numpy long double scalars (tolist() gives one back) become plain numbers
    text = hdf5._dumps({"ok": 1, "nan": float("nan"), "odd": np.longdouble(2)})
    value = json.loads(text)
    assert value == {"ok": 1, "nan": "NaN", "odd": 2.0}


class _Flaky(_Counting):
    """The n-th read fails once, as a network hiccup would; the others succeed."""

    def __init__(self, fh, log: list[int], fail_at: int) -> None:
        super().__init__(fh, log)
        self._fail_at = fail_at

    def _maybe_fail(self):
        if len(self._log) == self._fail_at:
            self._log.append(0)
            raise ConnectionError("connection reset")

    def read(self, n=-1):
        self._maybe_fail()
        return super().read(n)

    def readinto(self, buf):
        self._maybe_fail()
        return super().readinto(buf)


@pytest.mark.parametrize("name", ["nexus", "everything"])
def test_failed_remote_read_fails_the_file(files, monkeypatch, name):
    """A read error is never mistaken for one unreadable attribute of an ok file (some reads
    happen inside attribute reads: global heaps of variable-length strings, references)."""
    data = files[name].read_bytes()
    fs = fsspec.filesystem("memory")
    key = f"/hdf5-test-{uuid.uuid4().hex}/{name}.h5"
    fs.pipe(key, data)
    real_open = Source.open
    source = Source(f"memory://{key}", len(data), head=data[:HEAD_BYTES])
    try:
        reads: list[int] = []
        monkeypatch.setattr(Source, "open", lambda self: _wrapping(real_open(self), reads, 10**9))
        _extract(source)
        total = len(reads)
        assert total >= (3 if name == "everything" else 1)  # raw reader: a block or two
        h5f = h5py.h5f
        kinds = h5f.OBJ_FILE | h5f.OBJ_GROUP | h5f.OBJ_DATASET | h5f.OBJ_ATTR
        before = h5f.get_obj_count(h5f.OBJ_ALL, kinds)
        for fail_at in range(total):
            monkeypatch.setattr(Source, "open",
                                lambda self, n=fail_at: _wrapping(real_open(self), [], n))
            with pytest.raises(ConnectionError):
                _extract(source)
        assert h5f.get_obj_count(h5f.OBJ_ALL, kinds) == before  # nothing left open
    finally:
        fs.rm(key)


def _wrapping(opened, log, fail_at):
    import contextlib

    @contextlib.contextmanager
    def wrapped():
        with opened as fh:
            yield _Flaky(fh, log, fail_at)

    return wrapped()


# --- the pure-Python reader against libhdf5 (the h5py backend) -------------------------------


def _with_h5py(path: Path) -> Extraction:
    out = Extraction("hdf5")
    fid = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY)
    try:
        hdf5._collect(hdf5._H5pyBackend(fid), out)
    finally:
        hdf5._close(fid)
    return out


def _with_raw(path: Path) -> Extraction:
    out = Extraction("hdf5")
    with open(path, "rb") as f:
        hdf5._collect(hdf5._RawBackend(hdf5._Blocks(f, path.stat().st_size, 4096)), out)
    return out


RAW_READABLE = ["nexus", "latest", "userblock", "empty", "everything_raw"]


@pytest.mark.parametrize("name", RAW_READABLE)
def test_raw_reader_matches_libhdf5(files, results, name):
    """Same rows, metadata and version from the bytes as through libhdf5 (small blocks, to
    cross block boundaries)."""
    raw, ref = _with_raw(files[name]), _with_h5py(files[name])
    assert raw.rows == ref.rows
    assert raw.metadata == ref.metadata
    assert raw.format_version == ref.format_version
    assert results[name].rows == ref.rows  # and extract() took one of them


@pytest.mark.parametrize("name", ["everything", "netcdf4", "huge_attr"])
def test_raw_reader_hands_over_what_it_does_not_read(files, results, name):
    """References, time, long doubles, huge heap objects...: libhdf5 reads the file."""
    with pytest.raises(hdf5._Unsupported):
        _with_raw(files[name])
    assert results[name].rows == _with_h5py(files[name]).rows


_SCALAR_DTYPES = ["i1", "u1", "<i2", ">u2", "<i4", ">i4", "<u8", "<i8", "<f2", "<f4", ">f4",
                  "<f8", ">f8", "?", "S1", "S7", "c8", ">c16", "V3"]


@st.composite
def _attribute(draw):
    kind = draw(st.sampled_from(_SCALAR_DTYPES + ["vlen", "enum", "compound", "array"]))
    shape = draw(st.sampled_from([(), (0,), (1,), (3,), (2, 3)]))
    count = int(np.prod(shape)) if shape else 1
    if kind == "vlen":
        # libhdf5's variable-length strings end at NUL: h5py refuses to write one inside
        text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6)
        words = draw(st.lists(text, min_size=count, max_size=count))
        return np.array(words, dtype=h5py.string_dtype()).reshape(shape)
    if kind == "enum":
        dtype = h5py.enum_dtype({"A": 0, "B": 1, "C": 7}, basetype="i2")
        return np.array(draw(st.lists(st.sampled_from([0, 1, 7]), min_size=count,
                                      max_size=count)), dtype=dtype).reshape(shape)
    if kind == "compound":
        dtype = np.dtype([("x", "<i4"), ("y", ">f8"), ("s", "S3")])
    elif kind == "array":
        dtype = np.dtype("(2,)<u2")
    else:
        dtype = np.dtype(kind)
    raw = draw(st.binary(min_size=dtype.itemsize * count, max_size=dtype.itemsize * count))
    value = np.frombuffer(raw, dtype=dtype.base if kind == "array" else dtype)
    if dtype.kind == "b":
        value = value.view("u1") % 2 == 1  # numpy booleans are 0 or 1
    return value.reshape(shape + (dtype.shape if kind == "array" else ()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=st.lists(_attribute(), max_size=12),
    names=st.lists(st.text(alphabet="abcé_/. ", min_size=1, max_size=5), min_size=1,
                   max_size=12, unique=True),  # more than 8 links: dense storage
    libver=st.sampled_from(["earliest", "v110"]),
    track_order=st.booleans(),
)
def test_raw_reader_matches_libhdf5_on_random_files(tmp_path_factory, attrs, names, libver,
                                                    track_order):
    path = tmp_path_factory.mktemp("random") / "random.h5"
    with h5py.File(path, "w", libver=libver, track_order=track_order) as f:
        group = f.create_group("g")
        for i, name in enumerate(names):
            name = name.replace("/", "_").replace(".", "_")
            if i % 2:
                target = group.create_dataset(f"{name}{i}", data=np.arange(i))
            else:
                target = group.create_group(f"{name}{i}")
            for j, value in enumerate(attrs):
                target.attrs[f"a{j}{name}"] = value
        for j, value in enumerate(attrs):
            f.attrs[f"r{j}"] = value
    raw, ref = _with_raw(path), _with_h5py(path)
    assert raw.rows == ref.rows
    assert json.dumps(raw.metadata, sort_keys=True) == json.dumps(ref.metadata, sort_keys=True)


def test_damaged_global_heap_costs_its_strings_not_the_file(files, tmp_path):
    data = bytearray(files["nexus"].read_bytes())
    at = data.index(b"GCOL")
    # the size of the collection's first object: now it runs past the collection's end
    data[at + 16 + 8:at + 16 + 16] = (1 << 40).to_bytes(8, "little")
    path = tmp_path / "heap.h5"
    path.write_bytes(bytes(data))
    out = _extract(_source(path))
    rows = _rows(out)
    assert rows.keys() == _rows(_with_h5py(files["nexus"])).keys()
    detector = _attrs(rows["/entry/instrument/detector/data"])
    assert detector["signal"] == 1  # numbers do not live in the global heap
    assert detector["units"] == {"error": detector["units"]["error"]}
    assert "global heap" in detector["units"]["error"]
    assert any(e["attribute"] == "units" for e in out.metadata["read_errors"])


def test_inconsistent_structure_fails_without_libhdf5(files, tmp_path):
    data = bytearray(files["nexus"].read_bytes())
    at = data.index(b"TREE")  # the root group's B-tree node
    data[at:at + 4] = b"EERT"
    path = tmp_path / "tree.h5"
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match="corrupt HDF5 file: bad group B-tree node"):
        _extract(_source(path))


def test_a_dataset_of_a_type_numpy_lacks_leaves_its_dtype_null_and_the_file_ok(tmp_path):
    """A 128-bit IEEE float (PyTables writes one in its float.h5): h5py cannot map it (a
    ValueError, not the TypeError of H5T_TIME); h5dump reads the file. The row's dtype is
    null, the reason in read_errors, the file ok, and --stats skips the dataset."""
    import os

    from transforms import work
    from transforms.detect import detect
    from transforms.formats.base import FileInfo

    path = tmp_path / "quad.h5"
    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(3.0)
        quad = h5py.h5t.IEEE_F64LE.copy()
        quad.set_size(16)
        quad.set_precision(128)
        quad.set_fields(127, 112, 15, 0, 112)
        quad.set_ebias(16383)
        h5py.h5d.create(f.id, b"quad", quad, h5py.h5s.create_simple((2,)))
    out = _extract(_source(path))
    rows = _rows(out)
    assert rows["/quad"]["dtype"] is None and rows["/quad"]["shape"] == [2] and rows["/ok"]["dtype"] == "float64"
    assert any(e["object_path"] == "/quad" and "Insufficient precision" in e["error"] for e in out.metadata["read_errors"])
    fw = work.read_detected(detect(FileInfo(str(path), os.path.getsize(path))), work.Settings(stats=True))
    assert fw.rows["files"][0]["status"] == "ok", fw.rows["files"][0]["error"]
    stats = {r["object_path"]: r.get("stat_count") for r in fw.rows["hdf5"]}
    assert stats == {"/ok": 3, "/quad": None}


def test_tagged_opaque_and_float32_attributes_read_alike_by_both_readers(tmp_path):
    """An opaque attribute with a tag (C writers set one) converts only to its own type: read
    through libhdf5 it was an error value. float32 attributes are the shortest decimal that
    reads back the same (0.1, as h5dump prints it), by either reader; subnormals and float16
    values exact (their shortest decimal is far off: 1e-45 for 1.4013e-45)."""
    from h5py import h5a, h5s, h5t

    path = tmp_path / "opaque.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("d", data=[1])
        tagged = h5t.create(h5t.OPAQUE, 5)
        tagged.set_tag(b"my-tag")
        aid = h5a.create(ds.id, b"opaque", tagged, h5s.create(h5s.SCALAR))
        aid.write(np.array(b"\xff\x00\x10\x20\x30", dtype="V5"), mtype=tagged)
        ds.attrs["scale"] = np.array([0.1, 0.3, np.nan], dtype=np.float32)
        ds.attrs["half"] = np.float16(0.1)
        ds.attrs["tiny"] = np.array([1.4e-45, 1e-30], dtype=np.float32)  # a subnormal, a normal
    expected = {"opaque": {"base64": "/wAQIDA="}, "scale": [0.1, 0.3, "NaN"],
                "half": 0.0999755859375,  # float16: exact (h5dump: 0.0999756)
                "tiny": [float(np.float32(1.4e-45)), 1e-30]}
    for out in (_with_h5py(path), _with_raw(path)):
        (row,) = out.rows["hdf5"]
        assert json.loads(row["attributes"]) == expected
    if H5DUMP:
        dumped = subprocess.run([H5DUMP, "-a", "/d/scale", str(path)], capture_output=True, text=True).stdout
        assert "(0): 0.1, 0.3, nan" in dumped
