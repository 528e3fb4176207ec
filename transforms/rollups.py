"""Roll-up tables built from the per-format rows: DICOM series and studies, and variables.

    dicom_series    one row per (study_instance_uid, series_instance_uid)
    dicom_studies   one row per study_instance_uid
    variables       one row per distinct (format, name, units, standard_name) across the
                    ``netcdf`` and ``hdf5`` tables, with the number and total size of the files
                    that hold it

Everything is computed by the pipeline, never in the driver: partial roll-ups of whole batches of
files (made where the rows are: the extraction process, or a carried-forward shard's reader),
or a ``CoGroupByKey`` that joins each file's size onto per-table rows, then ``CombinePerKey``.
The work lives in the Beam-free functions and accumulators of :mod:`transforms.partials`
(re-exported here); the PTransforms only wire labelled steps.

DICOM attributes are compared by their DICOM JSON model value (``Value``, ``InlineBinary`` or
``BulkDataURI``; sequences as a whole), named by their DICOM keyword (``Modality``) or, for
private and unknown tags, ``GGGGEEEE``. The file meta group (0002) describes the file rather than
the instance and is left out. An attribute is *invariant* when every instance of the series
(study) has it with the same value; every other attribute seen in some instance is *varying*.

A row whose ``tags`` cannot be parsed or read (not JSON, not a JSON object, nested deeper than
the JSON parser or encoder allows, values of unexpected types) never fails the pipeline: the
instance is rolled up with no attributes (it still counts in ``instance_count``,
``total_bytes``, ...), and a warning names the file, never the value. Likewise an ``hdf5``
dataset whose ``attributes`` cannot be read counts as a variable with no units and no
standard name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam

from transforms.partials import (  # noqa: F401  (the roll-ups' pure parts, re-exported)
    ACQUISITION_SOURCES,
    BODY_PART_TAG,
    DICOM_FORMATS,
    DICOM_SERIES,
    DICOM_STUDIES,
    FILE_META_GROUP,
    MULTI_VALUE_SEPARATOR,
    UNREADABLE_ERRORS,
    VARIABLE_FORMATS,
    VARIABLES,
    DicomAccumulator,
    VariableTotals,
    accumulate,
    acquisition_time,
    add_instance,
    add_variable_file,
    attribute_name,
    batch_partials,
    canonical_json,
    cf_string,
    comparable,
    comparable_json,
    dicom_entries,
    dicom_partials,
    dicom_series_entries,
    file_size,
    hdf5_variables,
    instance_summary,
    joined,
    merge,
    merge_variable_totals,
    netcdf_variable,
    parse_dicom_datetime,
    read_partials,
    rolled_up_file_size,
    series_row,
    series_to_study,
    shard_partials,
    study_row,
    variable_entries,
    variable_key,
    variable_partials,
    variable_row,
)

#: Key of the optional input of :class:`RollUps` that holds partial roll-ups.
PARTIALS = "partials"


class MergeDicomAccumulatorsFn(beam.CombineFn):
    """Series accumulators -> the study's accumulator (thin shell around :func:`merge`)."""

    def create_accumulator(self):
        return DicomAccumulator()

    def add_input(self, acc, other):
        return merge(acc, other)

    def merge_accumulators(self, accumulators):
        result = DicomAccumulator()
        for acc in accumulators:
            result = merge(result, acc)
        return result

    def extract_output(self, acc):
        return acc


class DicomRollupFn(MergeDicomAccumulatorsFn):
    """Instance summaries (or partial :class:`DicomAccumulator` roll-ups) -> :class:`DicomAccumulator`."""

    def add_input(self, acc, summary):
        return merge(acc, summary) if isinstance(summary, DicomAccumulator) else add_instance(acc, summary)


class VariableRollupFn(beam.CombineFn):
    """(size, path) of each distinct file (or partial :class:`VariableTotals`) ->
    (file count, total bytes, smallest path)."""

    def create_accumulator(self):
        return 0, 0, None

    def add_input(self, acc, size_and_path):
        if isinstance(size_and_path, VariableTotals):
            return merge_variable_totals([acc, size_and_path])
        size, path = size_and_path
        return tuple(add_variable_file(acc, size, path))

    def merge_accumulators(self, accumulators):
        return tuple(merge_variable_totals(accumulators))

    def extract_output(self, acc):
        return acc


def _partials_of(partial: tuple[str, Any, Any], kind: str):
    """``(kind, key, partial roll-up)`` -> ``(key, partial roll-up)`` when of ``kind`` (a FlatMap)."""
    if partial[0] == kind:
        yield partial[1], partial[2]


# --- PTransforms -------------------------------------------------------------------------


@dataclasses.dataclass
class RollUps(beam.PTransform):
    """Catalog rows by table -> ``{"dicom_series", "dicom_studies", "variables"}`` rows.

    Reads the ``files``, ``dicom``, ``netcdf`` and ``hdf5`` PCollections of the dict it is
    applied to (a missing one counts as empty), and ``partials``: roll-ups made
    elsewhere of rows that are not in those tables, as ``("dicom", (study, series),
    DicomAccumulator)`` and ``("variables", key, VariableTotals)`` (see :func:`dicom_partials`,
    :func:`variable_partials`); they are merged with the roll-ups of the rows.

    Args:
      files_table: name of the table that holds each file's ``size_bytes``.
    """

    files_table: str = "files"

    def __post_init__(self):
        super().__init__()

    def _join_rows(self, rows_by_table: dict, pipeline):
        """The rows -> (series inputs, variable inputs), after one join by path that brings each
        file's size to its DICOM rows and its variables."""
        files = self._table(rows_by_table, self.files_table, pipeline)
        dicom = self._table(rows_by_table, "dicom", pipeline)
        netcdf = self._table(rows_by_table, "netcdf", pipeline)
        hdf5 = self._table(rows_by_table, "hdf5", pipeline)
        by_path = {
            "size": files
            | "FileSizes" >> beam.FlatMap(rolled_up_file_size).with_output_types(tuple[str, tuple[str, int]]),
            "dicom": dicom | "KeyDicomByPath" >> beam.Map(lambda r: (r["path"], r)).with_output_types(tuple[str, Any]),
            "netcdf": netcdf | "NetcdfVariables" >> beam.Map(netcdf_variable).with_output_types(tuple[str, str]),
            "hdf5": hdf5 | "Hdf5Variables" >> beam.FlatMap(hdf5_variables).with_output_types(tuple[str, str]),
        } | "JoinSizesByPath" >> beam.CoGroupByKey()
        instances = by_path | "KeyBySeries" >> beam.FlatMap(dicom_entries).with_output_types(
            tuple[tuple[str, str], Any]
        )
        variables = by_path | "VariableWithSize" >> beam.FlatMap(variable_entries).with_output_types(
            tuple[str, Any]
        )
        return instances, variables

    def _table(self, rows_by_table: dict, name: str, pipeline):
        if name in rows_by_table:
            return rows_by_table[name]
        return pipeline | f"No{name.title()}Rows" >> beam.Create([])

    def expand(self, rows_by_table: dict):
        pipeline = next(iter(rows_by_table.values())).pipeline
        inputs = []  # (series inputs, variable inputs) of the rows and of the partials
        if any(name in rows_by_table for name in (self.files_table, "dicom", "netcdf", "hdf5")):
            inputs.append(self._join_rows(rows_by_table, pipeline))
        if PARTIALS in rows_by_table:
            partials = rows_by_table[PARTIALS]
            inputs.append(
                (
                    partials
                    | "DicomPartials"
                    >> beam.FlatMap(_partials_of, DICOM_SERIES).with_output_types(tuple[tuple[str, str], Any]),
                    partials
                    | "VariablePartials" >> beam.FlatMap(_partials_of, VARIABLES).with_output_types(tuple[str, Any]),
                )
            )
        if not inputs:
            raise ValueError("RollUps needs some of files, dicom, netcdf, hdf5 or partials")
        if len(inputs) == 1:
            instances, variables = inputs[0]
        else:
            instances = [i for i, _ in inputs] | "AllSeriesInputs" >> beam.Flatten()
            variables = [v for _, v in inputs] | "AllVariableInputs" >> beam.Flatten()
        series = instances | "RollUpSeries" >> beam.CombinePerKey(DicomRollupFn())
        series_rows = series | "SeriesRows" >> beam.MapTuple(series_row)
        study_rows = (
            series
            | "KeyByStudy" >> beam.Map(series_to_study).with_output_types(tuple[str, Any])
            | "RollUpStudies" >> beam.CombinePerKey(MergeDicomAccumulatorsFn())
            | "StudyRows" >> beam.MapTuple(study_row)
        )
        variable_rows = (
            variables
            | "RollUpVariables" >> beam.CombinePerKey(VariableRollupFn())
            | "VariableRows" >> beam.MapTuple(variable_row)
        )
        return {DICOM_SERIES: series_rows, DICOM_STUDIES: study_rows, VARIABLES: variable_rows}
