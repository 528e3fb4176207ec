"""The baseline: a plain Python loop that catalogs a folder with the same libraries, used well.

    python benchmarks/plain_loop.py --input DIR --output OUT.parquet

This is what a competent user writes without Beam: walk the folder, read each file's first
bytes to tell the format (never the name), read headers only with each format's reference
library, and write one Parquet file with pyarrow. It is deliberately independent of
metaextract (no project import), so that the comparison is with the libraries themselves:

* DICOM: ``pydicom.dcmread(stop_before_pixels=True)``, every element as the DICOM JSON model
  (``Dataset.to_json_dict``), binary values over 1 KiB left out;
* FITS: ``astropy.io.fits.open(lazy_load_hdus=True)``, each HDU's header cards (keyword, value,
  comment) without touching the data;
* HDF5: ``h5py.File.visititems``, every object's shape, dtype, chunks, compression and
  attributes;
* NetCDF: ``netCDF4.Dataset``, a walk of groups, dimensions, variables and attributes.

Each file becomes one row (path, format, format_version, size_bytes, modified, status, error,
metadata JSON with everything read), which is comparable to what metaextract writes across its
``files`` and per-format tables.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import math
import os
import sys
import time
from typing import Any

import h5py
import netCDF4
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from astropy.io import fits

HEAD_BYTES = 4096
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
BULK_DATA_THRESHOLD = 1024

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("format_version", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("modified", pa.timestamp("us", tz="UTC")),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("metadata", pa.string(), nullable=False),
    ]
)


def plain(value: Any) -> Any:
    """numpy scalars and arrays, bytes and non-finite floats -> strict-JSON-able values."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (np.generic, np.ndarray)):
        return plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


# --- detection ---------------------------------------------------------------------------


def hdf5_offset(head: bytes, f) -> int | None:
    offset = 0
    while True:
        if offset + 8 <= len(head):
            chunk = head[offset : offset + 8]
        else:
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
        if chunk == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2


def detect(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        if head[128:132] == b"DICM":
            return "dicom"
        if head.startswith(b"SIMPLE  ="):
            return "fits"
        if head[:4] in (b"CDF\x01", b"CDF\x02", b"CDF\x05"):
            return "netcdf"
        if head and hdf5_offset(head, f) is not None:
            return "hdf5"  # NetCDF-4 is told apart when the file is opened
    return "unknown"


# --- extraction --------------------------------------------------------------------------


def _omit_bulk(element) -> str:
    return ""  # a BulkDataURI placeholder: the value is left out


def extract_dicom(path: str) -> tuple[str | None, dict]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = ds.file_meta.to_json_dict(BULK_DATA_THRESHOLD, _omit_bulk) if ds.file_meta else {}
    tags = ds.to_json_dict(BULK_DATA_THRESHOLD, _omit_bulk)
    syntax = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    return (syntax.name if syntax else None), {
        "sop_instance_uid": ds.get("SOPInstanceUID"),
        "modality": ds.get("Modality"),
        "study_date": ds.get("StudyDate"),
        "rows": ds.get("Rows"),
        "columns": ds.get("Columns"),
        "file_meta": meta,
        "tags": tags,
    }


def _card_value(value: Any) -> Any:
    if isinstance(value, fits.card.Undefined):
        return None
    return plain(value)


def extract_fits(path: str) -> tuple[str | None, dict]:
    hdus = []
    with fits.open(path, lazy_load_hdus=True, memmap=False, do_not_scale_image_data=True) as hdul:
        for index, hdu in enumerate(hdul):
            header = hdu.header
            naxis = header.get("NAXIS", 0)
            hdus.append(
                {
                    "hdu_index": index,
                    "hdu_type": type(hdu).__name__,
                    "extname": header.get("EXTNAME"),
                    "bitpix": header.get("BITPIX"),
                    "naxis": naxis,
                    "shape": [header.get(f"NAXIS{i}") for i in range(1, naxis + 1)],
                    "header": [
                        {"keyword": c.keyword, "value": _card_value(c.value), "comment": c.comment}
                        for c in header.cards
                    ],
                }
            )
    return None, {"hdus": hdus}


def _hdf5_walk(f: h5py.File) -> dict:
    objects = []

    def visit(name: str, obj) -> None:
        row = {"object_path": "/" + name, "attributes": plain(dict(obj.attrs))}
        if isinstance(obj, h5py.Dataset):
            row |= {
                "kind": "dataset",
                "shape": list(obj.shape) if obj.shape is not None else None,
                "dtype": str(obj.dtype),
                "chunks": list(obj.chunks) if obj.chunks else None,
                "compression": obj.compression,
            }
        else:
            row["kind"] = "group"
        objects.append(row)

    f.visititems(visit)
    return {"attributes": plain(dict(f.attrs)), "objects": objects}


def extract_netcdf(path: str) -> tuple[str | None, dict]:
    with netCDF4.Dataset(path, "r") as ds:
        groups = []

        def walk(group, name: str) -> None:
            variables = []
            for var in group.variables.values():
                variables.append(
                    {
                        "variable": var.name,
                        "dimensions": list(var.dimensions),
                        "shape": list(var.shape),
                        "dtype": str(var.dtype),
                        "attributes": plain({k: var.getncattr(k) for k in var.ncattrs()}),
                    }
                )
            groups.append(
                {
                    "group": name,
                    "dimensions": {d.name: {"size": len(d), "unlimited": d.isunlimited()} for d in group.dimensions.values()},
                    "attributes": plain({k: group.getncattr(k) for k in group.ncattrs()}),
                    "variables": variables,
                }
            )
            for child in group.groups.values():
                walk(child, f"{name.rstrip('/')}/{child.name}")

        walk(ds, "/")
        return ds.data_model, {"groups": groups}


def extract_hdf5_or_netcdf4(path: str) -> tuple[str, str | None, dict]:
    """One h5py open: a NetCDF-4 file (``_NCProperties``) goes to netCDF4, others are walked."""
    with h5py.File(path, "r") as f:
        if "_NCProperties" not in f.attrs:
            return "hdf5", f"HDF5 superblock v{f.id.get_create_plist().get_version()[0]}", _hdf5_walk(f)
    version, metadata = extract_netcdf(path)
    return "netcdf", version, metadata


def extract_file(path: str) -> tuple[str, str | None, str, str | None, dict]:
    """(format, format_version, status, error, metadata) for one file."""
    fmt = "unknown"
    try:
        fmt = detect(path)
        if fmt == "dicom":
            version, metadata = extract_dicom(path)
        elif fmt == "fits":
            version, metadata = extract_fits(path)
        elif fmt == "netcdf":
            version, metadata = extract_netcdf(path)
        elif fmt == "hdf5":
            fmt, version, metadata = extract_hdf5_or_netcdf4(path)
        else:
            return fmt, None, "unsupported", None, {}
        return fmt, version, "ok", None, metadata
    except Exception as exc:  # noqa: BLE001  (errors are data, as in metaextract)
        return fmt, None, "error", f"{type(exc).__name__}: {exc}", {}


def catalog_row(path: str, stat: os.stat_result) -> dict:
    fmt, version, status, error, metadata = extract_file(path)
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        text, status, error = "{}", "error", f"{type(exc).__name__}: {exc}"
    return {
        "path": path,
        "format": fmt,
        "format_version": version,
        "size_bytes": stat.st_size,
        "modified": dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.timezone.utc),
        "status": status,
        "error": error,
        "metadata": text,
    }


def list_files(root: str):
    """(path, stat) for every regular file under ``root``, in a stable order."""
    if os.path.isfile(root):
        yield os.path.abspath(root), os.stat(root)
        return
    for folder, dirs, names in os.walk(os.path.abspath(root)):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            yield path, os.stat(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plain-loop baseline catalog (one Parquet file).")
    parser.add_argument("--input", required=True, help="a folder (walked recursively) or a file")
    parser.add_argument("--output", required=True, help="the Parquet file to write")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = [catalog_row(path, stat) for path, stat in list_files(args.input)]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), args.output, compression="zstd")
    elapsed = time.perf_counter() - start
    counts: dict[str, int] = {}
    for row in rows:
        key = f"{row['format']}/{row['status']}"
        counts[key] = counts.get(key, 0) + 1
    print(json.dumps({"files": len(rows), "seconds": round(elapsed, 3), "counts": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
