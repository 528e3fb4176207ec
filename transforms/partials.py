"""Roll-ups without Beam: the pure functions and accumulators behind ``transforms.rollups``.

Beam-free so that the extraction process (which imports nothing of Beam) rolls up each batch of
files it reads, and carried-forward shards, into partial roll-ups (:func:`batch_partials`,
:func:`shard_partials`) that ``RollUps`` merges. See :mod:`transforms.rollups` for the tables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from transforms.formats.base import cf_text

logger = logging.getLogger("transforms.rollups")  # one name for the roll-ups' warnings

#: Acquisition time, in order of preference: (datetime tag) or (date tag, time tag).
ACQUISITION_SOURCES = (
    ("0008002A",),  # AcquisitionDateTime
    ("00080022", "00080032"),  # AcquisitionDate, AcquisitionTime
    ("00080023", "00080033"),  # ContentDate, ContentTime
)
BODY_PART_TAG = "00180015"  # BodyPartExamined
FILE_META_GROUP = "0002"
#: Separator for several distinct values in one string column (DICOM's multi-value separator).
MULTI_VALUE_SEPARATOR = "\\"

#: What reading a hostile or malformed ``tags`` (or ``attributes``) value may raise: not JSON
#: (ValueError), nested too deep for the JSON parser or encoder (RecursionError), or holding
#: values of unexpected types.
UNREADABLE_ERRORS = (ValueError, RecursionError, TypeError, AttributeError, KeyError, IndexError, OverflowError)

#: Key, among a file's rows by table, of the partial roll-ups the extraction process made of
#: them (not a table: the writer ignores it).
ROLLUP_PARTIALS = "_rollup_partials"
DICOM_SERIES = "dicom_series"
DICOM_STUDIES = "dicom_studies"
VARIABLES = "variables"


# --- DICOM: pure functions ---------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # every instance of a series repeats the same tags
def attribute_name(tag: str) -> str:
    """``"00080060"`` -> ``"Modality"``; private and unknown tags keep their ``GGGGEEEE``, and a
    key that is not eight hex digits stays as it is."""
    from pydicom.datadict import keyword_for_tag

    if len(tag) != 8 or not all(c in "0123456789abcdefABCDEF" for c in tag):
        return tag  # int(tag, 16) would also take "-1", "1_0", " 8" or more than 32 bits
    try:
        return keyword_for_tag(int(tag, 16)) or tag
    except (ValueError, OverflowError):
        return tag


def _element_value(element: Any) -> Any:
    if type(element) is not dict and not isinstance(element, Mapping):
        return element
    for key in ("Value", "InlineBinary", "BulkDataURI"):
        if key in element:
            return element[key] if key == "Value" else {key: element[key]}
    return None


def _first_string(tags: Mapping[str, Any], tag: str) -> str | None:
    value = _element_value(tags.get(tag))
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0].strip() or None
    return None


def parse_dicom_datetime(date: str | None, time: str | None = None) -> dt.datetime | None:
    """DICOM DA + TM, or one DT, as a naive datetime (as written; no time zone). None if invalid."""
    if not date:
        return None
    text = date.replace(".", "").replace("-", "")  # old YYYY.MM.DD dates
    if time:
        text = text[:8] + time.replace(":", "")
    text = text.split("+")[0].split("-")[0].strip()  # DT may end with a &ZZXX offset
    whole, _, fraction = text.partition(".")
    if len(whole) < 8 or not whole.isdigit():
        return None
    whole = whole[:14].ljust(14, "0") if len(whole) > 8 else whole + "000000"
    try:  # what strptime(whole, "%Y%m%d%H%M%S") gives, several times faster
        value = dt.datetime(
            int(whole[0:4]), int(whole[4:6]), int(whole[6:8]), int(whole[8:10]), int(whole[10:12]), int(whole[12:14])
        )
    except ValueError:
        return None
    if fraction.isdecimal():  # not isdigit: int() refuses "²"
        value = value.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return value


def acquisition_time(tags: Mapping[str, Any]) -> dt.datetime | None:
    """The instance's acquisition time: AcquisitionDateTime, Acquisition or Content Date+Time."""
    for source in ACQUISITION_SOURCES:
        if len(source) == 1:
            value = parse_dicom_datetime(_first_string(tags, source[0]))
        else:
            value = parse_dicom_datetime(_first_string(tags, source[0]), _first_string(tags, source[1]))
        if value is not None:
            return value
    return None


def instance_summary(dicom_row: Mapping[str, Any], size_bytes: int) -> dict[str, Any]:
    """What a roll-up needs from one ``dicom`` row: plain, picklable values only.

    ``attributes`` maps each attribute name to its value as canonical JSON text, so that values
    compare exactly and cheaply. ``tags`` that cannot be parsed or read give no attributes, no
    body part and no acquisition time (logged once, without the value: it may be patient data).
    """
    try:
        attributes, body_part, acquired = _read_tags(dicom_row.get("tags"))
    except UNREADABLE_ERRORS as exc:
        logger.warning(
            "dicom roll-ups: tags of %s cannot be read (%s); rolled up with no attributes",
            dicom_row.get("path"),
            type(exc).__name__,  # not the message: it may quote the value
        )
        attributes, body_part, acquired = {}, None, None
    return {
        "study_instance_uid": dicom_row.get("study_instance_uid"),
        "series_instance_uid": dicom_row.get("series_instance_uid"),
        "modality": dicom_row.get("modality"),
        "patient_id": dicom_row.get("patient_id"),
        "study_date": dicom_row.get("study_date"),
        "body_part": body_part,
        "acquired": acquired,
        "size_bytes": int(size_bytes or 0),
        "attributes": attributes,
    }


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_encode_string = json.encoder.encode_basestring_ascii


def canonical_json(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``, faster for the usual DICOM
    values: None, and lists of strings or of finite numbers (most elements of an instance)."""
    if value is None:
        return "null"
    if type(value) is list:
        if all(type(v) is str for v in value):
            return "[" + ",".join(map(_encode_string, value)) + "]"
        if all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in value):
            return _number_list(value)
    return _CANONICAL.encode(value)


def _number_list(values: list) -> str:
    return "[" + ",".join(int.__repr__(v) if type(v) is int else float.__repr__(v) for v in values) + "]"


def comparable(value: Any) -> str | tuple[str, ...]:
    """An attribute value in a form that compares as its canonical JSON text does, cheaply: a
    list of strings as a tuple of them (the usual DICOM value), anything else as its canonical
    JSON text (a ``str``; never equal to a tuple)."""
    if type(value) is list and all(type(v) is str for v in value):
        return tuple(value)
    return canonical_json(value)


def comparable_json(value: str | tuple[str, ...]) -> str:
    """The canonical JSON text of a :func:`comparable` value."""
    return value if type(value) is str else canonical_json(list(value))


def _read_tags(text: str | bytes | None) -> tuple[dict[str, str], str | None, dt.datetime | None]:
    """``tags`` JSON text -> (attributes, body part, acquisition time); raises
    :data:`UNREADABLE_ERRORS` when it cannot be read (no recursion of our own: only the JSON
    parser's and encoder's, which raise RecursionError rather than overflow)."""
    tags = json.loads(text or "{}")
    if not isinstance(tags, dict):
        raise TypeError("tags is not a JSON object")
    attributes = {
        attribute_name(tag): comparable(_element_value(element))
        for tag, element in tags.items()
        if not tag.startswith(FILE_META_GROUP)
    }
    return attributes, _first_string(tags, BODY_PART_TAG), acquisition_time(tags)


@dataclasses.dataclass
class DicomAccumulator:
    """A partial roll-up of some instances; merge order never changes the result."""

    instance_count: int = 0
    total_bytes: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    modalities: set[str] = dataclasses.field(default_factory=set)
    body_parts: set[str] = dataclasses.field(default_factory=set)
    patient_ids: set[str] = dataclasses.field(default_factory=set)
    study_dates: set[dt.date] = dataclasses.field(default_factory=set)
    series: set[str] = dataclasses.field(default_factory=set)
    #: Attributes equal in every instance so far (name -> canonical JSON value).
    common: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Attributes seen in some instance but not equal in all of them.
    varying: set[str] = dataclasses.field(default_factory=set)


def _min(a, b):
    return b if a is None else a if b is None else min(a, b)


def _max(a, b):
    return b if a is None else a if b is None else max(a, b)


def merge(a: DicomAccumulator, b: DicomAccumulator) -> DicomAccumulator:
    """Combine two partial roll-ups (``a`` is updated and returned)."""
    if b.instance_count == 0:
        return a
    if a.instance_count == 0:
        a.common = dict(b.common)
        a.varying = set(b.varying)
    else:
        names = set(a.common) | set(b.common)
        common = {n: v for n, v in a.common.items() if b.common.get(n) == v}
        a.varying |= b.varying | (names - set(common))
        a.common = common
    a.instance_count += b.instance_count
    a.total_bytes += b.total_bytes
    a.first = _min(a.first, b.first)
    a.last = _max(a.last, b.last)
    a.modalities |= b.modalities
    a.body_parts |= b.body_parts
    a.patient_ids |= b.patient_ids
    a.study_dates |= b.study_dates
    a.series |= b.series
    return a


def add_instance(acc: DicomAccumulator, summary: Mapping[str, Any]) -> DicomAccumulator:
    """``merge(acc, accumulate(summary))``, without building the instance's accumulator."""
    attributes = summary["attributes"]
    if acc.instance_count == 0:
        acc.common = dict(attributes)
    elif attributes != acc.common:
        common = {n: v for n, v in acc.common.items() if attributes.get(n, _MISSING) == v}
        if len(common) != len(acc.common):
            acc.varying.update(acc.common.keys() - common.keys())
        if len(common) != len(attributes):
            acc.varying.update(attributes.keys() - common.keys())
        acc.common = common
    acc.instance_count += 1
    acc.total_bytes += summary["size_bytes"]
    acquired = summary["acquired"]
    acc.first = _min(acc.first, acquired)
    acc.last = _max(acc.last, acquired)
    for field, key in _INSTANCE_SETS:
        value = summary[key]
        if value:
            getattr(acc, field).add(value)
    return acc


_MISSING = object()
_INSTANCE_SETS = (
    ("modalities", "modality"),
    ("body_parts", "body_part"),
    ("patient_ids", "patient_id"),
    ("study_dates", "study_date"),
    ("series", "series_instance_uid"),
)


def accumulate(summary: Mapping[str, Any]) -> DicomAccumulator:
    """The roll-up of one instance."""

    def present(value):
        return {value} if value else set()

    return DicomAccumulator(
        instance_count=1,
        total_bytes=summary["size_bytes"],
        first=summary["acquired"],
        last=summary["acquired"],
        modalities=present(summary["modality"]),
        body_parts=present(summary["body_part"]),
        patient_ids=present(summary["patient_id"]),
        study_dates=present(summary["study_date"]),
        series=present(summary["series_instance_uid"]),
        common=dict(summary["attributes"]),
    )


def joined(values: Iterable[str]) -> str | None:
    """Distinct values, sorted, joined with ``\\``; None when there are none."""
    values = sorted(values)
    return MULTI_VALUE_SEPARATOR.join(values) if values else None


def _attributes_json(acc: DicomAccumulator) -> str:
    return "{" + ",".join(f"{json.dumps(n)}:{comparable_json(acc.common[n])}" for n in sorted(acc.common)) + "}"


def series_row(key: tuple[str, str], acc: DicomAccumulator) -> dict[str, Any]:
    study, series = key
    return {"study_instance_uid": study, "series_instance_uid": series, **_summary_columns(acc)}


def study_row(study: str, acc: DicomAccumulator) -> dict[str, Any]:
    return {
        "study_instance_uid": study,
        "patient_id": joined(acc.patient_ids),
        "study_date": min(acc.study_dates) if acc.study_dates else None,
        "modalities": sorted(acc.modalities),
        "series_count": len(acc.series),
        **_summary_columns(acc),
    }


def _summary_columns(acc: DicomAccumulator) -> dict[str, Any]:
    """The columns ``dicom_series`` and ``dicom_studies`` share."""
    return {
        "modality": joined(acc.modalities),
        "body_part": joined(acc.body_parts),
        "instance_count": acc.instance_count,
        "total_bytes": acc.total_bytes,
        "first_acquisition": acc.first,
        "last_acquisition": acc.last,
        "invariant_attributes": _attributes_json(acc),
        "varying_attributes": sorted(acc.varying),
    }


# --- variables: pure functions -----------------------------------------------------------


def cf_string(attributes: Mapping[str, Any], name: str) -> str | None:
    """A CF attribute as text, as in ``netcdf`` (:func:`cf_text`), other values as sorted-key JSON."""
    return cf_text(attributes, name, _sorted_json)


def _sorted_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def variable_key(fmt: str, name: str, units: str | None, standard_name: str | None) -> str:
    """The group key: JSON text of the four fields (a string: a deterministic coder)."""
    return json.dumps([fmt, name, units, standard_name])


def netcdf_variable(row: Mapping[str, Any]) -> tuple[str, str]:
    """``netcdf`` row -> (path, key). The name is the variable's short name (groups ignored)."""
    return row["path"], variable_key("netcdf", row["variable"], row.get("units"), row.get("standard_name"))


def hdf5_variables(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``hdf5`` dataset row -> [(path, key)]; the name is the dataset's full object path."""
    if row.get("kind") != "dataset":
        return []
    try:
        attributes = json.loads(row.get("attributes") or "{}")
        if not isinstance(attributes, dict):
            attributes = {}
        units, standard_name = cf_string(attributes, "units"), cf_string(attributes, "standard_name")
    except UNREADABLE_ERRORS as exc:
        logger.warning(
            "variable roll-ups: attributes of %s in %s cannot be read (%s); no units or standard name",
            row.get("object_path"),
            row.get("path"),
            type(exc).__name__,
        )
        units = standard_name = None
    return [(row["path"], variable_key("hdf5", row["object_path"], units, standard_name))]


def variable_row(key: str, acc: tuple[int, int, str | None]) -> dict[str, Any]:
    fmt, name, units, standard_name = json.loads(key)
    file_count, total_bytes, example = acc
    return {
        "format": fmt,
        "name": name,
        "units": units,
        "standard_name": standard_name,
        "file_count": file_count,
        "total_bytes": total_bytes,
        "example_path": example,
    }


class VariableTotals(NamedTuple):
    """A partial variable roll-up: how many files, their total bytes, the smallest path."""

    file_count: int
    total_bytes: int
    example_path: str | None


NO_FILES = VariableTotals(0, 0, None)


def add_variable_file(acc: tuple[int, int, str | None], size: int, path: str) -> VariableTotals:
    """One more file that holds the variable."""
    count, total, example = acc
    return VariableTotals(count + 1, total + size, path if example is None else min(example, path))


def merge_variable_totals(accumulators: Iterable[tuple[int, int, str | None]]) -> VariableTotals:
    count = total = 0
    example = None
    for c, t, e in accumulators:
        count, total = count + c, total + t
        if e is not None:
            example = e if example is None else min(example, e)
    return VariableTotals(count, total, example)


# --- joins -------------------------------------------------------------------------------

#: Formats whose files' sizes the roll-ups join onto rows: DICOM for the series and studies,
#: NetCDF and HDF5 for the variables.
DICOM_FORMATS = ("dicom",)
VARIABLE_FORMATS = ("netcdf", "hdf5")


def file_size(row: Mapping[str, Any]) -> tuple[str, int]:
    return row["path"], int(row["size_bytes"] or 0)


def rolled_up_file_size(row: Mapping[str, Any]) -> list[tuple[str, tuple[str, int]]]:
    """``files`` row -> ``[(path, (format, size))]`` for a format the roll-ups read, else []."""
    if row["format"] not in DICOM_FORMATS + VARIABLE_FORMATS:
        return []
    path, size = file_size(row)
    return [(path, (row["format"], size))]


def _size(sizes: Iterable[tuple[str, int]], formats: tuple[str, ...]) -> int:
    """The size of the first ``files`` row of one of ``formats``; 0 when there is none."""
    return next((size for fmt, size in sizes if fmt in formats), 0)


def dicom_entries(joined_rows: tuple[str, Mapping[str, list]]) -> Iterable[tuple[tuple[str, str], dict]]:
    """One path's joined rows -> ``((study, series), instance summary)`` per ``dicom`` row."""
    _, grouped = joined_rows
    if not grouped["dicom"]:
        return
    size = _size(grouped["size"], DICOM_FORMATS)
    for row in grouped["dicom"]:
        yield from dicom_series_entries((row, size))


def variable_entries(joined_rows: tuple[str, Mapping[str, list]]) -> Iterable[tuple[str, tuple[int, str]]]:
    """One path's joined rows -> ``(variable key, (file size, path))`` once per distinct key."""
    path, grouped = joined_rows
    keys = set(grouped["netcdf"]) | set(grouped["hdf5"])
    if not keys:
        return
    size = _size(grouped["size"], VARIABLE_FORMATS)
    for key in sorted(keys):
        yield key, (size, path)


def dicom_series_entries(summary_and_size):
    row, size = summary_and_size
    summary = instance_summary(row, size)
    if summary["study_instance_uid"] is None or summary["series_instance_uid"] is None:
        return []
    return [((summary["study_instance_uid"], summary["series_instance_uid"]), summary)]


# --- partial roll-ups of rows that need no join (carried-forward shards) ----------------------

#: ``size_of(path, formats)``: the file's ``size_bytes`` when its format is one of ``formats``, else 0.
SizeOf = Callable[[str, tuple[str, ...]], int]


def dicom_partials(rows: Iterable[Mapping[str, Any]], size_of: SizeOf) -> dict[tuple[str, str], DicomAccumulator]:
    """``dicom`` rows -> their roll-up per (study, series): what ``RollUpSeries`` would make of them."""
    partials: dict[tuple[str, str], DicomAccumulator] = {}
    for row in rows:
        for key, summary in dicom_series_entries((row, size_of(row["path"], DICOM_FORMATS))):
            partials[key] = add_instance(partials.get(key) or DicomAccumulator(), summary)
    return partials


def variable_partials(
    netcdf_rows: Iterable[Mapping[str, Any]], hdf5_rows: Iterable[Mapping[str, Any]], size_of: SizeOf
) -> dict[str, VariableTotals]:
    """``netcdf`` and ``hdf5`` rows -> :class:`VariableTotals` per variable key (each file counted
    once per key). Every row of a file must be among the rows given, or none: a file whose rows
    were split between two calls would be counted twice."""
    pairs = {netcdf_variable(row) for row in netcdf_rows}
    for row in hdf5_rows:
        pairs.update(hdf5_variables(row))
    totals: dict[str, VariableTotals] = {}
    for path, key in pairs:
        totals[key] = add_variable_file(totals.get(key) or NO_FILES, size_of(path, VARIABLE_FORMATS), path)
    return totals


def series_to_study(keyed: tuple[tuple[str, str], DicomAccumulator]) -> tuple[str, DicomAccumulator]:
    """A series' roll-up is a partial roll-up of its study."""
    (study, _), acc = keyed
    return study, acc


def batch_partials(rows_by_table: Mapping[str, list[Mapping[str, Any]]]) -> Iterable[tuple[str, Any, Any]]:
    """The rows of whole files by table (a batch: each file's ``files`` row and all its other
    rows) -> partial roll-ups ``(roll-up table, key, partial)`` for the ``partials`` input of
    ``RollUps``: the join by path happens inside the batch, not through the runner."""
    sizes = {row["path"]: (row.get("format"), int(row.get("size_bytes") or 0)) for row in rows_by_table.get("files", ())}
    for table in ("dicom", "netcdf", "hdf5"):  # variable keys hold the format: no key in two tables
        rows = rows_by_table.get(table)
        if rows:
            yield from shard_partials(table, rows, sizes)


def shard_partials(
    table: str, rows: list[Mapping[str, Any]], sizes: Mapping[str, tuple[str | None, int]]
) -> list[tuple[str, Any, Any]]:
    """The rows of one table (``dicom``, ``netcdf`` or ``hdf5``) for whole files (a
    carried-forward shard, or one table of a batch) and ``{path: (format, size)}`` of those files
    -> partial roll-ups ``(roll-up table, key, partial)``."""

    def size_of(path: str, formats: tuple[str, ...]) -> int:
        fmt, size = sizes.get(path, (None, 0))
        return size if fmt in formats else 0

    if table == "dicom":
        return [(DICOM_SERIES, key, acc) for key, acc in dicom_partials(rows, size_of).items()]
    netcdf, hdf5 = (rows, []) if table == "netcdf" else ([], rows)
    return [(VARIABLES, key, totals) for key, totals in variable_partials(netcdf, hdf5, size_of).items()]


def read_partials(rows_by_table: Mapping[str, list]) -> list[tuple[str, Any, Any]]:
    """A batch of files' rows -> their partial roll-ups, one per key: merged from those the
    extraction process made (``ROLLUP_PARTIALS``), or made here from the rows (a large file's
    rows, completed in the Beam worker)."""
    given = rows_by_table.get(ROLLUP_PARTIALS)
    if given is None:
        return list(batch_partials(rows_by_table))
    merged: dict[tuple[str, Any], Any] = {}
    for kind, key, partial in given:
        before = merged.get((kind, key))
        if before is None:
            merged[(kind, key)] = partial
        elif kind == DICOM_SERIES:
            merged[(kind, key)] = merge(before, partial)
        else:
            merged[(kind, key)] = merge_variable_totals([before, partial])
    return [(kind, key, partial) for (kind, key), partial in merged.items()]
