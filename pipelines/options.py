"""Command-line and pipeline options: metaextract's own plus every Beam option, parsed strictly."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

DEFAULT_OUTPUT = "./metaextract-output"


class UsageError(ValueError):
    """A bad flag or value: reported in one line, exit code 2."""


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


class MetaextractOptions(PipelineOptions):
    """metaextract's own options (Beam's, such as ``--runner``, are parsed alongside)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            action="append",
            default=None,
            help="A file, a folder (walked recursively), a glob (** allowed) or an fsspec URL "
            "(gs://, s3://, memory://...). Repeat for several. Default: the bundled sample corpus.",
        )
        parser.add_argument(
            "--output",
            default=DEFAULT_OUTPUT,
            help="Catalog folder or URL; each table is replaced, other files there are kept.",
        )
        parser.add_argument(
            "--storage_options",
            type=json_object,
            default={},
            help="JSON object passed to fsspec (e.g. '{\"anon\": true}'); never written to logs "
            "or the manifest.",
        )
        parser.add_argument(
            "--bulk_data_threshold",
            type=_non_negative_int,
            default=1024,
            help="DICOM binary values larger than this many bytes are left out of dicom.tags.",
        )
        parser.add_argument(
            "--previous",
            default=None,
            help="An earlier catalog to use as the cache (default: the catalog already at "
            "--output, if any). Unchanged files are not opened: their rows are carried forward.",
        )
        parser.add_argument(
            "--full",
            action="store_true",
            default=False,
            help="Re-extract every file, ignoring the cache (change and first_seen still come "
            "from it).",
        )
        parser.add_argument(
            "--retry_errors",
            action="store_true",
            default=False,
            help="Re-extract files whose previous status was error.",
        )
        parser.add_argument(
            "--max_error_fraction",
            type=_fraction,
            default=None,
            help="Exit with code 3 (after publishing) when more than this fraction of the files "
            "read in this run are errors, e.g. 0.05.",
        )
        parser.add_argument(
            "--progress",
            choices=["auto", "on", "off"],
            default="auto",
            help="Live progress on stderr for local runs (auto: when stderr is a terminal).",
        )
        parser.add_argument(
            "--report",
            action="store_true",
            default=False,
            help="After the run, write the HTML report OUT/report.html (see `metaextract report`).",
        )


class _StrictParser(_BeamArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _all_option_classes() -> list[type[PipelineOptions]]:
    seen: dict[str, type[PipelineOptions]] = {}
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop(0)
        seen.setdefault(cls.__qualname__ + cls.__module__, cls)
        stack.extend(cls.__subclasses__())
    return list(seen.values())


def parse_flags(argv: list[str]) -> tuple[MetaextractOptions, PipelineOptions]:
    """Parse ``argv`` strictly: a flag neither metaextract nor Beam knows is a UsageError."""
    import apache_beam.options.pipeline_options  # noqa: F401  (registers Beam's option classes)
    if any(a.startswith("--dask_") or "DaskRunner" in a for a in argv):
        try:  # DaskOptions (--dask_client_address, ...) live in the runner's module
            import apache_beam.runners.dask.dask_runner  # noqa: F401
        except ImportError:
            pass

    parser = _StrictParser(allow_abbrev=False, prog="metaextract")
    for cls in _all_option_classes():
        try:
            cls._add_argparse_args(parser)  # pylint: disable=protected-access
        except argparse.ArgumentError:
            continue  # the same option class registered twice
    _, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(f"unrecognized argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)}")
    options = PipelineOptions(argv)
    return options.view_as(MetaextractOptions), options


def public_options(options: PipelineOptions) -> dict[str, Any]:
    """The options worth recording in the manifest: set ones only, secrets removed."""
    from transforms.redact import redact_options

    return redact_options(options.get_all_options(drop_default=True, retain_unknown_options=False))


def die(message: str, code: int = 2) -> NoReturn:
    print(f"metaextract: error: {message}", file=sys.stderr)
    raise SystemExit(code)
