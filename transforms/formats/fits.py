"""FITS extractor: every HDU's header, parsed from the raw 2880-byte header blocks.

The file is walked HDU by HDU: header blocks are read until the END card, the data size is
computed from BITPIX, NAXISn, PCOUNT and GCOUNT (FITS 4.0 eq. 2; random groups skip NAXIS1 = 0)
and the data is skipped with a seek, never read. Card values are parsed here, as written in the
file, rather than through a library that normalises them (astropy, for one, turns record-valued
cards such as ``DP1 = 'AXIS.1: 1'`` into new keywords and joins any CONTINUE card into the card
before it); this is also about 6x faster than astropy's lazy header loop.

Value encoding in the ``header`` JSON (a list of ``{"keyword", "value", "comment"}`` in card
order, END excluded):

- ``T``/``F`` -> true/false; integers -> JSON integers, including those beyond int64 (exact
  digits; DuckDB types them DOUBLE, Python's json reads them exactly); reals (``E`` or ``D``
  exponent) -> JSON floats, an overflow such as ``1E400`` -> ``"Infinity"`` (never a NaN literal);
  complex ``(re, im)`` -> ``{"real": re, "imag": im}`` like every other complex in the catalog;
  strings -> text with ``''`` unescaped and trailing spaces stripped; an empty value field -> null.
- A value field that follows none of these forms is kept as its raw text (a string).
- COMMENT, HISTORY, blank-keyword cards and any card without the ``= `` value indicator: the
  value is the text of columns 9-80, trailing spaces stripped; the comment is ``""``.
- Long strings (``&`` + CONTINUE, FITS 4.0 section 4.2.1.2): joined into one card under the
  first keyword, comments joined with a space. A CONTINUE card that does not follow a string
  ending in ``&`` is kept as a card of its own, as a commentary card.
- HIERARCH cards: the keyword is the hierarchical name after ``HIERARCH`` as written
  (``ESO DET CHIP ID``), as astropy names it.
- The comment is the text after ``/``, stripped; ``""`` when there is none.

Errors: a header without END before the end of the file and data that extends past the end of
the file raise ``EOFError``; bytes other than printable ASCII in a header card, a first card
that is not ``SIMPLE = T/F``, missing or invalid structural keywords (BITPIX, NAXIS, NAXISn,
PCOUNT, GCOUNT, ZNAXISn of a compressed image) raise ``ValueError``. Bytes after the last HDU
that do not start with ``XTENSION`` are not an HDU (FITS allows such "special records"): they
are counted in ``files.metadata.trailing_bytes``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from transforms.formats.arrays import open_fits_arrays
from transforms.formats.base import Extraction, Extractor, SchemaTables, Source, dumps

BLOCK = 2880
CARD = 80
#: Longest header we accept (360,000 cards): a bound on what a corrupt file can make us read.
MAX_HEADER_BYTES = BLOCK * 10_000

_INT64_MAX = 2**63 - 1
_INFINITIES = (math.inf, -math.inf)
_BITPIX = frozenset((8, 16, 32, 64, -32, -64))
_COMMENTARY = frozenset(("COMMENT", "HISTORY", ""))
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_END = re.compile(r"END {5}")

_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?"
#: A card's value field (after "= "): string | logical | real | integer | complex | nothing,
#: then an optional "/ comment". Groups: string, logical, real, integer, (real, imag), comment.
_VALUE = re.compile(
    rf"""\s*(?:
        '([^']*(?:''[^']*)*)'
      | ([TF])
      | ([+-]?(?:\d+\.\d*|\.\d+)(?:[EeDd][+-]?\d+)?|[+-]?\d+[EeDd][+-]?\d+)
      | ([+-]?\d+)
      | \(\s*({_NUM})\s*,\s*({_NUM})\s*\)
    )?\s*(?:/(.*))?$""",
    re.X | re.S,
)


class HDU(NamedTuple):
    """One HDU found by :func:`walk`."""

    index: int
    header_offset: int
    data_offset: int
    header: list[dict[str, Any]]  # the cards as the catalog lists them
    values: dict[str, Any]  # keyword -> first value
    info: dict[str, Any]  # type, extname, bitpix, naxis, shape, data_size (see _describe)

    @property
    def end(self) -> int:
        """Where the next HDU starts: the data padded to whole 2880-byte blocks."""
        return self.data_offset + -(-self.info["data_size"] // BLOCK) * BLOCK


def walk(f: IO[bytes], size: int) -> Iterator[HDU]:
    """The HDUs of a FITS file in file order, headers read and parsed, data skipped.

    Stops at the end of the file or at bytes after an HDU that do not start with ``XTENSION``
    (FITS 4.0 3.5 "special records"); the primary header is read even if ``size`` says 0. Data
    past the end of the file is not checked here (the caller decides)."""
    pos, index = 0, 0
    while pos < size or index == 0:
        cards, data_offset = _read_header(f, pos, size, index)
        if cards is None:
            return
        header, values = _parse_cards(cards)
        hdu = HDU(index, pos, data_offset, header, values, _describe(index, values))
        yield hdu
        pos, index = hdu.end, index + 1


def extract(source: Source, out: Extraction) -> None:
    """Read every HDU's header of a FITS file into ``out`` (one ``fits`` row per HDU)."""
    out.format_version = None  # a FITS file does not record the version of the standard
    hdus: list[dict[str, Any]] = []
    out.metadata["hdu_count"] = 0
    out.metadata["hdus"] = hdus
    size = source.size
    end = 0
    with source.open() as f:
        for hdu in walk(f, size):
            info = dict(hdu.info)
            data_size = info.pop("data_size")
            out.add_row("fits", {
                "hdu_index": hdu.index,
                "hdu_type": info["type"],
                "extname": info["extname"],
                "bitpix": info["bitpix"],
                "naxis": info["naxis"],
                "shape": info["shape"],
                "header": dumps(hdu.header),
            })
            hdus.append({"index": hdu.index} | info | {
                "header_offset": hdu.header_offset,
                "data_offset": hdu.data_offset,
                "data_size": data_size,
                "header": hdu.header,
            })
            out.metadata["hdu_count"] = len(hdus)
            data_end = hdu.data_offset + data_size
            if data_end > size:
                raise EOFError(
                    f"truncated file: HDU {hdu.index} ({info['type']}) declares {data_size} bytes "
                    f"of data ending at byte {data_end}, but the file has {size} bytes"
                )
            end = hdu.end
    if end < size:  # bytes after the last HDU that are not an extension
        out.metadata["trailing_bytes"] = size - end
    elif end > size:  # the last data block is complete but not padded to 2880 bytes
        out.metadata["missing_padding_bytes"] = end - size


def _read_header(f: IO[bytes], pos: int, size: int, index: int) -> tuple[list[str] | None, int]:
    """The cards (80-character strings, END excluded) of the header at ``pos`` and the offset
    of its data; ``(None, pos)`` when the bytes there are not an extension header."""
    f.seek(pos)
    cards: list[str] = []
    offset = pos
    while True:
        block = f.read(BLOCK)
        if offset == pos:
            if index == 0:
                if block[:9] != b"SIMPLE  =":
                    raise ValueError("not a FITS file: the first card is not 'SIMPLE  ='")
            elif block[:8] != b"XTENSION":
                return None, pos
        text = block.decode("latin-1")
        end = _find_end(text)
        stop = len(text) - len(text) % CARD if end < 0 else end + CARD
        bad = _NOT_PRINTABLE.search(text, 0, stop)
        if bad is not None:
            at = offset + bad.start()
            raise ValueError(
                f"HDU {index}: header card {(at - pos) // CARD + 1} (byte {at}) is not printable "
                f"ASCII ({block[bad.start()]:#04x})"
            )
        if len(block) < BLOCK:
            raise EOFError(
                f"truncated header: HDU {index} (byte {pos}) ends at byte {offset + len(block)} "
                f"{'before its END card' if end < 0 else 'inside its last 2880-byte block'}"
            )
        if end >= 0:
            cards.extend(text[i : i + CARD] for i in range(0, end, CARD))
            while cards and cards[-1].isspace():  # free space before END (cfitsio reserves it)
                cards.pop()
            return cards, offset + BLOCK
        cards.extend(text[i : i + CARD] for i in range(0, BLOCK, CARD))
        offset += BLOCK
        if offset - pos >= MAX_HEADER_BYTES:
            raise ValueError(f"HDU {index}: no END card in the first {MAX_HEADER_BYTES} bytes")


def _find_end(text: str) -> int:
    """Offset of the END card in a block (card-aligned), or -1."""
    m = _END.search(text)
    while m is not None:
        if m.start() % CARD == 0:
            return m.start()
        m = _END.search(text, m.start() + 1)
    return -1


def _parse_cards(cards: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Header cards -> the card list for the catalog, and keyword -> first value."""
    header: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    match = _VALUE.match
    n = len(cards)
    i = 0
    while i < n:
        card = cards[i]
        i += 1
        keyword = card[:8].rstrip()
        if card[8:10] == "= " and keyword not in _COMMENTARY:
            start = 10
        elif keyword == "HIERARCH" and card[8:9] == " " and "=" in card:  # as cfitsio reads it
            start = card.index("=", 8)
            keyword = card[8:start].strip()
            start += 1
        else:
            header.append({"keyword": keyword, "value": card[8:].rstrip(), "comment": ""})
            continue
        m = match(card, start)
        if m is None:  # not a FITS value: keep the text as written
            value, comment = card[start:].strip(), ""
        else:
            string, logical, real, integer, re_part, im_part, comment = m.groups()
            comment = "" if comment is None else comment.strip()
            if string is not None:
                value = (string.replace("''", "'") if "'" in string else string).rstrip()
                if value.endswith("&") and i < n and cards[i][:8] == "CONTINUE":
                    value, comment, i = _continued(cards, i, value, comment)
            elif integer is not None:
                value = int(integer)
            elif real is not None:
                value = _real(real)
            elif logical is not None:
                value = logical == "T"
            elif re_part is not None:
                value = {"real": _number(re_part), "imag": _number(im_part)}
            else:
                value = None
        header.append({"keyword": keyword, "value": value, "comment": comment})
        if keyword not in values:
            if keyword == "EXTNAME" and value is not None and not isinstance(value, str):
                # the extname column: a value that is not a string as written (007, T, 1E3), as
                # cfitsio reads EXTNAME; the header keeps the typed value
                value = card[start:].split("/", 1)[0].strip()
            values[keyword] = value
    return header, values


def _continued(cards: list[str], i: int, value: str, comment: str) -> tuple[str, str, int]:
    """Join a long string (``&`` + CONTINUE cards from ``cards[i]`` on): the value, comment
    and index of the next card."""
    pieces = [value]
    comments = [comment] if comment else []
    n = len(cards)
    # a CONTINUE card: the keyword, columns 9-10 blank (FITS 4.0 4.2.1.2), a string
    while pieces[-1].endswith("&") and i < n and cards[i][:10] == "CONTINUE  ":
        m = _VALUE.match(cards[i], 8)
        if m is None or m.group(1) is None:
            break  # not a string continuation: left as a card of its own
        pieces[-1] = pieces[-1][:-1]
        pieces.append(m.group(1).replace("''", "'").rstrip())
        if m.group(7):
            comments.append(m.group(7).strip())
        i += 1
    # trailing spaces of the joined value are not significant (FITS 4.0 4.2.1.1), as in a
    # single card's: 'abc &' + CONTINUE '' is 'abc'
    return "".join(pieces).rstrip(" "), " ".join(c for c in comments if c), i


def _real(text: str) -> float | str:
    if "D" in text or "d" in text:
        text = text.replace("D", "E").replace("d", "e")
    value = float(text)
    if value in _INFINITIES:  # 1E400 overflows: JSON has no literal for it
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _number(text: str) -> int | float:
    if "." in text or "E" in text or "e" in text or "D" in text or "d" in text:
        return _real(text)
    return int(text)


def _describe(index: int, values: dict[str, Any]) -> dict[str, Any]:
    """HDU type, EXTNAME, BITPIX, NAXIS, shape and data size from the structural keywords."""

    def integer(keyword: str, default: int | None = None, minimum: int = 0) -> int:
        value = values.get(keyword, default)
        if type(value) is not int:
            what = "missing" if value is None else f"not an integer ({value!r})"
            raise ValueError(f"HDU {index}: {keyword} is {what}")
        if not minimum <= value <= _INT64_MAX:
            raise ValueError(f"HDU {index}: {keyword} = {value} is out of range")
        return value

    if index == 0:
        if type(values.get("SIMPLE")) is not bool:
            raise ValueError("not a FITS file: SIMPLE is not T or F")
    elif type(values.get("XTENSION")) is not str:
        raise ValueError(f"HDU {index}: XTENSION is not a string")
    bitpix = integer("BITPIX", minimum=-64)
    if bitpix not in _BITPIX:
        raise ValueError(f"HDU {index}: BITPIX = {bitpix} is not one of 8, 16, 32, 64, -32, -64")
    naxis = integer("NAXIS")
    if naxis > 999:
        raise ValueError(f"HDU {index}: NAXIS = {naxis} is out of range")
    shape = [integer(f"NAXIS{k}") for k in range(1, naxis + 1)]

    count = 1
    for n in shape:
        count *= n
    if index == 0:
        groups = values.get("GROUPS") is True and naxis > 0
        hdu_type = "GROUPS" if groups else "PRIMARY"
        if groups:  # random groups: NAXIS1 (0) not counted, each group carries PCOUNT parameters
            # (NAXIS1 != 0 breaks the standard: sized as cfitsio and astropy size it)
            count = 1
            for n in shape[1:]:
                count *= n
            pcount, gcount = integer("PCOUNT", 0), integer("GCOUNT", 1)
        else:
            pcount, gcount = 0, 1
    else:
        hdu_type = values["XTENSION"].strip()
        pcount, gcount = integer("PCOUNT", 0), integer("GCOUNT", 1)
    if naxis == 0:
        count = 0
    data_size = abs(bitpix) * gcount * (pcount + count) // 8

    if hdu_type == "BINTABLE" and values.get("ZIMAGE") is True:
        hdu_type = "COMPRESSED_IMAGE"
        bitpix = integer("ZBITPIX", minimum=-64)
        if bitpix not in _BITPIX:
            raise ValueError(f"HDU {index}: ZBITPIX = {bitpix} is not a valid BITPIX")
        naxis = integer("ZNAXIS")
        if naxis > 999:
            raise ValueError(f"HDU {index}: ZNAXIS = {naxis} is out of range")
        shape = [integer(f"ZNAXIS{k}") for k in range(1, naxis + 1)]
    extname = values.get("EXTNAME")
    return {
        "type": hdu_type,
        "extname": None if extname is None else str(extname),
        "bitpix": bitpix,
        "naxis": naxis,
        "shape": shape,
        "data_size": data_size,
    }


EXTRACTOR = Extractor(format="fits", extract=extract, tables=SchemaTables(fits="FITS"),
                      open_arrays=open_fits_arrays)
