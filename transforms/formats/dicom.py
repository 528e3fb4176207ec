"""DICOM extractor: the header as the DICOM JSON model, never the pixel data.

pydicom parses the file (``dcmread(stop_before_pixels=True, defer_size=BULK_THRESHOLD)``, so
neither the pixel data nor any other large value is read), and a small converter of our own
turns pydicom's raw, still undecoded elements into the DICOM JSON model (PS3.18 F.2), three
to four times faster than ``Dataset.to_json_dict``. The file's structure is checked on the way:
every element must fit in the file, parsing must end at the end of the file or at the pixel
data, and the pixel data must fit too, so a truncated or corrupt file raises instead of
yielding a partial header.

The ``dicom`` row's ``tags`` column holds every element of the file, the file meta group
(0002,eeee) included and group lengths (gggg,0000) left out (PS3.18 F.2.2), keyed
``"GGGGEEEE"`` in tag order, with these encodings:

- strings (AE AS CS DA DT LO LT PN SH ST TM UC UI UR UT) are decoded with the Specific
  Character Set (ISO 2022 code extensions included) and stripped of their padding; multiple
  values are split on ``\\``; an empty value among several is ``null``;
- PN values are ``{"Alphabetic", "Ideographic", "Phonetic"}`` objects as dcm2json writes them
  (components stripped, trailing empty components and empty groups left out);
- DS values are JSON numbers (floats), IS values integers; a malformed DS value (not a finite
  number) or IS value (not sign and digits within 32 bits) stays the string found in the file;
- US SS UL SL UV SV FL FD values are numbers (SV UV beyond 2**53 - 1: decimal strings), AT
  values ``"GGGGEEEE"`` strings;
- OB OD OF OL OV OW UN values are ``InlineBinary`` (base64, little-endian byte order);
  values longer than ``BULK_THRESHOLD`` bytes, and the top-level (Float/Double Float) Pixel
  Data whatever its size, are left out of ``tags``: ``files.metadata["bulk_data"]`` lists
  them with their offset and length instead;
- SQ values are lists of item objects; an element without a value has no ``Value`` key;
  the sequences at nesting levels 100, 200, ... (``JSON_NESTING_LEVELS``) hold their items as
  JSON text under ``NestedJSON`` instead, so that ``tags`` parses with Python's default
  recursion limit (sequences nested more than ``MAX_SEQUENCE_DEPTH`` = 1,000 deep are an error);
- UN stays UN, as in dcmdump (no conversion to the dictionary VR); a UN of undefined length
  is read as an implicit VR sequence (CP-246), as pydicom and dcmdump do;
- in implicit VR files the VR comes from the DICOM dictionary (private tags: DCMTK's private
  dictionary, as dcmdump, else UN); ``US or SS`` follows Pixel Representation, ``OB or OW`` is OW.
"""

from __future__ import annotations

import array
import base64
import contextlib
import datetime as dt
import io
import os
import re
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import pydicom
import pydicom.charset
from pydicom.charset import decode_bytes
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, TEXT_VR_DELIMS, VR, PersonName
from pydicom.values import convert_PN

from transforms.formats.arrays import open_dicom_arrays
from transforms.formats.base import (
    DEFAULT_BULK_DATA_THRESHOLD,
    Extraction,
    Extractor,
    SchemaTables,
    Source,
    dumps,
    shortest_float32,
)

#: Binary values (OB OD OF OL OV OW UN) longer than this many bytes are left out of ``tags``
#: (and, at the top level, never read): the default of ``--bulk_data_threshold``, which
#: reaches :func:`extract` as ``source.options["bulk_data_threshold"]``.
BULK_THRESHOLD = DEFAULT_BULK_DATA_THRESHOLD

#: Sequences nested deeper than this make the file an error (``InvalidDicomError``). pydicom and
#: the converter recurse once per level: a file nested deeper than Python's recursion limit allows
#: is read again in a thread with a large stack and a raised limit (:func:`_deep`).
MAX_SEQUENCE_DEPTH = 1000
#: Python frames (and C recursion) one level of nesting costs at most: pydicom's reader, the
#: converter and the JSON encoder together.
_FRAMES_PER_LEVEL = 16
#: The deep-nesting thread's stack: 64 MiB of address space, touched only as deep as needed.
_DEEP_STACK_BYTES = 64 << 20
_DEEP_LOCK = threading.Lock()
#: Every this many levels of nesting, a sequence holds its items as JSON text (``NestedJSON``):
#: each level is three levels of JSON, and Python's json parser stops at about 1,000 (it is
#: what the roll-ups and most readers of ``tags`` use).
JSON_NESTING_LEVELS = 100

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Pixel Data, Float Pixel Data, Double Float Pixel Data: never read at the top level.
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

_KNOWN_VRS = frozenset(str(vr) for vr in VR if len(vr) == 2)  # not "US or SS"
_LONG_VRS = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_32)  # 4-byte lengths
_ENCODED_VRS = frozenset(vr.encode() for vr in _KNOWN_VRS)
# ISO 8859-15 (Latin-9, PS3.3 table C.12-2), a defined term pydicom 3.0 does not know yet (it
# warns and reads Latin-1: the euro sign came out as the currency sign)
pydicom.charset.python_encoding.setdefault("ISO_IR 203", "iso8859_15")
pydicom.charset.python_encoding.setdefault("ISO 2022 IR 203", "iso8859_15")

_DEFAULT_CHARSET = ("iso8859",)  # pydicom's name for ISO-IR 6 read leniently (latin-1)
_ESC = 0x1B
_NATIVE_LITTLE = sys.byteorder == "little"
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
_PIXEL_REPRESENTATION = 0x00280103
#: LUT descriptors: their first and third values are always unsigned (PS3.3 C.7.6.3.1.5).
_LUT_DESCRIPTORS = frozenset(
    {0x00281100, 0x00281101, 0x00281102, 0x00281103, 0x00281111, 0x00281112, 0x00281113, 0x00283002}
)

#: Transfer syntaxes to report for a file without file meta, by (implicit VR, little endian).
_INFERRED_SYNTAX = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
    (True, False): pydicom.uid.ExplicitVRBigEndian,  # big endian is always explicit VR
}

# --- opening and sniffing --------------------------------------------------------------------


class _Bounded:
    """A read-only file whose reads never ask for more than the file has left.

    ``BufferedReader.read(n)`` allocates `n` bytes before reading: pydicom reading a corrupt
    length of 0xFFFFFFF0 (in the file meta or in a sequence of undefined length, where it
    cannot defer) would allocate 4 GiB.
    """

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._read = f.read
        self.seek = f.seek
        self.tell = f.tell
        self.size = size

    def read(self, n: int = -1) -> bytes:
        if n > 65536:
            n = max(0, min(n, self.size - self.tell()))
        return self._read(n)


class _Window:
    """A stream whose reads stop at ``end`` (offsets stay the stream's): one sequence's bytes,
    read in place rather than copied."""

    def __init__(self, stream: IO[bytes], end: int) -> None:
        self._stream = stream
        self.seek = stream.seek
        self.tell = stream.tell
        self.end = end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.end - self.tell())
        return self._stream.read(left if n is None or n < 0 else min(n, left))


#: Local files are read through a buffer of this size: pydicom reads each element's tag,
#: length and value apart (about 270 reads for a CT header), each a system call unbuffered.
LOCAL_BUFFER_BYTES = 16 * 1024


@contextlib.contextmanager
def _open(source: Source) -> Iterator[tuple[IO[bytes], int]]:
    """The file as a bounded, seekable stream, and its size."""
    with source.open() as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        if isinstance(f, io.RawIOBase):  # a local file (remote ones are read in cached blocks)
            f = io.BufferedReader(f, LOCAL_BUFFER_BYTES)
        yield _Bounded(f, size), size  # type: ignore[misc]


def _elements_fit(head: bytes, size: int, little: bool, explicit: bool,
                  undefined_ok: bool = True) -> bool:
    """Whether `head` starts with well-formed elements in this encoding.

    Up to three elements are checked: the first in group 0002 or 0008, tags ascending,
    valid VRs (explicit VR) and lengths that fit in the file (an undefined length, a sequence,
    ends the check unless ``undefined_ok`` is false).
    """
    end = "<" if little else ">"
    pos, previous = 0, -1
    for _ in range(3):
        if pos + 12 > len(head):
            return previous >= 0
        group, element = struct.unpack_from(end + "HH", head, pos)
        tag = group << 16 | element
        if tag <= previous or (previous < 0 and group not in (0x0002, 0x0008)):
            return False
        if explicit:
            vr = head[pos + 4 : pos + 6]
            if vr not in _ENCODED_VRS:
                return False
            if vr in _LONG_VRS:
                if head[pos + 6 : pos + 8] != b"\0\0":
                    return False
                (length,) = struct.unpack_from(end + "L", head, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(end + "H", head, pos + 6)
                pos += 8
        else:
            (length,) = struct.unpack_from(end + "L", head, pos + 4)
            pos += 8
        if length == _UNDEFINED:
            return undefined_ok
        if pos + length > size:
            return False
        pos += length
        previous = tag
    return True


# --- private tags: DCMTK's dictionary -----------------------------------------------------

_PRIVATE_ENTRY = re.compile(
    r'^\(([0-9a-fA-F]{4})(?:-o-([0-9a-fA-F]{4}))?,"([^"]*)",([0-9a-fA-F]{2}|[0-9a-fA-F]{4})\)\t(\S+)'
)
#: DCMTK's VR codes for what a dictionary cannot fix: the VR of an implicit VR element
_DCMTK_VRS = {"px": "OB", "ox": "OW", "xs": "US", "lt": "OW", "up": "UL"}
_PRIVATE: dict[tuple[int, str, int], str] | None = None


def _private_dictionary() -> dict[tuple[int, str, int], str]:
    """(group, creator, element) -> VR from DCMTK's private tag dictionary
    (``data/dcmtk_private.dic``, DCMTK 3.6.7, OFFIS license). An entry's two-digit element is
    the element's low byte in whatever block its creator reserved (stored as a negative key);
    a four-digit one the exact element. ``7001-o-70ff``: every odd group in the range."""
    global _PRIVATE
    if _PRIVATE is None:
        table: dict[tuple[int, str, int], str] = {}
        path = os.path.join(os.path.dirname(__file__), "data", "dcmtk_private.dic")
        with open(path, encoding="latin-1") as f:
            for line in f:
                m = _PRIVATE_ENTRY.match(line)
                if m is None:
                    continue
                first, last, creator, element, vr = m.groups()
                key = int(element, 16) if len(element) == 4 else -int(element, 16) - 1
                for group in range(int(first, 16), int(last or first, 16) + 1, 2):
                    table.setdefault((group, creator, key), _DCMTK_VRS.get(vr, vr))
        _PRIVATE = table
    return _PRIVATE


def dcmtk_private_vr(tag: int, creator: str) -> str | None:
    """The VR DCMTK's private dictionary gives the private element ``tag`` under ``creator``
    (what dcmdump shows for it in an implicit VR file), or None (dcmdump: unknown, UN)."""
    table = _private_dictionary()
    group, element = tag >> 16, tag & 0xFFFF
    return table.get((group, creator, element)) or table.get((group, creator, -(element & 0xFF) - 1))


def _sniff(fp: IO[bytes], size: int) -> bool:
    """True for a Part 10 file (preamble + ``DICM``), False for a bare data set; else raise."""
    head = fp.read(512)
    fp.seek(0)
    if head[128:132] == b"DICM":
        return True
    encodings = ((True, True), (True, False), (False, True))  # (little endian, explicit VR)
    if any(_elements_fit(head, size, little, explicit) for little, explicit in encodings):
        return False
    if not head:
        raise InvalidDicomError("empty file")
    raise InvalidDicomError(
        "not a DICOM file: no 'DICM' prefix at offset 128 and no data set at offset 0"
    )


# --- value conversion ------------------------------------------------------------------------


def _truncated(what: str, offset: int, needed: int, size: int) -> InvalidDicomError:
    return InvalidDicomError(
        f"truncated file: {what} needs {needed} bytes at offset {offset}, "
        f"but the data end at offset {size}"
    )


#: ISO 2022 IR 58's designation of GB2312 to G1: Python's ``iso_ir_58`` codec (GB2312) leaves
#: it in the text, and pydicom 3.0 counts on the codec to remove it.
_IR58_ESCAPE = "\x1b$)A"


def _text(value: bytes, encodings: tuple[str, ...] | list[str]) -> str:
    """Decode a charset-dependent value the way pydicom does, only faster."""
    if _ESC in value:  # ISO 2022 code extensions: pydicom switches character sets
        return decode_bytes(value, encodings, TEXT_VR_DELIMS).replace(_IR58_ESCAPE, "")
    try:
        return value.decode(encodings[0])
    except UnicodeError:
        return value.decode(encodings[0], errors="replace")
    except LookupError:
        return value.decode("latin-1")


def _present(values: list[Any]) -> list[Any] | None:
    """``values``, or None (no ``Value``) when every one is empty, whatever the VR, as dcmtk's
    dcm2json writes it: ``\\`` in a CS element is two empty values, not two nulls."""
    return values if any(v is not None for v in values) else None


def _strings(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    """AS DA DT TM (ASCII): split, each value's trailing padding removed."""
    return _present([v.rstrip(" \x00") or None for v in value.decode("latin-1").split("\\")])


def _stripped(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    """AE CS (ASCII): split, leading and trailing spaces removed from each value (not
    significant in these VRs, PS3.5 table 6.2-1)."""
    return _present([v.strip(" \x00") or None for v in value.decode("latin-1").split("\\")])


def _charset_strings(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    """LO SH: decoded with the character set, split, leading and trailing spaces removed from
    each value (PS3.5: "may be padded with leading and/or trailing spaces")."""
    return _present([v.strip(" \x00") or None for v in _text(value, encodings).split("\\")])


def _uc(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    """UC: decoded with the character set, split, each value's trailing padding removed
    (leading spaces are significant in UC)."""
    return _present([v.rstrip(" \x00") or None for v in _text(value, encodings).split("\\")])


def _charset_text(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    """LT ST UT: one value, backslashes kept."""
    text = _text(value, encodings).rstrip(" \x00")
    return [text] if text else None


def _ur(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    text = value.decode("latin-1").rstrip(" \x00")
    return [text] if text else None


def _group(group: str) -> str:
    """One component group as dcm2json writes it: each component stripped of spaces (not
    significant, PS3.5 6.2), trailing empty components (``Doe^John^^^``) dropped."""
    return "^".join(c.strip(" ") for c in group.split("^")).rstrip("^")


def _name(groups: list[str] | tuple[str, ...]) -> dict[str, str] | None:
    keys = ("Alphabetic", "Ideographic", "Phonetic")
    name = {key: text for key, group in zip(keys, groups) if (text := _group(group))}
    return name or None


def _pn(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    value = value.rstrip(b" \x00")
    if not value:
        return None
    if _ESC in value:  # ISO 2022 code extensions: pydicom switches character sets
        names = convert_PN(value, list(encodings))
        if isinstance(names, PersonName):
            names = [names]
        return _present(
            [_name([str(c).replace(_IR58_ESCAPE, "") for c in n.components]) for n in names]
        )
    return _present([_name(v.split("=")) for v in _text(value, encodings).split("\\")])


def _ui(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    return _present([v.rstrip(" \x00") or None for v in value.decode("latin-1").split("\\")])


def _decimal_strings(value: bytes, parse: Any) -> list[Any] | None:
    """DS/IS values: backslash-separated numbers as text; ``parse`` turns one into a number
    (or returns the text unchanged); an empty value is null."""
    text = value.decode("latin-1").strip(" \x00")
    if not text:
        return None
    out: list[Any] = []
    for part in text.split("\\"):
        part = part.strip(" \x00")
        out.append(parse(part) if part else None)
    return _present(out)


def _parse_ds(part: str) -> Any:
    try:
        number = float(part)
    except ValueError:
        return part
    # float() also takes "nan", "inf" and "1_0": DS takes none of them
    return number if number - number == 0 and "_" not in part else part


_INTEGER_STRING = re.compile(r"[+-]?[0-9]+")


def _parse_is(part: str) -> Any:
    """An IS value: an integer when it is one (optional sign and digits, within
    -2**31..2**31-1, PS3.5 table 6.2-1), else the string, as dcm2json writes it."""
    if _INTEGER_STRING.fullmatch(part):
        number = int(part)
        if -(2**31) <= number < 2**31:
            return number
    return part


def _ds(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    return _decimal_strings(value, _parse_ds)


def _is(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    return _decimal_strings(value, _parse_is)


def _numbers(code: str) -> Any:
    size = struct.calcsize(code)

    def convert(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
        if len(value) % size:
            raise ValueError(f"length {len(value)} is not a multiple of {size}")
        if little == _NATIVE_LITTLE:
            return memoryview(value).cast(code).tolist()
        values = array.array(code, value)
        values.byteswap()
        return values.tolist()

    return convert


_unsigned_16 = _numbers("H")

def _fl(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    return [shortest_float32(v) for v in _single(value, little, encodings)]


_single = _numbers("f")

#: The largest integer a JSON reader that parses numbers as doubles keeps exactly.
_SAFE_INTEGER = 2**53 - 1


def _wide_integers(code: str) -> Any:
    """SV UV: numbers, those beyond +-(2**53 - 1) as decimal strings, so that no JSON reader
    rounds them (PS3.18 F.2.3.1 allows a string "to avoid losing precision", as dcm2json does)."""
    convert = _numbers(code)

    def wide(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
        return [v if -_SAFE_INTEGER <= v <= _SAFE_INTEGER else str(v)
                for v in convert(value, little, encodings)]

    return wide


def _at(value: bytes, little: bool, encodings: Any) -> list[Any] | None:
    if len(value) % 4:
        raise ValueError(f"length {len(value)} is not a multiple of 4")
    words = _unsigned_16(value, little, encodings) or []
    return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]


_CONVERTERS = {
    "AE": _stripped,
    "AS": _strings,
    "AT": _at,
    "CS": _stripped,
    "DA": _strings,
    "DS": _ds,
    "DT": _strings,
    "FD": _numbers("d"),
    "FL": _fl,
    "IS": _is,
    "LO": _charset_strings,
    "LT": _charset_text,
    "PN": _pn,
    "SH": _charset_strings,
    "SL": _numbers("i"),
    "SS": _numbers("h"),
    "ST": _charset_text,
    "SV": _wide_integers("q"),
    "TM": _strings,
    "UC": _uc,
    "UI": _ui,
    "UL": _numbers("I"),
    "UR": _ur,
    "US": _unsigned_16,
    "UT": _charset_text,
    "UV": _wide_integers("Q"),
}
_WORD = {"OW": "H", "OF": "I", "OL": "I", "OD": "Q", "OV": "Q"}


def _inline_binary(value: bytes, vr: str, little: bool) -> str:
    """Base64 of the value in little-endian byte order (the JSON model's)."""
    code = _WORD.get(vr)
    if not little and code and len(value) % struct.calcsize(code) == 0:
        words = array.array(code, value)
        words.byteswap()
        value = words.tobytes()
    return base64.b64encode(value).decode("ascii")


class _Converter:
    """Turns pydicom's raw elements into the DICOM JSON model, checking extents on the way.

    Args:
      stream: what the elements were read from (``value_tell`` offsets point into it).
      size: the stream's size.
      threshold: binary values longer than this are left out (listed in ``bulk``).
      implicit, little: the top-level encoding of the elements.
      bulk: where to list the elements left out.
      offsets: whether offsets in ``stream`` are file offsets (not for an inflated stream).
    """

    def __init__(
        self,
        stream: IO[bytes],
        size: int,
        threshold: int,
        implicit: bool,
        little: bool,
        bulk: list[dict[str, Any]],
        offsets: bool = True,
    ) -> None:
        self.stream = stream
        self.size = size
        self.threshold = threshold
        self.implicit = implicit
        self.little = little
        self.bulk = bulk
        self.offsets = offsets
        self.group_lengths = False
        self.nested = 0
        self.depth = 0
        self.pixel_representation: int | None = None

    def dataset(
        self,
        elements: dict[int, Any],
        encodings: Any,
        base: int = 0,
        prefix: str = "",
        top: bool = True,
    ) -> dict[str, Any]:
        """One data set (tag -> pydicom element) as a JSON model object."""
        if isinstance(encodings, str):
            encodings = [encodings]
        out: dict[str, Any] = {}
        for tag in sorted(elements, key=int):  # int: BaseTag's own __lt__ is slow
            element = elements[tag]
            key = f"{tag:08X}"
            if not top:
                self.nested += 1
            if tag & 0xFFFF == 0 and not self.group_lengths:  # not in the JSON model (F.2.2)
                continue
            if not isinstance(element, RawDataElement):
                if element.VR == "SQ":  # undefined length: pydicom parsed it from the stream
                    out[key] = self.sequence(element.value, encodings, base, prefix + key)
                    continue
                element = self.reread(element)  # one pydicom converted while reading
            converted = self.raw(element, elements, encodings, base, prefix + key, top)
            if converted is not None:
                out[key] = converted
        return out

    def reread(self, element: Any) -> RawDataElement:
        """The raw form of a top-level element pydicom converted (e.g. the character set).

        Its length is read back from the element header, so that the extent checks apply;
        its value is then read (or left out) as if pydicom had deferred it.
        """
        end = "<" if self.little else ">"
        if self.implicit:
            self.stream.seek(element.file_tell - 4)
            (length,) = struct.unpack(end + "L", self.stream.read(4))
            vr = None
        else:  # the VR as written: pydicom may have changed it (UN of a known tag -> its VR)
            self.stream.seek(element.file_tell - 8)
            header = self.stream.read(8)
            if header[:2] in _LONG_VRS and header[2:4] == b"\0\0":  # VR, 2 reserved, 4 length
                vr, (length,) = header[:2].decode(), struct.unpack(end + "L", header[4:])
            else:  # tag, VR, 2 length
                vr, (length,) = header[4:6].decode("latin-1"), struct.unpack(end + "H", header[6:])
        return RawDataElement(
            element.tag,
            vr,
            length,
            None,
            element.file_tell,
            self.implicit,
            self.little,
        )

    def sequence(self, items: Any, encodings: Any, base: int, path: str) -> dict[str, Any]:
        self.depth += 1
        if self.depth > MAX_SEQUENCE_DEPTH:
            raise _too_deep()
        values = [
            self.dataset(item._dict, item.original_character_set, base, f"{path}/{i}/", False)
            for i, item in enumerate(items)
        ]
        self.depth -= 1
        if values and (self.depth + 1) % JSON_NESTING_LEVELS == 0:
            return {"vr": "SQ", "NestedJSON": dumps(values)}
        return {"vr": "SQ", "Value": values} if values else {"vr": "SQ"}

    def vr_for(self, raw: RawDataElement, elements: dict[int, Any], encodings: Any) -> str:
        """The VR of an implicit VR element, as dcmdump and pydicom find it."""
        tag = raw.tag
        entry = DicomDictionary.get(tag)
        if entry is not None:
            vr = entry[0]
        else:
            group, element = tag >> 16, tag & 0xFFFF
            vr = "UN"
            if element == 0:
                vr = "UL"  # group length
            elif group & 1:
                if element < 0x0100:
                    vr = "LO" if element >= 0x0010 else "UN"  # private creator
                else:
                    creator = elements.get(group << 16 | element >> 8)
                    name = getattr(creator, "value", None)
                    if isinstance(name, bytes):
                        name = _text(name, encodings)
                    if isinstance(name, str) and name.strip(" \x00"):
                        vr = dcmtk_private_vr(tag, name.strip(" \x00")) or "UN"
            else:
                with contextlib.suppress(KeyError):
                    vr = dictionary_VR(tag)  # repeating groups (50xx, 60xx)
        if vr in _KNOWN_VRS:
            return vr
        if vr == "US or SS":
            if tag in _LUT_DESCRIPTORS:
                return "US"
            return "SS" if self.pixel_representation == 1 else "US"
        if " or " in vr:
            return "OW"  # OB or OW, US or OW, US or SS or OW: implicit VR is OW (PS3.5 A.1)
        return "UN"

    def check_end(self, elements: dict[int, Any], start: int, end: int) -> None:
        """Raise if the top-level elements read between `start` and `end` do not fill it.

        pydicom stops quietly at an element header cut short (fewer than 8 bytes left): the
        last element must end where the data end. A sequence (or other value) of undefined
        length ends with a sequence delimitation item.
        """
        last_end = start
        if elements:
            last = max(elements.values(), key=_value_offset)
            if not isinstance(last, RawDataElement) and last.VR != "SQ":
                last = self.reread(last)
            if isinstance(last, RawDataElement) and last.length != _UNDEFINED:
                last_end = last.value_tell + last.length
            else:  # undefined length: the data end with a sequence delimiter
                self.stream.seek(end - 8)
                delimiter = struct.pack("<HHL" if self.little else ">HHL", 0xFFFE, 0xE0DD, 0)
                if self.stream.read(8) != delimiter:
                    raise InvalidDicomError(
                        f"truncated file: a value of undefined length has no end before "
                        f"offset {end}"
                    )
                return
        if last_end < end:
            raise _truncated("an element header", last_end, 8, end)

    def check_extent(self, raw: RawDataElement, path: str) -> None:
        if raw.value_tell + raw.length > self.size:
            raise _truncated(f"element {path}", raw.value_tell, raw.length, self.size)

    def read_deferred(self, raw: RawDataElement, path: str) -> bytes:
        self.check_extent(raw, path)
        self.stream.seek(raw.value_tell)
        value = self.stream.read(raw.length)
        if len(value) != raw.length:
            raise _truncated(f"element {path}", raw.value_tell, raw.length, self.size)
        return value

    def raw(
        self,
        raw: RawDataElement,
        elements: dict[int, Any],
        encodings: Any,
        base: int,
        path: str,
        top: bool,
    ) -> dict[str, Any] | None:
        vr = raw.VR
        if vr is None:
            vr = self.vr_for(raw, elements, encodings)
        elif vr not in _KNOWN_VRS:
            vr = "UN"
        value, length = raw.value, raw.length
        if length == 0:
            return {"vr": vr}
        if value is None:  # deferred by pydicom (longer than the threshold), undefined, or reread
            if vr in BINARY_VRS and (length == _UNDEFINED or length > self.threshold or (top and raw.tag in PIXEL_DATA_TAGS)):
                if length != _UNDEFINED:
                    self.check_extent(raw, path)
                self.add_bulk(raw, vr, base, path)
                return None
            if length == _UNDEFINED:
                raise InvalidDicomError(f"element {path} of VR {vr} has an undefined length")
            if vr == "SQ":  # read in place: nothing is copied per level of nesting
                self.check_extent(raw, path)
                items = self.items(raw.value_tell, length, raw, encodings)
                return self.sequence(items, encodings, base, path)
            value = self.read_deferred(raw, path)
        elif length != _UNDEFINED and len(value) != length:
            offset = base + raw.value_tell
            raise _truncated(f"element {path}", offset, length, offset + len(value))
        if vr == "SQ":  # pydicom read the value: its items are read from it
            outer = self.stream, self.size
            self.stream, self.size = io.BytesIO(value), len(value)
            try:
                items = self.items(0, len(value), raw, encodings)
                return self.sequence(items, encodings, base + raw.value_tell, path)
            finally:
                self.stream, self.size = outer
        if vr in BINARY_VRS:
            # encapsulated (undefined length: items, not a value, e.g. an icon image's pixels
            # in a sequence that pydicom read whole): bulk data, as at the top level
            if length == _UNDEFINED or len(value) > self.threshold or (top and raw.tag in PIXEL_DATA_TAGS):
                self.add_bulk(raw, vr, base, path)
                return None
            return {"vr": vr, "InlineBinary": _inline_binary(value, vr, raw.is_little_endian)}
        try:
            values = _CONVERTERS[vr](value, raw.is_little_endian, encodings)
        except ValueError:  # numbers of the wrong length: keep the bytes
            return {"vr": "UN", "InlineBinary": _inline_binary(value, "UN", True)}
        return {"vr": vr, "Value": values} if values else {"vr": vr}

    def items(self, start: int, length: int, raw: RawDataElement, encodings: Any) -> list[Any]:
        """The items of the sequence of defined ``length`` at ``start`` of the stream, as
        pydicom's ``read_sequence`` reads them but with values longer than the threshold
        deferred (a nested sequence is then read in place in turn, never copied)."""
        end = start + length
        fp = _Window(self.stream, end)
        fp.seek(start)
        header_format = "<HHL" if raw.is_little_endian else ">HHL"
        items = []
        while fp.tell() < end:
            at = fp.tell()
            header = fp.read(8)
            if len(header) < 8:
                raise _truncated("a sequence item header", at, 8, end)
            group, element, item_length = struct.unpack(header_format, header)
            if group << 16 | element == _SEQUENCE_END:
                break
            items.append(
                read_dataset(
                    fp,
                    raw.is_implicit_VR,
                    raw.is_little_endian,
                    None if item_length == _UNDEFINED else item_length,
                    defer_size=self.threshold,
                    parent_encoding=encodings,
                    at_top_level=False,
                )
            )
        return items

    def add_bulk(self, raw: RawDataElement, vr: str, base: int, path: str) -> None:
        self.bulk.append(
            {
                "path": path,
                "vr": vr,
                "offset": base + raw.value_tell if self.offsets else None,
                "length": None if raw.length == _UNDEFINED else raw.length,
            }
        )


# --- structure checks ------------------------------------------------------------------------


def _pixel_data(
    stream: IO[bytes], size: int, start: int, implicit: bool, little: bool
) -> tuple[dict[str, Any], int]:
    """Check the pixel data element at `start`; return its bulk entry and where it ends."""
    end = "<" if little else ">"
    stream.seek(start)
    header = stream.read(12)
    if len(header) < 8:
        raise _truncated("the pixel data element header", start, 8, size)
    group, element = struct.unpack_from(end + "HH", header)
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        raise InvalidDicomError(f"cannot parse the data set past offset {start}")
    if implicit:
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(tag, "OW")
        (length,) = struct.unpack_from(end + "L", header, 4)
        value_start = start + 8
    else:
        vr = header[4:6].decode("latin-1")
        if header[4:6] in _LONG_VRS:
            if len(header) < 12:
                raise _truncated("the pixel data element header", start, 12, size)
            (length,) = struct.unpack_from(end + "L", header, 8)
            value_start = start + 12
        else:
            (length,) = struct.unpack_from(end + "H", header, 6)
            value_start = start + 8
    entry: dict[str, Any] = {"path": f"{tag:08X}", "vr": vr, "offset": value_start}
    if length != _UNDEFINED:
        if value_start + length > size:
            raise _truncated("the pixel data", value_start, length, size)
        entry.update(length=length, encapsulated=False)
        return entry, value_start + length
    entry.update(length=None, encapsulated=True)
    # Encapsulated: a complete file ends with the sequence delimiter. Otherwise walk the
    # fragments (item headers only) to find where the pixel data end, or the truncation.
    delimiter = struct.pack(end + "HHL", 0xFFFE, 0xE0DD, 0)
    if size >= value_start + 8:
        stream.seek(size - 8)
        if stream.read(8) == delimiter:
            return entry, size
    pos = value_start
    while True:
        stream.seek(pos)
        item = stream.read(8)
        if len(item) < 8:
            raise _truncated("a pixel data fragment header", pos, 8, size)
        group, element, item_length = struct.unpack(end + "HHL", item)
        item_tag = group << 16 | element
        if item_tag == _SEQUENCE_END:
            return entry, pos + 8
        if item_tag != _ITEM or item_length == _UNDEFINED:
            raise InvalidDicomError(f"invalid pixel data fragment at offset {pos}")
        if pos + 8 + item_length > size:
            raise _truncated("a pixel data fragment", pos + 8, item_length, size)
        pos += 8 + item_length


def _value_offset(element: Any) -> int:
    return element.value_tell if isinstance(element, RawDataElement) else element.file_tell


# --- extraction ------------------------------------------------------------------------------


#: The elements the typed columns of the ``dicom`` table read.
_COLUMN_TAGS = ("00080016", "00080018", "00080020", "00080060", "00100020", "0020000D",
                "0020000E", "00280008", "00280010", "00280011")


def _column_view(tags: dict[str, Any], little: bool, encodings: Any) -> dict[str, Any]:
    """``tags`` with the elements the typed columns read decoded by their dictionary VR where
    the file wrote them as UN (``tags`` keeps them UN, as dcm2json; ``dcmdump +uc`` decodes)."""
    view = tags
    for key in _COLUMN_TAGS:
        element = tags.get(key)
        if not element or element.get("vr") != "UN" or "InlineBinary" not in element:
            continue
        vr = DicomDictionary[int(key, 16)][0]
        try:
            values = _CONVERTERS[vr](base64.b64decode(element["InlineBinary"]), little, encodings)
        except (ValueError, LookupError):
            continue
        if view is tags:
            view = dict(tags)
        view[key] = {"vr": vr, "Value": values} if values else {"vr": vr}
    return view


def _first(tags: dict[str, Any], key: str) -> Any:
    values = tags.get(key, {}).get("Value")
    return values[0] if values else None


def _string(tags: dict[str, Any], key: str) -> str | None:
    values = tags.get(key, {}).get("Value")
    if not values:
        return None
    return "\\".join("" if v is None else str(v) for v in values)


def _integral(value: Any) -> Any:
    """An IS value for a typed column: a string that is an integral number written otherwise
    (``"3.0"``, ``"1e1"``, a common misspelling; ``tags`` keeps it as written) as that integer."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return value


def _int32(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    return None


def _date(value: Any) -> dt.date | None:
    """A DA value (``YYYYMMDD``, or ACR-NEMA ``YYYY.MM.DD``) as a date; None if invalid."""
    if not isinstance(value, str):
        return None
    text = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _syntax_name(uid: str) -> str:
    name = UID(uid).name
    return name or uid


def _number(element: Any, little: bool) -> int | None:
    """A top-level US element's first value, raw or converted."""
    value = getattr(element, "value", None)
    if isinstance(value, bytes):
        return struct.unpack("<H" if little else ">H", value)[0] if len(value) == 2 else None
    return value if isinstance(value, int) else None


def _too_deep() -> InvalidDicomError:
    return InvalidDicomError(f"sequences nested more than {MAX_SEQUENCE_DEPTH} levels deep")


def _deep(fn: Callable[[], None]) -> None:
    """Run ``fn`` with room for :data:`MAX_SEQUENCE_DEPTH` levels of nesting: in a thread with a
    large stack, the recursion limit raised meanwhile (process-wide, so one call at a time)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    with _DEEP_LOCK:
        limit = sys.getrecursionlimit()
        stack = threading.stack_size(_DEEP_STACK_BYTES)
        try:
            sys.setrecursionlimit(max(limit, limit + _FRAMES_PER_LEVEL * MAX_SEQUENCE_DEPTH))
            thread = threading.Thread(target=target, name="dicom-deep-sequences")
            thread.start()
        finally:
            threading.stack_size(stack)
        try:
            thread.join()
        finally:
            sys.setrecursionlimit(limit)
    if failure:
        raise failure[0]


def extract(source: Source, out: Extraction) -> None:
    """Read one DICOM file's header into ``out`` (one ``dicom`` row); see :func:`_extract`.

    Sequences nested deeper than the recursion limit allows are read in :func:`_deep`, up to
    :data:`MAX_SEQUENCE_DEPTH` levels; deeper ones raise ``InvalidDicomError``.
    """
    try:
        _extract(source, out)
        return
    except Exception as exc:
        if not _from_recursion(exc):
            raise
        out.format_version = None
        out.metadata.clear()
        out.rows.clear()
    try:
        _deep(lambda: _extract(source, out))
    except Exception as exc:
        if _from_recursion(exc):
            raise _too_deep() from None
        raise


def _from_recursion(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a RecursionError or was raised while handling one (pydicom turns any
    error reading an item header into ``OSError: No tag to read``)."""
    while exc is not None:
        if isinstance(exc, RecursionError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def written_implicit_vr(ds: Any) -> bool | None:
    """Whether the data set's elements were written in implicit VR, as pydicom found while it
    read them (None: no element after the file meta). pydicom reads a data set written in the
    other VR mode than its transfer syntax says (explicit declared, implicit written: its test
    file SC_rgb_jpeg.dcm) in the mode it finds, and records it in each raw element."""
    first = next((e for t, e in ds._dict.items()
                  if t >> 16 != 0x0002 and getattr(e, "is_implicit_VR", None) is not None), None)
    return None if first is None else bool(first.is_implicit_VR)


def _extract(source: Source, out: Extraction) -> None:
    """Read one DICOM file's header into ``out`` (one ``dicom`` row).

    ``out.metadata`` (``files.metadata``) holds, in the order they are found:

    - ``preamble``: whether the file has the 128-byte preamble and ``DICM``;
    - ``transfer_syntax``: ``uid``, ``name``, ``inferred`` (no file meta: the encoding
      pydicom found), ``implicit_vr`` and ``little_endian`` (as actually read);
    - ``file_meta``: group 0002 as the JSON model (also in ``tags``);
    - ``element_count``: top-level elements in the file (file meta and bulk ones included,
      as dcmdump lists them); ``nested_element_count``: elements inside sequence items;
    - ``bulk_data``: the elements left out of ``tags``, each ``{"path", "vr", "offset",
      "length"}`` (``path`` like ``"7FE00010"`` or ``"00880200/0/7FE00010"`` for item 0 of a
      sequence; ``offset`` of the value in the file, null in a deflated data set; ``length``
      null when undefined); the pixel data's entry adds ``encapsulated``;
    - ``bulk_threshold``: the threshold used.
    """
    threshold = int(source.options.get("bulk_data_threshold", BULK_THRESHOLD))
    with _open(source) as (fp, size):
        preamble = _sniff(fp, size)
        out.metadata["preamble"] = preamble
        try:
            ds = pydicom.dcmread(
                fp, defer_size=threshold, stop_before_pixels=True, force=not preamble
            )
        except struct.error as exc:  # an element header cut short
            raise InvalidDicomError(f"truncated or corrupt element header: {exc}") from exc
        # The data set was read from `stream`: the file, or the inflated data (deflate).
        stream = ds.buffer if ds.buffer is not None else fp
        parsed_to = stream.tell()
        if stream is fp:
            stream_size = size
        else:
            stream.seek(0, 2)
            stream_size = stream.tell()

        implicit, little = ds.original_encoding
        if implicit is None:  # nothing after the file meta
            implicit, little = True, True
        written = written_implicit_vr(ds)  # the reads that follow (the pixel data) do as pydicom did
        if written is not None:
            implicit = written
        meta = ds.file_meta
        declared = meta.get("TransferSyntaxUID")
        uid = str(declared).rstrip("\x00 ") if declared else _INFERRED_SYNTAX[implicit, little]
        out.format_version = _syntax_name(uid)
        out.metadata["transfer_syntax"] = {
            "uid": uid,
            "name": out.format_version,
            "inferred": not declared,
            "implicit_vr": implicit,
            "little_endian": little,
        }

        bulk: list[dict[str, Any]] = []
        meta_converter = _Converter(fp, size, threshold, False, True, bulk)
        meta_converter.group_lengths = True  # (0002,0000) is checked below, and file_meta has it
        meta_tags = meta_converter.dataset(meta._dict, _DEFAULT_CHARSET)
        out.metadata["file_meta"] = meta_tags
        group_length = _first(meta_tags, "00020000")
        meta_start = (132 if preamble else 0) + 12  # after the group length element
        if isinstance(group_length, int) and meta_start + group_length > size:
            raise _truncated("the file meta group", meta_start, group_length, size)

        # pydicom keeps elements raw until they are accessed: ``_dict`` gives them as read
        # (``Dataset.elements()`` would read deferred values back from the file).
        elements = dict(ds._dict)
        if all(tag >> 16 in (0x0000, 0x0002) for tag in elements):
            raise InvalidDicomError("no data set after the file meta information")
        converter = _Converter(
            stream, stream_size, threshold, implicit, little, bulk, offsets=stream is fp
        )
        converter.pixel_representation = _number(elements.get(_PIXEL_REPRESENTATION), little)

        # Parsing stops at the end of the data, or before the pixel data: check them, then
        # read any elements that follow the pixel data (trailing padding, signatures).
        pixel_entry = None
        if parsed_to >= stream_size:
            converter.check_end(elements, 0, stream_size)
        else:
            pixel_entry, pixel_end = _pixel_data(stream, stream_size, parsed_to, implicit, little)
            if pixel_end < stream_size:
                stream.seek(pixel_end)
                trailing = read_dataset(
                    stream,
                    implicit,
                    little,
                    defer_size=threshold,
                    parent_encoding=ds.original_character_set,
                )
                if stream.tell() < stream_size:
                    raise InvalidDicomError(f"cannot parse the data set past offset {pixel_end}")
                converter.check_end(trailing._dict, pixel_end, stream_size)
                for tag, element in trailing._dict.items():
                    elements.setdefault(tag, element)

        data_tags = converter.dataset(elements, ds.original_character_set)
        if pixel_entry is not None:
            if stream is not fp:  # offsets into the inflated data set mean nothing outside
                pixel_entry["offset"] = None
            bulk.append(pixel_entry)
        # Group Length (gggg,0000) elements "shall not be included" in the JSON model (PS3.18
        # F.2.2; dcm2json leaves them out): file_meta keeps (0002,0000)
        tags = {key: value for key, value in meta_tags.items() if not key.endswith("0000")}
        tags |= data_tags
        if any(tag >> 16 == 0 for tag in elements):
            tags = dict(sorted(tags.items()))  # a command set: group 0000 comes first
        out.metadata["element_count"] = len(meta._dict) + len(elements) + (pixel_entry is not None)
        out.metadata["nested_element_count"] = converter.nested
        out.metadata["bulk_data"] = bulk
        out.metadata["bulk_threshold"] = threshold

    encodings = ds.original_character_set
    columns = _column_view(tags, little, [encodings] if isinstance(encodings, str) else encodings)
    out.add_row(
        "dicom",
        {
            "sop_instance_uid": _string(columns, "00080018"),
            "sop_class_uid": _string(columns, "00080016"),
            "study_instance_uid": _string(columns, "0020000D"),
            "series_instance_uid": _string(columns, "0020000E"),
            "modality": _string(columns, "00080060"),
            "patient_id": _string(columns, "00100020"),
            "study_date": _date(_first(columns, "00080020")),
            "rows": _int32(_first(columns, "00280010")),
            "columns": _int32(_first(columns, "00280011")),
            "number_of_frames": _int32(_integral(_first(columns, "00280008"))),
            "transfer_syntax_uid": uid,
            "tags": dumps(tags),
        },
    )


EXTRACTOR = Extractor(format="dicom", extract=extract, tables=SchemaTables(dicom="DICOM"),
                      open_arrays=open_dicom_arrays)
