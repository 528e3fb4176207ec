"""PHI protection for the DICOM rows: ``--phi keep | remove | pseudonymize``.

``remove`` applies the Basic Application Level Confidentiality Profile of DICOM PS3.15 Annex E
(Table E.1-1, the edition in :mod:`transforms.phi_profile`), with no option (in particular not
Retain Safe Private), to ``dicom.tags``, to the typed ``dicom`` columns and to
``files.metadata`` (the file meta group and the bulk data list). A catalog is not a DICOM
instance, so IOD conformance never forces a weaker action: of a combination (``X/Z/D``) the
first, most protective one is taken.

- ``X`` (and ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``): the element is removed;
- ``Z`` (and ``Z/D``): the element stays, without a value (``{"vr": ...}``);
- ``D``: one dummy value of the element's VR (``REMOVED``, ``19000101``, ``0``, ...); a
  sequence loses its items; a UID gets the replacement UID below;
- ``U``: every UID becomes ``2.25.<integer>``, a UUID (version 8, RFC 9562) made from an
  HMAC-SHA256 of the original, so that the same UID is replaced the same way in every file
  and references between instances still hold;
- private elements (odd groups, private creators included), Curve Data (50xx,xxxx) and Overlay
  Data/Comments (60xx,3000 and 60xx,4000) are removed;
- sequences not in the table are kept, and the profile applies to their items recursively.

``pseudonymize`` does the same, except that the identifiers in :data:`PSEUDONYMIZED` get a
pseudonym instead of being emptied or removed: the lowercase hex of an HMAC-SHA256 keyed with
``METAEXTRACT_PHI_KEY`` (16 digits for SH values, 32 for LO and PN), so studies of one patient
still join; the sequences marked ``X/Z/U*`` (Referenced Image Sequence, Source Image Sequence)
and the Other Patient IDs Sequence are kept, their items handled recursively.

Typed columns are recomputed from the rewritten ``tags``: ``patient_id`` is the pseudonym in
``tags`` (null in ``remove`` mode), the UID columns the replacement UIDs, ``study_date`` null
(Study Date is ``Z``). The key is never logged, never in a row, never pickled.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
from typing import Any

from transforms.formats.base import dumps
from transforms.phi_profile import ACTIONS, MASKED

ENV_KEY = "METAEXTRACT_PHI_KEY"
MODES = ("keep", "remove", "pseudonymize")
MISSING_KEY = f"--phi pseudonymize needs the key in the environment variable {ENV_KEY}"

#: Identifiers that ``pseudonymize`` replaces with a keyed pseudonym (tag -> attribute).
PSEUDONYMIZED = {
    0x00100010: "Patient's Name",
    0x00100020: "Patient ID",
    0x00101000: "Other Patient IDs",
    0x00101001: "Other Patient Names",
    0x00080050: "Accession Number",
    0x00200010: "Study ID",
    0x00380010: "Admission ID",
    0x00120040: "Clinical Trial Subject ID",
    0x00120042: "Clinical Trial Subject Reading ID",
}
#: Sequences that ``pseudonymize`` keeps (their items handled recursively) besides ``X/Z/U*``.
KEPT_SEQUENCES = {0x00101002: "Other Patient IDs Sequence"}

#: Sequences nested deeper than this lose their items (a bound on recursion, never a leak).
MAX_DEPTH = 64

# Effective actions, one per tag and mode.
_REMOVE, _EMPTY, _DUMMY, _UID, _PSEUDONYM, _RECURSE = "X", "Z", "D", "U", "P", "R"
_ODD_HEX = frozenset("13579BDF")  # last digit of a private (odd) group
_MASKED_PREFIXES = frozenset(f"{value:08X}"[:2] for value, mask, _ in MASKED if mask >> 24 == 0xFF)
assert all(mask >> 24 == 0xFF for _, mask, _ in MASKED), "a masked row without a fixed first byte"

#: Typed ``dicom`` columns and the tags they copy (see transforms/formats/dicom.py).
_STRING_COLUMNS = {
    "sop_instance_uid": "00080018",
    "sop_class_uid": "00080016",
    "study_instance_uid": "0020000D",
    "series_instance_uid": "0020000E",
    "modality": "00080060",
    "patient_id": "00100020",
}
_DATE_COLUMNS = {"study_date": "00080020"}

#: The value ``D`` puts in an element, by VR (binary data and sequences are emptied instead).
_DUMMIES: dict[str, Any] = {
    "AE": "REMOVED",
    "AS": "000D",
    "AT": "00000000",
    "CS": "REMOVED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "PN": {"Alphabetic": "REMOVED"},
    **dict.fromkeys(("LO", "LT", "SH", "ST", "UC", "UR", "UT"), "REMOVED"),
    **dict.fromkeys(("DS", "IS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"), 0),
}
_SHORT_VRS = frozenset({"SH", "CS", "AE"})  # at most 16 characters

#: Hashes UIDs in ``remove`` mode when no key is set (a public, fixed key).
_PUBLIC_KEY = b"metaextract PS3.15 basic profile UID"


class PhiKeyMissing(ValueError):
    """``pseudonymize`` was asked for without a key in ``METAEXTRACT_PHI_KEY``."""


#: File meta elements Table E.1-1 does not list that name the sending and receiving stations
#: (as Station AE Title, X, does) or hold a vendor's private data: removed in remove and
#: pseudonymize. Source, Sending and Receiving Application Entity Title, Private Information
#: Creator UID, Private Information.
FILE_META_REMOVED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)

#: VRs whose values are text: a UN element of such a dictionary VR is decoded (byte order
#: does not matter) so that the profile's action applies to its value.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})


@functools.lru_cache(maxsize=None)
def _rules(mode: str) -> dict[str, str]:
    """``"GGGGEEEE"`` -> effective action for a mode (tags not listed are kept)."""
    if mode == "keep":
        return {}
    rules = {f"{tag:08X}": action.split("/")[0] for tag, action in ACTIONS.items()}
    rules.update({f"{tag:08X}": _REMOVE for tag in FILE_META_REMOVED})
    if mode == "pseudonymize":
        for tag, action in ACTIONS.items():
            if action == "X/Z/U*":
                rules[f"{tag:08X}"] = _RECURSE
        rules.update({f"{tag:08X}": _RECURSE for tag in KEPT_SEQUENCES})
        rules.update({f"{tag:08X}": _PSEUDONYM for tag in PSEUDONYMIZED})
    return rules


def _masked_action(key: str) -> str | None:
    tag = int(key, 16)
    for value, mask, action in MASKED:
        if tag & mask == value:
            return action.split("/")[0]
    return None


class PhiPolicy:
    """How DICOM patient data are treated: ``keep``, ``remove`` or ``pseudonymize``.

    Args:
      mode: one of :data:`MODES`.
      key: the HMAC key; required for ``pseudonymize``; in ``remove`` mode it only keys the
        replacement UIDs (without it they are a public hash of the original UID).

    The key never leaves the object: ``repr`` hides it, and a pickled policy carries only its
    mode: unpickling (on a Beam worker) reads ``METAEXTRACT_PHI_KEY`` again.
    """

    __slots__ = ("mode", "_key", "_rules")

    def __init__(self, mode: str, key: bytes | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"--phi must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "pseudonymize" and not key:
            raise PhiKeyMissing(MISSING_KEY)
        self.mode = mode
        self._key = bytes(key) if key else None
        self._rules = _rules(mode)

    @classmethod
    def from_env(cls, mode: str) -> PhiPolicy:
        """The policy for ``mode`` with the key from ``METAEXTRACT_PHI_KEY`` (raw bytes).

        Raises :class:`PhiKeyMissing` for ``pseudonymize`` when the variable is unset or empty.
        """
        text = os.environ.get(ENV_KEY, "") if mode != "keep" else ""
        return cls(mode, text.encode("utf-8", "surrogateescape") or None)

    def __repr__(self) -> str:
        return f"PhiPolicy(mode={self.mode!r}, key={'set' if self._key else 'unset'})"

    def __reduce__(self):
        return (PhiPolicy.from_env, (self.mode,))

    @property
    def settings(self) -> dict[str, str]:
        """For ``files.settings``: the mode, and a key identifier (an HMAC of a fixed text,
        which tells keys apart without revealing them) when a key is set."""
        out = {"phi": self.mode}
        if self._key and self.mode != "keep":
            out["phi_key_id"] = hmac.digest(self._key, b"metaextract key id", "sha256").hex()[:16]
        return out

    # --- values ------------------------------------------------------------------------------

    def uid(self, value: str) -> str:
        """The replacement of a UID: ``2.25.`` + a version 8 UUID from HMAC-SHA256 (<= 44 chars)."""
        mac = hmac.digest(self._key or _PUBLIC_KEY, b"uid\0" + value.encode(), "sha256")
        digest = bytearray(mac[:16])
        digest[6] = digest[6] & 0x0F | 0x80  # version 8
        digest[8] = digest[8] & 0x3F | 0x80  # RFC 9562 variant
        return f"2.25.{int.from_bytes(digest, 'big')}"

    def pseudonym(self, value: str, vr: str = "LO") -> str:
        """The keyed pseudonym of an identifier: hex, 16 digits for short VRs, else 32."""
        assert self._key is not None
        digest = hmac.digest(self._key, b"id\0" + value.encode("utf-8", "surrogatepass"), "sha256")
        return digest.hex()[: 16 if vr in _SHORT_VRS else 32]

    def _pseudonym_value(self, value: Any, vr: str) -> Any:
        if value is None:
            return None
        if isinstance(value, dict):  # PN: the groups as DICOM writes them
            text = "=".join(value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic"))
            return {"Alphabetic": self.pseudonym(text.rstrip("="), vr)}
        pseudonym = self.pseudonym(str(value), vr)
        return {"Alphabetic": pseudonym} if vr == "PN" else pseudonym

    # --- data sets -----------------------------------------------------------------------------

    def dataset(self, elements: dict[str, Any], depth: int = 0, charset: Any = None) -> dict[str, Any]:
        """A DICOM JSON model data set with the policy applied (a new dict; items recursed).
        ``charset``: the Specific Character Set values in force (an item's own overrides)."""
        rules = self._rules
        out: dict[str, Any] = {}
        charset = (elements.get("00080005") or {}).get("Value") or charset
        for key, element in elements.items():
            if key[3] in _ODD_HEX:  # private: removed (no Retain Safe Private option)
                continue
            if element.get("vr") == "UN" and "InlineBinary" in element:
                element = _un_decoded(key, element, charset)
                if element is None:
                    continue
            action = rules.get(key)
            if action is None and key[:2] in _MASKED_PREFIXES:
                action = _masked_action(key)
            vr = element.get("vr")
            if action is None or action == _RECURSE:
                if vr == "SQ" and "Value" in element:
                    element = self._sequence(element, depth, charset)
                elif action == _RECURSE:
                    continue  # not a sequence after all (e.g. UN): removed
                out[key] = element
            elif action == _REMOVE:
                continue
            elif action == _EMPTY or "Value" not in element:
                out[key] = {"vr": vr}
            elif vr == "UI" and action in (_UID, _DUMMY):
                values = element["Value"]
                out[key] = {"vr": vr, "Value": [None if v is None else self.uid(str(v)) for v in values]}
            elif action == _PSEUDONYM and self._key is not None:
                values = element["Value"]
                out[key] = {"vr": vr, "Value": [self._pseudonym_value(v, vr) for v in values]}
            elif action == _DUMMY and vr in _DUMMIES:
                out[key] = {"vr": vr, "Value": [_DUMMIES[vr]]}
            else:  # a sequence, binary data, or a VR the action cannot apply to: emptied
                out[key] = {"vr": vr}
        return out

    def _sequence(self, element: dict[str, Any], depth: int, charset: Any = None) -> dict[str, Any]:
        if depth >= MAX_DEPTH:
            return {"vr": "SQ"}
        items = [self.dataset(i, depth + 1, charset) if isinstance(i, dict) else i for i in element["Value"]]
        return {"vr": "SQ", "Value": items}

    # --- rows ----------------------------------------------------------------------------------

    def _kept(self, path: str, vr: Any = None) -> bool:
        """Whether a ``bulk_data`` path (``"00880200/0/7FE00010"``) of VR ``vr`` survives the
        policy (a UN value that may be a sequence or text does not)."""
        keys = path.split("/")[::2]
        if vr == "UN" and keys and _dictionary_vr(keys[-1]) not in _BINARY_DICTIONARY_VRS:
            return False
        for key in keys:
            if len(key) != 8 or key[3] in _ODD_HEX:
                return False
            action = self._rules.get(key)
            if action is None and key[:2] in _MASKED_PREFIXES:
                action = _masked_action(key)
            if action not in (None, _RECURSE):
                return False
        return True

    def apply_to_dicom_row(self, row: dict[str, Any]) -> None:
        """Rewrite one ``dicom`` row in place: ``tags`` and the typed columns copied from it."""
        from transforms.formats.dicom import _date, _first, _string

        tags = self.dataset(json.loads(row["tags"]))
        row["tags"] = dumps(tags)
        for column, key in _STRING_COLUMNS.items():
            if key in self._rules and column in row:
                row[column] = _string(tags, key)
        for column, key in _DATE_COLUMNS.items():
            if key in self._rules and column in row:
                row[column] = _date(_first(tags, key))

    def apply_to_metadata(self, metadata: str) -> str:
        """``files.metadata`` of a DICOM file with the policy applied to ``file_meta`` and
        ``bulk_data`` (entries inside removed or private elements are dropped)."""
        meta = json.loads(metadata)
        if not isinstance(meta, dict):
            return metadata
        if isinstance(meta.get("file_meta"), dict):
            meta["file_meta"] = self.dataset(meta["file_meta"])
        if isinstance(meta.get("bulk_data"), list):
            meta["bulk_data"] = [
                entry
                for entry in meta["bulk_data"]
                if isinstance(entry, dict) and self._kept(str(entry.get("path", "")), entry.get("vr"))
            ]
        return dumps(meta)


#: Dictionary VRs of values that hold no text: a bulk UN value of one of them is kept.
_BINARY_DICTIONARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "OB or OW", "US or OW",
                                    "US or SS or OW"})


def _dictionary_vr(key: str) -> str | None:
    """The VR pydicom's dictionary gives ``"GGGGEEEE"`` (repeating groups such as 60xx
    included, as the extractor reads UN elements), None for a tag it does not know."""
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(int(key, 16))
    except (KeyError, ValueError):
        return None


def _un_decoded(key: str, element: dict[str, Any], charset: Any) -> dict[str, Any] | None:
    """A public element the file wrote as UN (VR unknown to its writer), for remove and
    pseudonymize: a text value decoded by its dictionary VR, so that the profile's action
    applies to it (a UN Patient ID is pseudonymized, a UN Study Instance UID replaced, where
    they were emptied); None (removed) where its content cannot be checked: a sequence (its
    items were written in implicit VR inside the value), a tag the dictionary does not know, a
    value that does not decode. Other values (numbers, binary) stay UN as they are."""
    import base64

    from pydicom.charset import convert_encodings

    from transforms.formats.dicom import _CONVERTERS

    vr = _dictionary_vr(key)
    if vr is None or vr == "SQ":
        return None
    if vr not in _TEXT_VRS:
        return element
    try:
        encodings = convert_encodings(list(charset) if charset else ["ISO_IR 6"])
        values = _CONVERTERS[vr](base64.b64decode(element["InlineBinary"]), True, encodings)
    except Exception:  # noqa: BLE001 - any value that does not decode is removed
        return None
    return {"vr": vr, "Value": values} if values else {"vr": vr}


def apply_to_rows(rows_by_table: dict[str, list[dict[str, Any]]], policy: PhiPolicy) -> None:
    """Apply ``policy`` in place to one file's rows as :func:`transforms.extract.catalog_rows`
    returns them: the ``dicom`` rows, and ``files.metadata`` of a DICOM file."""
    if policy.mode == "keep":
        return
    for row in rows_by_table.get("dicom", ()):
        policy.apply_to_dicom_row(row)
    for row in rows_by_table.get("files", ()):
        if row.get("format") == "dicom" and row.get("metadata"):
            row["metadata"] = policy.apply_to_metadata(row["metadata"])
