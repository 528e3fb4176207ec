"""Detect a file's format from its first bytes, never from its name. Beam-free: detection runs
in the isolated extraction process, with the rest of the file's reading (see :mod:`transforms.child`)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from transforms.formats import registry
from transforms.formats.base import HEAD_BYTES, FileInfo, Source, format_error, openable
from transforms.redact import printable
from transforms.work import Detected

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NETCDF_CLASSIC_MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
FITS_MAGIC = b"SIMPLE  ="
# Explicit VR codes, to recognise DICOM written without the 128-byte preamble.
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


def hdf5_signature_offset(head: bytes, source: Source | None = None) -> int | None:
    """Offset of the HDF5 signature (0, 512, 1024, 2048, ...), or None.

    Offsets inside ``head`` are checked there; later ones (a large user block) with one small
    read each when ``source`` is given.
    """
    offset = 0
    size = source.size if source is not None else len(head)
    while offset + len(HDF5_SIGNATURE) <= size:
        if offset + len(HDF5_SIGNATURE) <= len(head):
            if head[offset : offset + 8] == HDF5_SIGNATURE:
                return offset
        elif source is not None:
            with source.open() as f:
                while offset + len(HDF5_SIGNATURE) <= size:
                    f.seek(offset)
                    if f.read(8) == HDF5_SIGNATURE:
                        return offset
                    offset = 512 if offset == 0 else offset * 2  # a head cut short: from 0
            return None
        else:
            return None
        offset = 512 if offset == 0 else offset * 2
    return None


def looks_like_raw_dicom(head: bytes, size: int | None = None) -> bool:
    """DICOM without preamble: a data set starting at group 0002 or 0008.

    Explicit VR (little or big endian) or implicit VR little endian; an implicit VR data set
    is recognised as the DICOM extractor recognises it (its first elements, up to three, well
    formed, tags ascending, lengths within the file of ``size`` bytes).
    """
    if len(head) < 12:
        return False
    if head[0:2] in (b"\x00\x02", b"\x00\x08"):  # explicit VR big endian
        return head[4:6] in _DICOM_VRS
    if head[0:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if head[4:6] in _DICOM_VRS:  # explicit VR little endian
        return True
    from transforms.formats.dicom import _elements_fit

    # undefined lengths not taken as a sign: 0xFFFFFFFF is what random bytes give most often
    return _elements_fit(head, len(head) if size is None else size, little=True, explicit=False,
                         undefined_ok=False)


def _dicom_preamble(head: bytes) -> str | None:
    """``"meta"`` for 'DICM' at 128 followed by the file meta group (0002,xxxx), ``"bare"``
    for 'DICM' followed by anything else, None without 'DICM'."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    return "meta" if head[132:134] == b"\x02\x00" else "bare"


def detect_format(source: Source) -> str:
    """``dicom``, ``fits``, ``hdf5``, ``netcdf`` or a plug-in's format from the bytes, else ``unknown``."""
    head = source.head
    preamble = _dicom_preamble(head)
    # A format's magic at byte 0 wins over 'DICM' at 128: a FITS or NetCDF header may hold
    # those four letters there, a DICOM preamble is free bytes. 'DICM' followed by the file
    # meta group is DICOM (a preamble may start with anything); an HDF5 signature after a
    # user block (in the head: no extra read) wins over the block's own bytes (h5jam copies
    # any file there; a FITS header is printable text, the signature is not).
    if preamble == "meta":
        return "dicom"
    if head.startswith(HDF5_SIGNATURE):
        return _hdf5_or_netcdf(source)
    if head[:4] in NETCDF_CLASSIC_MAGICS:
        return "netcdf"
    if head.startswith(FITS_MAGIC) or preamble is not None:
        if hdf5_signature_offset(head) is not None:
            return _hdf5_or_netcdf(source)
        return "fits" if head.startswith(FITS_MAGIC) else "dicom"
    if hdf5_signature_offset(head, source) is not None:
        return _hdf5_or_netcdf(source)
    if looks_like_raw_dicom(head, source.size):
        return "dicom"
    for name, extractor in registry().sniffers():
        if extractor.sniff(head):
            return name
    return "unknown"


def _hdf5_or_netcdf(source: Source) -> str:
    from transforms.formats.netcdf import looks_like_netcdf4

    return "netcdf" if looks_like_netcdf4(source) else "hdf5"


def read_head(source: Source) -> bytes:
    with source.open() as f:
        return f.read(HEAD_BYTES)


def not_regular_error(info: FileInfo) -> str | None:
    """The error row text for a listed entry that must not be opened, else None."""
    if info.kind == "file":
        return None
    if info.kind == "broken symlink":
        return "FileNotFoundError: broken symbolic link (its target does not exist)"
    return f"NotARegularFileError: {info.kind}, not a regular file (never opened)"


def not_openable(info: FileInfo) -> str | None:
    """Why a listed entry must not be opened (a FIFO would block): not a regular file when
    listed, or no longer one (a local file replaced meanwhile); None when it may be opened."""
    error = not_regular_error(info)
    path = openable(info.open_path or info.path)
    if error is None and "://" not in path:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:  # vanished or unreadable folder: an error row
            return format_error(exc)
        if not stat.S_ISREG(mode):
            error = "NotARegularFileError: no longer a regular file (never opened)"
    return error


def detect(info: FileInfo, storage_options: Mapping[str, Any] | None = None) -> Detected:
    """Read the head of one file and classify it; an unreadable file keeps its error."""
    error = not_openable(info)
    if error is not None:
        return Detected(info, "unknown", b"", printable(error))
    if info.size == 0:
        return Detected(info, "unknown", b"", "EmptyFileError: file is empty (0 bytes)")
    source = Source(openable(info.open_path or info.path), info.size, storage_options or {})
    try:
        source.head = read_head(source)
        if not source.head:
            return Detected(info, "unknown", b"", "EmptyFileError: file is empty (0 bytes)")
        fmt = detect_format(source)
        return Detected(info, fmt, source.head, reads=(source.counter.bytes_read, source.counter.read_requests))
    except Exception as exc:  # vanished, unreadable, network: the file becomes an error row
        from transforms.faults import classify, is_remote

        return Detected(
            info, "unknown", source.head, format_error(exc),
            (source.counter.bytes_read, source.counter.read_requests), classify(exc, is_remote(info.path)),
        )
