"""The catalog pipeline and the ``metaextract`` command line.

    metaextract [--input PATH_OR_URL ...] [--output DIR] [Beam options]

With no ``--input`` it catalogs the sample corpus that ships with the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NoReturn

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineRunner
from fsspec.core import url_to_fs

from pipelines import __version__
from pipelines.forked_workers import WorkerTemplate, forked_workers, kill_workers
from pipelines.options import (
    MetaextractOptions,
    UsageError,
    die,
    parse_flags,
    public_options,
)
from pipelines.progress import ProgressDisplay, human_bytes
from transforms import forkserver, schemas
from transforms.extract import (
    FILE_ROWS_KEY,
    FILES_TABLE,
    GOVERNOR_KEY,
    LARGE_FILE_ROWS_KEY,
    ExtractMetadata,
    ExtractOptions,
    extraction_started,
)
from transforms.formats import likely_formats, registry
from transforms.formats.base import format_error
from transforms.incremental import (
    CachePolicy,
    CarryForward,
    PlanAgainstCacheFn,
    ReadCache,
    RollUpCarriedShardsFn,
    check_catalog,
    files_to_read,
    has_catalog,
    keep_unlisted_folders,
    previous_files,
    publish_if_unchanged,
    read_previous_manifest,
    routed,
)
from transforms.isolation import extraction_template
from transforms.listing import (
    InputError,
    ListedFileBatches,
    ListFileBatches,
    is_local,
    list_inputs,
    skipped_summary,
    write_listing,
)
from transforms.phi import PhiKeyMissing, PhiPolicy
from transforms.publish import roll_forward
from transforms.redact import (
    install_log_redaction,
    redact_text,
    redact_url,
    secret_values,
)
from transforms.rollups import PARTIALS, RollUps, read_partials
from transforms.sink import (
    CACHE_SIZE,
    CARRIED,
    FILE_ROWS,
    GOVERNOR,
    MANIFEST,
    WRITTEN,
    WriteCatalog,
    WriteShardsFn,
)
from transforms.work import Settings

SAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_data")
logger = logging.getLogger(__name__)
LOCAL_RUNNERS = {None, "DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
#: ``--runner`` values (None: not given) that mean Beam's DirectRunner.
DIRECT_RUNNERS = {None, "DirectRunner", "direct", "SwitchingDirectRunner"}


def catalog_tables() -> dict[str, pa.Schema]:
    """``files`` plus every table of every registered extractor, in a stable order."""
    return {FILES_TABLE: schemas.FILES, **registry().tables()}


def normalize_output(output: str) -> str:
    return output if "://" in output else os.path.abspath(output)


@dataclasses.dataclass
class CatalogFiles(beam.PTransform):
    """The whole recipe: list -> compare with cache -> detect -> extract -> roll up -> write.

    Applies to any pipeline and runner.

    Args:
      inputs: ``--input`` values.
      output: catalog folder or URL.
      manifest: run information recorded in ``manifest.json``.
      storage_options: passed to fsspec.
      follow_symlinks: descend into symlinked folders (``--follow_symlinks``, loops detected).
      settings: what every file gets (checksum, statistics, format options; ``files.settings``).
      extract: isolation, time limit, retries and memory budget of the extraction.
      progress_dir: local folder for live progress, or None.
      previous: the previous catalog used as the cache, or None.
      policy: when cached files are read again (``--full``, ``--retry_errors``).
      run_id: names the staging folder.
      listing: a local file with the launcher's listing of ``inputs`` (:func:`write_listing`),
        used instead of listing them again (in-process runs only), or None.
    """

    inputs: list[str]
    output: str
    manifest: dict[str, Any]
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    follow_symlinks: bool = False
    settings: Settings = dataclasses.field(default_factory=Settings)
    extract: ExtractOptions = dataclasses.field(default_factory=ExtractOptions)
    progress_dir: str | None = None
    previous: str | None = None
    policy: CachePolicy = dataclasses.field(default_factory=lambda: CachePolicy(__version__))
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    listing: str | None = None
    #: False when no listed file can have data units (``ExtractMetadata.data_units``).
    data_units: bool = True

    def __post_init__(self):
        super().__init__()

    def expand(self, pbegin):
        tables = catalog_tables()
        all_tables = {**tables, **schemas.ROLLUP_TABLES}
        writer = WriteCatalog(self.output, all_tables, self.manifest, self.storage_options, self.run_id)
        if self.listing:
            listed = pbegin | "ListFiles" >> ListedFileBatches(self.listing)
        else:
            listed = pbegin | "ListFiles" >> ListFileBatches(
                self.inputs, self.storage_options, self.follow_symlinks, exclude=self.output
            )
        if self.previous:
            cache = pbegin | "ReadCache" >> ReadCache(self.previous, self.storage_options)
            planned = (
                listed
                | "CompareWithCache"
                >> beam.ParDo(PlanAgainstCacheFn(self.policy), cache=beam.pvalue.AsList(cache))
            )
            to_extract = planned | "FilesToExtract" >> beam.FlatMap(routed, PlanAgainstCacheFn.EXTRACT)
        else:  # a first run: every file is new (no cache stages: each costs Beam start-up time)
            to_extract = listed
        rows = to_extract | "ExtractMetadata" >> ExtractMetadata(
            [], self.settings, self.extract, self.progress_dir, data_units=self.data_units
        )
        # Batches of files' rows (every table's), in two branches: files read whole, large
        # files completed from their data units. Each is written and rolled up where it is
        # made: its rows never cross the runner (a Flatten would encode and decode them).
        batches = {"ReadFiles": rows[FILE_ROWS_KEY]}
        if LARGE_FILE_ROWS_KEY in rows:
            batches["LargeFiles"] = rows[LARGE_FILE_ROWS_KEY]
        partials = [b | f"RollUp{name}" >> beam.FlatMap(read_partials) for name, b in batches.items()]
        written: dict[str, Any] = {GOVERNOR: rows[GOVERNOR_KEY]} if GOVERNOR_KEY in rows else {}
        if self.extract.batch_calls:
            written[WRITTEN] = [
                b | f"WriteShardsOf{name}" >> beam.ParDo(WriteShardsFn(all_tables, writer.staging, self.storage_options))
                for name, b in batches.items()
            ] | "AllWritten" >> beam.Flatten()
        else:  # the runner drops what finish_bundle emits: the rows go to the writer's combine
            written[FILE_ROWS] = list(batches.values()) | "AllFiles" >> beam.Flatten()
        if self.previous:  # rows of unchanged files carried forward; the roll-ups cover them too
            to_carry = planned | "PathsToCarry" >> beam.FlatMap(routed, PlanAgainstCacheFn.CARRY)
            carried = to_carry | "CarryForward" >> CarryForward(
                self.previous, writer.staging, tables, self.storage_options
            )
            partials.append(
                carried
                | "RollUpCarriedShards"
                >> beam.ParDo(RollUpCarriedShardsFn(self.extract, self.storage_options), beam.pvalue.AsList(cache))
            )
            written[CARRIED] = carried
            written[CACHE_SIZE] = cache | "PathsPerCachePart" >> beam.Map(len)  # summed by the writer
        rollup_input = {PARTIALS: partials | "AllPartials" >> beam.Flatten()}
        return {**written, **(rollup_input | "RollUps" >> RollUps())} | "WriteCatalog" >> writer


class RunnerUnavailable(RuntimeError):
    """A remote runner that could not take the job (its service unreachable, its job server
    not downloadable): one line on stderr and exit code 1."""


#: Object stores whose first path component is a bucket (container), which is never created.
_BUCKET_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "oss"})


def check_output(output: str, storage_options: dict[str, Any]) -> None:
    """Fail early, with a clear message, when the output cannot be written."""
    try:
        fs, path = url_to_fs(output, **storage_options)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        bucket = path.strip("/").split("/", 1)[0]
        if protocols & _BUCKET_STORES and bucket and not fs.exists(bucket):
            # s3fs's makedirs would create the bucket: a typo must not make one in the account
            raise UsageError(redact_text(f"cannot write --output {output!r}: bucket {bucket!r} does not exist "
                                         "or cannot be accessed (metaextract does not create buckets)"))
        fs.makedirs(path, exist_ok=True)
        if is_local(fs):
            # the folder, and each table folder an earlier run left (publishing replaces files there)
            tables = [os.path.join(path, t) for t in {**catalog_tables(), **schemas.ROLLUP_TABLES}]
            for folder in [path] + [t for t in tables if os.path.isdir(t)]:
                probe = os.path.join(folder, f".metaextract-write-test-{uuid.uuid4().hex[:8]}")
                with open(probe, "wb"):
                    pass
                os.remove(probe)
    except UsageError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(redact_text(f"cannot write --output {output!r}: {exc}")) from None


try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

#: In a local --output: held (flock) by the run writing the catalog there.
LOCK_FILE = ".metaextract-lock"


@contextlib.contextmanager
def output_locked(output: str, storage_options: dict[str, Any]) -> Iterator[None]:
    """Hold the local ``output``'s lock for the block; a usage error when another run holds it
    (two runs on one output: one would publish over the other, and remove its staging folder).
    Object stores have no such lock."""
    fs, path = url_to_fs(output, **storage_options)
    if fcntl is None or not is_local(fs):
        yield
        return
    lock = os.path.join(path, LOCK_FILE)
    try:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another account's lock file in a shared catalog: flock needs no write
            fd = os.open(lock, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(redact_text(f"cannot lock --output {output!r}: {format_error(exc)}")) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another metaextract run is writing the catalog at {redact_text(output)} "
                             f"(it holds {LOCK_FILE}); run one job per --output at a time") from None
        except OSError as exc:  # a file system without locks (some NFS, CIFS, FUSE mounts)
            logger.warning("--output %s cannot be locked (%s): runs on it are not kept apart",
                           redact_text(output), format_error(exc))
        yield
    finally:
        os.close(fd)  # releases the lock


def run(
    argv: list[str] | None = None, *, stdout=sys.stdout, stderr=sys.stderr, wait: bool = True
) -> dict[str, Any]:
    """Run the pipeline for ``argv`` and return the manifest. Raises UsageError/InputError.

    With ``wait=False`` (a Flex Template launcher, which must not wait) it returns as soon as the
    runner accepted the job: the run's starting manifest plus ``state``; the job publishes the
    catalog and its manifest when it finishes.
    """
    with contextlib.ExitStack() as held:
        return _run(argv, held, stdout=stdout, stderr=stderr, wait=wait)


def _run(argv: list[str] | None, held: contextlib.ExitStack, *, stdout, stderr, wait: bool) -> dict[str, Any]:
    """:func:`run`; ``held`` keeps the output's lock until the run is over."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts, pipeline_options = parse_flags(argv)
    template = None
    if wait and forks_workers(pipeline_options):  # now: Beam imported, no thread of ours running yet
        template = WorkerTemplate.start(extraction=opts.file_timeout_s > 0)
        if template is not None:
            held.callback(template.close)  # on an error before the output is locked
    try:
        phi = PhiPolicy.from_env(opts.phi)
    except PhiKeyMissing as exc:
        raise UsageError(str(exc)) from None
    inputs = opts.input or [SAMPLE_DATA]
    storage_options = dict(opts.storage_options or {})
    output = normalize_output(opts.output)
    runner = pipeline_options.view_as(StandardOptions).runner
    local = runner in LOCAL_RUNNERS
    install_log_redaction(secret_values(storage_options))  # no credentials in any log record
    skipped = []  # what the listing saw but did not list (unreadable folders, symlinked folders...)
    listed = list_inputs(inputs, storage_options, opts.follow_symlinks, skipped, exclude=output)  # a clear error now for an input that matches nothing
    total_files, total_bytes = len(listed), sum(info.size for info in listed.values())
    check_output(output, storage_options)
    if template is not None:
        held.callback(template.close)  # and from here on before the lock is let go of
    held.enter_context(output_locked(output, storage_options))
    try:
        rolled = roll_forward(output, storage_options)
    except OSError as exc:
        raise UsageError(redact_text(f"cannot finish publishing the catalog a previous run left at {output}: {exc}")) from None
    if rolled:
        print(f"metaextract: finished publishing the catalog a previous run left at {redact_text(output)}", file=stderr)
    previous = find_previous(opts.previous, output, storage_options)
    settings = Settings(
        storage_options,
        {"bulk_data_threshold": opts.bulk_data_threshold},
        checksum=opts.checksum,
        stats=opts.stats,
        chunk_threshold_bytes=opts.chunk_threshold_mb << 20,
        unit_bytes=opts.chunk_threshold_mb << 20,
        phi=phi,
    )
    extract = ExtractOptions(
        file_timeout_s=opts.file_timeout_s,
        max_retries=opts.max_retries,
        max_memory_per_worker_mb=opts.max_memory_per_worker_mb,
        unit_threads=opts.unit_threads,
        memory_thresholds=tuple(opts.memory_thresholds),
        batch_calls=not _drops_finish_bundle_output(pipeline_options),
        preload=tuple(likely_formats(listed)),  # a hint from the file names, for the extraction processes
    )
    policy = CachePolicy(
        __version__, full=opts.full, retry_errors=opts.retry_errors, settings=settings.recorded()
    )
    run_id = uuid.uuid4().hex[:12]
    manifest = {
        "run_id": run_id,
        "extractor_version": __version__,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "options": public_options(pipeline_options)
        | {"input": [redact_text(i) for i in inputs], "output": redact_text(output)},
        "previous_catalog": redact_text(previous) if previous else None,
        "listing_skipped": skipped_summary(skipped),
        "previous_run": _previous_run(previous, storage_options),
    }
    start = time.monotonic()
    # the previous catalog's files, read once: whether anything changed, and what progress counts
    cache = previous_files(previous, storage_options) if previous and not policy.full else None
    if cache and wait and local:  # the pipeline reads this listing (other runners list again)
        kept = keep_unlisted_folders(listed, cache, skipped)
        if kept:
            manifest["carried_unlisted"] = kept
            logger.warning("%d files of the previous catalog are in folders this run could not list: "
                           "kept as they were, not counted as deleted", kept)
    result = publish_if_unchanged(
        listed, output, previous, policy, {**catalog_tables(), **schemas.ROLLUP_TABLES},
        schemas.ROLLUP_TABLES, manifest, run_id, storage_options, cache,
    )
    if result is not None:
        return _finish(result, opts, output, storage_options, time.monotonic() - start, stdout, stderr)
    show_progress = wait and local and (opts.progress == "on" or (opts.progress == "auto" and stderr.isatty()))
    if show_progress and cache is not None:  # progress counts the files this run reads, not those carried
        to_read = files_to_read(listed, cache, policy)
        total_files, total_bytes = len(to_read), sum(info.size for info in to_read)
    direct = pipeline_options.view_as(DirectOptions)
    if wait and local and opts.file_timeout_s > 0 and parallel_workers(direct) > 1:
        # several extraction processes at once: forked from one template that imports their
        # libraries once (one process stays a fresh interpreter: no template's memory beside it)
        held.enter_context(extraction_template(extract.preload))
    in_this_process = wait and local and direct.direct_running_mode != "multi_processing" and opts.file_timeout_s > 0
    with (
        extraction_started(opts.file_timeout_s, extract.preload, parallel_workers(direct))
        if in_this_process
        else contextlib.nullcontext(),
        tempfile.TemporaryDirectory(prefix="metaextract-run-") as progress_dir,
    ):
        listing, data_units = None, True
        if wait and local:
            # The pipeline runs now, on this machine: it reads this listing (this process or
            # its local workers) instead of listing the inputs again, and without a file to
            # split it has no data-unit branch.
            listing = os.path.join(progress_dir, "listing.pickle")
            write_listing(listed.values(), listing, workers=local_workers(direct))
            data_units = settings.reads_data and any(i.size > settings.chunk_threshold_bytes for i in listed.values())
        recipe = CatalogFiles(
            inputs,
            output,
            manifest,
            storage_options,
            opts.follow_symlinks,
            settings,
            extract,
            progress_dir if show_progress else None,
            previous,
            policy,
            run_id,
            listing,
            data_units,
        )
        start = time.monotonic()
        with memoized_dofn_specs():
            try:
                pipeline = beam.Pipeline(runner=direct_runner(pipeline_options, template), options=pipeline_options)
            except ValueError as exc:  # Beam's checks of the runner's options (Dataflow: --project...)
                raise UsageError(redact_text(" ".join(str(exc).split()))) from None
            _ = pipeline | "Catalog" >> recipe
            if show_progress:
                with ProgressDisplay(progress_dir, total_files, total_bytes, stream=stderr):
                    pipeline.run().wait_until_finish()
            else:
                try:
                    job = pipeline.run()
                except (ValueError, ImportError) as exc:
                    if local:
                        raise
                    # e.g. Dataflow without --project or --region: Beam checks them on submission
                    raise UsageError(f"the runner refused the job: {redact_text(str(exc).splitlines()[0])}") from None
                except Exception as exc:
                    if local:
                        raise
                    # e.g. Flink's job server cannot be downloaded or reached: one line, exit 1
                    raise RunnerUnavailable(f"the runner could not start the job: {format_error(exc)}") from None
                if not wait:
                    print(f"metaextract: submitted run {run_id}; it publishes {redact_url(output)}", file=stdout)
                    return {**manifest, "state": str(job.state)}
                job.wait_until_finish()
        elapsed = time.monotonic() - start
    fs, root = url_to_fs(output, **storage_options)
    with fs.open(f"{root.rstrip('/')}/{MANIFEST}", "r") as f:
        result = json.load(f)
    return _finish(result, opts, output, storage_options, elapsed, stdout, stderr)


def local_workers(direct: DirectOptions) -> int:
    """How many workers the in-process runner runs bundles on (``--direct_num_workers``, 0 for
    one per CPU, as the FnApiRunner reads it)."""
    workers = direct.direct_num_workers
    return (os.cpu_count() or 1) if workers == 0 else (workers or 1)


def parallel_workers(direct: DirectOptions) -> int:
    """How many workers a local run reads files on at once (``in_memory``: one)."""
    return local_workers(direct) if direct.direct_running_mode in ("multi_processing", "multi_threading") else 1


def _drops_finish_bundle_output(pipeline_options: PipelineOptions) -> bool:
    """Beam 2.77's DaskRunner collects a ParDo's output before calling ``finish_bundle``, so
    what a DoFn emits there is lost: on it, files and data units are not batched."""
    runner = pipeline_options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return "Dask" in name


def forks_workers(pipeline_options: PipelineOptions) -> bool:
    """Whether the run starts local worker processes that a :class:`WorkerTemplate` can fork."""
    direct = pipeline_options.view_as(DirectOptions)
    return (
        direct_runner(pipeline_options) is not None
        and direct.direct_running_mode == "multi_processing"
        and forkserver.supported()
    )


def direct_runner(pipeline_options: PipelineOptions, template: WorkerTemplate | None = None) -> PipelineRunner | None:
    """The runner for ``--runner`` not given or DirectRunner: :class:`InProcessRunner`; else
    None (``--runner`` decides).

    Beam 2.77's DirectRunner first tries the PrismRunner, which downloads a Go binary from GitHub
    and, where that fails (no network), falls back to the FnApiRunner: about a second lost on
    every run, and a surprise download where it does not fail. This pipeline needs nothing the
    FnApiRunner lacks (no TestStream, Pub/Sub or real-time timers), so a batch run goes there
    directly. ``--runner=PrismRunner`` still runs on Prism. ``template`` forks its
    ``multi_processing`` workers.
    """
    standard = pipeline_options.view_as(StandardOptions)
    if standard.runner not in DIRECT_RUNNERS or standard.streaming:
        return None
    return InProcessRunner(template)


class InProcessRunner(PipelineRunner):
    """The FnApiRunner, set up as Beam's DirectRunner sets it up for a batch pipeline (its
    ``--direct_num_workers`` and ``--direct_running_mode`` apply); ``template``, if given, forks
    the worker processes of ``multi_processing``."""

    def __init__(self, template: WorkerTemplate | None = None):
        super().__init__()
        self._template = template

    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        from pipelines.options import beam_only_options

        worker_options = beam_only_options(options)
        # local worker processes log to this command's stderr: Beam's messages at ERROR, as the
        # launcher's (about 40 lines of INFO and WARNING per run otherwise)
        if worker_options.get("default_sdk_harness_log_level") is None:
            worker_options["default_sdk_harness_log_level"] = "ERROR"
        encoded = JobServiceHandle.encode_pipeline_options(worker_options)
        provision_info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        with short_state_sampling(), workers_stopped_together(), forked_workers(self._template):
            return fn_runner.FnApiRunner(provision_info=provision_info).run_pipeline(pipeline, options)


#: The in-process runner's state sampling period, at most (Beam's default: 200 ms).
STATE_SAMPLING_PERIOD_MS = 20


@contextlib.contextmanager
def short_state_sampling():
    """Beam's state sampler with a period of at most :data:`STATE_SAMPLING_PERIOD_MS`, for the
    bundles this process runs meanwhile.

    Every bundle ends by joining its sampler's thread, which sleeps a whole period (rising from
    2 ms to 200 ms as the bundle runs) before it notices: a run of 13 stages spent 0.13-0.18 s
    waiting there. The sampler only feeds the runner's per-step time figures.
    """
    from apache_beam.runners.worker import statesampler

    beams = statesampler.StateSampler

    class ShortPeriodStateSampler(beams):
        def __init__(self, prefix, counter_factory, sampling_period_ms=STATE_SAMPLING_PERIOD_MS):
            super().__init__(prefix, counter_factory, min(sampling_period_ms, STATE_SAMPLING_PERIOD_MS))

    statesampler.StateSampler = ShortPeriodStateSampler
    try:
        yield
    finally:
        statesampler.StateSampler = beams


@contextlib.contextmanager
def workers_stopped_together():
    """At the end of a run, every worker is told it is done before the runner waits for any.

    Beam's ``WorkerHandlerManager.close_all`` closes one worker after the other, each close
    waiting until its worker process has torn down its DoFns and exited (0.3-0.5 s each): with
    ``multi_processing`` the workers' shutdowns ran one after the other at the end of every run.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    manager = worker_handlers.WorkerHandlerManager
    beams = manager.close_all

    def close_all(self):
        for handlers in list(self._cached_handlers.values()):
            for handler in set(handlers):
                if isinstance(handler, worker_handlers.GrpcWorkerHandler):  # a worker process
                    try:
                        handler.control_conn.close()  # its control stream ends: it shuts down
                    except Exception:  # noqa: BLE001, S110 - Beam's close_all below reports it
                        pass
        beams(self)

    manager.close_all = close_all
    try:
        yield
    finally:
        manager.close_all = beams


@contextlib.contextmanager
def memoized_dofn_specs():
    """Beam's DoFn introspection (``userstate.get_dofn_specs``) once per DoFn object while a
    pipeline is built and run in this process.

    Beam asks it of every ParDo's DoFn about seven times (building the ParDo, translating it,
    setting up each bundle processor), and each answer inspects the signature of every method
    of the DoFn (about 40 of them, 2.6 ms): 0.63 s of a 3.3 s run on 2,000 files, measured with
    cProfile. The answer (the DoFn's state and timer specs) depends on its methods only, which
    do not change during a run.
    """
    from apache_beam.transforms import userstate

    beams = userstate.get_dofn_specs
    answers: dict[int, tuple[Any, tuple[set, set]]] = {}

    def get_dofn_specs(dofn):
        known = answers.get(id(dofn))
        if known is None or known[0] is not dofn:  # (the DoFn is kept: its id is not reused)
            known = answers[id(dofn)] = (dofn, beams(dofn))
        state_specs, timer_specs = known[1]
        return set(state_specs), set(timer_specs)

    userstate.get_dofn_specs = get_dofn_specs
    try:
        yield
    finally:
        userstate.get_dofn_specs = beams


def _finish(result, opts, output, storage_options, elapsed, stdout, stderr) -> dict[str, Any]:
    """Summary table, alert (``--max_error_fraction``) and report (``--report``) after a run."""
    print(summary_table(result, output, elapsed), file=stdout)
    limit = opts.max_error_fraction
    if limit is not None and result.get("error_fraction", 0.0) > limit:
        result["alert"] = (
            f"{result['errors_extracted']:,} of {result['files_extracted']:,} files read were errors "
            f"({result['error_fraction']:.1%} > --max_error_fraction {limit:g})"
        )
        print(f"metaextract: alert: {result['alert']}", file=stderr)
    if opts.report:
        from pipelines.report import ReportError, write_report

        try:
            result["report"] = write_report(output, storage_options=storage_options)
            print(f"report: {result['report']}", file=stdout)
        except (ReportError, OSError, ValueError) as exc:  # the catalog itself is published
            print(f"metaextract: warning: could not write the report: {exc}", file=stderr)
    return result


def find_previous(previous: str | None, output: str, storage_options: dict[str, Any]) -> str | None:
    """The cache: ``--previous`` when given (it must be a catalog), else the catalog at ``--output``."""
    if previous:
        previous = normalize_output(previous)
        try:
            ok = has_catalog(previous, storage_options)
        except (OSError, ValueError, ImportError) as exc:
            raise UsageError(f"cannot read --previous {previous!r}: {exc}") from None
        if not ok:
            raise UsageError(f"--previous {previous!r} is not a metaextract catalog (no manifest.json and files/)")
        try:
            check_catalog(previous, catalog_tables(), storage_options)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--previous {previous!r} cannot serve as the cache: {exc}") from None
        return previous
    try:
        if not has_catalog(output, storage_options):
            return None
        check_catalog(output, catalog_tables(), storage_options)
    except (OSError, ValueError) as exc:
        logger.warning("the catalog at --output %s cannot serve as the cache (%s): every file is read again",
                       redact_text(output), exc)
        return None
    return output


def _previous_run(previous: str | None, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    """The previous run's figures, kept in this run's manifest for the comparison."""
    if not previous:
        return None
    before = read_previous_manifest(previous, storage_options)
    if not before:
        return None
    keys = ("run_id", "finished_at", "files_total", "bytes_total", "files_per_s", "counts",
            "bytes_read", "files_extracted", "error_fraction")
    return {k: before[k] for k in keys if k in before}


def summary_table(manifest: dict[str, Any], output: str, elapsed: float) -> str:
    """Files and bytes per format and status, then totals, time and rate."""
    lines = [f"{'format':<10} {'status':<12} {'files':>9} {'bytes':>12}"]
    for fmt, by_status in sorted(manifest["counts"].items()):
        for status, files in sorted(by_status.items()):
            nbytes = manifest["bytes"][fmt][status]
            lines.append(f"{fmt:<10} {status:<12} {files:>9,} {human_bytes(nbytes):>12}")
    lines.append(f"{'total':<10} {'':<12} {manifest['files_total']:>9,} {human_bytes(manifest['bytes_total']):>12}")
    rate = manifest["files_total"] / elapsed if elapsed > 0 else 0.0
    rows = ", ".join(f"{k} {v:,}" for k, v in manifest.get("rows", {}).items())
    changes = manifest.get("changes")
    if changes:
        lines.append(
            "changes: " + ", ".join(f"{k} {changes.get(k, 0):,}" for k in ("new", "changed", "unchanged", "deleted"))
            + f"; read {manifest.get('files_extracted', 0):,}, carried forward {manifest.get('files_carried_forward', 0):,}"
        )
    compared = manifest.get("compared_with_previous")
    if compared:
        lines.append(
            "vs previous run: "
            + ", ".join(
                f"{k} {v['previous']:,} -> {v['current']:,}"
                for k, v in compared.items()
                if isinstance(v, dict) and k in ("files_total", "errors", "files_extracted")
            )
        )
    lines.append(f"{elapsed:.1f} s, {rate:,.0f} files/s; catalog: {redact_text(output)} ({rows})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors and exit code 2 for bad flags, inputs or outputs."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    # Ctrl-C inside a DoFn: Beam logs the KeyboardInterrupt's traceback before re-raising it
    common = logging.getLogger("apache_beam.runners.common")
    if _drop_interrupt_tracebacks not in common.filters:
        common.addFilter(_drop_interrupt_tracebacks)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:  # metaextract report OUT [--html PATH]
        from pipelines import report

        try:
            return report.main(argv[1:])
        except report.ReportError as exc:
            die(str(exc))
    try:
        with interrupt_ends_workers():
            result = run(argv)
    except (UsageError, InputError) as exc:
        die(str(exc))
    except RunnerUnavailable as exc:
        print(f"metaextract: error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted()
    except Exception as exc:
        if _interrupted_by_user(exc):  # Beam re-raises a KeyboardInterrupt in a DoFn as RuntimeError
            return interrupted()
        raise
    return 3 if result.get("alert") else 0


def _drop_interrupt_tracebacks(record: logging.LogRecord) -> bool:
    return not (record.exc_info and _interrupted_by_user(record.exc_info[1]))


@contextlib.contextmanager
def interrupt_ends_workers():
    """Within the block, Ctrl-C (SIGINT) in the main thread also kills the local worker
    processes the run forked (they ignore it; Beam's runner would wait for them for ever) and
    silences what the runner's threads log and raise while the run is torn down (connections
    to the killed workers break): the command says "interrupted", once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
        threading.excepthook = lambda args: None
        kill_workers()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted() -> int:
    print("metaextract: interrupted", file=sys.stderr)
    return 130


def _interrupted_by_user(exc: BaseException) -> bool:
    """True when a KeyboardInterrupt is in ``exc``'s chain of causes and contexts."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def cli() -> NoReturn:
    """The ``metaextract`` command: :func:`main`, then the process ends at once.

    By then the catalog and its manifest are written and closed, the extraction processes
    stopped and the temporary files removed; what is left is the interpreter tearing down the
    runner's objects one by one, about half a second on a large run, which a scheduled job
    would wait for for nothing.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    cli()
