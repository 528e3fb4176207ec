"""The catalog explorer: one self-contained HTML file that shows what a catalog holds.

    metaextract report OUT [--html PATH]       # writes OUT/report.html by default
    metaextract --report ...                   # the same, at the end of a run

Everything is inlined (Chart.js for the plots and Tabulator for the tables, vendored in
``pipelines/report_assets/``, plus our own small script and style), so the file opens offline,
from a bucket or from an e-mail attachment.

Size: the data travel as gzip-compressed JSON (base64 text in the page), unpacked by the
browser's own ``DecompressionStream``. The files table is columnar (directories, formats and
statuses are stored once and referenced by index). The full metadata shown when a file is
clicked is embedded for at most ``max_details`` files (errors first, then by path) and
``max_details_bytes`` of JSON; every other file shows its table fields and a DuckDB query that
fetches the rest from the catalog.
"""

from __future__ import annotations

from transforms.redact import redact_text

import argparse
import base64
import datetime as dt
import gzip
import json
import math
import os
import posixpath
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from fsspec.core import url_to_fs

from pipelines.options import json_object

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_assets")
REPORT_NAME = "report.html"
MANIFEST = "manifest.json"
FILES = "files"
ROLLUPS = ("dicom_series", "dicom_studies", "variables")
#: Full metadata (click-through) is embedded for at most this many files ...
MAX_DETAILS = 10_000
#: ... and at most this many bytes of JSON in all (before compression) ...
MAX_DETAILS_BYTES = 24 * 1024 * 1024
#: ... each file's format rows included while its details stay under this size.
MAX_DETAIL_BYTES = 96 * 1024
#: Roll-up rows shown in the report's roll-up tables (the catalog has them all).
MAX_ROLLUP_ROWS = 5_000
TOP = 20


class ReportError(ValueError):
    """Not a catalog, or a bad ``report`` command line: one line, exit code 2."""


# --- reading the catalog -------------------------------------------------------------------


class Catalog:
    """A published catalog: its manifest and its tables, read with pyarrow through fsspec."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None):
        self.url = root
        self.fs, self.root = url_to_fs(root, **dict(storage_options or {}))
        self.root = self.root.rstrip("/") or "/"
        manifest_path = posixpath.join(self.root, MANIFEST)
        files_dir = posixpath.join(self.root, FILES)
        if not self.fs.exists(files_dir):
            raise ReportError(f"{root!r} is not a metaextract catalog (no {FILES}/ table)")
        self.manifest: dict[str, Any] = {}
        if self.fs.exists(manifest_path):
            with self.fs.open(manifest_path, "r") as f:
                try:
                    self.manifest = json.load(f)
                except ValueError as exc:
                    raise ReportError(f"{root!r}: its {posixpath.basename(manifest_path)} is not valid JSON ({exc})") from None

    def parts(self, table: str) -> list[str]:
        """The table's Parquet files: the manifest's list when it has one, else a glob."""
        listed = (self.manifest.get("table_files") or {}).get(table)
        folder = posixpath.join(self.root, table)
        if listed:
            return [posixpath.join(folder, name) for name in listed]
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.find(folder) if p.endswith(".parquet"))

    def tables(self) -> list[str]:
        names = set(self.manifest.get("rows") or {})
        names |= {posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.root, detail=False)
                  if self.fs.isdir(p)}
        return sorted(n for n in names if not n.startswith(".") and self.parts(n))

    def dataset(self, table: str) -> ds.Dataset | None:
        parts = self.parts(table)
        if not parts:
            return None
        return ds.dataset(parts, format="parquet", filesystem=self.fs)

    def read(self, table: str, columns: Iterable[str] | None = None, where=None) -> pa.Table | None:
        """The table (only ``columns`` that exist; None when the table does not exist)."""
        data = self.dataset(table)
        if data is None:
            return None
        names = data.schema.names
        wanted = None if columns is None else [c for c in columns if c in names]
        return data.to_table(columns=wanted, filter=where)

    def size_on_disk(self) -> int:
        total = 0
        for table in self.tables():
            for part in self.parts(table):
                try:
                    total += self.fs.size(part)
                except OSError:
                    pass
        return total


def _col(table: pa.Table | None, name: str, default=None) -> list:
    if table is None:
        return []
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [default] * table.num_rows


def _counts(table: pa.Table | None, keys: list[str], count_column: str | None = None, distinct: bool = False):
    """[(key values..., n)] sorted by n descending, computed by Arrow."""
    if table is None or table.num_rows == 0 or not all(k in table.column_names for k in keys):
        return []
    if count_column is None:
        agg = table.group_by(keys).aggregate([([], "count_all")])
        n = "count_all"
    else:
        func = "count_distinct" if distinct else "count"
        agg = table.group_by(keys).aggregate([(count_column, func)])
        n = f"{count_column}_{func}"
    rows = list(zip(*[agg.column(k).to_pylist() for k in keys], agg.column(n).to_pylist()))
    return sorted(rows, key=lambda r: (-r[-1], [str(v) for v in r[:-1]]))


# --- payload -------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _error_type(error: str | None) -> str:
    if not error:
        return "(no message)"
    head = error.split(":", 1)[0].strip()
    return head if head and " " not in head and len(head) < 80 else "(other)"


def _indexer():
    values: list = []
    index: dict = {}

    def get(value):
        if value not in index:
            index[value] = len(values)
            values.append(value)
        return index[value]

    return values, get


def _fits_cards(catalog: Catalog) -> dict[str, dict[str, str]]:
    """Per FITS file, TELESCOP, INSTRUME and OBJECT from the primary header (Arrow regexes)."""
    table = catalog.read("fits", ["path", "hdu_index", "header"], where=pc.field("hdu_index") == 0)
    out: dict[str, dict[str, str]] = defaultdict(dict)
    if table is None or table.num_rows == 0:
        return out
    paths = table.column("path").to_pylist()
    for card in ("TELESCOP", "INSTRUME", "OBJECT"):
        pattern = r'"keyword"\s*:\s*"' + card + r'"\s*,\s*"value"\s*:\s*"(?P<v>(?:[^"\\]|\\.)*)"'
        found = pc.extract_regex(table.column("header"), pattern)
        for path, value in zip(paths, found.to_pylist()):
            if value and value["v"].strip():
                out[path][card] = json.loads('"' + value["v"] + '"').strip()
    return out


def _key_fields(catalog: Catalog) -> tuple[dict[str, str], dict[str, Any]]:
    """A short, searchable description per file, and the per-format plot data."""
    key: dict[str, str] = {}
    plots: dict[str, Any] = {}

    dicom = catalog.read("dicom", ["path", "modality", "study_date", "rows", "columns", "number_of_frames",
                                   "study_instance_uid"])
    if dicom is not None:
        for path, modality, date, rows, cols, frames in zip(
            *[_col(dicom, c) for c in ("path", "modality", "study_date", "rows", "columns", "number_of_frames")]
        ):
            bits = [modality or "?"]
            if date:
                bits.append(date.isoformat())
            if rows and cols:
                bits.append(f"{rows}x{cols}" + (f"x{frames}" if frames and frames > 1 else ""))
            key[path] = " ".join(bits)
        plots["dicom_modalities"] = [[m or "(none)", n] for m, n in _counts(dicom, ["modality"])][:TOP]
    studies = catalog.read("dicom_studies", ["study_instance_uid", "study_date"])
    months: Counter = Counter()
    if studies is not None and studies.num_rows:
        for date in _col(studies, "study_date"):
            months[date.strftime("%Y-%m") if date else "(no date)"] += 1
    elif dicom is not None:
        seen = {}
        for uid, date in zip(_col(dicom, "study_instance_uid"), _col(dicom, "study_date")):
            if uid:
                seen.setdefault(uid, date)
        for date in seen.values():
            months[date.strftime("%Y-%m") if date else "(no date)"] += 1
    if months:
        plots["dicom_studies_per_month"] = sorted(months.items())

    cards = _fits_cards(catalog)
    fits = catalog.read("fits", ["path", "hdu_index"])
    hdus = dict((p, n) for p, n in _counts(fits, ["path"]))
    telescopes: Counter = Counter()
    for path, n in hdus.items():
        c = cards.get(path, {})
        scope = " / ".join(v for v in (c.get("TELESCOP"), c.get("INSTRUME")) if v) or "(unknown)"
        telescopes[scope] += 1
        key[path] = " ".join(x for x in (scope, c.get("OBJECT", ""), f"{n} HDU{'s' if n > 1 else ''}") if x)
    if telescopes:
        plots["fits_instruments"] = telescopes.most_common(TOP)

    netcdf = catalog.read("netcdf", ["path", "variable", "standard_name"])
    if netcdf is not None and netcdf.num_rows:
        names: dict[str, list[str]] = defaultdict(list)
        counts: Counter = Counter()
        for path, std in zip(_col(netcdf, "path"), _col(netcdf, "standard_name")):
            counts[path] += 1
            if std and std not in names[path]:
                names[path].append(std)
        for path, n in counts.items():
            key[path] = f"{n} variable{'s' if n > 1 else ''}" + (": " + ", ".join(names[path][:4]) if names[path] else "")
        plots["netcdf_standard_names"] = [
            [s or "(none)", n] for s, n in _counts(netcdf, ["standard_name"], "path", distinct=True)
        ][:TOP]

    hdf5 = catalog.read("hdf5", ["path", "kind", "dtype", "compression"])
    if hdf5 is not None and hdf5.num_rows:
        per_file: dict[str, Counter] = defaultdict(Counter)
        for path, kind in zip(_col(hdf5, "path"), _col(hdf5, "kind")):
            per_file[path][kind] += 1
        for path, c in per_file.items():
            key[path] = f"{c['dataset']} datasets, {c['group']} groups" + (
                f", {c['soft_link'] + c['external_link']} links" if c["soft_link"] + c["external_link"] else ""
            )
        datasets = hdf5.filter(pc.equal(hdf5.column("kind"), "dataset"))
        plots["hdf5_dtypes"] = [[d or "(none)", n] for d, n in _counts(datasets, ["dtype"])][:TOP]
        plots["hdf5_compression"] = [[c or "none", n] for c, n in _counts(datasets, ["compression"])][:TOP]
    return key, plots


def _size_bins(formats: list[str], sizes: list[int]) -> dict[str, Any]:
    """File sizes per format on log-2 bins: labels and one count list per format."""
    bins: dict[str, Counter] = defaultdict(Counter)
    top = 0
    for fmt, size in zip(formats, sizes):
        b = 0 if not size or size <= 0 else int(math.log2(size)) + 1
        bins[fmt][b] += 1
        top = max(top, b)
    low = min((min(c) for c in bins.values()), default=0)
    labels = ["0 B" if b == 0 else human_bytes(2 ** (b - 1)).replace(".0 ", " ") for b in range(low, top + 1)]
    return {"labels": labels, "series": {f: [bins[f][b] for b in range(low, top + 1)] for f in sorted(bins)}}


def _run_facts(catalog: Catalog, files: pa.Table) -> dict[str, Any]:
    m = catalog.manifest
    duration = m.get("duration_s")
    bytes_total = m.get("bytes_total", sum(_col(files, "size_bytes")))
    facts: dict[str, Any] = {
        "catalog": redact_text(catalog.url),
        "run_id": m.get("run_id"),
        "extractor_version": m.get("extractor_version"),
        "started_at": m.get("started_at"),
        "finished_at": m.get("finished_at"),
        "duration_s": duration,
        "files_total": m.get("files_total", files.num_rows),
        "bytes_total": bytes_total,
        "files_per_s": m.get("files_per_s"),
        "gb_per_s": round(bytes_total / duration / 1e9, 4) if duration else None,
        "catalog_bytes": catalog.size_on_disk(),
    }
    for name in ("changes", "files_extracted", "files_carried_forward", "errors_extracted", "error_fraction",
                 "bytes_read", "alert"):
        if name in m:
            facts[name] = m[name]
    memory = {k: v for k, v in m.items() if "memory" in k or "pressure" in k or k.startswith("peak")}
    if memory:
        facts["memory"] = memory
    return facts


def _status_counts(formats: list[str], statuses: list[str], sizes: list[int]) -> list[list]:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f, s, b in zip(formats, statuses, sizes):
        counts[(f, s)][0] += 1
        counts[(f, s)][1] += b or 0
    return [[f, s, n, b] for (f, s), (n, b) in sorted(counts.items())]


def _errors(paths: list[str], statuses: list[str], errors: list[str | None], examples: int = 3) -> list[dict]:
    groups: dict[str, dict[str, Any]] = {}
    for path, status, error in zip(paths, statuses, errors):
        if status != "error":
            continue
        kind = _error_type(error)
        g = groups.setdefault(kind, {"type": kind, "count": 0, "examples": []})
        g["count"] += 1
        if len(g["examples"]) < examples and all(e["message"] != error for e in g["examples"]):
            g["examples"].append({"path": path, "message": error})
    return sorted(groups.values(), key=lambda g: (-g["count"], g["type"]))


JSON_COLUMNS = frozenset({"metadata", "tags", "header", "attributes", "invariant_attributes"})


def _plain(value: Any) -> Any:
    """A column value as strict JSON: dates as ISO text, bytes as hex, non-finite floats as text."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog row for the page: JSON columns parsed, every value strict JSON."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and k in JSON_COLUMNS and v[:1] in "{[":
            try:
                v = json.loads(v)
            except ValueError:
                pass
            out[k] = v
        else:
            out[k] = _plain(v)
    return out


def _details(catalog: Catalog, order: list[int], paths: list[str], max_details: int, max_bytes: int) -> dict[str, Any]:
    """Full metadata for the first files of ``order``: the files row and every format row."""
    chosen = [paths[i] for i in order[:max(max_details, 0)]]
    if not chosen:
        return {}
    wanted = pa.array(chosen)
    files = catalog.read(FILES, where=pc.field("path").isin(wanted))
    by_path: dict[str, dict[str, Any]] = {r["path"]: {"file": _jsonable_row(r), "rows": {}} for r in files.to_pylist()}
    for table in catalog.tables():
        if table == FILES or table in ROLLUPS:
            continue
        data = catalog.dataset(table)
        if data is None or "path" not in data.schema.names:
            continue
        for row in data.to_table(filter=pc.field("path").isin(wanted)).to_pylist():
            entry = by_path.get(row["path"])
            if entry is not None:
                row = _jsonable_row(row)
                row.pop("path")
                entry["rows"].setdefault(table, []).append(row)
    index = {p: i for i, p in enumerate(paths)}
    details: dict[str, Any] = {}
    used = 0
    for path in chosen:
        entry = by_path.get(path)
        if entry is None:
            continue
        text = json.dumps(entry, separators=(",", ":"), default=str)
        if len(text) > MAX_DETAIL_BYTES:
            counts = {t: len(r) for t, r in entry["rows"].items()}
            entry = {"file": entry["file"], "rows": {}, "omitted_rows": counts}
            text = json.dumps(entry, separators=(",", ":"), default=str)
            if len(text) > MAX_DETAIL_BYTES:
                entry["file"]["metadata"] = None
                entry["omitted_metadata"] = True
                text = json.dumps(entry, separators=(",", ":"), default=str)
        if used + len(text) > max_bytes:
            break
        used += len(text)
        details[str(index[path])] = entry
    return details


def _rollup_rows(catalog: Catalog, table: str, columns: list[str], sort: str) -> dict[str, Any] | None:
    data = catalog.read(table, columns)
    if data is None:
        return None
    total = data.num_rows
    if sort in data.column_names and total:
        data = data.sort_by([(sort, "descending")])
    rows = [_jsonable_row(r) for r in data.slice(0, MAX_ROLLUP_ROWS).to_pylist()]
    return {"total": total, "rows": rows}


def build_payload(
    catalog: Catalog, max_details: int = MAX_DETAILS, max_details_bytes: int = MAX_DETAILS_BYTES
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the page's data, the click-through details) as plain JSON-able values."""
    files = catalog.read(FILES, ["path", "format", "format_version", "size_bytes", "modified", "status",
                                  "error", "change"])
    files = files.sort_by([("path", "ascending")])
    paths = _col(files, "path")
    formats = _col(files, "format")
    statuses = _col(files, "status")
    sizes = _col(files, "size_bytes", 0)
    errors = _col(files, "error")
    key, plots = _key_fields(catalog)

    dirs, dir_index = _indexer()
    fmts, fmt_index = _indexer()
    stats, status_index = _indexer()
    versions, version_index = _indexer()
    changes, change_index = _indexer()
    if "modified" in files.column_names:
        micros = pc.cast(pc.cast(files.column("modified"), pa.timestamp("us", tz="UTC")), pa.int64())
        epoch = pc.divide(micros, 1_000_000).to_pylist()
    else:
        epoch = [None] * files.num_rows
    columns: dict[str, list] = {"d": [], "n": [], "f": [], "v": [], "s": [], "m": [], "t": [], "c": [], "k": [], "e": []}
    for path, fmt, version, size, status, error, change, when in zip(
        paths, formats, _col(files, "format_version"), sizes, statuses, errors, _col(files, "change"), epoch
    ):
        head, _, name = path.rpartition("/")
        columns["d"].append(dir_index(head + "/" if head or path.startswith("/") else ""))
        columns["n"].append(name)
        columns["f"].append(fmt_index(fmt))
        columns["v"].append(version_index(version))
        columns["s"].append(size)
        columns["m"].append(when)
        columns["t"].append(status_index(status))
        columns["c"].append(change_index(change))
        columns["k"].append(key.get(path) or (_error_type(error) if error else ""))
        columns["e"].append(error)

    months: dict[str, Counter] = defaultdict(Counter)
    for fmt, when in zip(formats, epoch):
        month = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m") if when is not None else "(none)"
        months[fmt][month] += 1
    all_months = sorted({m for c in months.values() for m in c})
    plots["modified_months"] = {"labels": all_months,
                                "series": {f: [months[f][m] for m in all_months] for f in sorted(months)}}
    plots["sizes"] = _size_bins(formats, sizes)
    error_groups = _errors(paths, statuses, errors)
    plots["error_types"] = [[g["type"], g["count"]] for g in error_groups][:TOP]

    order = sorted(range(len(paths)), key=lambda i: (statuses[i] != "error", i))
    details = _details(catalog, order, paths, max_details, max_details_bytes)

    rollups = {
        "dicom_studies": _rollup_rows(catalog, "dicom_studies", [
            "study_instance_uid", "patient_id", "study_date", "modality", "body_part", "series_count",
            "instance_count", "total_bytes", "first_acquisition", "last_acquisition", "varying_attributes"],
            "instance_count"),
        "dicom_series": _rollup_rows(catalog, "dicom_series", [
            "study_instance_uid", "series_instance_uid", "modality", "body_part", "instance_count", "total_bytes",
            "first_acquisition", "last_acquisition", "varying_attributes"], "instance_count"),
        "variables": _rollup_rows(catalog, "variables", [
            "format", "name", "units", "standard_name", "file_count", "total_bytes", "example_path"], "file_count"),
    }
    page = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run": _run_facts(catalog, files),
        "status_counts": _status_counts(formats, statuses, sizes),
        "manifest": catalog.manifest,
        "plots": plots,
        "errors": error_groups,
        "rollups": {k: v for k, v in rollups.items() if v is not None},
        "files": {"dirs": dirs, "formats": fmts, "statuses": stats, "versions": versions, "changes": changes,
                  **columns},
        "details_count": len(details),
        "catalog_url": redact_text(catalog.url),
    }
    return page, details


# --- HTML ----------------------------------------------------------------------------------


def _pack(value: Any) -> str:
    """gzip + base64 of the compact JSON (the page unpacks it with DecompressionStream)."""
    raw = json.dumps(value, separators=(",", ":"), default=str, allow_nan=False).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def _read_asset(name: str) -> str:
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read()


def _asset(name: str) -> str:
    """A script or style to inline: no source-map comment, no closing tag inside."""
    text = _read_asset(name)
    # No source-map comments: nothing is fetched, even by developer tools.
    text = re.sub(r"^//# sourceMappingURL=.*$|/\*# sourceMappingURL=.*?\*/", "", text, flags=re.M)
    return text.replace("</script", "<\\/script")


def render_html(page: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    template = _read_asset("report.html")
    title = f"metaextract report: {page['catalog_url']}"
    parts = {
        "@@TITLE@@": title.replace("&", "&amp;").replace("<", "&lt;"),
        "@@TABULATOR_CSS@@": _asset("tabulator.min.css"),
        "@@REPORT_CSS@@": _asset("report.css"),
        "@@CHART_JS@@": _asset("chart.umd.min.js"),
        "@@TABULATOR_JS@@": _asset("tabulator.min.js"),
        "@@REPORT_JS@@": _asset("report.js"),
        "@@PAGE_DATA@@": _pack(page),
        "@@DETAILS_DATA@@": _pack(details),
    }
    out = []
    rest = template
    # Replace each placeholder once, in order, without rescanning inserted text.
    while True:
        positions = [(rest.find(k), k) for k in parts if rest.find(k) >= 0]
        if not positions:
            out.append(rest)
            break
        pos, k = min(positions)
        out.append(rest[:pos])
        out.append(parts.pop(k))
        rest = rest[pos + len(k):]
    return "".join(out)


def write_report(
    output: str,
    html: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_details: int = MAX_DETAILS,
    max_details_bytes: int = MAX_DETAILS_BYTES,
) -> str:
    """Write the report for the catalog at ``output``; return where it was written."""
    catalog = Catalog(output, storage_options)
    page, details = build_payload(catalog, max_details, max_details_bytes)
    text = render_html(page, details)
    target = html or posixpath.join(output.rstrip("/"), REPORT_NAME)
    if "://" not in target:
        target = os.path.abspath(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        fs, path = url_to_fs(target, **dict(storage_options or {}))
        with fs.open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return target


# --- command line --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ReportError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="metaextract report", allow_abbrev=False,
                     description="Write a self-contained HTML report of a metaextract catalog.")
    parser.add_argument("output", metavar="OUT", help="the catalog folder or URL (metaextract's --output)")
    parser.add_argument("--html", metavar="PATH", default=None, help=f"where to write it (default: OUT/{REPORT_NAME})")
    parser.add_argument("--storage_options", type=json_object, default={}, help="JSON object passed to fsspec")
    parser.add_argument("--max_details", type=_count, default=MAX_DETAILS,
                        help="embed the full metadata of at most this many files (errors first)")
    return parser.parse_args(argv)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None, *, stdout=None) -> int:
    """``metaextract report OUT [--html PATH]``: prints the report's path. Raises ReportError."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if "://" not in args.output:
        args.output = os.path.abspath(args.output)
    try:
        path = write_report(args.output, args.html, args.storage_options, max_details=args.max_details)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReportError(f"cannot write the report for {args.output!r}: {exc}") from None
    print(path, file=stdout or sys.stdout)
    return 0
