"""The catalog contract: one explicit pyarrow schema per table.

Later versions may add columns; they never remove or retype one. The README documents every
column.
"""

from __future__ import annotations

import pyarrow as pa

UTC_US = pa.timestamp("us", tz="UTC")
INT64_LIST = pa.list_(pa.int64())
STRING_LIST = pa.list_(pa.string())

FILES = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("format_version", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("modified", UTC_US),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("metadata", pa.string(), nullable=False),
        pa.field("extracted_at", UTC_US, nullable=False),
        pa.field("extractor_version", pa.string(), nullable=False),
    ]
)

DICOM = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sop_instance_uid", pa.string()),
        pa.field("sop_class_uid", pa.string()),
        pa.field("study_instance_uid", pa.string()),
        pa.field("series_instance_uid", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("patient_id", pa.string()),
        pa.field("study_date", pa.date32()),
        pa.field("rows", pa.int32()),
        pa.field("columns", pa.int32()),
        pa.field("number_of_frames", pa.int32()),
        pa.field("transfer_syntax_uid", pa.string()),
        pa.field("tags", pa.string(), nullable=False),
    ]
)

FITS = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("hdu_index", pa.int32(), nullable=False),
        pa.field("hdu_type", pa.string(), nullable=False),
        pa.field("extname", pa.string()),
        pa.field("bitpix", pa.int32()),
        pa.field("naxis", pa.int32()),
        pa.field("shape", INT64_LIST),
        pa.field("header", pa.string(), nullable=False),
    ]
)

HDF5 = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("object_path", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("link_target", pa.string()),
        pa.field("shape", INT64_LIST),
        pa.field("dtype", pa.string()),
        pa.field("chunks", INT64_LIST),
        pa.field("compression", pa.string()),
        pa.field("attributes", pa.string()),
    ]
)

NETCDF = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("variable", pa.string(), nullable=False),
        pa.field("dimensions", STRING_LIST),
        pa.field("shape", INT64_LIST),
        pa.field("dtype", pa.string()),
        pa.field("attributes", pa.string(), nullable=False),
        # Convenience copies of the CF attributes users query most.
        pa.field("units", pa.string()),
        pa.field("standard_name", pa.string()),
        pa.field("long_name", pa.string()),
    ]
)

#: Every built-in table, in the order the catalog is written and documented.
TABLES: dict[str, pa.Schema] = {
    "files": FILES,
    "dicom": DICOM,
    "fits": FITS,
    "hdf5": HDF5,
    "netcdf": NETCDF,
}
