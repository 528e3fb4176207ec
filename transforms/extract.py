"""Turn detected files into catalog rows: a header unit per file, data units for large ones.

``ExtractMetadata`` is the chunk stage and the extraction in one composite::

    FileInfo -> ExtractFile (detection and header unit; small files done here)
             -> large files: SpreadUnits (Reshuffle) -> RunUnit -> MergePerFile (CombinePerKey)
             -> CompleteFiles (CoGroupByKey with the pending rows) -> rows per table

File content is only ever read in an isolated child process (:mod:`transforms.isolation`), with a
time limit per file: a parser that hangs or crashes costs one error row, not the run.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import child, work
from transforms.detect import detect
from transforms.formats.base import FileInfo
from transforms.work import FILES_TABLE, Detected, FileRows, FileWork, Partial, Settings, Unit

__all__ = ["FILES_TABLE", "DetectFormat", "ExtractMetadata", "ExtractOptions", "catalog_rows"]

#: Time limit of the detection that names the format of a file whose reading timed out or crashed.
DETECT_AFTER_FAILURE_S = 10.0

#: Files per call to the extraction process: the first batch, then the memory governor's batch
#: size (which adapts between 1 and 1024), at most MAX_FILES_PER_CALL.
FIRST_BATCH = 64
MAX_FILES_PER_CALL = 256
#: A batch's time limit: one file's limit, plus this much per file in it (plus its data at
#: ``min_rate_bytes_per_s``). A small file's header takes milliseconds locally, about 0.1 s
#: from an object store.
BATCH_SECONDS_PER_FILE = 0.25
#: At most this many data units go to the extraction process in one call.
MAX_UNITS_PER_CALL = 256

#: Reserved key of a file's rows dict: memory governor figures for the manifest, not a table.
GOVERNOR_KEY = "_governor"
#: A chunk threshold no file reaches: every file is read in one unit.
ONE_UNIT = 1 << 62
#: Outputs of ExtractMetadata besides the tables: batches of files' rows by table
#: (:class:`FileRows`), what the catalog writer takes (one element per batch, not per row),
#: for files read in one unit and for large files completed from their data units.
FILE_ROWS_KEY = "_file_rows"
LARGE_FILE_ROWS_KEY = "_large_file_rows"


_QUICK_EXIT = []


def quick_exit_of_beam_worker() -> None:
    """In a Beam SDK worker process (``python -m apache_beam.runners.worker.sdk_worker_main``,
    which the runner starts for this job and ends after it), skip the interpreter's last
    garbage collection at exit (:func:`gc.freeze` from an ``atexit`` hook).

    That collection walks every object the worker holds (Beam's and the format libraries'
    modules: about a million) to find reference cycles among objects the process is dropping
    anyway: 0.25-0.3 s of CPU at the end of every worker, measured, against 0.04 s. Nothing of
    the job depends on it (rows, shards and files are written and closed explicitly before).
    Other processes (the launcher, tests, a program that embeds these transforms) are left as
    they are."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if not _QUICK_EXIT and spec is not None and spec.name == "apache_beam.runners.worker.sdk_worker_main":
        _QUICK_EXIT.append(True)
        atexit.register(gc.freeze)


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """How files are read: isolation, retries and the memory budget (not recorded per row)."""

    file_timeout_s: float = 120.0  # 0: no isolation (in-process, no time limit)
    max_retries: int = 3
    max_memory_per_worker_mb: int = 500
    #: Threads that run data units in an extraction process (0: one per core this process may use).
    unit_threads: int = 0
    #: Send files and data units to the extraction process in batches, the last ones emitted in
    #: ``finish_bundle`` (False for runners that drop what is emitted there: one per call).
    batch_calls: bool = True
    memory_thresholds: tuple[float, float, float] = (0.70, 0.85, 0.95)
    #: A data unit's time limit grows with its size at this rate (a slow disk must not time out).
    min_rate_bytes_per_s: float = 50e6
    #: Formats whose libraries a worker's first extraction process loads as the worker sets up
    #: (a hint from the listing's file names, never detection).
    preload: tuple[str, ...] = ()


def catalog_rows(
    detected: Detected,
    storage_options: Mapping[str, Any] | None = None,
    extract_options: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every catalog row for one file, in this process: ``{"files": [row], "<format>": [...]}``.

    Large files' data units run here too. Never raises for a file's content.
    """
    settings = settings or Settings(storage_options or {}, extract_options or {}, checksum="none")
    result = work.read_detected(detected, settings)
    if result.units:
        partial = work.merge_partials(work.run_unit(u, settings) for u in result.units)
        return work.complete_rows(result.rows, partial, settings)
    return result.rows


# --- the Beam side -----------------------------------------------------------------------------


class ExtractionPool:
    """A worker process's extraction processes: started on demand, at most ``size``, each
    serving one call at a time; a thread that finds them all busy waits for one.

    Beam runs several bundles of a worker process at once on threads (the DirectRunner's
    ``multi_threading`` mode, Dataflow's SDK harness): each thread's file work then runs in an
    extraction process of its own, on a core of its own.
    """

    def __init__(self, timeout_s: float, size: int):
        self.timeout_s = timeout_s
        self.size = max(1, size)
        self._idle: list = []
        self._started = 0
        self._warming = 0  # processes being started by warm()
        self._closed = False
        self._cond = threading.Condition()

    def warm(self, preload: list[str] | tuple[str, ...] = (), count: int = 1) -> None:
        """Start up to ``count`` extraction processes now (at most the pool's size, counting
        those already started), in the background (each takes about a second), so that they
        are ready when the first files come; a borrower meanwhile waits for one. They also load
        the ``preload`` formats' libraries meanwhile (each on a core of its own)."""
        with self._cond:
            new = min(count, self.size) - self._started - self._warming
            if new <= 0:
                return
            self._warming += new

        def start() -> None:
            try:
                with self.borrow(warming=True) as runner:
                    runner.call(child.preload, list(preload)) if preload else runner.call(os.getpid)
            except Exception:  # the first real call reports a process that cannot start
                pass

        for _ in range(new):
            threading.Thread(target=start, name="metaextract-warm", daemon=True).start()

    @contextlib.contextmanager
    def borrow(self, *, warming: bool = False):
        from transforms.isolation import IsolatedRunner

        with self._cond:
            runner = None
            if not (warming and self._started < self.size):  # warm() starts a process of its own
                while not self._idle and (self._started >= self.size or (self._warming and not warming)):
                    self._cond.wait()
                runner = self._idle.pop() if self._idle else None
            if runner is None:
                runner = IsolatedRunner(self.timeout_s, initializer=child.start, initargs=(dict(os.environ),))
                self._started += 1
        try:
            yield runner
        finally:
            with self._cond:
                closed = self._closed
                if not closed:
                    self._idle.append(runner)
                if warming:
                    self._warming -= 1
                self._cond.notify_all()
            if closed:  # the pool was closed meanwhile (a process still warming): stop it too
                runner.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for runner in idle:
            runner.close()


def default_pool_size() -> int:
    """One extraction process per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_POOLS: dict[float, list] = {}  # time limit -> [ExtractionPool, users]
_POOLS_LOCK = threading.Lock()


def _acquire_pool(timeout_s: float) -> ExtractionPool:
    """The worker process's extraction pool (shared by every DoFn instance in it)."""
    with _POOLS_LOCK:
        entry = _POOLS.get(timeout_s)
        if entry is None:
            entry = _POOLS[timeout_s] = [ExtractionPool(timeout_s, default_pool_size()), 0]
        entry[1] += 1
        return entry[0]


@contextlib.contextmanager
def extraction_started(timeout_s: float, preload: list[str] | tuple[str, ...] = (), workers: int = 1):
    """Within the block, this process's extraction pool exists and starts a process per worker
    thread (at most one per core) in the background, each loading the ``preload`` formats'
    libraries: a local run overlaps those starts with building and translating the pipeline."""
    _acquire_pool(timeout_s).warm(preload, workers)
    try:
        yield
    finally:
        _release_pool(timeout_s)


def _release_pool(timeout_s: float) -> None:
    with _POOLS_LOCK:
        entry = _POOLS.get(timeout_s)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _POOLS[timeout_s]


def _info(item: FileInfo | Detected) -> FileInfo:
    return item.info if isinstance(item, Detected) else item


class _Reader:
    """Runs file work in the isolated extraction process, with retries for transient errors.

    In-process instead when the time limit is 0 (trusted data, debugging) and for
    ``memory://`` files (the in-memory file system exists in this process only).
    """

    def __init__(self, settings: Settings, options: ExtractOptions):
        self._settings = settings
        self._options = options
        self._budget = options.max_memory_per_worker_mb * (1 << 20)
        self._pool = None
        self._pool_lock = threading.Lock()

    def _args(self, work_items, *extra) -> tuple:
        """The arguments of a :mod:`transforms.child` call: its items, then what every call takes."""
        return (work_items, self._settings, self._budget, self._options.memory_thresholds, os.getpid(), *extra)

    def _call(self, fn, args, timeout_s: float, path: str, transient_result, max_retries: int | None = None):
        from transforms.faults import is_remote, retry

        def attempt():
            if self._options.file_timeout_s <= 0 or path.startswith("memory://"):
                return fn(*args)
            with self._extraction_pool().borrow() as runner:
                return runner.call_within(timeout_s, fn, *args)

        retries = self._options.max_retries if max_retries is None else max_retries
        return retry(attempt, max_retries=retries, remote=is_remote(path), transient_result=transient_result)

    def read(self, item: FileInfo | Detected, max_retries: int | None = None):
        """(FileWork, governor stats) for one listed (or already detected) file; detection and
        extraction run in the extraction process; a hang or crash becomes an error row.
        ``max_retries``: instead of ``--max_retries`` (a file already tried once in a batch)."""
        from transforms.faults import is_remote

        info = _info(item)
        start = time.perf_counter()
        try:
            (result, governor), tries = self._call(
                child.read, self._args(item), self._options.file_timeout_s, info.path,
                lambda r: r[0].rows[FILES_TABLE][0]["error_kind"] == "transient", max_retries,
            )
        except Exception as exc:
            seconds = time.perf_counter() - start
            detected = item if isinstance(item, Detected) else self._detect_after_failure(info)
            return self._failed(detected, exc, is_remote(info.path), seconds), {}
        result.rows[FILES_TABLE][0]["attempts"] = tries
        return result, governor

    def read_many(self, items: list[FileInfo | Detected]) -> list[tuple[FileWork, dict]]:
        """:meth:`read` of several (small) files in one call to the extraction process: one
        round trip instead of one per file. When that call fails (a crash, a hang past its time
        limit), and for each file that failed transiently, the file is read again alone, with
        its own time limit and retries: a hang then costs its time limit twice."""
        if len(items) == 1:
            return [self.read(items[0])]
        settings = self._settings
        data = sum(min(_info(i).size, settings.chunk_threshold_bytes) for i in items) if settings.reads_data else 0
        limit = self._options.file_timeout_s + data / self._options.min_rate_bytes_per_s + len(items) * BATCH_SECONDS_PER_FILE
        try:
            (results, governor), _ = self._call(child.read_many, self._args(items), limit, _info(items[0]).path, lambda r: False)
        except Exception:
            return [self.read(i) for i in items]
        out = []
        for n, (item, result) in enumerate(zip(items, results)):
            row = result.rows[FILES_TABLE][0]
            if row["error_kind"] == "transient" and self._options.max_retries > 0:
                # the batch was its first attempt: at most --max_retries more, as a file read alone
                again, figures = self.read(item, max_retries=self._options.max_retries - 1)
                again.rows[FILES_TABLE][0]["attempts"] += 1
                out.append((again, figures))
                continue
            row["attempts"] = 1
            out.append((result, governor if n == 0 else {}))
        return out

    def _detect_after_failure(self, info: FileInfo) -> Detected:
        """The format of a file whose reading timed out or crashed, for its error row: detected
        alone, in the extraction process, within a short time limit; ``unknown`` if that fails too."""
        limit = min(self._options.file_timeout_s, DETECT_AFTER_FAILURE_S)
        try:
            detected, _ = self._call(
                detect, (info, self._settings.storage_options), limit, info.path, lambda d: False
            )
            return dataclasses.replace(detected, error=None, error_kind=None)
        except Exception:
            return Detected(info, "unknown")

    def run_unit(self, unit: Unit) -> tuple[Partial, dict]:
        from transforms.faults import is_remote

        remote = is_remote(unit.path)
        limit = self._options.file_timeout_s + unit.nbytes / self._options.min_rate_bytes_per_s
        try:
            result, _attempts = self._call(
                child.run_unit, self._args(unit), limit, unit.path, lambda r: r[0].error_kind == "transient"
            )
            return result
        except Exception as exc:
            from transforms.faults import classify
            from transforms.formats.base import format_error

            return Partial(error=format_error(exc), error_kind=classify(exc, remote=remote), units=1), {}

    def run_units(self, units: list[Unit]) -> list[tuple[Partial, dict]]:
        """(Partial, governor figures) of each unit: all of them in one call to the extraction
        process, on ``unit_threads`` threads there; a unit that failed transiently (or all of
        them, when the call itself failed) runs again alone, with retries (:meth:`run_unit`)."""
        if len(units) == 1:
            return [self.run_unit(units[0])]
        threads = self._options.unit_threads or default_pool_size()
        limit = self._options.file_timeout_s + sum(u.nbytes for u in units) / self._options.min_rate_bytes_per_s
        try:
            (partials, governor), _ = self._call(
                child.run_units, self._args(units, threads), limit, units[0].path, lambda r: False
            )
        except Exception:
            return [self.run_unit(u) for u in units]
        out = [(p, governor if i == 0 else {}) for i, p in enumerate(partials)]
        return [self.run_unit(u) if p.error_kind == "transient" else (p, g) for u, (p, g) in zip(units, out)]

    def _failed(self, detected: Detected, exc: BaseException, remote: bool, seconds: float) -> FileWork:
        from transforms.faults import classify
        from transforms.formats.base import format_error

        row = work.file_row(
            detected.info,
            detected.format,
            self._settings,
            status="error",
            error=format_error(exc),
            error_kind=classify(exc, remote=remote),
            attempts=getattr(exc, "metaextract_attempts", 1),
            bytes_read=detected.reads[0],
            read_requests=detected.reads[1],
            extract_seconds=seconds,
        )
        return FileWork({FILES_TABLE: [row]})

    def _extraction_pool(self) -> ExtractionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _acquire_pool(self._options.file_timeout_s)
            return self._pool

    def warm(self) -> None:
        """Start the first extraction process now, in the background, loading the libraries of
        ``options.preload``: a worker overlaps that with the rest of its set-up."""
        if self._options.file_timeout_s > 0:
            self._extraction_pool().warm(self._options.preload)

    def close(self):
        if self._pool is not None:
            self._pool = None
            _release_pool(self._options.file_timeout_s)


class _FileCounter:
    """Counts finished files in the Beam metrics and, on a local run, in the progress display."""

    def __init__(self, progress_dir: str | None):
        from pipelines.progress import ProgressReporter
        from transforms.metrics import ExtractMetrics

        self._metrics = ExtractMetrics()
        self._progress = ProgressReporter(progress_dir) if progress_dir else None

    def count(self, file_row: dict[str, Any], seconds: float) -> None:
        self._metrics.record(file_row, seconds)
        if self._progress is not None:
            self._progress.add(1, file_row["size_bytes"])

    def flush(self) -> None:
        if self._progress is not None:
            self._progress.flush()


class ExtractFileFn(beam.DoFn):
    """Header units of files (one file, or a list of files per element): emits ``("done",
    rows)`` once per batch of complete files (one :class:`FileRows` holding every file's rows,
    so that per-element costs of the runner are paid per batch, not per file), and for a large
    file ``("pending", (path, rows))`` plus one ``("unit", unit)`` per data unit."""

    def __init__(self, settings: Settings, options: ExtractOptions, progress_dir: str | None = None):
        self._settings = settings
        self._options = options
        self._progress_dir = progress_dir

    def setup(self):
        from transforms.metrics import BeamGovernorMetrics

        quick_exit_of_beam_worker()
        self._counter = _FileCounter(self._progress_dir)
        self._governor_metrics = BeamGovernorMetrics()
        self._reader = _Reader(self._settings, self._options)
        self._reader.warm()
        self._batch_size = FIRST_BATCH

    def start_bundle(self):
        self._pending: list[FileInfo | Detected] = []

    def process(self, item: FileInfo | Detected | list[FileInfo | Detected]):
        # Files go to the extraction process in batches: the memory governor's batch size,
        # which grows while memory is plentiful and shrinks under pressure.
        for one in item if isinstance(item, list) else (item,):
            self._pending.append(one)
            limit = min(self._batch_size, MAX_FILES_PER_CALL) if self._options.batch_calls else 1
            if len(self._pending) >= limit:
                yield from self._run_pending()

    def _run_pending(self):
        items, self._pending = self._pending, []
        done = FileRows()
        for result, governor in self._reader.read_many(items) if items else []:
            row = result.rows[FILES_TABLE][0]
            if governor:
                self._governor_metrics.record_figures(governor)
                result.rows[GOVERNOR_KEY] = [governor]
                self._batch_size = governor.get("batch_size_last") or self._batch_size
            if result.units:
                yield "pending", (row["path"], FileRows(result.rows))
                for unit in result.units:
                    yield "unit", unit
            else:
                self._counter.count(row, row.get("extract_seconds") or 0.0)
                done.extend(result.rows)
        if done:
            yield "done", done

    def finish_bundle(self):
        for element in self._run_pending():
            yield GlobalWindows.windowed_value(element)
        self._counter.flush()

    def teardown(self):
        if getattr(self, "_counter", None) is not None:
            self._counter.flush()
        if getattr(self, "_reader", None) is not None:
            self._reader.close()


class RunUnitFn(beam.DoFn):
    """One data unit of a large file -> ``(path, Partial)``."""

    def __init__(self, settings: Settings, options: ExtractOptions):
        self._settings = settings
        self._options = options

    def setup(self):
        from apache_beam.metrics import Metrics

        from transforms.metrics import BeamGovernorMetrics

        quick_exit_of_beam_worker()
        self._governor_metrics = BeamGovernorMetrics()
        self._reader = _Reader(self._settings, self._options)
        self._units = Metrics.counter("metaextract", "data_units")
        self._unit_bytes = Metrics.distribution("metaextract", "data_unit_bytes")

    def start_bundle(self):
        self._pending: list[Unit] = []

    def process(self, unit: Unit):
        # Units of a bundle run together at the end of it, on several threads of the
        # extraction process (the bundle's units are often one big file's).
        self._pending.append(unit)
        if len(self._pending) >= (MAX_UNITS_PER_CALL if self._options.batch_calls else 1):
            yield from self._run_pending()

    def finish_bundle(self):
        for element in self._run_pending():
            yield GlobalWindows.windowed_value(element)

    def _run_pending(self):
        units, self._pending = self._pending, []
        if not units:
            return
        started = time.time()
        results = self._reader.run_units(units)
        phase = data_phase_figures(units, started, time.time())
        for i, (unit, (partial, governor)) in enumerate(zip(units, results)):
            partial.governor = {**governor, **phase} if i == 0 else governor
            self._governor_metrics.record_figures(governor)
            self._units.inc()
            self._unit_bytes.update(unit.nbytes)
            yield unit.path, partial

    def teardown(self):
        if getattr(self, "_reader", None) is not None:
            self._reader.close()


def data_phase_figures(units: list[Unit], started: float, finished: float) -> dict[str, Any]:
    """One call's data units for the manifest's ``data_units`` (merged like the governor's
    figures: counts add up, the earliest start and the latest end are kept)."""
    return {
        "data_units": len(units),
        "data_unit_bytes": sum(u.nbytes for u in units),
        "data_units_started_min": started,
        "data_units_finished_max": finished,
    }


class MergePartialsFn(beam.CombineFn):
    """Merges the partial results of one file's data units (order-free)."""

    def create_accumulator(self):
        return Partial()

    def add_input(self, acc: Partial, partial: Partial) -> Partial:
        return acc.merge(partial)

    def merge_accumulators(self, accs):
        return work.merge_partials(accs)

    def extract_output(self, acc: Partial) -> Partial:
        return acc


class CompleteLargeFileFn(beam.DoFn):
    """A large file's pending rows and its merged data units -> its complete rows (and the
    file counts in the metrics and the progress, as small files count in ExtractFile)."""

    def __init__(self, settings: Settings, progress_dir: str | None = None):
        self._settings = settings
        self._progress_dir = progress_dir

    def setup(self):
        self._counter = _FileCounter(self._progress_dir)

    def process(self, element):
        path, grouped = element
        (rows,) = grouped["rows"]
        partials = list(grouped["partial"])
        partial = partials[0] if partials else Partial(
            error="RuntimeError: no data unit finished", error_kind="transient"
        )
        rows = work.complete_rows(rows, partial, self._settings)
        row = rows[FILES_TABLE][0]
        self._counter.count(row, row.get("extract_seconds") or 0.0)
        yield FileRows(rows)

    def finish_bundle(self):
        self._counter.flush()

    def teardown(self):
        if getattr(self, "_counter", None) is not None:
            self._counter.flush()


def _tagged(element, tag: str):
    if element[0] == tag:
        yield element[1]


@dataclasses.dataclass
class ExtractMetadata(beam.PTransform):
    """Listed files (:class:`FileInfo`, detected in the extraction process) or :class:`Detected`
    files, one per element or in lists -> a dict of PCollections of rows, one per catalog table.

    Args:
      tables: the table names to output (``files`` plus every registered format's tables).
      settings: what every file gets (checksum, statistics, format options, chunk threshold).
      options: isolation, retries and memory budget.
      progress_dir: a local folder where each worker process reports its progress.

    The output dict also holds ``FILE_ROWS_KEY``: the rows by table as :class:`FileRows`, one
    per batch of files read in one unit (each file's rows whole in one of them), and
    ``LARGE_FILE_ROWS_KEY``: the same, one per large file completed from its data units; the
    catalog writer and the roll-ups take these two, kept apart so that the rows need not cross
    a Flatten (the in-process runner encodes and decodes every element there). Each file's
    memory governor figures are among its rows (``GOVERNOR_KEY``); ``GOVERNOR_KEY`` of the
    output holds the data units' figures (the manifest sums both). Without ``data_units``,
    ``LARGE_FILE_ROWS_KEY`` and ``GOVERNOR_KEY`` are left out.
    """

    tables: list[str]
    settings: Settings = dataclasses.field(default_factory=Settings)
    options: ExtractOptions = dataclasses.field(default_factory=ExtractOptions)
    progress_dir: str | None = None
    #: False: no file is split into data units (each is read in one unit, whatever its size)
    #: and the graph has no data-unit branch, a dozen transforms and three shuffles fewer. For
    #: a run whose listing is known to hold no file above the chunk threshold.
    data_units: bool = True

    def __post_init__(self):
        super().__init__()

    def expand(self, detected):
        settings = self.settings if self.data_units else dataclasses.replace(self.settings, chunk_threshold_bytes=ONE_UNIT)
        # Single-output DoFns with a tag in each element, split by FlatMaps: Beam 2.77's
        # DaskRunner sends every output of a multi-output ParDo to each tagged PCollection.
        headers = detected | "ExtractFile" >> beam.ParDo(ExtractFileFn(settings, self.options, self.progress_dir))
        done = headers | "CompleteFiles" >> beam.FlatMap(_tagged, "done")
        out: dict[str, Any] = {FILE_ROWS_KEY: done}
        if self.data_units:
            out.update(self._data_units(headers))
        if self.tables:
            rows = (done, out[LARGE_FILE_ROWS_KEY]) | "AllFiles" >> beam.Flatten() if self.data_units else done
            for table in self.tables:
                out[table] = rows | f"Select{table.title()}Rows" >> beam.FlatMap(_rows_of, table)
        return out

    def _data_units(self, headers) -> dict[str, Any]:
        """The large files' branch: data units spread, run, merged per file and joined back."""
        pending = headers | "PendingFiles" >> beam.FlatMap(_tagged, "pending")
        partials = (
            headers
            | "DataUnits" >> beam.FlatMap(_tagged, "unit")
            | "SpreadUnits" >> beam.Reshuffle()
            | "RunUnit" >> beam.ParDo(RunUnitFn(self.settings, self.options))
        )
        merged = partials | "MergePerFile" >> beam.CombinePerKey(MergePartialsFn())
        completed = (
            {"rows": pending, "partial": merged}
            | "JoinUnitsToFile" >> beam.CoGroupByKey()
            | "CompleteLargeFiles" >> beam.ParDo(CompleteLargeFileFn(self.settings, self.progress_dir))
        )
        governor_units = partials | "UnitGovernor" >> beam.FlatMap(
            lambda kv: [kv[1].governor] if kv[1].governor else []
        )
        return {GOVERNOR_KEY: governor_units, LARGE_FILE_ROWS_KEY: completed}


@dataclasses.dataclass
class DetectFormat(beam.PTransform):
    """:class:`FileInfo` -> :class:`Detected`, from each file's first bytes, in this process.

    The catalog pipeline does not use it: :class:`ExtractMetadata` detects each file in the
    extraction process, where a parser that hangs or crashes is contained.

    Args:
      storage_options: passed to fsspec when a file is opened.
    """

    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def expand(self, files):
        return files | "ReadHeadAndClassify" >> beam.Map(detect, self.storage_options)


def _rows_of(rows_by_table: dict[str, list[dict[str, Any]]], table: str):
    return rows_by_table.get(table, ())
