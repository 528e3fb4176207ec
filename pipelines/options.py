"""Command-line and pipeline options: metaextract's own plus every Beam option, parsed strictly."""

from __future__ import annotations

import argparse
import json
import sys
import weakref
from typing import Any, NoReturn

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from transforms.formats.base import DEFAULT_BULK_DATA_THRESHOLD

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


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _thresholds(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid numbers: {text!r}") from None
    if len(values) != 3 or not 0 < values[0] < values[1] < values[2] <= 1.5:
        raise argparse.ArgumentTypeError(
            f"need three increasing fractions ELEVATED,HIGH,CRITICAL, e.g. 0.70,0.85,0.95; got {text!r}"
        )
    return values  # type: ignore[return-value]


CHECKSUMS = ("blake3", "sha256", "md5", "crc32c", "none")
PHI_MODES = ("keep", "remove", "pseudonymize")


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
            default=DEFAULT_BULK_DATA_THRESHOLD,
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
        # --- large files: checksums, statistics, chunks, memory (issue 3)
        parser.add_argument(
            "--checksum",
            choices=CHECKSUMS,
            default="blake3",
            help="Whole-file digest written to files.checksum as '<algorithm>:<hex>' (none: read "
            "headers only).",
        )
        parser.add_argument(
            "--stats",
            action="store_true",
            default=False,
            help="Compute count, NaN count, min, max, mean and std of every numeric array "
            "(HDF5 datasets, NetCDF variables, FITS images, DICOM pixels).",
        )
        parser.add_argument(
            "--chunk_threshold_mb",
            type=_positive_int,
            default=64,
            help="Files larger than this are split into work units spread over the workers.",
        )
        parser.add_argument(
            "--unit_threads",
            type=_non_negative_int,
            default=0,
            help="Threads that run a large file's data units in a worker's extraction process, "
            "so one big file uses several cores (0: one per core the worker may use).",
        )
        parser.add_argument(
            "--max_memory_per_worker_mb",
            type=_positive_int,
            default=500,
            help="The memory governor's budget for one worker process's RSS.",
        )
        parser.add_argument(
            "--memory_thresholds",
            type=_thresholds,
            default=(0.70, 0.85, 0.95),
            help="Fractions of the budget (and of the machine's or container's memory) at which "
            "pressure becomes ELEVATED, HIGH and CRITICAL (default 0.70,0.85,0.95).",
        )
        # --- hostile input and faults (issue 5)
        parser.add_argument(
            "--file_timeout_s",
            type=_positive_float,
            default=120.0,
            help="A file whose extraction takes longer becomes an error row (TimeoutError), even "
            "when the hang is inside a C library.",
        )
        parser.add_argument(
            "--max_retries",
            type=_non_negative_int,
            default=3,
            help="Transient errors (network, throttling, remote timeouts) are retried this many "
            "times with exponential backoff before they become error rows.",
        )
        parser.add_argument(
            "--phi",
            choices=PHI_MODES,
            default="keep",
            help="DICOM patient data: keep, remove (PS3.15 Basic Application Level "
            "Confidentiality Profile) or pseudonymize (keyed HMAC; key in $METAEXTRACT_PHI_KEY).",
        )
        parser.add_argument(
            "--follow_symlinks",
            action="store_true",
            default=False,
            help="Descend into symlinked folders while walking local inputs (loops are detected "
            "and reported).",
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
    options = ViewCachingOptions(argv)
    _check_beam_options(options)
    opts = options.view_as(MetaextractOptions)
    if any(not value.strip() for value in opts.input or ()):
        raise UsageError("--input must not be empty (give a path, a glob or a URL)")
    if not (opts.output or "").strip():
        raise UsageError("--output must not be empty")
    return opts, options


def _check_beam_options(options: PipelineOptions) -> None:
    """Beam flags whose bad values Beam reports only once the run starts, with a traceback."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise UsageError(f"--direct_num_workers must be >= 0 (0: one per CPU), got {workers}")
    runner = options.view_as(StandardOptions).runner
    if isinstance(runner, str) and runner:
        from apache_beam.runners.runner import create_runner

        try:
            create_runner(runner)
        except ValueError as exc:
            raise UsageError(str(exc).splitlines()[0]) from None
        except ImportError as exc:
            raise UsageError(f"--runner={runner} needs a package that is not installed: {exc}") from None


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ViewCachingOptions(PipelineOptions):
    """``PipelineOptions`` whose ``view_as(cls)`` makes each view once.

    Beam calls ``options.view_as(...)`` over a thousand times while it builds and translates a
    pipeline of this size (several per transform), and each call builds an argparse parser and
    parses the flags again: about a second of every run. A view holds no state of its own (it
    reads and writes the options it views), so the same view object serves every call; a view
    is made again should the options' flags or values be replaced. Defines no options.
    """

    def view_as(self, cls):
        views = _VIEWS.get(self)
        if views is None:
            views = _VIEWS[self] = {}
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options or view._flags is not self._flags:
            view = views[cls] = super().view_as(cls)
        return view


def beam_only_options(options: PipelineOptions) -> dict[str, Any]:
    """The options without metaextract's own, for the runner's workers: they do not need them
    (the transforms carry their settings) and would log them back as "unparseable args",
    ``--storage_options`` and its credentials included."""
    parser = argparse.ArgumentParser(add_help=False)
    MetaextractOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    ours = {action.dest for action in parser._actions}  # pylint: disable=protected-access
    return {k: v for k, v in options.get_all_options().items() if k not in ours}


def public_options(options: PipelineOptions) -> dict[str, Any]:
    """The options worth recording in the manifest: set ones only, secrets removed."""
    from transforms.redact import redact_options

    return redact_options(options.get_all_options(drop_default=True, retain_unknown_options=False))


def die(message: str, code: int = 2) -> NoReturn:
    print(f"metaextract: error: {message}", file=sys.stderr)
    raise SystemExit(code)
