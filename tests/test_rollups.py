"""Roll-ups: DICOM series and studies, and variables across NetCDF and HDF5."""

from __future__ import annotations

import datetime as dt
import json

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from apache_beam.testing.util import assert_that, equal_to

from tests.catalog_helpers import read_table, run_catalog
from transforms import rollups, schemas

STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.900", "1.2.826.0.1.3680043.8.498.901"


def write_instance(path, study, series, number, modality="CT", body_part="CHEST", acq_time="101500",
                   pixel_bytes=512, kvp="120"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.PatientID = "P-1"
    ds.StudyDate = "20240315"
    ds.AcquisitionDate = "20240315"
    ds.AcquisitionTime = acq_time
    if body_part:
        ds.BodyPartExamined = body_part
    ds.InstanceNumber = number
    ds.KVP = kvp
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = b"\0" * pixel_bytes
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def rollup_corpus(tmp_path_factory):
    """Two studies: A with a 3-instance CT series and a 2-instance MR series; B with one CT
    instance. Three NetCDF files sharing `sst` (kelvin), one with it in Celsius; one HDF5."""
    import netCDF4

    root = tmp_path_factory.mktemp("rollups")
    (root / "dicom").mkdir()
    (root / "nc").mkdir()
    ct, mr, ct_b = STUDY_A + ".1", STUDY_A + ".2", STUDY_B + ".1"
    for i, t in enumerate(["101500", "101502.5", "101501"]):
        write_instance(str(root / "dicom" / f"ct{i}.dcm"), STUDY_A, ct, i + 1, acq_time=t,
                       kvp="120" if i < 2 else "100")
    for i in range(2):
        write_instance(str(root / "dicom" / f"mr{i}.dcm"), STUDY_A, mr, i + 1, modality="MR", body_part=None,
                       acq_time=f"11000{i}")
    write_instance(str(root / "dicom" / "b.dcm"), STUDY_B, ct_b, 1, body_part="HEAD")
    for i, units in enumerate(["K", "K", "degC"]):
        with netCDF4.Dataset(root / "nc" / f"sst{i}.nc", "w", format="NETCDF4" if i else "NETCDF3_CLASSIC") as nc:
            nc.createDimension("x", 4)
            v = nc.createVariable("sst", "f4", ("x",))
            v.units = units
            v.standard_name = "sea_surface_temperature"
            v2 = nc.createVariable("sst2", "f4", ("x",))  # no attributes at all
            v[:] = np.arange(4)
            v2[:] = np.arange(4)
    with h5py.File(root / "nc" / "plain.h5", "w") as f:
        d = f.create_dataset("/entry/data/temperature", data=np.arange(3.0))
        d.attrs["units"] = "K"
        f.create_group("/entry/empty")
    return root


@pytest.fixture(scope="module")
def rollup_catalog(rollup_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("rollup-out")
    run_catalog([rollup_corpus], out)
    return out


def test_rollup_tables_have_their_schemas(rollup_catalog):
    for name, schema in schemas.ROLLUP_TABLES.items():
        written = pq.read_schema(next((rollup_catalog / name).glob("*.parquet")))
        assert written.remove_metadata().equals(schema, check_metadata=False), name


def test_dicom_series(rollup_catalog):
    files = {r["path"]: r["size_bytes"] for r in read_table(rollup_catalog, "files").to_pylist()}
    dicom = read_table(rollup_catalog, "dicom").to_pylist()
    series = {r["series_instance_uid"]: r for r in read_table(rollup_catalog, "dicom_series").to_pylist()}
    assert set(series) == {STUDY_A + ".1", STUDY_A + ".2", STUDY_B + ".1"}
    ct = series[STUDY_A + ".1"]
    assert ct["study_instance_uid"] == STUDY_A
    assert (ct["modality"], ct["body_part"], ct["instance_count"]) == ("CT", "CHEST", 3)
    assert ct["total_bytes"] == sum(files[r["path"]] for r in dicom if r["series_instance_uid"] == STUDY_A + ".1")
    assert ct["first_acquisition"] == dt.datetime(2024, 3, 15, 10, 15, 0)
    assert ct["last_acquisition"] == dt.datetime(2024, 3, 15, 10, 15, 2, 500000)
    invariant = json.loads(ct["invariant_attributes"])
    assert invariant["Modality"] == ["CT"] and invariant["BodyPartExamined"] == ["CHEST"]
    assert invariant["SeriesInstanceUID"] == [STUDY_A + ".1"]
    assert "MediaStorageSOPInstanceUID" not in invariant  # file meta is left out
    assert {"SOPInstanceUID", "InstanceNumber", "AcquisitionTime", "KVP"} <= set(ct["varying_attributes"])
    assert not set(invariant) & set(ct["varying_attributes"])
    mr = series[STUDY_A + ".2"]
    assert (mr["modality"], mr["body_part"], mr["instance_count"]) == ("MR", None, 2)


def test_dicom_studies(rollup_catalog):
    studies = {r["study_instance_uid"]: r for r in read_table(rollup_catalog, "dicom_studies").to_pylist()}
    a = studies[STUDY_A]
    assert (a["series_count"], a["instance_count"], a["modalities"], a["modality"]) == (2, 5, ["CT", "MR"], "CT\\MR")
    assert a["patient_id"] == "P-1" and a["study_date"] == dt.date(2024, 3, 15)
    assert a["first_acquisition"] == dt.datetime(2024, 3, 15, 10, 15) and a["last_acquisition"].hour == 11
    invariant = json.loads(a["invariant_attributes"])
    assert invariant["StudyInstanceUID"] == [STUDY_A] and "Modality" not in invariant
    assert {"Modality", "SeriesInstanceUID", "BodyPartExamined"} <= set(a["varying_attributes"])
    series = read_table(rollup_catalog, "dicom_series").to_pylist()
    assert a["total_bytes"] == sum(s["total_bytes"] for s in series if s["study_instance_uid"] == STUDY_A)
    assert studies[STUDY_B]["body_part"] == "HEAD"


def test_variables(rollup_catalog):
    import duckdb

    files = {r["path"]: r["size_bytes"] for r in read_table(rollup_catalog, "files").to_pylist()}
    rows = {(r["format"], r["name"], r["units"], r["standard_name"]): r
            for r in read_table(rollup_catalog, "variables").to_pylist()}
    kelvin = rows[("netcdf", "sst", "K", "sea_surface_temperature")]
    nc_paths = sorted(p for p in files if p.endswith(".nc"))
    assert kelvin["file_count"] == 2
    assert kelvin["total_bytes"] == files[nc_paths[0]] + files[nc_paths[1]]
    assert rows[("netcdf", "sst", "degC", "sea_surface_temperature")]["file_count"] == 1
    assert rows[("netcdf", "sst2", None, None)]["file_count"] == 3
    h5 = rows[("hdf5", "/entry/data/temperature", "K", None)]
    assert h5["file_count"] == 1 and h5["example_path"].endswith("plain.h5")
    assert not any(k[1] == "/entry/empty" for k in rows)  # groups are not variables
    got = duckdb.sql(
        f"select sum(file_count) from read_parquet('{rollup_catalog}/variables/*.parquet') "
        "where standard_name = 'sea_surface_temperature' and units = 'K'"
    ).fetchall()
    assert got == [(2,)]


def test_sample_corpus_rollups(tmp_path):
    """The bundled sample corpus: two series of one study, its NetCDF variables."""
    run_catalog([], tmp_path)
    studies = read_table(tmp_path, "dicom_studies").to_pylist()
    assert [(s["series_count"], s["instance_count"], s["modalities"]) for s in studies] == [(2, 2, ["CT", "MR"])]
    assert read_table(tmp_path, "variables").num_rows > 0


def test_merge_is_order_independent():
    def summary(study, series, attrs, acquired=None, size=10):
        return {"study_instance_uid": study, "series_instance_uid": series, "modality": "CT", "patient_id": None,
                "study_date": None, "body_part": None, "acquired": acquired, "size_bytes": size,
                "attributes": attrs}

    parts = [
        summary("s", "1", {"A": "1", "B": "2"}, dt.datetime(2024, 1, 2)),
        summary("s", "1", {"A": "1", "B": "3"}, dt.datetime(2024, 1, 1)),
        summary("s", "1", {"A": "1", "C": "4"}),
    ]
    fn = rollups.DicomRollupFn()
    results = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        accs = [fn.add_input(fn.create_accumulator(), parts[i]) for i in order]
        merged = fn.merge_accumulators([fn.merge_accumulators(accs[:2]), fn.create_accumulator(), accs[2]])
        results.append(rollups.series_row(("s", "1"), fn.extract_output(merged)))
    assert results[0] == results[1] == results[2]
    assert results[0]["invariant_attributes"] == '{"A":1}'
    assert results[0]["varying_attributes"] == ["B", "C"]
    assert (results[0]["instance_count"], results[0]["total_bytes"]) == (3, 30)
    assert results[0]["first_acquisition"] == dt.datetime(2024, 1, 1)


@pytest.mark.parametrize(
    "date, time, expected",
    [
        ("20240315", "101502.25", dt.datetime(2024, 3, 15, 10, 15, 2, 250000)),
        ("20240315", "1015", dt.datetime(2024, 3, 15, 10, 15)),
        ("20240315", None, dt.datetime(2024, 3, 15)),
        ("20240315101502+0100", None, dt.datetime(2024, 3, 15, 10, 15, 2)),
        ("2024.03.15", "10:15:02", dt.datetime(2024, 3, 15, 10, 15, 2)),
        ("not a date", None, None),
        (None, "101500", None),
        ("20240315", "101502.\u00b2", dt.datetime(2024, 3, 15, 10, 15, 2)),  # isdigit, yet not int()
    ],
)
def test_parse_dicom_datetime(date, time, expected):
    assert rollups.parse_dicom_datetime(date, time) == expected


def _group_key_types(pipeline):
    """The key type hint of every GroupByKey in ``pipeline`` (Union members each count)."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.typehints import typehints

    found = []

    class Visitor(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey) and node.full_label.startswith("RollUps/"):
                element = node.inputs[0].element_type
                members = element.union_types if isinstance(element, typehints.UnionConstraint) else [element]
                for member in members:
                    found.append((node.full_label, member.tuple_types[0]))

    pipeline.visit(Visitor())
    assert found
    return found


def test_rollups_transform_alone_with_deterministic_keys(pipeline):
    """RollUps on its own in a TestPipeline; every grouping key has a deterministic coder."""
    import apache_beam as beam
    from apache_beam.coders import typecoders

    tags = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00200013": {"vr": "IS", "Value": [1]}}
    files = [
        {"path": "/a.dcm", "format": "dicom", "size_bytes": 100},
        {"path": "/b.dcm", "format": "dicom", "size_bytes": 50},
        {"path": "/x.nc", "format": "netcdf", "size_bytes": 7},
    ]
    dicom = [
        {"path": "/a.dcm", "study_instance_uid": "1", "series_instance_uid": "1.1", "modality": "CT",
         "patient_id": None, "study_date": None, "tags": json.dumps(tags)},
        {"path": "/b.dcm", "study_instance_uid": "1", "series_instance_uid": "1.1", "modality": "CT",
         "patient_id": None, "study_date": None,
         "tags": json.dumps({**tags, "00200013": {"vr": "IS", "Value": [2]}})},
    ]
    netcdf = [
        {"path": "/x.nc", "variable": "t", "units": "K", "standard_name": None},
        {"path": "/x.nc", "variable": "t", "units": "K", "standard_name": None},  # two groups, one file
    ]
    with pipeline as p:
        out = {
            "files": p | "Files" >> beam.Create(files),
            "dicom": p | "Dicom" >> beam.Create(dicom),
            "netcdf": p | "Netcdf" >> beam.Create(netcdf),
        } | rollups.RollUps()
        assert_that(
            out["dicom_series"] | beam.Map(lambda r: (r["instance_count"], r["total_bytes"], r["varying_attributes"])),
            equal_to([(2, 150, ["InstanceNumber"])]),
            label="Series",
        )
        assert_that(out["variables"] | beam.Map(lambda r: (r["name"], r["file_count"], r["total_bytes"])),
                    equal_to([("t", 1, 7)]), label="Variables")
        assert_that(out["dicom_studies"] | beam.Map(lambda r: r["series_count"]), equal_to([1]), label="Studies")
        for label, key_type in _group_key_types(p):
            assert typecoders.registry.get_coder(key_type).is_deterministic(), (label, key_type)


def _deeply_nested_tags(levels):
    """``tags`` JSON text of one sequence nested ``levels`` deep (three JSON levels each)."""
    return '{"x":{"vr":"SQ","Value":[' * levels + "{}" + "]}}" * levels


#: Hostile ``tags``: nested far deeper than json.loads allows (RecursionError), not JSON at all
#: (ValueError), JSON but not an object, and a key too wide for a DICOM tag.
UNREADABLE_TAGS = {
    "/deep.dcm": _deeply_nested_tags(5_000),
    "/garbage.dcm": "Smith^Jane {not JSON",
    "/list.dcm": '["Smith^Jane"]',
}


@pytest.mark.parametrize("path", sorted(UNREADABLE_TAGS))
def test_unreadable_tags_give_no_attributes(path, caplog):
    row = {"path": path, "study_instance_uid": "1", "series_instance_uid": "1.1", "modality": "CT",
           "patient_id": "P-1", "study_date": None, "tags": UNREADABLE_TAGS[path]}
    with caplog.at_level("WARNING", logger="transforms.rollups"):
        summary = rollups.instance_summary(row, 25)
    assert (summary["attributes"], summary["body_part"], summary["acquired"]) == ({}, None, None)
    assert (summary["size_bytes"], summary["modality"], summary["series_instance_uid"]) == (25, "CT", "1.1")
    warnings = [r for r in caplog.records if r.name == "transforms.rollups"]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert path in warnings[0].getMessage() and "Smith" not in caplog.text  # the file, never the value


def test_odd_tag_keys_and_values_are_read():
    tags = {"FFFFFFFFF": {"vr": "UN"}, "-1": {"Value": [1]}, "00180015": {"vr": "CS", "Value": [7]},
            "00080022": {"vr": "DA", "Value": ["20240315"]}, "00080032": {"vr": "TM", "Value": ["1015.\u00b2"]}}
    summary = rollups.instance_summary({"path": "/odd.dcm", "tags": json.dumps(tags)}, 1)
    assert set(summary["attributes"]) == {"FFFFFFFFF", "-1", "BodyPartExamined", "AcquisitionDate", "AcquisitionTime"}
    assert summary["body_part"] is None and summary["acquired"] == dt.datetime(2024, 3, 15, 10, 15)


def test_unreadable_hdf5_attributes_give_no_units(caplog):
    row = {"path": "/a.h5", "kind": "dataset", "object_path": "/t", "attributes": _deeply_nested_tags(5_000)}
    with caplog.at_level("WARNING", logger="transforms.rollups"):
        assert rollups.hdf5_variables(row) == [("/a.h5", rollups.variable_key("hdf5", "/t", None, None))]
    assert len([r for r in caplog.records if r.name == "transforms.rollups"]) == 1


def test_rollups_survive_unreadable_tags(pipeline):
    """Rows whose tags cannot be read still roll up: counted, sized, with no attributes."""
    import apache_beam as beam

    tags = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00180015": {"vr": "CS", "Value": ["CHEST"]}}
    paths = ["/good.dcm", *sorted(UNREADABLE_TAGS)]
    files = [{"path": p, "format": "dicom", "size_bytes": 10 ** i} for i, p in enumerate(paths)]
    dicom = [
        {"path": p, "study_instance_uid": "1", "series_instance_uid": "1.1", "modality": "CT", "patient_id": None,
         "study_date": None, "tags": UNREADABLE_TAGS.get(p, json.dumps(tags))}
        for p in paths
    ]
    with pipeline as p:
        tables = {"files": p | "Files" >> beam.Create(files), "dicom": p | "Dicom" >> beam.Create(dicom)}
        out = tables | rollups.RollUps()
        assert_that(
            out["dicom_series"] | beam.Map(lambda r: (r["instance_count"], r["total_bytes"], r["body_part"],
                                                      r["invariant_attributes"], r["varying_attributes"])),
            equal_to([(4, 1111, "CHEST", "{}", ["BodyPartExamined", "Modality"])]),
            label="Series",
        )
        assert_that(
            out["dicom_studies"] | beam.Map(lambda r: (r["series_count"], r["instance_count"], r["total_bytes"])),
            equal_to([(1, 4, 1111)]),
            label="Studies",
        )


def _rows_for_partials():
    tags = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00200013": {"vr": "IS", "Value": [1]},
            "00080022": {"vr": "DA", "Value": ["20240315"]}}
    files = [{"path": f"/{i}.dcm", "format": "dicom", "size_bytes": 10 + i} for i in range(5)]
    files += [{"path": "/x.nc", "format": "netcdf", "size_bytes": 7}, {"path": "/y.h5", "format": "hdf5", "size_bytes": 9}]
    dicom = [
        {"path": f"/{i}.dcm", "study_instance_uid": "1", "series_instance_uid": f"1.{i % 2}", "modality": "CT",
         "patient_id": "P", "study_date": None,
         "tags": json.dumps({**tags, "00200013": {"vr": "IS", "Value": [i]}, "00080022": {"vr": "DA", "Value": [f"2024031{i}"]}})}
        for i in range(5)
    ]
    netcdf = [{"path": "/x.nc", "variable": "t", "units": "K", "standard_name": None}] * 2
    hdf5 = [{"path": "/y.h5", "kind": "dataset", "object_path": "/t", "attributes": '{"units": "K"}'},
            {"path": "/y.h5", "kind": "group", "object_path": "/g", "attributes": "{}"}]
    return {"files": files, "dicom": dicom, "netcdf": netcdf, "hdf5": hdf5}


@pytest.mark.parametrize("split", [0, 2, 5])
def test_partials_merge_to_the_rollups_of_the_rows(pipeline, split):
    """Rows rolled up beforehand (``dicom_partials``/``variable_partials``, as for carried-forward
    shards) and merged in ``RollUps`` give the roll-ups of all the rows together."""
    import apache_beam as beam

    tables = _rows_for_partials()
    sizes = {r["path"]: (r["format"], r["size_bytes"]) for r in tables["files"]}

    def size_of(path, formats):
        fmt, size = sizes.get(path, (None, 0))
        return size if fmt in formats else 0

    partials = [("dicom_series", k, acc) for k, acc in rollups.dicom_partials(tables["dicom"][split:], size_of).items()]
    partials += [
        ("variables", k, t) for k, t in rollups.variable_partials(tables["netcdf"], tables["hdf5"], size_of).items()
    ]

    def canonical(rows):
        return sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)

    def same(keyed):
        _, (everything, with_partials) = keyed
        return len(everything) > 0 and canonical(everything) == canonical(with_partials)

    with pipeline as p:
        every_row = {name: p | f"All{name}" >> beam.Create(rows) for name, rows in tables.items()} | "AllRows" >> rollups.RollUps()
        given = {"files": tables["files"], "dicom": tables["dicom"][:split], rollups.PARTIALS: partials}
        with_partials = {
            name: p | f"Given{name}" >> beam.Create(rows) for name, rows in given.items()
        } | "WithPartials" >> rollups.RollUps()
        for name in every_row:
            compared = (
                every_row[name] | f"ListAll{name}" >> beam.combiners.ToList(),
                with_partials[name] | f"ListPartial{name}" >> beam.combiners.ToList(),
            ) | f"Pair{name}" >> beam.Flatten() | f"Key{name}" >> beam.Map(lambda rows: (0, rows))
            pairs = compared | f"Group{name}" >> beam.GroupByKey() | f"Both{name}" >> beam.Map(
                lambda kv: (kv[0], tuple(sorted(kv[1], key=len, reverse=True)))
            )
            assert_that(pairs | f"Same{name}" >> beam.Map(same), equal_to([True]), label=f"Equal{name}")


def test_canonical_json_equals_json_dumps():
    for value in [None, [], ["a", "é\u2028\"x\\"], [1, 2.5, True, None], {"b": 1, "a": [{"z": None, "y": "q"}]},
                  "x", ["a", 1], [1e300], [{"Alphabetic": "Smith^J"}], [1, 2.5, -0.0, 1e-320, 10**30, -7],
                  [float("nan")], [float("inf"), 1], [1.0, False], {"Value": [0.1]}]:
        assert rollups.canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def _strptime_reference(date, time=None):
    """parse_dicom_datetime as it was written with strptime (the reference for the fast path)."""
    if not date:
        return None
    text = date.replace(".", "").replace("-", "")
    if time:
        text = text[:8] + time.replace(":", "")
    text = text.split("+")[0].split("-")[0].strip()
    whole, _, fraction = text.partition(".")
    if len(whole) < 8 or not whole.isdigit():
        return None
    whole = whole[:14].ljust(14, "0") if len(whole) > 8 else whole + "000000"
    try:
        value = dt.datetime.strptime(whole, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if fraction.isdecimal():
        value = value.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return value


@settings(max_examples=400, deadline=None)
@given(
    date=st.one_of(st.none(), st.text(alphabet="0123456789.-+ ²٣", max_size=16),
                   st.dates().map(lambda d: d.strftime("%Y%m%d"))),
    time=st.one_of(st.none(), st.text(alphabet="0123456789:.", max_size=14)),
)
def test_parse_dicom_datetime_matches_strptime(date, time):
    assert rollups.parse_dicom_datetime(date, time) == _strptime_reference(date, time)


_values = st.one_of(
    st.lists(st.sampled_from(["CT", "MR", "1.2.3", "é"]), max_size=3),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False)), max_size=2),
    st.sampled_from([None, {"Alphabetic": "Smith^J"}, [{"00100010": {"vr": "PN"}}]]),
)


@settings(max_examples=200, deadline=None)
@given(instances=st.lists(st.dictionaries(st.sampled_from(["A", "B", "C", "D"]), _values, max_size=4), min_size=1, max_size=6))
def test_add_instance_equals_merging_accumulated_instances(instances):
    """The per-instance fast path gives the accumulator that merge(accumulate(...)) gives."""
    summaries = [
        {"study_instance_uid": "1", "series_instance_uid": "1.1", "modality": ["CT", None][i % 2], "patient_id": None,
         "study_date": None, "body_part": None, "acquired": dt.datetime(2024, 1, 1 + i % 3), "size_bytes": i,
         "attributes": {name: rollups.comparable(v) for name, v in attrs.items()}}
        for i, attrs in enumerate(instances)
    ]
    fast, slow = rollups.DicomAccumulator(), rollups.DicomAccumulator()
    for summary in summaries:
        fast = rollups.add_instance(fast, summary)
        slow = rollups.merge(slow, rollups.accumulate(summary))
    assert fast == slow
    assert rollups.series_row(("1", "1.1"), fast) == rollups.series_row(("1", "1.1"), slow)


@given(value=_values)
def test_comparable_values_compare_as_their_canonical_json(value):
    other = json.loads(json.dumps(value))
    assert rollups.comparable_json(rollups.comparable(value)) == rollups.canonical_json(value)
    assert rollups.comparable(value) == rollups.comparable(other)
