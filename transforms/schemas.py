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
        # Incremental runs (added in 0.2): when the path was first catalogued, and how the file
        # compares with the previous catalog: new, changed or unchanged.
        pa.field("first_seen", UTC_US),
        pa.field("change", pa.string()),
        # The listing's etag or generation (object stores), compared on incremental runs.
        pa.field("etag", pa.string()),
        # Large files (added in 0.2): the whole file's digest as "<algorithm>:<lowercase hex>"
        # (--checksum), the bytes this run read from the file and the read calls it made (object
        # store requests for remote files).
        pa.field("checksum", pa.string()),
        pa.field("bytes_read", pa.int64()),
        pa.field("read_requests", pa.int64()),
        # Faults (added in 0.2): "permanent" (the file is broken) or "transient" (network,
        # throttling, timeout) for error rows; how many times the file was tried; seconds spent.
        pa.field("error_kind", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("extract_seconds", pa.float64()),
        # The settings that shaped this file's rows (JSON: checksum, stats, phi, ...): an
        # incremental run re-extracts a file whose rows were made with other settings.
        pa.field("settings", pa.string()),
    ]
)

#: Data statistics (--stats), on the rows they describe; null where not numeric or not computed.
STAT_FIELDS = [
    pa.field("stat_count", pa.int64()),
    pa.field("stat_nan_count", pa.int64()),
    pa.field("stat_min", pa.float64()),
    pa.field("stat_max", pa.float64()),
    pa.field("stat_mean", pa.float64()),
    pa.field("stat_std", pa.float64()),
]

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
    + STAT_FIELDS
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
    + STAT_FIELDS
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
    + STAT_FIELDS
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
    + STAT_FIELDS
)

#: Every built-in table, in the order the catalog is written and documented.
TABLES: dict[str, pa.Schema] = {
    "files": FILES,
    "dicom": DICOM,
    "fits": FITS,
    "hdf5": HDF5,
    "netcdf": NETCDF,
}

# --- Roll-up tables (transforms/rollups.py): computed from the tables above by the pipeline.
# Kept out of TABLES (the per-file tables, one row per thing read) in ROLLUP_TABLES; the
# catalog writes both (pipelines.catalog.CatalogFiles).

DICOM_SERIES = pa.schema(
    [
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("series_instance_uid", pa.string(), nullable=False),
        pa.field("modality", pa.string()),
        pa.field("body_part", pa.string()),
        pa.field("instance_count", pa.int64(), nullable=False),
        pa.field("total_bytes", pa.int64(), nullable=False),
        pa.field("first_acquisition", pa.timestamp("us")),
        pa.field("last_acquisition", pa.timestamp("us")),
        pa.field("invariant_attributes", pa.string(), nullable=False),
        pa.field("varying_attributes", STRING_LIST, nullable=False),
    ]
)

DICOM_STUDIES = pa.schema(
    [
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("study_date", pa.date32()),
        pa.field("modality", pa.string()),
        pa.field("modalities", STRING_LIST, nullable=False),
        pa.field("body_part", pa.string()),
        pa.field("series_count", pa.int64(), nullable=False),
        pa.field("instance_count", pa.int64(), nullable=False),
        pa.field("total_bytes", pa.int64(), nullable=False),
        pa.field("first_acquisition", pa.timestamp("us")),
        pa.field("last_acquisition", pa.timestamp("us")),
        pa.field("invariant_attributes", pa.string(), nullable=False),
        pa.field("varying_attributes", STRING_LIST, nullable=False),
    ]
)

VARIABLES = pa.schema(
    [
        pa.field("format", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("units", pa.string()),
        pa.field("standard_name", pa.string()),
        pa.field("file_count", pa.int64(), nullable=False),
        pa.field("total_bytes", pa.int64(), nullable=False),
        pa.field("example_path", pa.string(), nullable=False),
    ]
)

#: The roll-up tables, written after TABLES (and after plug-ins' tables).
ROLLUP_TABLES: dict[str, pa.Schema] = {
    "dicom_series": DICOM_SERIES,
    "dicom_studies": DICOM_STUDIES,
    "variables": VARIABLES,
}

#: The names of STAT_FIELDS: filled by the pipeline (--stats), not by the extractors.
STAT_NAMES = [field.name for field in STAT_FIELDS]
