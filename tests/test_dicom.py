"""Tests for the DICOM extractor (transforms/formats/dicom.py).

Fixtures are written by pydicom (and, for malformed files, by hand) in a temporary folder;
each is read from its local path and from a ``memory://`` URL, which must give identical
results, and cross-checked against pydicom's own JSON model and against ``dcmdump``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import shutil
import struct
import subprocess
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pydicom
import pytest
from pydicom import uid as uids
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.fileset import FileSet
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence

from transforms import schemas
from transforms.formats import dicom, registry
from transforms.formats.base import Extraction, Source, format_error

DCMDUMP = shutil.which("dcmdump")
needs_dcmdump = pytest.mark.skipif(DCMDUMP is None, reason="dcmdump (dcmtk) is not installed")

# --- fixtures --------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def ct_dataset(size: int = 512, frames: int | None = None) -> Dataset:
    """A CT-like data set: ~110 elements, nested sequences, private tags, 16-bit pixels."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20240102", "101010"
    ds.SOPClassUID, ds.SOPInstanceUID = uids.CTImageStorage, uids.generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240102"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime = "101010.123", "101011", "101012"
    ds.ContentTime, ds.AccessionNumber, ds.Modality = "101013", "A123", "CT"
    ds.Manufacturer, ds.InstitutionName = "ACME", "Hôpital Général"
    ds.InstitutionAddress, ds.ReferringPhysicianName = "1 Main St", "Müller^Hans"
    ds.StationName, ds.StudyDescription, ds.SeriesDescription = "CT01", "CHEST", "AXIAL 5mm"
    ds.InstitutionalDepartmentName, ds.PhysiciansOfRecord = "RAD", "Smith^J"
    ds.OperatorsName, ds.ManufacturerModelName = ["Op^One", "Op^Two"], "Scan9000"
    refs = []
    for _ in range(2):
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = (
            uids.CTImageStorage,
            uids.generate_uid(),
        )
        refs.append(ref)
    ds.ReferencedImageSequence = Sequence(refs)
    ds["ReferencedImageSequence"].is_undefined_length = True
    for ref in refs:
        ref.is_undefined_length_sequence_item = True
    ds.ProcedureCodeSequence = Sequence([_code("CT-CHEST", "99LOCAL", "CT Chest")])
    ds.PatientName, ds.PatientID = "Doe^Jöhn", "PID0001"
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19700101", "M", "054Y"
    ds.PatientSize, ds.PatientWeight, ds.PatientComments = "1.80", "80", "none"
    ds.BodyPartExamined, ds.ScanOptions, ds.SliceThickness = "CHEST", "HELICAL MODE", "5.0"
    ds.KVP, ds.DataCollectionDiameter, ds.DeviceSerialNumber = "120", "500.0", "SN1"
    ds.SoftwareVersions, ds.ProtocolName = ["1.0", "2.0"], "CHEST ROUTINE"
    ds.ReconstructionDiameter, ds.DistanceSourceToDetector = "350.0", "946.7"
    ds.DistanceSourceToPatient, ds.GantryDetectorTilt, ds.TableHeight = "541.0", "0.0", "150.5"
    ds.RotationDirection, ds.ExposureTime, ds.XRayTubeCurrent = "CW", "500", "300"
    ds.Exposure, ds.FilterType, ds.GeneratorPower = "150", "BODY FILTER", "36"
    ds.FocalSpots, ds.ConvolutionKernel, ds.PatientPosition = "0.7", "STANDARD", "HFS"
    ds.RevolutionTime, ds.SingleCollimationWidth, ds.TotalCollimationWidth = 0.5, 0.625, 40.0
    ds.TableSpeed, ds.TableFeedPerRotation, ds.SpiralPitchFactor = 78.75, 39.375, 0.984375
    ds.CTDIvol = 12.5
    ds.CTDIPhantomTypeCodeSequence = Sequence([_code("113691", "DCM", "IEC Body Phantom")])
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids.generate_uid(), uids.generate_uid()
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "1", "2", "1", "42"
    ds.ImagePositionPatient = ["-175.0", "-175.0", "-100.5"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids.generate_uid(), "SN"
    ds.SliceLocation, ds.SamplesPerPixel, ds.PhotometricInterpretation = "-100.5", 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = ["0.683594", "0.683594"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = ["40", "400"], ["400", "1500"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenterWidthExplanation, ds.LossyImageCompression = ["WINDOW1", "WINDOW2"], "00"
    request = Dataset()
    request.RequestedProcedureID, request.ScheduledProcedureStepID = "RP1", "SPS1"
    request.ScheduledProtocolCodeSequence = Sequence([_code("P1", "99LOCAL", "Protocol")])
    ds.RequestAttributesSequence = Sequence([request])
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20240102", "1010"
    ds.PerformedProcedureStepID, ds.PerformedProcedureStepDescription = "PPS1", "CT CHEST"
    ds.AnatomicRegionSequence = Sequence([_code("T-D3000", "SRT", "Chest")])
    ds.SmallestImagePixelValue, ds.LargestImagePixelValue = 0, 4095
    ds.add_new(0x00090010, "LO", "ACME_PRIVATE")
    ds.add_new(0x00091001, "LO", "ACME 1.0")
    ds.add_new(0x00091002, "SH", "PRIV")
    ds.add_new(0x00430010, "LO", "GEMS_PARM_01")
    ds.add_new(0x00431001, "SS", 3)
    ds.add_new(0x00431002, "DS", ["1.5", "2.5"])
    ds.add_new(0x00431003, "OB", b"\x01\x02\x03\x04")
    ds.add_new(0x00431004, "SL", [1, -2, 3])
    ds.add_new(0x00431005, "FD", [1.25, 2.5])
    ds.add_new(0x00431006, "UL", 77)
    ds.add_new(0x00431007, "OB", bytes(range(256)) * 8)  # 2 KiB: bulk
    shape = (frames, size, size) if frames else (size, size)
    if frames:
        ds.NumberOfFrames = frames
    ds.PixelData = (np.arange(np.prod(shape)) % 4096).astype(np.uint16).reshape(shape).tobytes()
    return ds


def save(ds: Dataset, path: Path, syntax: str = uids.ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", uids.SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", uids.generate_uid())
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


TEXT_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT".split())  # noqa: SIM905


def element(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element, written by hand (any length, even wrong)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if len(value) % 2 and vr in TEXT_VRS:
        value += b" "  # even length, as the standard wants
    length = len(value) if length is None else length
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"):
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, length) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), length) + value


def item(payload: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return (
            struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + payload
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        )
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(payload)) + payload


SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def part10(data_set: bytes, syntax: str = uids.ExplicitVRLittleEndian) -> bytes:
    """Preamble, file meta and a hand-written data set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uids.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.3.4.5"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + data_set


def edge_case_data_set() -> bytes:
    """Values pydicom would not write: malformed DS/IS, odd lengths, UN sequences..."""
    refs = b"".join(
        item(
            element(0x00081150, "UI", b"1.2.840.10008.5.1.4.1.1.2\0")
            + element(0x00081155, "UI", f"1.2.3.{i}".ljust(40, "9").encode())
        )
        for i in range(20)
    )  # a defined-length sequence longer than BULK_THRESHOLD
    un_sequence = (  # CP-246: undefined-length UN holding an implicit VR item
        item(struct.pack("<HHL", 0x0008, 0x0100, 4) + b"ABCD", undefined=True) + SEQUENCE_END
    )
    return b"".join(
        [
            element(0x00080005, "CS", b"ISO_IR 192"),
            element(0x00080008, "CS", b"A\\\\B "),
            element(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7\0"),
            element(0x00080018, "UI", b"1.2.3.4\0"),
            element(0x00080020, "DA", b"2024.01.02"),
            element(0x00080060, "CS", b"MR"),
            element(0x00081140, "SQ", refs),
            element(0x00100010, "PN", b""),
            element(0x00100020, "LO", b"ID\\X "),
            element(0x00181060, "DS", b"1.5abc\\2 "),
            element(0x00181310, "US", struct.pack("<4H", 0, 64, 64, 0)),
            element(0x00200012, "IS", b"x1"),
            element(0x00200013, "IS", b"12.0"),
            element(0x00204000, "LT", ("é" * 1500).encode()),  # long text: read, not bulk
            element(0x00209165, "AT", struct.pack("<4H", 0x0028, 0x0010, 0x0028, 0x0011)),
            element(0x00280008, "IS", b"3 "),
            element(0x00291014, "UL", b"\x01\x02\x03\x04\x05\x06"),  # wrong length for UL
            element(0x00280011, "US", struct.pack("<H", 4)),
            element(0x00290010, "LO", b"EDGE CASES "),
            element(0x00291010, "FD", struct.pack("<300d", *range(300))),  # long numbers
            element(0x00291011, "UN", b"abcd"),
            element(0x00291012, "UN", un_sequence, length=0xFFFFFFFF),
            element(0x00291013, "OB", b"\x00\x01"),
            element(0x7FE00010, "OW", bytes(3 * 4 * 2)),
            element(0xFFFAFFFA, "SQ", item(element(0x04000015, "CS", b"RIPEMD160 "))),
            element(0xFFFCFFFC, "OB", bytes(2000)),
        ]
    )


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dicom")
    out: dict[str, Path] = {}
    out["ct"] = save(ct_dataset(), root / "ct.dcm")
    out["small"] = save(ct_dataset(size=32), root / "small.dcm")
    out["implicit"] = save(ct_dataset(size=64), root / "implicit.dcm", uids.ImplicitVRLittleEndian)
    out["big_endian"] = save(ct_dataset(size=64), root / "be.dcm", uids.ExplicitVRBigEndian)
    out["deflated"] = save(
        ct_dataset(size=64), root / "deflated.dcm", uids.DeflatedExplicitVRLittleEndian
    )
    out["multiframe"] = save(ct_dataset(size=16, frames=3), root / "multiframe.dcm")

    rle = ct_dataset(size=16, frames=2)
    rle.compress(uids.RLELossless, np.frombuffer(rle.PixelData, np.uint16).reshape(2, 16, 16))
    out["rle"] = save(rle, root / "rle.dcm", uids.RLELossless)

    j2k = ct_dataset(size=16, frames=3)  # fake codestreams: only the encapsulation matters
    j2k.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes([i]) * 101 for i in range(3)])
    j2k["PixelData"].VR, j2k["PixelData"].is_undefined_length = "OB", True
    out["jpeg2000"] = save(j2k, root / "j2k.dcm", uids.JPEG2000Lossless)

    for name, charset, person, text in [
        ("latin1", "ISO_IR 100", "Buc^Jérôme", "Château"),
        ("utf8", "ISO_IR 192", "Wang^XiaoDong=王^小東", "Grüße 中文"),
        ("japanese", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田"),
        ("korean", ["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동", None),
    ]:
        ds = Dataset()
        ds.SpecificCharacterSet = charset
        ds.SOPClassUID, ds.SOPInstanceUID = uids.SecondaryCaptureImageStorage, uids.generate_uid()
        ds.Modality, ds.PatientName, ds.PatientID = "OT", person, "ID"
        if text:
            ds.InstitutionName = ds.PatientComments = text
            ds.OperatorsName = [person, "X^Y"]
        out[name] = save(ds, root / f"{name}.dcm")

    fileset = FileSet()
    member = ct_dataset(size=8)
    member.file_meta = FileMetaDataset()
    member.file_meta.TransferSyntaxUID = uids.ExplicitVRLittleEndian
    fileset.add(member)
    fileset.write(root / "fileset")
    out["dicomdir"] = root / "fileset" / "DICOMDIR"

    out["edge"] = root / "edge.dcm"
    out["edge"].write_bytes(part10(edge_case_data_set()))

    # Bare data sets, without preamble: from group 0002 (meta, no preamble), from group 0008
    ct = out["small"].read_bytes()
    (root / "no_preamble_meta.dcm").write_bytes(ct[132:])
    out["no_preamble_meta"] = root / "no_preamble_meta.dcm"
    for name in ("small", "implicit"):
        data = out[name].read_bytes()
        (group_length,) = struct.unpack_from("<L", data, 140)
        bare = root / f"bare_{name}.dcm"
        bare.write_bytes(data[144 + group_length :])
        out[f"bare_{name}"] = bare
    return out


# --- helpers ---------------------------------------------------------------------------------


def memory_source(data: bytes) -> Source:
    path = f"/test-dicom/{uuid.uuid4().hex}.dcm"
    fsspec.filesystem("memory").pipe(path, data)
    return Source(url=f"memory://{path}", size=len(data))


def extract(path: Path) -> tuple[Extraction, dict[str, Any], dict[str, Any]]:
    """Extract a file locally and via memory://; check both agree and the row is valid."""
    local = Extraction(format="dicom")
    dicom.extract(Source(url=str(path), size=path.stat().st_size), local)
    remote = Extraction(format="dicom")
    dicom.extract(memory_source(path.read_bytes()), remote)
    assert remote.rows == local.rows
    assert remote.metadata == local.metadata
    assert remote.format_version == local.format_version
    (row,) = local.rows["dicom"]
    pa.Table.from_pylist([row | {"path": "x"}], schema=schemas.DICOM)  # fits the schema
    json.loads(json.dumps(local.metadata, allow_nan=False))  # strict JSON
    tags = json.loads(row["tags"])
    return local, row, tags


def extract_error(data: bytes, tmp_path: Path) -> str:
    """Extracting `data` must raise, with the same message locally and via memory://."""
    path = tmp_path / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(data)
    messages = []
    for source in (Source(url=str(path), size=len(data)), memory_source(data)):
        out = Extraction(format="dicom")
        with pytest.raises(Exception) as info:
            dicom.extract(source, out)
        assert "dicom" not in out.rows
        messages.append(format_error(info.value))
    assert messages[0] == messages[1]
    return messages[0]


def values(tags: dict[str, Any], key: str) -> Any:
    return tags[key].get("Value")


def person(name: dict[str, str] | None) -> str:
    if name is None:
        return ""
    groups = [name.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


# --- the CT-like file ------------------------------------------------------------------------


def test_ct_row_and_tags(files: dict[str, Path]) -> None:
    ds = pydicom.dcmread(files["ct"], stop_before_pixels=True)
    out, row, tags = extract(files["ct"])
    assert out.format_version == "Explicit VR Little Endian"
    assert {k: v for k, v in row.items() if k != "tags"} == {
        "sop_instance_uid": ds.SOPInstanceUID,
        "sop_class_uid": uids.CTImageStorage,
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "modality": "CT",
        "patient_id": "PID0001",
        "study_date": dt.date(2024, 1, 2),
        "rows": 512,
        "columns": 512,
        "number_of_frames": None,
        "transfer_syntax_uid": uids.ExplicitVRLittleEndian,
    }
    # file meta included, pixel data and the 2 KiB private OB left out, small OB inline
    assert values(tags, "00020010") == [uids.ExplicitVRLittleEndian]
    assert "7FE00010" not in tags and "00431007" not in tags
    assert tags["00431003"] == {"vr": "OB", "InlineBinary": "AQIDBA=="}
    assert values(tags, "00090010") == ["ACME_PRIVATE"] and values(tags, "00091002") == ["PRIV"]
    assert values(tags, "00431004") == [1, -2, 3] and values(tags, "00431005") == [1.25, 2.5]
    assert values(tags, "00100010") == [{"Alphabetic": "Doe^Jöhn"}]
    assert values(tags, "00081070") == [{"Alphabetic": "Op^One"}, {"Alphabetic": "Op^Two"}]
    assert values(tags, "00080080") == ["Hôpital Général"]
    assert values(tags, "00101020") == [1.8] and values(tags, "00200013") == [42]
    assert values(tags, "00280030") == [0.683594, 0.683594]
    assert values(tags, "00280106") == [0] and values(tags, "00189311") == [0.984375]
    # sequences, nested two deep, of defined and undefined length
    (request,) = values(tags, "00400275")
    (protocol,) = request["00400008"]["Value"]
    assert protocol["00080104"] == {"vr": "LO", "Value": ["Protocol"]}
    refs = values(tags, "00081140")
    assert [r["00081155"]["Value"] for r in refs] == [
        [r.ReferencedSOPInstanceUID] for r in ds.ReferencedImageSequence
    ]
    meta = out.metadata
    assert meta["preamble"] is True
    # group lengths are not in the JSON model (PS3.18 F.2.2): file_meta keeps (0002,0000)
    assert "00020000" not in tags and meta["file_meta"]["00020000"]["vr"] == "UL"
    assert {k: v for k, v in meta["file_meta"].items() if k != "00020000"} == {
        k: v for k, v in tags.items() if k.startswith("0002")
    }
    assert meta["transfer_syntax"]["inferred"] is False
    assert meta["element_count"] == len(ds) + len(ds.file_meta) + 1
    bulk = {entry["path"]: entry for entry in meta["bulk_data"]}
    assert bulk["7FE00010"]["length"] == 512 * 512 * 2
    assert bulk["7FE00010"]["vr"] == "OW" and bulk["7FE00010"]["encapsulated"] is False
    assert bulk["00431007"] == {
        "path": "00431007",
        "vr": "OB",
        "offset": ds["00431007"].file_tell,
        "length": 2048,
    }
    with files["ct"].open("rb") as f:
        f.seek(bulk["7FE00010"]["offset"])
        assert f.read(64) == pydicom.dcmread(files["ct"]).PixelData[:64]


def normalized(model: dict[str, Any]) -> dict[str, Any]:
    """A JSON model with pydicom's and our harmless differences ironed out."""
    out = {}
    for key, elem in model.items():
        if key.endswith("0000"):
            continue  # group lengths: pydicom writes them, the JSON model has none (F.2.2)
        elem = dict(elem)
        if elem["vr"] == "SQ":
            elem["Value"] = [normalized(i) for i in elem.get("Value", [])]
        elif elem["vr"] == "PN" and "Value" in elem:
            elem["Value"] = [{k: v for k, v in n.items() if v} for n in elem["Value"]]
        elif elem["vr"] in ("CS", "LO", "SH", "UI") and "Value" in elem:
            elem["Value"] = [v or None for v in elem["Value"]]  # the standard's null
        elif "InlineBinary" in elem and len(base64.b64decode(elem["InlineBinary"])) > 1024:
            continue  # bulk
        out[key] = elem
    return out


@pytest.mark.parametrize(
    "name",
    [
        "ct",
        "implicit",
        "big_endian",
        "deflated",
        "multiframe",
        "rle",
        "jpeg2000",
        "latin1",
        "utf8",
        "japanese",
        "korean",
        "dicomdir",
    ],
)
def test_same_json_model_as_pydicom(files: dict[str, Path], name: str) -> None:
    ds = pydicom.dcmread(files[name], stop_before_pixels=True)
    expected = ds.file_meta.to_json_dict() | ds.to_json_dict()
    _, _, tags = extract(files[name])
    assert normalized(tags) == normalized(expected)


# --- dcmdump ---------------------------------------------------------------------------------

_DUMP_LINE = re.compile(r"^\(([0-9a-f]{4}),([0-9a-f]{4})\) (\S\S) (.*)$")


def dcmdump(path: Path) -> dict[str, tuple[str, str | None]]:
    """Top-level elements as dcmdump shows them: tag -> (VR, value text or None).

    Values are converted to UTF-8 (+U8) when iconv knows the character set, except
    Specific Character Set itself (which the conversion rewrites).
    """
    raw = _dcmdump(path, utf8=False)
    try:
        converted = _dcmdump(path, utf8=True)
    except subprocess.CalledProcessError:  # a character set iconv does not know
        return raw
    converted.pop("00080005", None)  # +U8 sets it to ISO_IR 192, even where it was absent
    return converted | {k: v for k, v in raw.items() if k == "00080005"}


def _dcmdump(path: Path, utf8: bool) -> dict[str, tuple[str, str | None]]:
    args = [DCMDUMP, "-Un", "+L", *(["+U8"] if utf8 else []), str(path)]
    result = subprocess.run(args, capture_output=True, check=True)
    out: dict[str, tuple[str, str | None]] = {}
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        match = _DUMP_LINE.match(line)
        if not match or match[1] == "fffe":
            continue
        body = match[4].rpartition("#")[0].strip()
        if body.startswith("["):
            text: str | None = body[1 : body.rindex("]")]
        elif body.startswith("(no value"):
            text = None
        else:
            text = body
        out[(match[1] + match[2]).upper()] = (match[3], text)
    return out


def assert_value_matches(key: str, elem: dict[str, Any], dumped: str | None) -> None:
    vr = elem["vr"]
    if dumped is None:
        assert "Value" not in elem and "InlineBinary" not in elem, key
        return
    if vr == "SQ":
        count = int(re.search(r"#=(\d+)", dumped)[1])
        assert len(elem.get("Value", [])) == count, key
    elif "InlineBinary" in elem:
        raw = base64.b64decode(elem["InlineBinary"])
        if vr == "OW":
            words = struct.unpack(f"<{len(raw) // 2}H", raw)
            assert dumped == "\\".join(f"{w:04x}" for w in words), key
        else:
            assert dumped == "\\".join(f"{b:02x}" for b in raw), key
    elif vr == "PN":
        assert dumped == "\\".join(person(v) for v in elem["Value"]), key
    elif vr == "AT":
        assert dumped == "\\".join(f"({v[:4]},{v[4:]})".lower() for v in elem["Value"]), key
    elif vr in ("DS", "IS", "FL", "FD", "US", "SS", "UL", "SL", "UV", "SV"):
        parts = dumped.split("\\")
        assert len(parts) == len(elem["Value"]), key
        for text, value in zip(parts, elem["Value"]):
            if isinstance(value, str):
                assert text.strip() == value, key
            else:
                assert math.isclose(float(text), value, rel_tol=1e-6), key
    else:
        assert dumped == "\\".join(v or "" for v in elem["Value"]), key


@needs_dcmdump
@pytest.mark.parametrize(
    "name",
    [
        "ct",
        "implicit",
        "big_endian",
        "multiframe",
        "rle",
        "jpeg2000",
        "latin1",
        "utf8",
        "korean",
        "dicomdir",
        "edge",
        "no_preamble_meta",
        "bare_small",
        "bare_implicit",
    ],
)
def test_matches_dcmdump(files: dict[str, Path], name: str) -> None:
    out, _, tags = extract(files[name])
    dumped = dcmdump(files[name])
    bulk = {e["path"] for e in out.metadata["bulk_data"]}
    group_lengths = {key for key in dumped if key.endswith("0000")}  # not in the JSON model
    assert set(tags) == set(dumped) - bulk - group_lengths
    assert out.metadata["element_count"] == len(dumped)
    for key, elem in tags.items():
        if name == "edge" and key == "00291014":
            assert elem["vr"] == "UN"  # UL of a wrong length: we keep the bytes as UN
            continue
        vr, text = dumped[key]
        vr = {"??": "UN", "up": "UL", "xs": elem["vr"], "ox": "OW"}.get(vr, vr)
        assert elem["vr"] == vr, key
        assert_value_matches(key, elem, text)


@needs_dcmdump
def test_non_ascii_names_match_dcmdump(files: dict[str, Path]) -> None:
    for name, key in [
        ("latin1", "00100010"),
        ("utf8", "00100010"),
        ("korean", "00100010"),
        ("utf8", "00080080"),
    ]:
        _, _, tags = extract(files[name])
        assert_value_matches(key, tags[key], dcmdump(files[name])[key][1])


# --- encodings and transfer syntaxes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "syntax", "version"),
    [
        ("implicit", uids.ImplicitVRLittleEndian, "Implicit VR Little Endian"),
        ("big_endian", uids.ExplicitVRBigEndian, "Explicit VR Big Endian"),
        ("deflated", uids.DeflatedExplicitVRLittleEndian, "Deflated Explicit VR Little Endian"),
        ("rle", uids.RLELossless, "RLE Lossless"),
        ("jpeg2000", uids.JPEG2000Lossless, "JPEG 2000 Image Compression (Lossless Only)"),
    ],
)
def test_transfer_syntaxes(files: dict[str, Path], name: str, syntax: str, version: str) -> None:
    out, row, tags = extract(files[name])
    assert out.format_version == version and row["transfer_syntax_uid"] == syntax
    assert out.metadata["transfer_syntax"]["uid"] == syntax
    assert (
        row["rows"]
        == row["columns"]
        == (64 if name in ("implicit", "big_endian", "deflated") else 16)
    )
    assert row["modality"] == "CT" and row["patient_id"] == "PID0001"
    # numbers right in either byte order (in implicit VR the private dictionary has the
    # last word on private VRs: GEMS_PARM_01 (0043,xx04) is SS there)
    if name != "implicit":
        assert values(tags, "00431004") == [1, -2, 3] and values(tags, "00431006") == [77]
        assert values(tags, "00431005") == [1.25, 2.5]
    assert values(tags, "00189311") == [0.984375] and values(tags, "00280010")
    assert values(tags, "00180060") == [120.0] and values(tags, "00280101") == [12]
    assert values(tags, "00100010") == [{"Alphabetic": "Doe^Jöhn"}]
    pixels = [e for e in out.metadata["bulk_data"] if e["path"] == "7FE00010"]
    assert len(pixels) == 1 and "7FE00010" not in tags


def test_encapsulated_pixel_data(files: dict[str, Path]) -> None:
    for name, frames in (("rle", 2), ("jpeg2000", 3)):
        out, row, _ = extract(files[name])
        assert row["number_of_frames"] == frames
        (pixels,) = [e for e in out.metadata["bulk_data"] if e["path"] == "7FE00010"]
        assert pixels["vr"] == "OB" and pixels["encapsulated"] and pixels["length"] is None


def test_implicit_vr_resolution(files: dict[str, Path]) -> None:
    _, _, tags = extract(files["implicit"])
    assert tags["00280106"] == {"vr": "US", "Value": [0]}  # US or SS, Pixel Representation 0
    assert tags["00091001"] == {"vr": "UN", "InlineBinary": "QUNNRSAxLjA="}  # unknown private
    assert tags["00431001"] == {"vr": "SS", "Value": [3]}  # pydicom's private dictionary
    assert tags["00090010"] == {"vr": "LO", "Value": ["ACME_PRIVATE"]}  # private creator


def test_multiframe(files: dict[str, Path]) -> None:
    out, row, _ = extract(files["multiframe"])
    assert row["number_of_frames"] == 3 and row["rows"] == 16
    (pixels,) = [e for e in out.metadata["bulk_data"] if e["path"] == "7FE00010"]
    assert pixels["length"] == 3 * 16 * 16 * 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("latin1", {"Alphabetic": "Buc^Jérôme"}),
        ("utf8", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        (
            "japanese",
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        ("korean", {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}),
    ],
)
def test_non_ascii_person_names(files: dict[str, Path], name: str, expected: dict) -> None:
    _, _, tags = extract(files[name])
    assert values(tags, "00100010") == [expected]


def test_multi_valued_non_ascii_names(files: dict[str, Path]) -> None:
    for name in ("latin1", "utf8", "japanese"):
        _, _, tags = extract(files[name])
        assert values(tags, "00081070")[0] == values(tags, "00100010")[0]
        assert values(tags, "00081070")[1] == {"Alphabetic": "X^Y"}
    _, _, tags = extract(files["japanese"])
    assert values(tags, "00080080") == ["山田"] and values(tags, "00104000") == ["山田"]


def test_non_ascii_text(files: dict[str, Path]) -> None:
    _, _, tags = extract(files["utf8"])
    assert values(tags, "00080080") == ["Grüße 中文"]
    assert values(tags, "00104000") == ["Grüße 中文"]
    _, _, tags = extract(files["latin1"])
    assert values(tags, "00104000") == ["Château"]


def test_dicomdir(files: dict[str, Path]) -> None:
    _, row, tags = extract(files["dicomdir"])
    assert row["sop_instance_uid"] is None and row["sop_class_uid"] is None
    records = values(tags, "00041220")
    kinds = [r["00041430"]["Value"][0] for r in records]
    assert kinds == ["PATIENT", "STUDY", "SERIES", "IMAGE"]
    assert values(tags, "00020002") == [uids.MediaStorageDirectoryStorage]


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("bare_small", uids.ExplicitVRLittleEndian),
        ("bare_implicit", uids.ImplicitVRLittleEndian),
        ("no_preamble_meta", uids.ExplicitVRLittleEndian),
    ],
)
def test_files_without_preamble(files: dict[str, Path], name: str, syntax: str) -> None:
    out, row, tags = extract(files[name])
    assert out.metadata["preamble"] is False
    assert row["transfer_syntax_uid"] == syntax and row["modality"] == "CT"
    assert out.metadata["transfer_syntax"]["inferred"] is name.startswith("bare")
    assert row["sop_instance_uid"] == values(tags, "00080018")[0]
    assert ("00020010" in tags) is (name == "no_preamble_meta")


def test_edge_case_values(files: dict[str, Path]) -> None:
    out, row, tags = extract(files["edge"])
    assert row["study_date"] == dt.date(2024, 1, 2)  # ACR-NEMA date
    assert row["patient_id"] == "ID\\X" and row["modality"] == "MR"
    assert row["rows"] is None and row["columns"] == 4 and row["number_of_frames"] == 3
    assert values(tags, "00080008") == ["A", None, "B"]
    assert tags["00100010"] == {"vr": "PN"}
    assert values(tags, "00181060") == ["1.5abc", 2.0]  # malformed DS kept as string
    assert values(tags, "00200012") == ["x1"] and values(tags, "00200013") == ["12.0"]  # not an IS: as written, as dcm2json
    assert values(tags, "00204000") == ["é" * 1500]  # longer than the threshold, not binary
    assert values(tags, "00209165") == ["00280010", "00280011"]
    assert tags["00291014"] == {"vr": "UN", "InlineBinary": "AQIDBAUG"}
    assert values(tags, "00291010") == [float(i) for i in range(300)]
    assert tags["00291011"] == {"vr": "UN", "InlineBinary": "YWJjZA=="}  # UN stays UN
    (un_item,) = values(tags, "00291012")
    assert un_item == {"00080100": {"vr": "SH", "Value": ["ABCD"]}}
    assert len(values(tags, "00081140")) == 20  # deferred, then read: longer than 1 KiB
    assert values(tags, "FFFAFFFA")[0]["04000015"]["Value"] == ["RIPEMD160"]  # after pixels
    bulk = {e["path"]: e for e in out.metadata["bulk_data"]}
    assert set(bulk) == {"7FE00010", "FFFCFFFC"}
    assert bulk["FFFCFFFC"]["length"] == 2000


def test_bulk_threshold_setting(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom, "BULK_THRESHOLD", 4096)
    out, _, tags = extract(files["ct"])
    assert base64.b64decode(tags["00431007"]["InlineBinary"]) == bytes(range(256)) * 8
    assert "7FE00010" not in tags  # pixel data whatever the threshold
    monkeypatch.setattr(dicom, "BULK_THRESHOLD", 0)
    out, _, tags = extract(files["ct"])
    assert "00431003" not in tags and "00020001" not in tags
    assert {"00431003", "00020001"} <= {e["path"] for e in out.metadata["bulk_data"]}
    assert values(tags, "00100010") == [{"Alphabetic": "Doe^Jöhn"}]  # text is never bulk


def test_registry_finds_the_extractor() -> None:
    assert registry()["dicom"] is dicom.EXTRACTOR
    assert dicom.EXTRACTOR.tables == {"dicom": schemas.DICOM}


# --- broken files ----------------------------------------------------------------------------


def _element_starts(path: Path) -> set[int]:
    """Offsets where a top-level data set element starts (a cut there leaves a valid file)."""
    ds = pydicom.dcmread(path)
    starts = set()
    for elem in ds.elements():  # raw elements: no value conversion
        offset = getattr(elem, "value_tell", None) or elem.file_tell
        long = ds.original_encoding[0] is False and elem.VR in (
            "OB",
            "OD",
            "OF",
            "OL",
            "OV",
            "OW",
            "SQ",
            "UC",
            "UN",
            "UR",
            "UT",
        )
        starts.add(offset - (12 if long else 8))
    return starts


@pytest.mark.parametrize("name", ["small", "rle", "implicit", "edge"])
def test_truncated_files_raise(files: dict[str, Path], name: str, tmp_path: Path) -> None:
    """Every cut raises, except between two top-level elements; a few cuts locally too."""
    data = files[name].read_bytes()
    valid_cuts = _element_starts(files[name])
    header_end = max(valid_cuts)
    step = 1 if name == "small" else 5  # every offset of one header, a sample of others
    cuts = sorted(
        set(range(400))
        | set(range(400, header_end + 40, step))
        | set(range(header_end, len(data), 97))
    )
    memory = fsspec.filesystem("memory")
    for cut in cuts:  # in memory: thousands of files on disk would be slow to write
        memory.pipe("/test-dicom/cut.dcm", data[:cut])
        try:
            dicom.extract(Source("memory://test-dicom/cut.dcm", cut), Extraction("dicom"))
        except Exception as exc:  # noqa: BLE001 - any exception is a failed file
            assert str(exc), cut
        else:  # only a cut between two top-level elements leaves a readable file
            assert cut in valid_cuts, f"a file cut at {cut} of {len(data)} was read"
    for cut in (100, 140, 700, header_end + 3, len(data) - 1):
        message = extract_error(data[:cut], tmp_path)
        assert message.startswith(("InvalidDicomError", "OSError")), message


def test_truncated_messages_are_clear(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["small"].read_bytes()
    assert extract_error(data[:-10], tmp_path) == (
        f"InvalidDicomError: truncated file: the pixel data needs {32 * 32 * 2} bytes at "
        f"offset {len(data) - 32 * 32 * 2}, but the data end at offset {len(data) - 10}"
    )
    assert "empty file" in extract_error(b"", tmp_path)
    assert "no data set" in extract_error(data[:132], tmp_path)


@pytest.mark.parametrize(
    "data",
    [
        b"hello world, this is not DICOM\n" * 20,
        b"\x89PNG\r\n\x1a\n" + bytes(600),
        bytes(range(256)) * 4,
        bytes(1000),
        b"\xff" * 1000,
    ],
    ids=["text", "png", "bytes", "zeros", "ones"],
)
def test_non_dicom_files_raise(data: bytes, tmp_path: Path) -> None:
    assert extract_error(data, tmp_path).startswith("InvalidDicomError: not a DICOM file")


@pytest.mark.parametrize("seed", range(5))
def test_garbage_after_the_magic_raises(seed: int, tmp_path: Path) -> None:
    garbage = np.random.default_rng(seed).bytes(2000)
    assert extract_error(b"\0" * 128 + b"DICM" + garbage, tmp_path)
    assert extract_error(b"\0" * 128 + b"DICM" + bytes(2000), tmp_path)
    assert extract_error(b"\0" * 128 + b"DICM" + b"\xff" * 2000, tmp_path)


@pytest.mark.parametrize(
    "data_set",
    [
        element(0x00080060, "CS", b"CT") + element(0x00091001, "OB", b"abcd", 0xFFFFFFF0),
        element(0x00080060, "CS", b"CT") + element(0x00104000, "UT", b"abcd", 0xFFFFFFF0),
        element(0x00080060, "CS", b"CT")
        + element(0x00081140, "SQ", item(element(0x00081150, "UI", b"1.2", 0xFFF0)), 0xFFFFFFF0),
        element(
            0x00081140,
            "SQ",
            item(element(0x00104000, "UT", b"x", 0xFFFFFFF0), undefined=True),
            0xFFFFFFFF,
        ),
        element(0x00080060, "CS", b"CT") + element(0x7FE00010, "OW", b"\0" * 64, 0xFFFFFFF0),
    ],
    ids=["ob", "ut", "sequence", "inside-undefined-sequence", "pixel-data"],
)
def test_huge_lengths_do_not_allocate(data_set: bytes, tmp_path: Path) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = extract_error(part10(data_set + bytes(100)), tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "truncated" in message or "No tag to read" in message, message
    assert peak < 32 * 2**20 and time.perf_counter() - started < 5


def test_huge_length_in_file_meta(tmp_path: Path) -> None:
    data = bytearray(part10(element(0x00080060, "CS", b"CT")))
    data[132 + 12 + 8 : 132 + 12 + 12] = struct.pack("<L", 0xFFFFFFF0)  # (0002,0001) OB length
    assert "truncated" in extract_error(bytes(data), tmp_path)


@pytest.mark.parametrize(
    "vr, raw, expected",
    [
        # leading and trailing spaces are not significant in AE, CS, LO and SH (PS3.5 table
        # 6.2-1): each value loses them, as dcmtk's dcm2json writes them
        ("CS", b" HEAD \\ CHEST ", ["HEAD", "CHEST"]),
        ("AE", b" STORE \\SCP ", ["STORE", "SCP"]),
        ("LO", b" a \\ b  ", ["a", "b"]),
        ("SH", b" x y ", ["x y"]),
        ("UC", b"  lead \\x ", ["  lead", "x"]),  # UC: leading spaces are significant
        ("DA", b"20240102 \\20240103", ["20240102", "20240103"]),
        ("LT", b" one \\ value ", [" one \\ value"]),  # text VRs: one value, leading spaces kept
        ("CS", b"A\\\\B", ["A", None, "B"]),  # an empty value among others: null
        # every value empty: no Value, whatever the VR (was [null, null] for some)
        *[(vr, b"\\ ", None) for vr in ("CS", "LO", "SH", "UC", "IS", "DS", "UI", "AE", "DA", "PN")],
        ("IS", b" 12 \\ -3", [12, -3]),
    ],
)
def test_string_values_lose_insignificant_spaces_and_all_empty_values_have_no_value(vr, raw, expected) -> None:
    assert dicom._CONVERTERS[vr](raw, True, ("ascii",)) == expected


@pytest.mark.parametrize(
    "vr, raw, expected",
    [
        # person names as dcm2json writes them: components stripped of spaces, trailing empty
        # components and empty groups dropped, a name of delimiters only empty
        ("PN", b"Doe^John^^^\\^^^^\\=^\\^=Ideo\\Doe ^ John \\ Lead^x = y",
         [{"Alphabetic": "Doe^John"}, None, None, {"Ideographic": "Ideo"},
          {"Alphabetic": "Doe^John"}, {"Alphabetic": "Lead^x", "Ideographic": "y"}]),
        ("PN", b"^", None),
        ("PN", b"Doe^^John", [{"Alphabetic": "Doe^^John"}]),  # an inner empty component stays
        # IS: integers only when they are IS values (PS3.5 table 6.2-1), else as written
        ("IS", b"1e1\\3.0\\2147483648\\-2147483649\\2147483647\\+7\\-2147483648",
         ["1e1", "3.0", "2147483648", "-2147483649", 2147483647, 7, -(2**31)]),
    ],
)
def test_person_names_and_integer_strings_as_dcm2json_writes_them(vr, raw, expected) -> None:
    assert dicom._CONVERTERS[vr](raw, True, ("ascii",)) == expected


def test_64_bit_integers_beyond_doubles_are_strings() -> None:
    """SV/UV values a double cannot hold exactly are decimal strings (PS3.18 F.2.3.1), as
    dcm2json writes them."""
    sv = struct.pack("<3q", 2**53 - 1, 2**53, -(2**63))
    uv = struct.pack("<2Q", 2**64 - 1, 5)
    assert dicom._CONVERTERS["SV"](sv, True, ()) == [2**53 - 1, str(2**53), str(-(2**63))]
    assert dicom._CONVERTERS["UV"](uv, True, ()) == [str(2**64 - 1), 5]
    assert dicom._CONVERTERS["SV"](struct.pack(">q", -(2**60)), False, ()) == [str(-(2**60))]


@pytest.mark.parametrize(
    "charset, raw, expected",
    [
        # ISO 2022 IR 58 (PS3.5 annex K.2): the G1 designation ESC $ ) A is not text
        (["", "ISO 2022 IR 58"], b"\x1b$)A\xb1\xb1\xbe\xa9", "北京"),
        (["ISO_IR 203"], b"\xa4uro", "€uro"),  # Latin-9 (PS3.3 table C.12-2), not Latin-1
    ],
)
def test_character_sets_pydicom_decodes_wrongly(charset, raw, expected) -> None:
    from pydicom.charset import convert_encodings

    assert dicom._CONVERTERS["LO"](raw, True, convert_encodings(charset)) == [expected]


@pytest.mark.skipif(shutil.which("dump2dcm") is None or shutil.which("dcm2json") is None,
                    reason="dcmtk's dump2dcm and dcm2json are not installed")
def test_group_lengths_names_and_charsets_match_dcm2json(tmp_path: Path) -> None:
    """A file written by dcmtk (dump2dcm), read back by dcmtk's dcm2json: the same JSON model
    for group lengths (none, PS3.18 F.2.2), person names, IS and SV values, ISO 2022 IR 58."""
    dump = tmp_path / "x.dump"
    dump.write_bytes(
        b"# Dicom-File-Format\n(0002,0002) UI [1.2.840.10008.5.1.4.1.1.7]\n(0002,0003) UI [1.2.3]\n"
        b"(0002,0010) UI [1.2.840.10008.1.2.1]\n(0008,0005) CS [\\ISO 2022 IR 58]\n"
        b"(0008,0016) UI [1.2.840.10008.5.1.4.1.1.7]\n(0008,0018) UI [1.2.3]\n(0008,0060) CS [OT]\n"
        b"(0008,0080) LO [\x1b$)A\xb1\xb1\xbe\xa9]\n"
        b"(0008,0090) PN [Doe^John^^^\\ Lead ^ x =y]\n(0008,1050) PN [^]\n"
        b"(0010,0010) PN [Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=]\n"
        b"(0020,0013) IS [1e1\\3.0\\42]\n(0072,0082) SV 9007199254740992\\-5\n"
    )
    path = tmp_path / "x.dcm"
    subprocess.run(["dump2dcm", "+g", str(dump), str(path)], check=True, capture_output=True)
    reference = json.loads(subprocess.run(["dcm2json", "-fc", str(path)], check=True,
                                          capture_output=True, text=True).stdout)
    reference.pop("00080005")  # dcm2json rewrites the character set as ISO_IR 192
    _, _, tags = extract(path)
    tags.pop("00080005")
    assert "00080000" in dcmdump(path) and "00080000" not in tags  # +g wrote group lengths
    assert {k: v for k, v in tags.items() if not k.startswith("0002")} == reference
    assert tags["00080080"]["Value"] == ["北京"]


def test_file_meta_without_its_group_length_keeps_its_short_binary_values(files: dict[str, Path], tmp_path: Path) -> None:
    """A file meta group without (0002,0000): pydicom reads the group itself, and the 2-byte
    OB (0002,0001) that is reread from the file stays in tags (InlineBinary, as dcmdump and
    dcm2json show it), not listed as bulk data."""
    data = files["ct"].read_bytes()
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL"
    path = tmp_path / "no_group_length.dcm"
    path.write_bytes(data[:132] + data[144:])  # drop the 12-byte group length element
    out, _, tags = extract(path)
    assert "00020000" not in tags
    assert tags["00020001"] == {"vr": "OB", "InlineBinary": base64.b64encode(b"\x00\x01").decode()}
    assert all(not e["path"].startswith("0002") for e in out.metadata["bulk_data"])


def test_a_data_set_written_in_the_other_vr_mode_than_declared_is_read_as_written(tmp_path: Path) -> None:
    """File meta says Explicit VR Little Endian, the data set is written Implicit VR (pydicom's
    test file SC_rgb_jpeg.dcm is such a file): pydicom reads the data set as implicit VR, and
    so is the pixel data element after it (it used to be read as explicit: a false 'truncated
    file'). The file is ok, its transfer_syntax metadata says implicit_vr."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = bytes([1, 2, 3, 4])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    path = tmp_path / "mismatch.dcm"
    path.write_bytes(head.getvalue() + body.getvalue())
    with pytest.warns(UserWarning, match="implicit VR"):
        out, row, tags = extract(path)
    assert out.metadata["transfer_syntax"]["implicit_vr"] is True
    assert row["modality"] == "OT" and row["rows"] == 2
    (pixels,) = [e for e in out.metadata["bulk_data"] if e["path"] == "7FE00010"]
    assert pixels["length"] == 4
    # --stats: pydicom's frame iterator misreads such a file; the data set read whole does not
    from transforms.detect import detect
    from transforms.extract import catalog_rows
    from transforms.formats.base import FileInfo
    from transforms.work import Settings

    with pytest.warns(UserWarning, match="implicit VR"):
        rows = catalog_rows(detect(FileInfo(str(path), path.stat().st_size)), settings=Settings(stats=True))
    assert rows["files"][0]["status"] == "ok", rows["files"][0]["error"]
    assert rows["dicom"][0]["stat_count"] == 4 and rows["dicom"][0]["stat_mean"] == 2.5


def test_encapsulated_pixel_data_in_a_sequence_item_is_bulk_data(tmp_path):
    """An icon image's encapsulated pixels (undefined length: items, not a value) inside a
    sequence pydicom reads whole: listed as bulk data, as at the top level, not InlineBinary
    of the item headers (dcm2json refuses such a value)."""
    fragments = (struct.pack("<HHL", 0xFFFE, 0xE000, 0)
                 + struct.pack("<HHL", 0xFFFE, 0xE000, 6) + b"\x01\x02\x03\x04\x05\x06"
                 + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    icon = (element(0x00280010, "US", struct.pack("<H", 2)) + element(0x00280011, "US", struct.pack("<H", 3))
            + element(0x7FE00010, "OB", fragments, 0xFFFFFFFF))
    data_set = (element(0x00080060, "CS", b"OT")
                + element(0x00880200, "SQ", item(icon, undefined=True) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0),
                          0xFFFFFFFF))
    path = tmp_path / "icon.dcm"
    path.write_bytes(part10(data_set, uids.RLELossless))
    out, _, tags = extract(path)
    (icon_item,) = tags["00880200"]["Value"]
    assert "7FE00010" not in icon_item and icon_item["00280010"]["Value"] == [2]
    assert {"path": "00880200/0/7FE00010", "vr": "OB", "length": None}.items() <= out.metadata["bulk_data"][0].items()


def test_an_element_pydicom_converts_from_un_keeps_the_vr_and_value_written(tmp_path):
    """(0008,0005) written with VR UN in an explicit VR file: pydicom turns it into CS; the
    element is read back as written (UN, its 10 bytes), as dcmdump shows it (was CS, no value)."""
    data_set = (element(0x00080005, "UN", b"ISO_IR 100") + element(0x00080060, "CS", b"OT")
                + element(0x00100010, "PN", "Müller^Hans".encode("latin-1")))
    path = tmp_path / "un.dcm"
    path.write_bytes(part10(data_set))
    _, _, tags = extract(path)
    assert tags["00080005"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"ISO_IR 100").decode()}
    assert tags["00100010"]["Value"] == [{"Alphabetic": "Müller^Hans"}]


@needs_dcmdump
def test_implicit_vr_private_elements_take_dcmtks_private_dictionary(tmp_path):
    """Private elements of an implicit VR file get the VR dcmdump gives them (DCMTK's
    private.dic, vendored): known under their creator's block, UN where DCMTK does not know
    them (pydicom's dictionary differs: (0019,xx08) ACUSON is CS there, unknown to DCMTK)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "MR"
    ds.add_new(0x00090012, "LO", "ACUSON")  # block 12: the dictionary's low byte applies
    ds.add_new(0x00091208, "LT", "text")
    ds.add_new(0x0009120A, "IS", "12")
    ds.add_new(0x00190010, "LO", "ACUSON")
    ds.add_new(0x00191008, "CS", "IMAGE NUM 4")
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
    ds.add_new(0x70110010, "LO", "DLX_ANNOT_01")  # a group range (7001-o-70ff)
    ds.add_new(0x70111005, "IS", "1\\2")
    path = tmp_path / "private.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    _, _, tags = extract(path)
    dumped = dcmdump(path)
    for key in ("00091208", "0009120A", "00191008", "00291008", "70111005"):
        vr = dumped[key][0]
        assert tags[key]["vr"] == {"??": "UN"}.get(vr, vr), key
    assert tags["0009120A"]["Value"] == [12] and tags["70111005"]["Value"] == [1, 2]
    assert tags["00191008"]["vr"] == "UN"


def test_typed_columns_read_known_elements_written_as_un(tmp_path):
    """Known elements written with VR UN in an explicit VR file: tags keep them UN (as
    dcm2json); the typed columns decode them by their dictionary VR (as dcmdump +uc)."""
    data_set = (element(0x00080020, "UN", b"20240101") + element(0x00080060, "UN", b"MR")
                + element(0x00100020, "UN", b"PID1") + element(0x0020000D, "UN", b"1.2.3\0")
                + element(0x00280008, "UN", b"2 ") + element(0x00280010, "UN", struct.pack("<H", 4))
                + element(0x00280011, "UN", struct.pack("<H", 5)))
    path = tmp_path / "un.dcm"
    path.write_bytes(part10(data_set))
    _, row, tags = extract(path)
    assert tags["00080060"]["vr"] == "UN" and tags["00280010"]["vr"] == "UN"
    assert (row["modality"], row["patient_id"], row["study_instance_uid"], row["study_date"],
            row["rows"], row["columns"], row["number_of_frames"]) == (
        "MR", "PID1", "1.2.3", dt.date(2024, 1, 1), 4, 5, 2)


@pytest.mark.parametrize("syntax", [uids.ExplicitVRLittleEndian, uids.ExplicitVRBigEndian])
def test_fl_values_are_the_shortest_decimal_of_their_float32(tmp_path, syntax):
    """FL values as NetCDF and HDF5 float32 attributes are written: -0.1, not the double
    -0.10000000149011612 (dcm2json prints 9 digits, -0.100000001: the same float32);
    subnormals exactly."""
    ds = ct_dataset(size=4)
    ds.add_new(0x00431008, "FL", [-0.1, 0.3, 3.4028234663852886e38, 1e-45, 1.0])
    _, _, tags = extract(save(ds, tmp_path / "fl.dcm", syntax))
    assert tags["00431008"] == {"vr": "FL", "Value": [-0.1, 0.3, 3.4028235e38, 1.401298464324817e-45, 1.0]}
