"""Format detection from bytes, never from names."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from transforms.detect import detect, hdf5_signature_offset, looks_like_raw_dicom
from transforms.formats.base import FileInfo
from transforms.listing import list_input


def detected_format(path) -> str:
    (info,) = list(list_input(str(path)))
    return detect(info).format


@pytest.mark.parametrize(
    "relpath, expected",
    [
        ("dicom/ct_chest.dcm", "dicom"),
        ("dicom/mr_brain_implicit.dcm", "dicom"),
        ("fits/m31_sample.fits", "fits"),
        ("hdf5/nexus_scan.h5", "hdf5"),
        ("netcdf/sst_cf.nc", "netcdf"),  # NetCDF-4: HDF5 underneath, written by netCDF
        ("netcdf/precip_classic.nc", "netcdf"),
        ("other/truncated_scan.h5", "hdf5"),
        ("other/notes.txt", "unknown"),
        ("misnamed/really_fits.h5", "fits"),
        ("misnamed/scan.txt", "dicom"),
        ("garbage.fits", "fits"),
    ],
)
def test_format_comes_from_the_bytes(mixed_corpus, relpath, expected):
    assert detected_format(mixed_corpus / relpath) == expected


def test_netcdf_classic_magics(tmp_path):
    for i, magic in enumerate((b"CDF\x01", b"CDF\x02", b"CDF\x05")):
        (tmp_path / f"f{i}").write_bytes(magic + b"\x00" * 60)
        assert detected_format(tmp_path / f"f{i}") == "netcdf"


def test_zero_byte_file_is_unknown_with_an_error(tmp_path):
    (tmp_path / "empty.nc").write_bytes(b"")
    (info,) = list(list_input(str(tmp_path / "empty.nc")))
    result = detect(info)
    assert result.format == "unknown"
    assert result.error.startswith("EmptyFileError")


def test_vanished_file_keeps_an_error(tmp_path):
    info = FileInfo(path=str(tmp_path / "gone.h5"), size=100)
    result = detect(info)
    assert result.format == "unknown"
    assert result.error.startswith("FileNotFoundError")


@pytest.mark.parametrize("userblock", [512, 1024, 8192])
def test_hdf5_with_a_user_block(tmp_path, userblock):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=userblock) as f:
        f["x"] = np.arange(3)
    with open(path, "r+b") as f:  # user block content that is not a signature
        f.write(b"USERBLOCK" * 10)
    assert detected_format(path) == "hdf5"
    (info,) = list(list_input(str(path)))
    assert detect(info).error is None


def test_hdf5_signature_offsets():
    sig = b"\x89HDF\r\n\x1a\n"
    assert hdf5_signature_offset(sig + b"\0" * 100) == 0
    assert hdf5_signature_offset(b"\0" * 512 + sig + b"\0" * 100) == 512
    assert hdf5_signature_offset(b"\0" * 100 + sig + b"\0" * 600) is None  # not at a power of two


def test_dicom_without_preamble():
    explicit = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    assert looks_like_raw_dicom(explicit + b"\x08\x00\x16\x00UI\x00\x00")
    implicit = b"\x08\x00\x05\x00" + (10).to_bytes(4, "little") + b"ISO_IR 100" + b"\x08\x00\x16\x00"
    assert looks_like_raw_dicom(implicit)
    big_endian = b"\x00\x08\x00\x05CS\x00\x0aISO_IR 100"
    assert looks_like_raw_dicom(big_endian + b"\x00" * 8)
    assert not looks_like_raw_dicom(b"\x08\x00" + b"\xff" * 40)
    assert not looks_like_raw_dicom(b"hello world, not dicom at all")


def test_detect_format_transform_alone(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.extract import DetectFormat

    (tmp_path / "a.nc").write_bytes(b"CDF\x01" + bytes(28))
    (tmp_path / "b.txt").write_bytes(b"plain text")
    infos = sorted(list_input(str(tmp_path)), key=lambda i: i.path)
    with TestPipeline() as p:
        formats = p | beam.Create(infos) | DetectFormat() | beam.Map(lambda d: (d.info.path.rsplit("/", 1)[1], d.format))
        assert_that(formats, equal_to([("a.nc", "netcdf"), ("b.txt", "unknown")]))


def _h5(path, build, **kwargs):
    with h5py.File(path, "w", **kwargs) as f:
        build(f)
    return path


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_small_plain_hdf5_is_told_from_its_bytes_and_netcdf_markers_still_count(tmp_path, libver):
    """A small local HDF5 file in which no netCDF-4 marker's bytes occur is plain HDF5 without
    walking its objects; one marker anywhere sends it through the walk, which decides."""
    from transforms.formats import netcdf
    from transforms.formats.base import Source

    def plain(f):
        for i in range(40):  # enough objects to take a dense (fractal heap) storage with "latest"
            g = f.create_group(f"entry{i}")
            g.attrs["NX_class"] = "NXentry"
            g.create_dataset("data", data=np.arange(4))

    def scales(f):  # within the objects the walk looks at (the root group's)
        plain(f)
        f["x"] = np.arange(3)
        f["x"].make_scale("x")

    def text_only(f):  # a marker's name in a value: the walk finds no marker attribute
        plain(f)
        f.attrs["comment"] = "no DIMENSION_LIST here"

    def source(path):
        return Source(str(path), path.stat().st_size, head=path.read_bytes()[:4096])

    cases = {"plain": (plain, "hdf5", True), "scales": (scales, "netcdf", False), "text": (text_only, "hdf5", False)}
    for name, (build, expected, fast) in cases.items():
        path = _h5(tmp_path / f"{name}.h5", build, libver=libver)
        assert path.stat().st_size <= netcdf.WHOLE_FILE_SNIFF_BYTES
        assert netcdf._holds_no_marker_bytes(source(path)) is fast, name
        assert detected_format(path) == expected, name


def test_filtered_fractal_heap_sends_the_file_through_the_walk():
    from transforms.formats.netcdf import _filtered_heap

    unfiltered = b"xxFRHP" + b"\x00" + b"\x07\x00" + b"\x00\x00" + b"rest"
    filtered = b"xxFRHP" + b"\x00" + b"\x07\x00" + b"\x0c\x00" + b"rest"
    assert not _filtered_heap(unfiltered)
    assert _filtered_heap(unfiltered + filtered)
    assert _filtered_heap(b"..FRHP\x00")  # cut short: cannot tell, so walk
    assert not _filtered_heap(b"no heap at all")


def test_magic_at_byte_zero_wins_over_dicm_at_128(tmp_path):
    """'DICM' at 128 in a FITS card or a NetCDF classic attribute is text, not a DICOM
    preamble's end; 'DICM' followed by the file meta group is DICOM whatever the preamble."""
    fits = tmp_path / "a.fits"
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8",
             "NAXIS   =                    0", "END"]
    header = b"".join(c.ljust(80).encode() for c in cards)
    header = header[:128] + b"DICM" + header[132:]  # inside card 2's comment columns
    fits.write_bytes(header.ljust(2880))
    classic = tmp_path / "a.nc"
    classic.write_bytes(b"CDF\x01" + bytes(124) + b"DICM" + bytes(100))
    dicom = tmp_path / "tiff_dicom.dcm"  # a dual TIFF-DICOM file: TIFF header in the preamble
    dicom.write_bytes(b"II*\x00" + bytes(124) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(20))
    assert detected_format(fits) == "fits"
    assert detected_format(classic) == "netcdf"
    assert detected_format(dicom) == "dicom"


@pytest.mark.parametrize("block", [b"SIMPLE  =  T" + b" " * 68, bytes(128) + b"DICM" + b"x" * 20])
def test_an_hdf5_signature_after_a_user_block_wins_over_the_block(tmp_path, block):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["x"] = np.arange(3)
    with open(path, "r+b") as f:
        f.write(block)
    assert detected_format(path) == "hdf5"


def test_a_file_shorter_than_listed_does_not_hang_detection(tmp_path):
    """A head shorter than 8 bytes and a listed size larger (a file cut after listing, a
    sysfs file): the signature search ends (it looped forever from offset 0)."""
    path = tmp_path / "short"
    path.write_bytes(b"12345\n")
    info = FileInfo(path=str(path), size=4096)
    assert detect(info).format == "unknown"


def test_dicom_without_preamble_implicit_vr_as_the_extractor_sees_it():
    """One element of group 0008 then group 0010, or a first element over 1 KiB: implicit VR
    data sets dcmdump reads (dump2dcm -F +ti writes them) are DICOM."""
    def element(group, elem, value):
        return group.to_bytes(2, "little") + elem.to_bytes(2, "little") + len(value).to_bytes(4, "little") + value

    one = element(8, 0x60, b"OT") + element(0x10, 0x10, b"Doe^John")
    long_first = element(8, 8, b"ORIGINAL\\" * 120) + element(8, 0x60, b"OT")
    assert looks_like_raw_dicom(one, len(one)) and looks_like_raw_dicom(long_first[:4096], len(long_first))
    assert not looks_like_raw_dicom(element(8, 0x60, b"OT")[:8] + b"\xff" * 40, 48)
