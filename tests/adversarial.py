"""Adversarial files for every format, one generator per case (issue 5).

Each ``make_<case>(path) -> None`` writes one file; :data:`ALL_CASES` maps every case name to
its generator (the name starts with the format the file claims to be: ``dicom_``, ``fits_``,
``hdf5_``, ``netcdf3_``, ``netcdf4_``, or ``empty``). Valid seed files come from the formats'
own libraries (pydicom, astropy, h5py, netCDF4); the hostile parts are then written or patched
byte by byte. Plain functions, no pytest: the stress benchmark imports them too.

    from tests.adversarial import ALL_CASES
    for name, make in ALL_CASES.items():
        make(f"/tmp/adversarial/{name}")
"""

from __future__ import annotations

import functools
import os
import random
import struct
from collections.abc import Callable

import numpy as np

# --- valid seed files -------------------------------------------------------------------------


def make_valid_dicom(path: str) -> None:
    """A small explicit VR little endian CT image with a sequence, written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.7.0"
    ds.Modality = "CT"
    ds.PatientName = "Adversarial^Test"
    ds.PatientID = "ADV-1"
    ds.StudyDate = "20240101"
    ds.PixelSpacing = ["0.5", "0.5"]
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_valid_fits(path: str) -> None:
    """A primary image, an image extension and a binary table, written by astropy."""
    from astropy.io import fits

    primary = fits.PrimaryHDU(np.arange(16, dtype=">i2").reshape(4, 4))
    primary.header["OBJECT"] = "ADVERSARY"
    primary.header["EXPTIME"] = (1.5, "[s]")
    image = fits.ImageHDU(np.ones((2, 3), dtype=">f4"), name="SCI")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="ID", format="J", array=np.arange(3))], name="CAT"
    )
    fits.HDUList([primary, image, table]).writeto(path, overwrite=True)


def make_valid_hdf5(path: str) -> None:
    """Groups, a chunked compressed dataset, attributes of several types, a soft link."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["title"] = "adversarial seed"
        f.attrs["version"] = np.int32(3)
        g = f.create_group("entry")
        g.attrs["NX_class"] = "NXentry"
        d = g.create_dataset("data", data=np.arange(24, dtype="<f4").reshape(4, 6), chunks=(2, 6),
                             compression="gzip")
        d.attrs["units"] = "counts"
        d.attrs["range"] = np.array([0.0, 23.0])
        g["names"] = np.array([b"a", b"bc"], dtype="S2")
        f["link"] = h5py.SoftLink("/entry/data")


def _write_netcdf(path: str, fmt: str, *, dim_name: str = "x", dim_size: int = 3) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.title = "adversarial seed"
        ds.createDimension("time", None)
        ds.createDimension(dim_name, dim_size)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "days since 2024-01-01"
        v = ds.createVariable("v", "f4", ("time", dim_name))
        v.units = "K"
        v.valid_range = np.array([0.0, 400.0], dtype="f4")
        t[:] = [0, 1]
        v[:] = np.zeros((2, dim_size), dtype="f4")


def make_valid_netcdf3(path: str) -> None:
    """A CDF-1 file (NETCDF3_CLASSIC) with a record dimension, written by netCDF4."""
    _write_netcdf(path, "NETCDF3_CLASSIC")


def make_valid_netcdf4(path: str) -> None:
    """A NetCDF-4 (HDF5) file with a record dimension, written by netCDF4."""
    _write_netcdf(path, "NETCDF4")


#: The seed of every format (the fuzz harness mutates these).
VALID: dict[str, Callable[[str], None]] = {
    "dicom": make_valid_dicom,
    "fits": make_valid_fits,
    "hdf5": make_valid_hdf5,
    "netcdf3": make_valid_netcdf3,
    "netcdf4": make_valid_netcdf4,
}


def valid_bytes(fmt: str) -> bytes:
    """The bytes of the seed file of ``fmt`` (one of :data:`VALID`)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seed")
        VALID[fmt](path)
        with open(path, "rb") as f:
            return f.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _patch(path: str, marker: bytes, offset: int, value: bytes) -> None:
    """Overwrite ``value`` at ``offset`` from the one occurrence of ``marker`` in the file."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = data.find(marker)
    if at < 0 or data.find(marker, at + 1) >= 0:
        raise ValueError(f"marker {marker!r} not found exactly once")
    data[at + offset : at + offset + len(value)] = value
    _write(path, bytes(data))


# --- DICOM ------------------------------------------------------------------------------------

_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT",
                       b"SV", b"UV"))
_UNDEFINED = 0xFFFFFFFF
_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, _UNDEFINED)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_CONTENT_SEQUENCE = 0x0040A730


def _element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides the value's length."""
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    length = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, length) + value
    return head + struct.pack("<H", length) + value


def _dicom_meta(version_length: int | None = None) -> bytes:
    """Preamble, ``DICM`` and the file meta group (explicit VR little endian)."""
    elements = (
        _element(0x00020001, b"OB", b"\0\1", version_length)
        + _element(0x00020002, b"UI", b"1.2.840.10008.5.1.4.1.1.2")
        + _element(0x00020003, b"UI", b"1.2.826.0.1.3680043.8.498.7.2")
        + _element(0x00020010, b"UI", b"1.2.840.10008.1.2.1")
        + _element(0x00020012, b"UI", b"1.2.826.0.1.3680043.8.498.1")
    )
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<I", len(elements))) + elements


def _dicom_body() -> bytes:
    return (
        _element(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.2")
        + _element(0x00080018, b"UI", b"1.2.826.0.1.3680043.8.498.7.2")
        + _element(0x00080060, b"CS", b"CT")
        + _element(0x00100010, b"PN", b"Adversarial^Test")
        + _element(0x00100020, b"LO", b"ADV-2")
    )


def make_dicom_huge_length(path: str) -> None:
    """A private OB element claiming 0xFFFFFFF0 bytes, 16 bytes before the end of the file."""
    body = _dicom_body() + _element(0x00090010, b"LO", b"ADVERSARIAL")
    body += _element(0x00091010, b"OB", b"\xab" * 16, length=0xFFFFFFF0)
    _write(path, _dicom_meta() + body)


def make_dicom_huge_length_text(path: str) -> None:
    """A UT element (Text Value) claiming 0xFFFFFFF0 bytes."""
    body = _dicom_body() + _element(0x0040A160, b"UT", b"short text", length=0xFFFFFFF0)
    _write(path, _dicom_meta() + body)


def make_dicom_huge_length_in_sequence(path: str) -> None:
    """An item of a sequence of undefined length (read eagerly) holding a 0xFFFFFFF0 length."""
    inner = _element(0x00080100, b"SH", b"CODE") + _element(0x00091010, b"OB", b"\xab" * 16, 0xFFFFFFF0)
    seq = _element(_CONTENT_SEQUENCE, b"SQ", b"", _UNDEFINED) + _ITEM + inner + _ITEM_END + _SEQUENCE_END
    _write(path, _dicom_meta() + _dicom_body() + seq)


def make_dicom_huge_length_in_meta(path: str) -> None:
    """The file meta's (0002,0001) OB claiming 0xFFFFFFF0 bytes."""
    _write(path, _dicom_meta(version_length=0xFFFFFFF0) + _dicom_body())


def _nested_undefined(depth: int) -> bytes:
    inner = _element(0x00080100, b"SH", b"DEEP")
    head = _element(_CONTENT_SEQUENCE, b"SQ", b"", _UNDEFINED) + _ITEM
    tail = _ITEM_END + _SEQUENCE_END
    return head * depth + inner + tail * depth


def _nested_defined(depth: int, payload: int = 0) -> bytes:
    value = _element(0x00080100, b"SH", b"DEEP")
    if payload:
        value += _element(0x00091010, b"OB", b"\xab" * payload)
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(value)) + value
        value = _element(_CONTENT_SEQUENCE, b"SQ", item)
    return value


def make_dicom_deep_sequences(path: str) -> None:
    """Sequences nested 1,000 deep, every sequence and item of undefined length."""
    _write(path, _dicom_meta() + _dicom_body() + _nested_undefined(1000))


def make_dicom_deep_sequences_defined(path: str) -> None:
    """Sequences nested 1,000 deep, every sequence and item of defined length."""
    _write(path, _dicom_meta() + _dicom_body() + _nested_defined(1000))


def make_dicom_nested_large_payload(path: str) -> None:
    """Sequences of defined length nested 100 deep around an 8 MiB value: a reader that copies
    each level's value holds 100 copies of it."""
    _write(path, _dicom_meta() + _dicom_body() + _nested_defined(100, payload=8 << 20))


# --- FITS -------------------------------------------------------------------------------------


def _card(keyword: str, value: object = None, comment: str = "") -> bytes:
    if value is None:
        text = f"{keyword:<8}{comment}"
    else:
        if isinstance(value, bool):
            value = "T" if value else "F"
        elif isinstance(value, str) and not value.startswith("'"):
            value = "'" + value.replace("'", "''").ljust(8) + "'"
        text = f"{keyword:<8}= {str(value):>20}" + (f" / {comment}" if comment else "")
    return text[:80].ljust(80).encode("ascii")


def _fits_header(cards: list[bytes]) -> bytes:
    data = b"".join(cards) + _card("END")
    return data + b" " * (-len(data) % 2880)


def make_fits_huge_naxis(path: str) -> None:
    """A primary header with NAXIS1 = 10^12 (a terabyte of data) and one data block."""
    header = _fits_header(
        [_card("SIMPLE", True), _card("BITPIX", 8), _card("NAXIS", 1), _card("NAXIS1", 10**12)]
    )
    _write(path, header + b"\0" * 2880)


def make_fits_huge_naxis_extension(path: str) -> None:
    """A valid empty primary HDU, then an image extension of 10^12 x 10^12 x 10^12 doubles."""
    primary = _fits_header([_card("SIMPLE", True), _card("BITPIX", 8), _card("NAXIS", 0),
                            _card("EXTEND", True)])
    extension = _fits_header(
        [_card("XTENSION", "IMAGE"), _card("BITPIX", -64), _card("NAXIS", 3)]
        + [_card(f"NAXIS{k}", 10**12) for k in (1, 2, 3)]
        + [_card("PCOUNT", 0), _card("GCOUNT", 1), _card("EXTNAME", "HUGE")]
    )
    _write(path, primary + extension + b"\0" * 2880)


def make_fits_many_cards(path: str, count: int = 100_000) -> None:
    """A primary header of ``count`` keyword cards (about 8 MB of header, no data)."""
    cards = [_card("SIMPLE", True), _card("BITPIX", 8), _card("NAXIS", 0)]
    cards += [_card(f"C{i:07d}", i, f"card {i}") for i in range(count)]
    _write(path, _fits_header(cards))


# --- HDF5 -------------------------------------------------------------------------------------


def make_hdf5_many_attributes(path: str, count: int = 100_000) -> None:
    """``count`` attributes on the root group (dense storage: fractal heap + v2 B-tree)."""
    import h5py
    from h5py import h5a, h5s, h5t

    with h5py.File(path, "w", libver="latest") as f:
        space, tid = h5s.create(h5s.SCALAR), h5t.STD_I64LE
        for i in range(count):
            h5a.create(f.id, b"a%06d" % i, tid, space).write(np.array(i, dtype="<i8"))
        f.create_dataset("x", data=np.arange(3))


def make_hdf5_many_attributes_compact(path: str, count: int = 5_000) -> None:
    """``count`` attributes in the object header messages of one dataset (old-style file)."""
    import h5py

    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", data=np.arange(3))
        for i in range(count):
            d.attrs[f"a{i:05d}"] = i


def _claim_attribute_bytes(path: str, name: bytes, dims: tuple[int, ...]) -> None:
    """Patch the dataspace of the attribute ``name`` (unique in the file) to ``dims``.

    Finds the attribute message by its name and walks its header (versions 1 to 3) to the
    dataspace message, whose dimension sizes are rewritten in place.
    """
    with open(path, "rb") as f:
        data = bytearray(f.read())
    at = data.find(name + b"\0")
    if at < 0 or data.find(name + b"\0", at + 1) >= 0:
        raise ValueError(f"attribute name {name!r} not found exactly once")
    for start, versions in ((at - 8, (1, 2)), (at - 9, (3,))):  # version 3 adds an encoding byte
        version, _, name_size, dt_size, _ = struct.unpack_from("<BBHHH", data, start)
        if name_size == len(name) + 1 and version in versions:
            break
    else:
        raise ValueError("no attribute message header before the name")
    if version == 1:
        ds_pos = at + (name_size + 7) // 8 * 8 + (dt_size + 7) // 8 * 8
        dims_pos = ds_pos + 8
    else:
        ds_pos = at + name_size + dt_size
        dims_pos = ds_pos + 4
    if data[ds_pos + 1] != len(dims):
        raise ValueError(f"the attribute has rank {data[ds_pos + 1]}, not {len(dims)}")
    for i, d in enumerate(dims):
        struct.pack_into("<Q", data, dims_pos + 8 * i, d)
    _write(path, bytes(data))


def make_hdf5_huge_attribute(path: str) -> None:
    """An attribute whose dataspace claims 2^28 int32 values (1 GiB) but holds 16 bytes."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["title"] = "huge attribute claim"
        d = f.create_dataset("x", data=np.arange(3))
        d.attrs["huge_claim"] = np.arange(4, dtype="<i4")
        d.attrs["after"] = "still readable"
    _claim_attribute_bytes(path, b"huge_claim", (2**28,))


def make_hdf5_huge_attribute_v3(path: str) -> None:
    """As :func:`make_hdf5_huge_attribute`, in a ``libver="latest"`` file (message v3)."""
    import h5py

    with h5py.File(path, "w", libver="latest") as f:
        d = f.create_dataset("x", data=np.arange(3))
        d.attrs["huge_claim"] = np.arange(4, dtype="<i4")
    _claim_attribute_bytes(path, b"huge_claim", (2**28,))


def make_hdf5_huge_dataset(path: str, dims: tuple[int, int] = (2**40, 2**20)) -> None:
    """A contiguous dataset (and an attribute) whose dataspace claims ``dims`` float64 values."""
    import h5py

    with h5py.File(path, "w") as f:
        d = f.create_dataset("huge_dataset", data=np.zeros((4, 2)))
        d.attrs["huge_marker"] = np.zeros((4, 2))  # the same dataspace: patched alike below
    with open(path, "rb") as f:
        data = f.read()
    # A dataspace v1 of rank 2, dims (4, 2) and the same max dims: patch both copies.
    space = struct.pack("<BBBB4xQQQQ", 1, 2, 1, 0, 4, 2, 4, 2)
    patched = data.replace(space, struct.pack("<BBBB4xQQQQ", 1, 2, 1, 0, *dims * 2))
    if patched == data:
        raise ValueError("dataspace not found")
    _write(path, patched)


def make_hdf5_dims_beyond_int64(path: str) -> None:
    """A dataset whose dataspace claims 2^64 - 2 values along its first axis (no int64 holds it)."""
    make_hdf5_huge_dataset(path, dims=(2**64 - 2, 1))


# --- NetCDF classic -----------------------------------------------------------------------------


def _patch_dim_length(path: str, name: bytes, length: int, width: int) -> None:
    """Rewrite the length of the classic dimension ``name`` (name length, name, padding, size)."""
    marker = name + b"\0" * (-len(name) % 4)
    _patch(path, marker, len(marker), length.to_bytes(width, "big"))


def make_netcdf3_huge_dims(path: str) -> None:
    """A CDF-1 file whose dimension ``huge_dim`` claims 2^31 - 1 values."""
    _write_netcdf(path, "NETCDF3_CLASSIC", dim_name="huge_dim")
    _patch_dim_length(path, b"huge_dim", 2**31 - 1, 4)


def make_netcdf3_huge_dims_cdf5(path: str) -> None:
    """A CDF-5 file whose dimension ``huge_dim`` claims 2^62 values."""
    _write_netcdf(path, "NETCDF3_64BIT_DATA", dim_name="huge_dim")
    _patch_dim_length(path, b"huge_dim", 2**62, 8)


def make_netcdf3_dims_beyond_int64(path: str) -> None:
    """A CDF-5 file whose dimension ``huge_dim`` claims 2^64 - 2 values (no int64 holds it)."""
    _write_netcdf(path, "NETCDF3_64BIT_DATA", dim_name="huge_dim")
    _patch_dim_length(path, b"huge_dim", 2**64 - 2, 8)


def make_netcdf3_huge_numrecs(path: str) -> None:
    """A CDF-2 file whose record count claims 2^31 - 2 records (the data hold 2)."""
    _write_netcdf(path, "NETCDF3_64BIT_OFFSET")
    with open(path, "r+b") as f:
        f.seek(4)
        f.write((2**31 - 2).to_bytes(4, "big"))


def make_netcdf3_huge_attribute(path: str) -> None:
    """A CDF-1 attribute (``units`` of ``time``) whose length claims 2^31 - 1 chars."""
    _write_netcdf(path, "NETCDF3_CLASSIC")
    # name length 5, "units" + 3 padding bytes, NC_CHAR (2), then the length to patch
    _patch(path, b"\0\0\0\x05units\0\0\0\0\0\0\x02\0\0\0\x15days", 16, (2**31 - 1).to_bytes(4, "big"))


def _classic_header_size(data: bytes) -> int:
    """Where the data of the seed classic file begin (the ``begin`` of its first variable)."""
    # CDF-1 offsets are 4 bytes: the first variable is "time", declared as type int (4)
    marker = b"\0\0\0\x04time\0\0\0\x01"
    at = data.index(marker, data.index(b"\0\0\0\x0b"))  # after the NC_VARIABLE tag
    pos = data.index(b"\0\0\0\x04", at + len(marker) + 8)  # nc_type int after the attributes
    return int.from_bytes(data[pos + 8 : pos + 12], "big")


def make_netcdf3_truncated_header(path: str) -> None:
    """A CDF-1 file cut inside its last variable's header."""
    make_valid_netcdf3(path)
    with open(path, "rb") as f:
        data = f.read()
    _write(path, data[: _classic_header_size(data) - 10])


# --- any format -------------------------------------------------------------------------------

#: The magic numbers random bytes are written behind.
MAGICS = {
    "dicom": b"\0" * 128 + b"DICM",
    "fits": b"SIMPLE  =",
    "hdf5": b"\x89HDF\r\n\x1a\n",
    "netcdf3": b"CDF\x01",
    "netcdf3_cdf2": b"CDF\x02",
    "netcdf3_cdf5": b"CDF\x05",
}


def make_random_after_magic(path: str, magic: bytes, size: int = 8192, seed: int = 5) -> None:
    """``magic`` followed by random bytes (the same ones for the same ``seed``)."""
    _write(path, magic + random.Random(seed).randbytes(size - len(magic)))


def truncation_offsets(fmt: str, data: bytes) -> dict[str, int]:
    """The offsets each seed file is cut at: 0, 1, 7, 127, 128, 131, mid-header, end - 1."""
    if fmt == "dicom":
        mid = (132 + data.index(b"\xe0\x7f\x10\x00")) // 2  # halfway to the pixel data
    elif fmt == "fits":
        mid = data.index(b"END     ") // 2
    elif fmt == "netcdf3":
        mid = _classic_header_size(data) // 2
    else:  # HDF5: inside the root group's object header, after the superblock
        mid = 200
    offsets = {str(n): n for n in (0, 1, 7, 127, 128, 131)}
    offsets |= {"mid_header": mid, "end_minus_1": len(data) - 1}
    return offsets


def make_truncated(path: str, fmt: str, offset: int | None = None, label: str | None = None) -> None:
    """The seed file of ``fmt`` cut at ``offset`` bytes (or at the named offset ``label``)."""
    data = valid_bytes(fmt)
    if offset is None:
        offset = truncation_offsets(fmt, data)[label]  # type: ignore[index]
    _write(path, data[:offset])


def make_empty(path: str) -> None:
    """A zero-byte file."""
    _write(path, b"")


def _cases() -> dict[str, Callable[[str], None]]:
    cases: dict[str, Callable[[str], None]] = {
        name[len("make_") :]: fn
        for name, fn in globals().items()
        if name.startswith("make_")
        and name not in ("make_random_after_magic", "make_truncated")
        and not name.startswith("make_valid_")
    }
    for name, magic in MAGICS.items():
        cases[f"{name}_random_after_magic"] = functools.partial(make_random_after_magic, magic=magic)
    for fmt in VALID:
        for label in ("0", "1", "7", "127", "128", "131", "mid_header", "end_minus_1"):
            cases[f"{fmt}_truncated_{label}"] = functools.partial(make_truncated, fmt=fmt, label=label)
    return dict(sorted(cases.items()))


#: Every adversarial case: name -> ``make(path)``.
ALL_CASES: dict[str, Callable[[str], None]] = _cases()

#: Cases whose generation takes seconds (100,000 HDF5 attributes): a benchmark may skip them.
SLOW_CASES = frozenset({"hdf5_many_attributes"})


def case_format(name: str) -> str:
    """The format a case's file claims to be: dicom, fits, hdf5, netcdf (classic or 4), or ''."""
    prefix = name.split("_", 1)[0]
    return "netcdf" if prefix.startswith("netcdf") else ("" if prefix == "empty" else prefix)


if __name__ == "__main__":  # write every case into a folder: python -m tests.adversarial DIR
    import sys

    folder = sys.argv[1] if len(sys.argv) > 1 else "adversarial"
    os.makedirs(folder, exist_ok=True)
    for case, make in ALL_CASES.items():
        make(os.path.join(folder, case))
    print(f"wrote {len(ALL_CASES)} files to {folder}")
