"""PHI protection (--phi): the PS3.15 Basic Profile on real files' catalog rows."""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from transforms import phi, phi_profile
from transforms.detect import detect
from transforms.extract import catalog_rows
from transforms.formats.base import FileInfo
from transforms.phi import ENV_KEY, PhiKeyMissing, PhiPolicy, apply_to_rows

KEY = b"test key: not a secret"
OTHER_KEY = b"another test key"

# --- fixtures --------------------------------------------------------------------------------

#: Profile attributes set from their keyword, with values found nowhere else in the rows.
PATIENT_ATTRIBUTES = {
    "PatientBirthDate": "19610923",
    "PatientBirthTime": "081512",
    "OtherPatientIDs": ["OPID-55123", "OPID-55124"],
    "OtherPatientNames": "Zebrowski^Q^Alias",
    "PatientAddress": "17 Larkspur Lane Springfield",
    "PatientTelephoneNumbers": "555-0142-77",
    "PatientMotherBirthName": "Ottoline^Mabel",
    "MilitaryRank": "Brigadier Qx",
    "EthnicGroup": "Ethnogrp9",
    "Occupation": "Lighthousekeeper",
    "AdditionalPatientHistory": "History of zebra bites",
    "PatientComments": "Patient prefers Quentin",
    "MedicalRecordLocator": "MRL-9921-A",
    "PatientAge": "057Y",
    "ReferringPhysicianName": "Hollingsworth^Ada",
    "ReferringPhysicianAddress": "42 Harbour Road",
    "PerformingPhysicianName": "Okonkwo^Chidi",
    "PhysiciansOfRecord": "Vasquez^Lena",
    "NameOfPhysiciansReadingStudy": "Lindqvist^Sven",
    "OperatorsName": ["Tanaka^Hiroshi", "Moreau^Elodie"],
    "InstitutionName": "Saint Quiddity Hospital",
    "InstitutionAddress": "99 Quiddity Ave",
    "InstitutionalDepartmentName": "Radiology Wing Q",
    "StationName": "QSTATION7",
    "DeviceSerialNumber": "DSN-88812-Z",
    "StudyDescription": "Quiddity chest study",
    "SeriesDescription": "Quiddity axial series",
    "ProtocolName": "QPROTO chest",
    "RequestingPhysician": "Brandt^Ingrid",
    "AdmissionID": "ADM-66211",
    "StudyDate": "20190311",
    "StudyTime": "142233",
    "SeriesDate": "20190312",
    "SeriesTime": "142244",
    "AcquisitionDate": "20190313",
    "AcquisitionTime": "142255",
    "ContentDate": "20190314",
    "ContentTime": "142259",
    "AcquisitionDateTime": "20190315142311",
    "InstanceCreationDate": "20190316",
    "InstanceCreationTime": "142322",
    "ClinicalTrialSponsorName": "Sponsor Quiddity Inc",
}


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99LOCAL", meaning
    return item


def phi_dataset(patient_id: str, patient_name: str, study_uid: str, tag: str) -> tuple[Dataset, set[str]]:
    """A CT data set carrying PHI in profile attributes, sequences, private, curve and overlay
    elements, and the file meta; with every original value that must not survive.

    ``tag`` makes the values of this file distinct (a file index), patient and study aside.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.Modality = uids.CTImageStorage, "CT"
    ds.SOPInstanceUID, ds.SeriesInstanceUID = uids.generate_uid(), uids.generate_uid()
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, uids.generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientSex = patient_name, patient_id, "O"
    ds.AccessionNumber, ds.StudyID = f"ACC88123{tag}", f"STUDY447{tag}"
    ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "ACME", "3", tag
    for keyword, value in PATIENT_ATTRIBUTES.items():
        setattr(ds, keyword, value)

    other_id = Dataset()
    other_id.PatientID, other_id.IssuerOfPatientID = f"SEQPID-9000{tag}", "IssuerQuiddity"
    ds.OtherPatientIDsSequence = Sequence([other_id])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = uids.CTImageStorage, uids.generate_uid()
    ds.ReferencedImageSequence = Sequence([referenced])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = uids.generate_uid()
    ds.ReferencedStudySequence = Sequence([study_ref])
    request = Dataset()
    request.RequestedProcedureID, request.RequestedProcedureDescription = "RPID-31337", "Requested Quiddity"
    ds.RequestAttributesSequence = Sequence([request])
    # A sequence outside the profile, with PHI two levels down (and a private element there).
    deeper = _code("T-D0050", "Thorax")
    deeper.OperatorsName = "Deeper^Secret"
    deeper.ReferencedSOPInstanceUID = uids.generate_uid()
    deeper.add_new(0x00110010, "LO", "NESTED_PRIV_CREATOR")
    deeper.add_new(0x00111001, "LO", "Nested private secret")
    region = _code("T-D3000", "Chest")
    region.PatientName = "Nested^Secret"
    region.AnatomicRegionModifierSequence = Sequence([deeper])
    ds.AnatomicRegionSequence = Sequence([region])
    # Private elements with a private creator, one of them bulk data.
    block = ds.private_block(0x0009, "QUIDDITY_PRIVATE", create=True)
    block.add_new(0x01, "LO", "Private Secret Q")
    block.add_new(0x02, "OB", b"\x07" * 2000)
    # Curve and overlay data (retired groups 50xx and 60xx).
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50003000, "OB", b"CURVEQUIDDITY1")
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\x0f" * 2048)
    ds.add_new(0x60004000, "LT", "Overlay secret note")
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = b"\0\1" * 16

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "QSRCAET"

    originals = {
        v for value in PATIENT_ATTRIBUTES.values() for v in (value if isinstance(value, list) else [value])
    }
    originals |= {
        patient_id, patient_name, ds.AccessionNumber, ds.StudyID, ds.SOPInstanceUID,
        ds.SeriesInstanceUID, study_uid, ds.FrameOfReferenceUID, other_id.PatientID,
        "IssuerQuiddity", referenced.ReferencedSOPInstanceUID, study_ref.ReferencedSOPInstanceUID,
        "RPID-31337", "Requested Quiddity", "Deeper^Secret", deeper.ReferencedSOPInstanceUID,
        "NESTED_PRIV_CREATOR", "Nested private secret", "Nested^Secret", "QUIDDITY_PRIVATE",
        "Private Secret Q", base64.b64encode(b"CURVEQUIDDITY1").decode(), "Overlay secret note",
    }  # fmt: skip
    return ds, originals


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def rows_of(path: Path) -> dict[str, list[dict[str, Any]]]:
    info = FileInfo(path=str(path), size=path.stat().st_size)
    rows = catalog_rows(detect(info))
    assert rows["files"][0]["status"] == "ok", rows["files"][0]["error"]
    return rows


def serialized(rows: Any) -> str:
    return json.dumps(rows, default=str, ensure_ascii=False)


@pytest.fixture
def study(tmp_path):
    """Two files of one patient and study, one of another patient: (paths, originals)."""
    study_uid = uids.generate_uid()
    specs = [("PID-7731-QZ", "Zebrowski^Quentin", study_uid), ("PID-7731-QZ", "Zebrowski^Quentin", study_uid),
             ("PID-0042-XY", "Abernathy^Yolanda", uids.generate_uid())]  # fmt: skip
    paths, originals = [], set()
    for i, (patient_id, name, study_uid_) in enumerate(specs):
        ds, values = phi_dataset(patient_id, name, study_uid_, str(i + 1))
        paths.append(write(ds, tmp_path / f"f{i}.dcm"))
        originals |= values
    return paths, originals


def tags_of(rows) -> dict[str, Any]:
    return json.loads(rows["dicom"][0]["tags"])


# --- the profile table -------------------------------------------------------------------------


def test_profile_table_is_the_basic_profile():
    assert phi_profile.EDITION
    assert len(phi_profile.ACTIONS) > 600
    assert set(phi_profile.ACTIONS.values()) <= {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert phi_profile.ACTIONS[0x00100010] == "Z"  # Patient's Name
    assert phi_profile.ACTIONS[0x00100020] == "Z/D"  # Patient ID
    assert phi_profile.ACTIONS[0x0020000D] == "U"  # Study Instance UID
    assert phi_profile.ACTIONS[0x00101040] == "X"  # Patient's Address
    assert phi_profile.ACTIONS[0x00081140] == "X/Z/U*"  # Referenced Image Sequence
    assert (0x50000000, 0xFF000000, "X") in phi_profile.MASKED  # Curve Data


def test_fixture_carries_at_least_30_profile_attributes(study):
    paths, _ = study
    ds = pydicom.dcmread(paths[0])
    present = {int(e.tag) for e in ds.iterall()} | {int(e.tag) for e in ds.file_meta}
    assert len(present & set(phi_profile.ACTIONS)) >= 30


# --- policies and keys -------------------------------------------------------------------------


def test_from_env_needs_the_key_for_pseudonymize(monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(PhiKeyMissing) as caught:
        PhiPolicy.from_env("pseudonymize")
    assert str(caught.value) == f"--phi pseudonymize needs the key in the environment variable {ENV_KEY}"
    assert isinstance(caught.value, ValueError)
    monkeypatch.setenv(ENV_KEY, "")
    with pytest.raises(PhiKeyMissing):
        PhiPolicy.from_env("pseudonymize")
    assert PhiPolicy.from_env("remove").mode == "remove"
    assert PhiPolicy.from_env("keep").mode == "keep"
    with pytest.raises(ValueError):
        PhiPolicy("scramble", KEY)


def test_the_key_never_leaves_the_policy(monkeypatch):
    secret = "s3cret-phi-key-value"
    monkeypatch.setenv(ENV_KEY, secret)
    policy = PhiPolicy.from_env("pseudonymize")
    assert secret not in repr(policy) and secret not in str(policy)
    assert secret.encode() not in pickle.dumps(policy)
    assert secret not in json.dumps(policy.settings)
    assert policy.settings["phi"] == "pseudonymize"
    # A pickled policy (a Beam worker's) reads the key from the environment again.
    restored = pickle.loads(pickle.dumps(policy))
    assert restored.pseudonym("PID") == policy.pseudonym("PID")
    monkeypatch.setenv(ENV_KEY, "rotated")
    assert pickle.loads(pickle.dumps(policy)).pseudonym("PID") != policy.pseudonym("PID")
    assert PhiPolicy.from_env("pseudonymize").settings["phi_key_id"] != policy.settings["phi_key_id"]


def test_uids_are_valid_and_consistent():
    policy = PhiPolicy("pseudonymize", KEY)
    original = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    new = policy.uid(original)
    assert new.startswith("2.25.") and len(new) <= 64 and uids.UID(new).is_valid
    assert new == policy.uid(original) and new != PhiPolicy("pseudonymize", OTHER_KEY).uid(original)
    assert PhiPolicy("remove").uid(original) == PhiPolicy("remove").uid(original) != original


# --- rows: remove ------------------------------------------------------------------------------


def test_remove_leaves_no_original_value_in_any_row(study):
    paths, originals = study
    policy = PhiPolicy("remove")
    for path in paths:
        rows = rows_of(path)
        before = serialized(rows)
        assert sum(value in before for value in originals) >= 30  # the fixture is read
        apply_to_rows(rows, policy)
        after = serialized(rows)
        survivors = sorted(value for value in originals if value in after)
        assert not survivors


def test_remove_applies_each_action(study):
    paths, _ = study
    rows = rows_of(paths[0])
    original_tags = tags_of(rows)
    apply_to_rows(rows, PhiPolicy("remove"))
    tags, row = tags_of(rows), rows["dicom"][0]
    assert tags["00100010"] == {"vr": "PN"}  # Z: Patient's Name emptied
    assert tags["00100020"] == {"vr": "LO"}  # Z/D -> Z
    assert tags["00080020"] == {"vr": "DA"}  # Study Date: Z
    assert "00101040" not in tags and "00101000" not in tags  # X
    assert "00181000" not in tags and "00080080" not in tags  # X/Z/D -> X
    assert "00081140" not in tags and "00101002" not in tags  # X/Z/U* and X sequences
    assert tags["00120010"] == {"vr": "LO", "Value": ["REMOVED"]}  # D: dummy
    assert not any(key[3] in "13579BDF" for key in tags)  # private, creators included
    assert not any(key.startswith("50") for key in tags)  # curve data
    assert "60003000" not in tags and "60004000" not in tags and tags["60000010"]["Value"] == [8]
    for key in ("00080018", "0020000D", "0020000E", "00200052"):  # U
        (new,) = tags[key]["Value"]
        assert new != original_tags[key]["Value"][0] and uids.UID(new).is_valid and new.startswith("2.25.")
    # nested: the sequence outside the profile stays, the profile applies to its items
    region = tags["00082218"]["Value"][0]
    assert region["00100010"] == {"vr": "PN"} and region["00080104"]["Value"] == ["Chest"]
    deeper = region["00082220"]["Value"][0]
    assert "00081070" not in deeper and not any(key[3] in "13579BDF" for key in deeper)
    assert uids.UID(deeper["00081155"]["Value"][0]).is_valid
    # kept: not in the profile
    for key in ("00080016", "00080060", "00080070", "00280010", "00020010"):
        assert tags[key] == original_tags[key]
    # typed columns follow the tags
    assert row["patient_id"] is None and row["study_date"] is None
    assert row["sop_instance_uid"] == tags["00080018"]["Value"][0]
    assert row["study_instance_uid"] == tags["0020000D"]["Value"][0]
    assert row["series_instance_uid"] == tags["0020000E"]["Value"][0]
    assert row["modality"] == "CT" and row["rows"] == 4 and row["sop_class_uid"] == uids.CTImageStorage
    # files.metadata: the file meta as in tags, no bulk entry inside removed elements
    metadata = json.loads(rows["files"][0]["metadata"])
    assert metadata["file_meta"]["00020003"] == tags["00020003"]
    assert tags["00020003"]["Value"] == tags["00080018"]["Value"]
    assert [entry["path"] for entry in metadata["bulk_data"]] == ["7FE00010"]


def test_remove_uids_join_across_files(study):
    paths, _ = study
    first, second = (rows_of(p) for p in paths[:2])
    for rows in (first, second):
        apply_to_rows(rows, PhiPolicy("remove"))
    assert first["dicom"][0]["study_instance_uid"] == second["dicom"][0]["study_instance_uid"]
    assert first["dicom"][0]["sop_instance_uid"] != second["dicom"][0]["sop_instance_uid"]


# --- rows: pseudonymize ------------------------------------------------------------------------


def test_pseudonymize_leaves_no_original_value_in_any_row(study):
    paths, originals = study
    policy = PhiPolicy("pseudonymize", KEY)
    for path in paths:
        rows = rows_of(path)
        apply_to_rows(rows, policy)
        after = serialized(rows)
        assert not sorted(value for value in originals if value in after)
        assert KEY.decode() not in after


def test_pseudonyms_join_one_patient_and_depend_on_the_key(study):
    paths, _ = study
    rows = [rows_of(p) for p in paths]
    other = copy.deepcopy(rows[0])
    policy = PhiPolicy("pseudonymize", KEY)
    for file_rows in rows:
        apply_to_rows(file_rows, policy)
    apply_to_rows(other, PhiPolicy("pseudonymize", OTHER_KEY))
    dicom = [r["dicom"][0] for r in rows]
    assert dicom[0]["patient_id"] == dicom[1]["patient_id"] != dicom[2]["patient_id"]
    assert dicom[0]["patient_id"] == policy.pseudonym("PID-7731-QZ") and len(dicom[0]["patient_id"]) == 32
    assert dicom[0]["study_instance_uid"] == dicom[1]["study_instance_uid"] != dicom[2]["study_instance_uid"]
    assert other["dicom"][0]["patient_id"] != dicom[0]["patient_id"]
    assert other["dicom"][0]["study_instance_uid"] != dicom[0]["study_instance_uid"]
    tags = [tags_of(r) for r in rows]
    # the typed column is the pseudonym in tags; names, accession numbers, study IDs too
    assert tags[0]["00100020"] == {"vr": "LO", "Value": [dicom[0]["patient_id"]]}
    assert tags[0]["00100010"] == tags[1]["00100010"] != tags[2]["00100010"]
    assert tags[0]["00100010"]["Value"] == [{"Alphabetic": policy.pseudonym("Zebrowski^Quentin", "PN")}]
    assert tags[0]["00080050"]["Value"] == [policy.pseudonym("ACC881231", "SH")]
    assert len(tags[0]["00080050"]["Value"][0]) == 16 and len(tags[0]["00200010"]["Value"][0]) == 16
    assert tags[0]["00101000"]["Value"] == [policy.pseudonym("OPID-55123"), policy.pseudonym("OPID-55124")]
    # kept sequences: pseudonyms and replacement UIDs inside, the rest of the profile applied
    (other_id,) = tags[0]["00101002"]["Value"]
    assert other_id == {"00100020": {"vr": "LO", "Value": [policy.pseudonym("SEQPID-90001")]}}
    (referenced,) = tags[0]["00081140"]["Value"]
    assert referenced["00081150"]["Value"] == [uids.CTImageStorage]
    assert uids.UID(referenced["00081155"]["Value"][0]).is_valid
    # other profile attributes as in remove mode
    assert "00101040" not in tags[0] and tags[0]["00080020"] == {"vr": "DA"}
    assert dicom[0]["study_date"] is None
    for row in dicom:
        for column in ("sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            assert row[column].startswith("2.25.") and len(row[column]) <= 64 and uids.UID(row[column]).is_valid


def test_keep_changes_nothing(study):
    paths, _ = study
    rows = rows_of(paths[0])
    before = copy.deepcopy(rows)
    apply_to_rows(rows, PhiPolicy("keep"))
    assert rows == before


def test_rows_of_other_formats_and_error_rows_are_safe():
    rows = {"files": [{"format": "fits", "metadata": '{"x": 1}'}], "fits": [{"header": "{}"}]}
    before = copy.deepcopy(rows)
    apply_to_rows(rows, PhiPolicy("remove"))
    assert rows == before
    error = {"files": [{"format": "dicom", "metadata": json.dumps(
        {"preamble": True, "file_meta": {"00020003": {"vr": "UI", "Value": ["1.2.3.4.5.6.7"]}}})}]}  # fmt: skip
    apply_to_rows(error, PhiPolicy("remove"))
    assert "1.2.3.4.5.6.7" not in error["files"][0]["metadata"]


def test_deep_sequences_are_bounded():
    item: dict[str, Any] = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Deep^Name"}]}}
    for _ in range(phi.MAX_DEPTH + 10):
        item = {"00082218": {"vr": "SQ", "Value": [item]}}
    out = PhiPolicy("remove").dataset(item)
    assert "Deep^Name" not in json.dumps(out)


# --- end to end (CLI) --------------------------------------------------------------------------


def _catalog_text(output: Path) -> str:
    """Every table's rows and every text file of a catalog, as one string."""
    parts = []
    for root, _, names in os.walk(output):
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".parquet"):
                parts.append(serialized(pq.read_table(path).to_pylist()))
            elif name.endswith((".json", ".html", ".txt", ".csv")):
                parts.append(Path(path).read_text(errors="replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["remove", "pseudonymize"])
def test_pipeline_end_to_end(study, tmp_path, monkeypatch, mode):
    from pipelines.catalog import run
    from tests.catalog_helpers import TEST_BUDGET

    paths, originals = study
    secret = "e2e-phi-key-do-not-leak"
    monkeypatch.setenv(ENV_KEY, secret)
    output = tmp_path / "catalog"
    manifest = run(["--input", str(paths[0].parent), "--output", str(output), "--progress", "off", "--phi", mode, *TEST_BUDGET])
    text = _catalog_text(output)
    assert not sorted(value for value in originals if value in text)
    assert secret not in text and secret not in json.dumps(manifest, default=str)
    dicom = pq.read_table(output / "dicom").to_pylist()
    assert len(dicom) == 3
    for row in dicom:
        assert uids.UID(row["study_instance_uid"]).is_valid and row["study_date"] is None
    if mode == "pseudonymize":
        policy = PhiPolicy("pseudonymize", secret.encode())
        assert sorted(r["patient_id"] for r in dicom) == sorted(
            [policy.pseudonym("PID-7731-QZ")] * 2 + [policy.pseudonym("PID-0042-XY")]
        )
        studies = pq.read_table(output / "dicom_studies").to_pylist()
        assert {s["patient_id"] for s in studies} == {r["patient_id"] for r in dicom}
    else:
        assert all(r["patient_id"] is None for r in dicom)


def test_cli_refuses_to_pseudonymize_without_the_key(study, tmp_path, monkeypatch, capsys):
    from pipelines.catalog import main

    paths, _ = study
    monkeypatch.delenv(ENV_KEY, raising=False)
    output = tmp_path / "catalog"
    with pytest.raises(SystemExit) as exited:
        main(["--input", str(paths[0].parent), "--output", str(output), "--progress", "off", "--phi", "pseudonymize"])
    assert exited.value.code == 2
    assert f"needs the key in the environment variable {ENV_KEY}" in capsys.readouterr().err
    assert not (output / "dicom").exists()


def _implicit(tag: int, value: bytes) -> bytes:
    """One implicit VR little endian element."""
    import struct

    value += b" " * (len(value) % 2)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def test_identifiers_written_as_un_are_treated_by_their_dictionary_vr(tmp_path):
    """Elements a writer did not know, re-encoded as UN: a sequence of defined length (its items
    in implicit VR inside the value) kept names, IDs and original UIDs through remove and
    pseudonymize; UN identifiers were emptied instead of replaced (the file left the
    roll-ups); the file meta's AE titles and private information went through unchanged."""
    import struct

    study_uid, series_uid = uids.generate_uid(), uids.generate_uid()
    item = _implicit(0x00100010, b"UNSEQ^LEAK") + _implicit(0x00100020, b"UNSEQ-PID") + \
        _implicit(0x0020000D, b"1.2.826.0.1.3680043.99.1.1\0")
    sequence = struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = uids.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uids.generate_uid()
    ds.file_meta.SourceApplicationEntityTitle = "SRCAE_LEAK"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.999.77.1"
    ds.file_meta.PrivateInformation = b"PRIVINFO_LEAK"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    path = write(ds, tmp_path / "un.dcm")
    un = b"".join(struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, b"UN", 0, len(value)) + value for tag, value in (
        (0x00081250, sequence),  # Related Series Sequence (not in Table E.1-1), written as UN
        (0x00100020, b"UNPID_LEAK"),  # Patient ID
        (0x0020000D, study_uid.encode() + b"\0" * (len(study_uid) % 2)),
        (0x0020000E, series_uid.encode() + b"\0" * (len(series_uid) % 2)),
    ))
    path.write_bytes(path.read_bytes() + un)  # after (0008,0060), in tag order
    kept = rows_of(path)
    assert kept["dicom"][0]["patient_id"] == "UNPID_LEAK" and "UNSEQ^LEAK" not in serialized(kept)  # UN base64
    for policy in (PhiPolicy("remove"), PhiPolicy("pseudonymize", KEY)):
        rows = copy.deepcopy(kept)
        apply_to_rows(rows, policy)
        text = serialized(rows)
        blobs = [base64.b64decode(e["InlineBinary"]) for e in json.loads(rows["dicom"][0]["tags"]).values()
                 if "InlineBinary" in e]
        for secret in ("UNSEQ^LEAK", "UNSEQ-PID", "UNPID_LEAK", "SRCAE_LEAK", "PRIVINFO_LEAK", "1.2.999.77.1",
                       "1.2.826.0.1.3680043.99.1.1", study_uid, series_uid):
            assert secret not in text and not any(secret.encode() in b for b in blobs), (policy, secret)
        row = rows["dicom"][0]
        assert row["study_instance_uid"] == policy.uid(study_uid)  # replaced: the file still rolls up
        assert row["series_instance_uid"] == policy.uid(series_uid)
        expected = policy.pseudonym("UNPID_LEAK") if policy.mode == "pseudonymize" else None
        assert row["patient_id"] == expected
