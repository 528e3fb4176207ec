"""FITS extractor: headers parsed from raw blocks, checked against astropy, the raw 80-character
cards and fitsverify (CFITSIO)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import uuid
import warnings

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from transforms import schemas
from transforms.formats import fits as fits_extractor
from transforms.formats.base import HEAD_BYTES, Extraction, Source

FITSVERIFY = shutil.which("fitsverify")
needs_fitsverify = pytest.mark.skipif(FITSVERIFY is None, reason="fitsverify is not installed")


# --- helpers ---------------------------------------------------------------------------------


def run(path: str | os.PathLike) -> Extraction:
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    out = Extraction(format="fits")
    fits_extractor.extract(Source(url=path, size=os.path.getsize(path), head=head), out)
    return out


def run_memory(path: str | os.PathLike) -> Extraction:
    with open(path, "rb") as f:
        data = f.read()
    url = f"memory://fits-tests/{uuid.uuid4().hex}/{os.path.basename(path)}"
    fs = fsspec.filesystem("memory")
    fs.pipe(url, data)
    try:
        out = Extraction(format="fits")
        fits_extractor.extract(Source(url=url, size=len(data), head=data[:HEAD_BYTES]), out)
        return out
    finally:
        fs.rm(url)


def run_bytes(tmp_path, data: bytes, name: str = "x.fits") -> Extraction:
    path = tmp_path / name
    path.write_bytes(data)
    return run(path)


def headers(out: Extraction) -> list[list[dict]]:
    return [json.loads(row["header"]) for row in out.rows["fits"]]


def raw_headers(path) -> list[list[str]]:
    """The 80-character cards (END excluded) of every HDU, found with plain byte arithmetic."""
    data = open(path, "rb").read()
    result, pos = [], 0
    while pos + 2880 <= len(data) and data[pos : pos + 8] in (b"SIMPLE  ", b"XTENSION"):
        cards = []
        while True:
            card = data[pos : pos + 80].decode("ascii")
            pos += 80
            if card[:8] == "END     ":
                break
            cards.append(card)
        pos = -(-pos // 2880) * 2880
        kw = {c[:8].rstrip(): c[10:].split("/")[0].strip() for c in reversed(cards)}
        bitpix, naxis = abs(int(kw["BITPIX"])), int(kw["NAXIS"])
        axes = [int(kw[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
        if axes and axes[0] == 0 and kw.get("GROUPS") == "T":
            axes = axes[1:]
        count = math.prod(axes) if naxis else 0
        nbytes = bitpix * int(kw.get("GCOUNT", 1)) * (int(kw.get("PCOUNT", 0)) + count) // 8
        pos += -(-nbytes // 2880) * 2880
        result.append(cards)
    return result


def raw_keyword(card: str) -> str:
    if card.startswith("HIERARCH ") and "=" in card:
        return card[9 : card.index("=")].strip()
    return card[:8].rstrip()


def astropy_value(value):
    if isinstance(value, fits.card.Undefined):
        return None
    if isinstance(value, complex):
        return {"real": value.real, "imag": value.imag}
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def astropy_headers(path) -> list[list[dict]]:
    """astropy's reading of every card (compressed images as the raw binary table)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, disable_image_compression=True) as hdul:
            result = []
            for hdu in hdul:
                cards = []
                for c in hdu.header.cards:
                    try:
                        value = astropy_value(c.value)
                    except fits.VerifyError:
                        value = "<astropy cannot parse this card>"
                    cards.append({"keyword": c.keyword, "value": value, "comment": c.comment})
                result.append(cards)
            return result


def fitsverify(path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FITSVERIFY, *flags, str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def assert_valid_rows(out: Extraction) -> None:
    rows = out.rows["fits"]
    table = pa.Table.from_pylist([row | {"path": "x"} for row in rows], schema=schemas.FITS)
    assert table.num_rows == len(rows)
    assert [row["hdu_index"] for row in rows] == list(range(len(rows)))
    assert set(rows[0]) | {"path"} == set(schemas.FITS.names) - set(schemas.STAT_NAMES)
    json.dumps(out.metadata, allow_nan=False)  # strict JSON
    assert out.metadata["hdu_count"] == len(rows) == len(out.metadata["hdus"])


def drop_card(data: bytes, hdu_offset: int, prefix: bytes) -> bytes:
    """Remove the card starting with ``prefix`` from the header at ``hdu_offset`` (the header
    keeps its size: a blank card goes after END)."""
    buf = bytearray(data)
    pos = hdu_offset
    while not buf[pos : pos + 80].startswith(prefix):
        pos += 80
    end = pos
    while buf[end : end + 8] != b"END     ":
        end += 80
    buf[pos : end + 80] = buf[pos + 80 : end + 80] + b" " * 80
    return bytes(buf)


def card(text: str) -> bytes:
    assert len(text) <= 80, text
    return text.ljust(80).encode("ascii")


def raw_fits(*cards: str, data: bytes = b"") -> bytes:
    header = b"".join(card(c) for c in cards) + card("END")
    header += b" " * (-len(header) % 2880)
    return header + data + b"\0" * (-len(data) % 2880)


# --- fixtures ----------------------------------------------------------------------------------

RAW_CARDS = [
    "SIMPLE  =                    T / conforms to FITS standard",
    "BITPIX  =                    8",
    "NAXIS   =                    0",
    "EXTEND  =                    T",
    "DEXP    =              1.0D+10 / D exponent",
    "EEXP    =              1.0E+10",
    "LOWE    =               2.5e-3",
    "FREEINT = 42",
    "NEGINT  =                  -17",
    "PLUSINT =                  +12",
    "BIGINT  = 123456789012345678901234567890 / beyond int64",
    "INT64MAX= 9223372036854775807",
    "HUGEFLT =               1.0E400",
    "CPLXI   =              (3, -4)",
    "CPLXF   =      (1.5D0, 2.5E-1)",
    "UNDEF   =                      / undefined with comment",
    "EMPTYSTR= ''",
    "BLANKSTR= '        '",
    "LEADSP  = '  lead  '",
    "QUOTES  = 'O''Hara''s'",
    "SLASHSTR= 'a/b'                / slash inside a string",
    "TIGHT   = 'x'/tight comment",
    "BOOLF   =                    F/ no space",
    "LONG    = 'first part &'",
    "CONTINUE  'second part&' / c1",
    "CONTINUE  ' end'  / c2",
    "LONGSP  = 'ends in a space &'",
    "CONTINUE  '' / astropy writes this for a value ending in a space",
    "ORPHAN  = 'no ampersand'",
    "CONTINUE  'orphan continue'",
    "JUNK    = 1 2 3 / unparsable",
    "NOVALUE   text without the value indicator",
    "HISTORY   two leading spaces",
    "COMMENT",
    "",
    "        text under a blank keyword",
    "HIERARCH ESO TEL AIRM START = 1.234 / hierarch float",
    "HIERARCH ESO OBS NAME = 'survey' / hierarch string",
]

RAW_EXPECTED = [
    ("SIMPLE", True, "conforms to FITS standard"),
    ("BITPIX", 8, ""),
    ("NAXIS", 0, ""),
    ("EXTEND", True, ""),
    ("DEXP", 1.0e10, "D exponent"),
    ("EEXP", 1.0e10, ""),
    ("LOWE", 2.5e-3, ""),
    ("FREEINT", 42, ""),
    ("NEGINT", -17, ""),
    ("PLUSINT", 12, ""),
    ("BIGINT", 123456789012345678901234567890, "beyond int64"),
    ("INT64MAX", 2**63 - 1, ""),
    ("HUGEFLT", "Infinity", ""),
    ("CPLXI", {"real": 3, "imag": -4}, ""),
    ("CPLXF", {"real": 1.5, "imag": 0.25}, ""),
    ("UNDEF", None, "undefined with comment"),
    ("EMPTYSTR", "", ""),
    ("BLANKSTR", "", ""),
    ("LEADSP", "  lead", ""),
    ("QUOTES", "O'Hara's", ""),
    ("SLASHSTR", "a/b", "slash inside a string"),
    ("TIGHT", "x", "tight comment"),
    ("BOOLF", False, "no space"),
    ("LONG", "first part second part end", "c1 c2"),
    ("LONGSP", "ends in a space", "astropy writes this for a value ending in a space"),
    ("ORPHAN", "no ampersand", ""),
    ("CONTINUE", "  'orphan continue'", ""),
    ("JUNK", "1 2 3 / unparsable", ""),
    ("NOVALUE", "  text without the value indicator", ""),
    ("HISTORY", "  two leading spaces", ""),
    ("COMMENT", "", ""),
    ("", "", ""),
    ("", "text under a blank keyword", ""),
    ("ESO TEL AIRM START", 1.234, "hierarch float"),
    ("ESO OBS NAME", "survey", "hierarch string"),
]


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fits")
    paths: dict[str, str] = {}
    rng = np.random.default_rng(0)

    # primary only, with a 2-D image
    p = fits.PrimaryHDU(rng.integers(0, 1000, (20, 30)).astype(np.int16))
    p.header["OBJECT"] = ("M31", "target name")
    paths["primary"] = str(d / "primary.fits")
    p.writeto(paths["primary"])

    # primary (no data, every value type) + image + binary table + ASCII table
    p = fits.PrimaryHDU()
    h = p.header
    h["BOOLT"] = (True, "a true")
    h["BOOLF"] = False
    h["INTV"] = (-42, "an int")
    h["BIGINT"] = (2**70, "beyond int64")
    h["FLTV"] = (1.0e10, "a float")
    h["SMALLF"] = 1.5e-300
    h["CPLX"] = (complex(1.5, -2.0), "a complex")
    h["UNDEF"] = (None, "undefined")
    h["STR"] = ("it's a string   ", "trailing spaces")
    h["EMPTY"] = ""
    h["LONGSTR"] = ("long value " * 15 + "with 'quotes'", "and a long comment " * 6)
    h["HIERARCH ESO DET CHIP ID"] = ("ccd 1", "hierarch string")
    h["HIERARCH ESO TEL AIRM"] = (1.25, "hierarch float")
    for i in range(5):
        h.add_history(f"history line {i}  with  spaces")
        h.add_comment(f"comment line {i}")
    h.append(("", "text under a blank keyword"))
    image = fits.ImageHDU(rng.random((4, 5, 6)).astype(np.float32), name="SCI")
    image.header.update(
        {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.1, "CRVAL2": 2.2,
         "CRPIX1": 3.5, "CRPIX2": 2.5, "CD1_1": -1.5e-5, "CD2_2": 1.5e-5, "CUNIT1": "deg"}
    )
    binary = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="id", format="J", array=np.arange(7)),
            fits.Column(name="flux", format="E", unit="Jy", array=np.ones(7)),
            fits.Column(name="name", format="8A", array=[f"s{i}" for i in range(7)]),
            fits.Column(name="spec", format="PE(5)", array=[np.ones(i % 5 + 1) for i in range(7)]),
        ],
        name="CATALOG",
    )
    ascii_table = fits.TableHDU.from_columns(
        [
            fits.Column(name="a", format="I5", array=np.arange(3)),
            fits.Column(name="b", format="F8.3", array=np.arange(3) / 3),
        ],
        name="ASCII",
    )
    paths["multi"] = str(d / "multi.fits")
    fits.HDUList([p, image, binary, ascii_table]).writeto(paths["multi"])

    # compressed images: one named, one with astropy's default name, one without EXTNAME card
    comp = fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.CompImageHDU(rng.integers(0, 100, (16, 12)).astype(np.int32), name="ZSCI"),
            fits.CompImageHDU(rng.random((8, 9, 3)).astype(np.float32)),
            fits.CompImageHDU(np.arange(50, dtype=np.int16).reshape(5, 10)),
        ]
    )
    paths["compressed"] = str(d / "compressed.fits")
    comp.writeto(paths["compressed"])
    with fits.open(paths["compressed"]) as hdul:
        hdul.info(output=False)
        offsets = [hdu.fileinfo()["hdrLoc"] for hdu in hdul]
    data = open(paths["compressed"], "rb").read()
    paths["compressed"] = str(d / "compressed_noname.fits")
    with open(paths["compressed"], "wb") as f:
        f.write(drop_card(data, offsets[3], b"EXTNAME ="))

    # random groups
    groups = fits.GroupData(
        rng.random((5, 1, 3, 2)).astype(np.float32),
        parnames=["UU", "VV", "WW"],
        pardata=[rng.random(5), rng.random(5), rng.random(5)],
        bitpix=-32,
    )
    paths["groups"] = str(d / "groups.fits")
    fits.HDUList([fits.GroupsHDU(groups)]).writeto(paths["groups"])

    # hand-written cards: number syntaxes, long strings, odd cards; then a tiny image extension
    paths["raw"] = str(d / "raw.fits")
    with open(paths["raw"], "wb") as f:
        f.write(raw_fits(*RAW_CARDS))
        f.write(
            raw_fits(
                "XTENSION= 'IMAGE   '",
                "BITPIX  =                  -64",
                "NAXIS   =                    1",
                "NAXIS1  =                    3",
                "PCOUNT  =                    0",
                "GCOUNT  =                    1",
                data=np.arange(3, dtype=">f8").tobytes(),
            )
        )
    return paths


ASTROPY_FILES = ["primary", "multi", "compressed", "groups"]
ALL_FILES = [*ASTROPY_FILES, "raw"]


# --- rows --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILES)
def test_rows_valid_and_identical_local_and_memory(files, name):
    local = run(files[name])
    assert_valid_rows(local)
    remote = run_memory(files[name])
    assert remote.rows == local.rows
    assert remote.metadata == local.metadata
    assert local.format_version is None


def test_primary_only(files):
    out = run(files["primary"])
    (row,) = out.rows["fits"]
    assert row | {"header": None} == {
        "hdu_index": 0, "hdu_type": "PRIMARY", "extname": None, "bitpix": 16, "naxis": 2,
        "shape": [30, 20], "header": None,
    }
    header = json.loads(row["header"])
    assert header[0] == {"keyword": "SIMPLE", "value": True, "comment": "conforms to FITS standard"}
    assert {"keyword": "OBJECT", "value": "M31", "comment": "target name"} in header
    (hdu,) = out.metadata["hdus"]
    assert hdu["header_offset"] == 0 and hdu["data_offset"] == 2880
    assert hdu["data_size"] == 20 * 30 * 2 and hdu["header"] == header


def test_multi_extension_rows(files):
    rows = run(files["multi"]).rows["fits"]
    summary = [(r["hdu_type"], r["extname"], r["bitpix"], r["naxis"], r["shape"]) for r in rows]
    assert summary == [
        ("PRIMARY", None, 8, 0, []),
        ("IMAGE", "SCI", -32, 3, [6, 5, 4]),
        ("BINTABLE", "CATALOG", 8, 2, [24, 7]),
        ("TABLE", "ASCII", 8, 2, [rows[3]["shape"][0], 3]),
    ]


def test_value_types(files):
    header = {c["keyword"]: c for c in headers(run(files["multi"]))[0]}
    assert header["BOOLT"]["value"] is True and header["BOOLF"]["value"] is False
    assert header["INTV"] == {"keyword": "INTV", "value": -42, "comment": "an int"}
    assert header["BIGINT"]["value"] == 2**70
    assert header["FLTV"]["value"] == 1.0e10 and isinstance(header["FLTV"]["value"], float)
    assert header["SMALLF"]["value"] == 1.5e-300
    assert header["CPLX"]["value"] == {"real": 1.5, "imag": -2.0}
    assert header["UNDEF"] == {"keyword": "UNDEF", "value": None, "comment": "undefined"}
    assert header["STR"]["value"] == "it's a string"
    assert header["EMPTY"]["value"] == ""
    assert header["LONGSTR"]["value"] == "long value " * 15 + "with 'quotes'"
    assert header["LONGSTR"]["comment"] == ("and a long comment " * 6).strip()
    assert header["ESO DET CHIP ID"]["value"] == "ccd 1"
    assert header["ESO TEL AIRM"]["value"] == 1.25
    history = [c["value"] for c in headers(run(files["multi"]))[0] if c["keyword"] == "HISTORY"]
    assert history == [f"history line {i}  with  spaces" for i in range(5)]
    assert header[""]["value"] == "text under a blank keyword"


def test_compressed_images(files):
    rows = run(files["compressed"]).rows["fits"]
    summary = [(r["hdu_type"], r["extname"], r["bitpix"], r["naxis"], r["shape"]) for r in rows]
    assert summary == [
        ("PRIMARY", None, 8, 0, []),
        ("COMPRESSED_IMAGE", "ZSCI", 32, 2, [12, 16]),
        # astropy wrote its default name as a real EXTNAME card: it is reported
        ("COMPRESSED_IMAGE", "COMPRESSED_IMAGE", -32, 3, [3, 9, 8]),
        # no EXTNAME card in the file: null
        ("COMPRESSED_IMAGE", None, 16, 2, [10, 5]),
    ]
    # the header is the file's own (binary table) header, not astropy's image view of it
    header = json.loads(rows[1]["header"])
    assert header[0] == {
        "keyword": "XTENSION", "value": "BINTABLE", "comment": "binary table extension"
    }
    assert any(c["keyword"] == "ZCMPTYPE" for c in header)


def test_random_groups(files):
    out = run(files["groups"])
    (row,) = out.rows["fits"]
    assert (row["hdu_type"], row["bitpix"], row["naxis"], row["shape"]) == (
        "GROUPS", -32, 4, [0, 2, 3, 1],
    )
    (hdu,) = out.metadata["hdus"]
    assert hdu["data_size"] == 4 * 5 * (3 + 2 * 3 * 1)  # |BITPIX| * GCOUNT * (PCOUNT + ...)


def test_random_groups_with_nonzero_naxis1_are_sized_as_cfitsio_sizes_them(tmp_path):
    """GROUPS = T with NAXIS1 != 0 breaks the standard; cfitsio and astropy still size the
    data as random groups (NAXIS1 not counted): one HDU, not a second one found in the data."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8",
             "NAXIS   =                    2", "NAXIS1  =                    5",
             "NAXIS2  =                    1", "GROUPS  =                    T",
             "PCOUNT  =                    0", "GCOUNT  =                 2881"]
    ext = b"".join(card(c) for c in ["XTENSION= 'IMAGE   '", "BITPIX  =                    8",
                                      "NAXIS   =                    0", "EXTNAME = 'SCI'", "END"])
    # NAXIS1 x NAXIS2 would be one block of data, followed by an extension; the 2,881 bytes
    # of groups take two blocks, the extension's header among them
    out = run_bytes(tmp_path, raw_fits(*cards) + bytes(2880) + ext.ljust(2880))
    assert [r["hdu_type"] for r in out.rows["fits"]] == ["GROUPS"]
    assert out.metadata["hdus"][0]["data_size"] == 2881


def test_blank_cards_before_end_are_free_header_space(tmp_path):
    """cfitsio reserves header space as blank cards before END; fitsverify -l lists the
    header without them. A blank card between two keywords stays a card."""
    out = run_bytes(tmp_path, raw_fits("SIMPLE  =                    T", "BITPIX  =                    8",
                                       "NAXIS   =                    0", "", "OBJECT  = 'x'", "", "", ""))
    assert [c["keyword"] for c in headers(out)[0]] == ["SIMPLE", "BITPIX", "NAXIS", "", "OBJECT"]
    if FITSVERIFY:
        listed = fitsverify(tmp_path / "x.fits", "-l").stdout
        assert "6 header keywords" in listed  # 5 cards and END


def test_hand_written_cards(files):
    out = run(files["raw"])
    header = headers(out)[0]
    assert [(c["keyword"], c["value"], c["comment"]) for c in header] == RAW_EXPECTED
    assert [type(c["value"]) for c in header] == [type(v) for _, v, _ in RAW_EXPECTED]
    image = out.rows["fits"][1]
    assert (image["hdu_type"], image["bitpix"], image["shape"]) == ("IMAGE", -64, [3])


# --- cross-checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ASTROPY_FILES)
def test_headers_match_astropy(files, name):
    assert headers(run(files[name])) == astropy_headers(files[name])


def test_hand_written_cards_match_astropy_where_it_parses(files):
    ours = headers(run(files["raw"]))
    theirs = astropy_headers(files["raw"])
    # astropy joins an orphan CONTINUE into the previous string (we follow the standard: only
    # after '&') and rejects the unparsable JUNK card; every other card agrees.
    skip = {"ORPHAN", "CONTINUE", "JUNK"}
    assert [c for c in ours[0] if c["keyword"] not in skip] == [
        c for c in theirs[0] if c["keyword"] not in skip
    ]
    assert ours[1] == theirs[1]


@pytest.mark.parametrize("name", ALL_FILES)
def test_headers_match_raw_cards(files, name):
    """Every raw card is one of ours, in order, CONTINUE continuations folded into the card
    they continue; non-string values read the same as the raw value field."""
    for ours, raw in zip(headers(run(files[name])), raw_headers(files[name]), strict=True):
        folded = [c for c in raw if not (c.startswith("CONTINUE  '") and _continues(raw, c))]
        assert [c["keyword"] for c in ours] == [raw_keyword(c) for c in folded]
        for entry, image in zip(ours, folded):
            field = image[10:].split("/")[0].strip() if image[8:10] == "= " else None
            if field and re.fullmatch(r"[+-]?\d+", field):
                assert entry["value"] == int(field)
            elif field in ("T", "F"):
                assert entry["value"] is (field == "T")
            elif field == "" and entry["keyword"] not in ("COMMENT", "HISTORY", ""):
                assert entry["value"] is None


def _continues(raw: list[str], image: str) -> bool:
    """Whether the CONTINUE card ``image`` follows a string that ends with '&'."""
    previous = raw[raw.index(image) - 1]
    return re.search(r"&'\s*(/.*)?$", previous) is not None


def _fitsverify_hdus(stdout: str) -> int:
    return int(re.search(r"(\d+) Header-Data Units? in this file", stdout).group(1))


@needs_fitsverify
@pytest.mark.parametrize("name", ALL_FILES)
def test_fitsverify_agrees(files, name):
    out = run(files[name])
    if name in ("primary", "compressed", "groups"):
        quiet = fitsverify(files[name], "-q")
        assert quiet.stdout.startswith("verification OK"), quiet.stdout
    listing = fitsverify(files[name], "-l")
    assert _fitsverify_hdus(listing.stdout) == len(out.rows["fits"])
    # fitsverify lists every card (END included) of every HDU: the same raw cards we folded
    sections = re.split(r"=+ HDU \d+: .* =+", listing.stdout)[1:]
    raw = raw_headers(files[name])
    assert len(sections) == len(raw)
    for section, cards in zip(sections, raw):
        listed = [c.rstrip() for c in re.findall(r"^ *\d+ \| (.*)$", section, re.M)]
        assert listed == [c.rstrip() for c in cards] + ["END"]
        count = int(re.search(r"(\d+) header keywords", section).group(1))
        assert count == len(cards) + 1


@needs_fitsverify
def test_fitsverify_multi_only_warns(files):
    """The multi-extension fixture is valid; fitsverify only warns (null value, LONGSTRN)."""
    result = fitsverify(files["multi"])
    assert "0 error(s)" in result.stdout, result.stdout


# --- broken inputs -------------------------------------------------------------------------------


def test_truncated_at_several_offsets(files, tmp_path):
    data = open(files["multi"], "rb").read()
    hdus = run(files["multi"]).metadata["hdus"]
    cuts = [10, 80 * 5 + 7, 2879]
    for hdu in hdus[1:]:
        cuts += [hdu["header_offset"] + 1000, hdu["header_offset"] + 2879]
    for hdu in hdus:
        if hdu["data_size"]:
            cuts += [hdu["data_offset"] + 1, hdu["data_offset"] + hdu["data_size"] - 1]
    for cut in cuts:
        with pytest.raises((EOFError, ValueError)) as info:
            run_bytes(tmp_path, data[:cut])
        assert "truncated" in str(info.value)


def test_truncated_keeps_what_was_read(files, tmp_path):
    data = open(files["multi"], "rb").read()
    hdus = run(files["multi"]).metadata["hdus"]
    out = Extraction(format="fits")
    path = tmp_path / "cut.fits"
    path.write_bytes(data[: hdus[2]["data_offset"] + 10])
    with pytest.raises(EOFError, match="HDU 2 .BINTABLE. declares"):
        fits_extractor.extract(Source(url=str(path), size=os.path.getsize(path)), out)
    assert [r["hdu_type"] for r in out.rows["fits"]] == ["PRIMARY", "IMAGE", "BINTABLE"]
    assert out.metadata["hdu_count"] == 3


def test_missing_final_padding_is_not_an_error(files, tmp_path):
    data = open(files["primary"], "rb").read()
    out = run_bytes(tmp_path, data[: 2880 + 20 * 30 * 2])
    assert len(out.rows["fits"]) == 1
    assert out.metadata["missing_padding_bytes"] == 2880 - 20 * 30 * 2


@pytest.mark.parametrize("trailer", [b"\0" * 2880, b" " * 100, b"not an extension " * 400])
def test_trailing_bytes_are_not_an_hdu(files, tmp_path, trailer):
    data = open(files["multi"], "rb").read()
    out = run_bytes(tmp_path, data + trailer)
    assert len(out.rows["fits"]) == 4
    assert out.metadata["trailing_bytes"] == len(trailer)


def test_garbage_after_magic(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="not printable ASCII"):
        run_bytes(tmp_path, b"SIMPLE  =" + rng.bytes(10_000))
    with pytest.raises(EOFError, match="truncated header"):
        run_bytes(tmp_path, b"SIMPLE  =" + b"garbage text " * 1000)
    with pytest.raises(ValueError, match="SIMPLE is not T or F"):
        run_bytes(tmp_path, raw_fits("SIMPLE  = garbage", "BITPIX  = 8", "NAXIS   = 0"))
    with pytest.raises(ValueError, match="not a FITS file"):
        run_bytes(tmp_path, b"")
    with pytest.raises(ValueError, match="not a FITS file"):
        run_bytes(tmp_path, b"\x89HDF\r\n\x1a\n" + b"\0" * 5000)


@pytest.mark.parametrize(
    ("cards", "error", "match"),
    [
        (["SIMPLE  = T", "NAXIS   = 0"], ValueError, "BITPIX is missing"),
        (["SIMPLE  = T", "BITPIX  = 12", "NAXIS   = 0"], ValueError, "BITPIX = 12"),
        (["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 2", "NAXIS1  = 4"], ValueError, "NAXIS2"),
        (["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 1", "NAXIS1  = -4"], ValueError, "range"),
        (["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 1", "NAXIS1  = 4.5"], ValueError, "integer"),
        (["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 1", "NAXIS1  = T"], ValueError, "integer"),
        # a 10^12 claim is arithmetic only: the data would end past the end of the file
        (["SIMPLE  = T", "BITPIX  = -64", "NAXIS   = 2", "NAXIS1  = 1000000000000",
          "NAXIS2  = 1000000000000"], EOFError, "truncated file"),
        # beyond int64: cannot be a shape
        (["SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 1", "NAXIS1  = 100000000000000000000"],
         ValueError, "range"),
    ],
)
def test_bad_structural_keywords(tmp_path, cards, error, match):
    with pytest.raises(error, match=match):
        run_bytes(tmp_path, raw_fits(*cards))


def test_bad_extension(tmp_path):
    primary = raw_fits("SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 0")
    ext = raw_fits("XTENSION= 'IMAGE'", "BITPIX  = 16", "NAXIS   = 1", "NAXIS1  = 10")
    with pytest.raises(EOFError, match="truncated header: HDU 1"):
        run_bytes(tmp_path, primary + ext[:2000])
    with pytest.raises(EOFError, match="truncated file: HDU 1"):
        run_bytes(tmp_path, primary + ext[:2880 + 10])
    bad = ext.replace(b"NAXIS1  = 10", b"NAXIS1  = \x01\x02")
    with pytest.raises(ValueError, match="HDU 1: header card 4 .* not printable"):
        run_bytes(tmp_path, primary + bad)
    with pytest.raises(ValueError, match="XTENSION is not a string"):
        run_bytes(tmp_path, primary + ext.replace(b"'IMAGE'", b"1      "))


def test_header_without_end_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(fits_extractor, "MAX_HEADER_BYTES", 2880 * 3)
    data = card("SIMPLE  = T") + card("BITPIX  = 8") + card("NAXIS   = 0") + b" " * 2880 * 5
    with pytest.raises(ValueError, match="no END card"):
        run_bytes(tmp_path, data)


def test_other_extension_types_are_kept(tmp_path):
    data = raw_fits("SIMPLE  = T", "BITPIX  = 8", "NAXIS   = 0") + raw_fits(
        "XTENSION= 'FOREIGN '", "BITPIX  = 8", "NAXIS   = 1", "NAXIS1  = 5", "PCOUNT  = 0",
        "GCOUNT  = 1", "EXTNAME = 'BLOB'", data=b"12345",
    )
    rows = run_bytes(tmp_path, data).rows["fits"]
    assert (rows[1]["hdu_type"], rows[1]["extname"], rows[1]["shape"]) == ("FOREIGN", "BLOB", [5])


def test_header_json_reads_in_duckdb(files):
    duckdb = pytest.importorskip("duckdb")
    row = run(files["raw"]).rows["fits"][0]
    con = duckdb.connect()
    got = con.execute(
        """select json_extract_string(c, '$.keyword'), json_type(c, '$.value'),
                  json_extract_string(c, '$.value')
           from (select unnest(from_json(?, '["json"]')) as c)""",
        [row["header"]],
    ).fetchall()
    by_keyword = {k: (t, v) for k, t, v in got}
    assert by_keyword["BIGINT"] == ("DOUBLE", "123456789012345678901234567890")
    assert by_keyword["INT64MAX"][1] == str(2**63 - 1)
    assert by_keyword["HUGEFLT"] == ("VARCHAR", "Infinity")
    assert by_keyword["UNDEF"][0] == "NULL"
    assert by_keyword["BOOLF"] == ("BOOLEAN", "false")
    assert by_keyword["CPLXF"] == ("OBJECT", '{"real":1.5,"imag":0.25}')


def test_continue_and_hierarch_need_the_blank_after_the_keyword(tmp_path):
    """As cfitsio reads them (and FITS 4.0 4.2.1.2 writes them): a CONTINUE card has columns
    9-10 blank, so 'CONTINUE'cd'' does not continue a string; 'HIERARCHESO = 3' is not a
    HIERARCH card."""
    out = run_bytes(tmp_path, raw_fits("SIMPLE  =                    T", "BITPIX  =                    8",
                                       "NAXIS   =                    0", "CONTNS  = 'ab&'", "CONTINUE'cd'",
                                       "LONG    = 'ab&'", "CONTINUE  'cd'", "HIERARCHESO = 3",
                                       "HIERARCH ESO A = 4"))
    cards = [(c["keyword"], c["value"]) for c in headers(out)[0]]
    assert ("CONTNS", "ab&") in cards and ("LONG", "abcd") in cards
    # a keyword longer than 8 characters: commentary, as other non-standard keywords
    assert ("HIERARCH", "ESO = 3") in cards and ("ESO A", 4) in cards and "ESO" not in dict(cards)


def test_extname_that_is_not_a_string_is_the_value_as_written(tmp_path):
    """EXTNAME = 007 / T / 1E3 (fitsverify flags them): the extname column is the value text as
    written, as cfitsio reads EXTNAME (was Python's str of the parsed value: 7, True, 1000.0);
    the header keeps the typed value."""
    names = ["007", "T", "1E3", "2.50", "(1, 2)"]
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(np.zeros(2, np.int16), name=f"X{i}") for i in range(len(names))]
    path = tmp_path / "a.fits"
    fits.HDUList(hdus).writeto(path)
    raw = bytearray(path.read_bytes())
    for i, text in enumerate(names):
        at = raw.index(f"EXTNAME = 'X{i} ".encode())
        raw[at:at + 80] = f"EXTNAME = {text:>20} / name".ljust(80).encode()
    path.write_bytes(bytes(raw))
    rows = run(path).rows["fits"]
    assert [r["extname"] for r in rows] == [None, *names]
    header = json.loads(rows[1]["header"])
    assert next(c for c in header if c["keyword"] == "EXTNAME") == {"keyword": "EXTNAME", "value": 7, "comment": "name"}
