"""Memory governor: adaptive chunk and batch sizes and read backpressure (Beam-free).

Pressure is the worse of two fractions: the worker's RSS (this process and its children)
against its budget (``--max_memory_per_worker_mb``), and the memory in use against the
container's cgroup limit, or the machine's memory when there is no limit (psutil alone reports
the host's memory inside a container). Under NORMAL pressure chunks and batches grow, under
ELEVATED and HIGH they shrink, and under CRITICAL reads pause (bounded waits) until it falls.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

import psutil

logger = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB

DEFAULT_THRESHOLDS = (0.70, 0.85, 0.95)
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"


class Pressure(enum.IntEnum):
    NORMAL = 0
    ELEVATED = 1
    HIGH = 2
    CRITICAL = 3


@dataclasses.dataclass(frozen=True)
class MemoryReading:
    """One look at memory: the worker's RSS against its budget, the system's use against its limit."""

    rss_bytes: int
    budget_bytes: int
    system_used_bytes: int
    system_limit_bytes: int


@dataclasses.dataclass(frozen=True)
class _CgroupFiles:
    limit: str
    usage: str
    inactive_file: str  # memory.stat key of reclaimable page cache


_CGROUP_V2 = _CgroupFiles("memory.max", "memory.current", "inactive_file")
_CGROUP_V1 = _CgroupFiles("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def _read_int(path: str) -> int | None:
    """The integer in a cgroup file; None when missing or not a number (``max``)."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _stat_value(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroup(proc_cgroup: str, v2: bool) -> str:
    """This process's cgroup path ('/a/b') from /proc/self/cgroup, '/' when unknown."""
    try:
        with open(proc_cgroup) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (v2 and controllers == "") or (not v2 and "memory" in controllers.split(",")):
                    return path or "/"
    except (OSError, ValueError):
        pass
    return "/"


def cgroup_memory(
    root: str = CGROUP_ROOT, proc_cgroup: str = PROC_SELF_CGROUP, host_total: int | None = None
) -> tuple[int, int] | None:
    """``(used_bytes, limit_bytes)`` of the tightest cgroup memory limit over this process.

    Reads cgroup v2 (``memory.max``, ``memory.current``) or v1 (``memory/memory.limit_in_bytes``,
    ``memory.usage_in_bytes``) from this process's cgroup up to the mount root and keeps the
    level with the highest use/limit. Reclaimable page cache (``inactive_file``) is not counted
    as used: streaming a big file fills the cache, the kernel drops it under pressure. None when
    no level has a limit ("max", or a limit at least the host's memory).
    """
    host_total = host_total or psutil.virtual_memory().total
    v2 = os.path.exists(os.path.join(root, "cgroup.controllers"))
    files = _CGROUP_V2 if v2 else _CGROUP_V1
    mount = root if v2 else os.path.join(root, "memory")
    if not os.path.isdir(mount):
        return None
    parts = [part for part in _own_cgroup(proc_cgroup, v2).split("/") if part and part != ".."]
    if not os.path.isdir(os.path.join(mount, *parts)):  # cgroup namespace: we are at the root
        parts = []
    worst: tuple[int, int] | None = None
    for depth in range(len(parts), -1, -1):
        directory = os.path.join(mount, *parts[:depth])
        limit = _read_int(os.path.join(directory, files.limit))
        usage = _read_int(os.path.join(directory, files.usage))
        if limit is not None and usage is not None and 0 < limit < host_total:
            used = max(0, usage - _stat_value(os.path.join(directory, "memory.stat"), files.inactive_file))
            if worst is None or used / limit > worst[0] / worst[1]:
                worst = (used, limit)
    return worst


def process_tree_rss(process: psutil.Process | None = None, skip: Collection[int] = ()) -> int:
    """RSS of a process and all its descendants (extraction may run in child processes), but
    those in ``skip`` (their own descendants still count)."""
    process = process or psutil.Process()
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss if child.pid not in skip else 0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def read_memory(
    budget_bytes: int, *, cgroup_root: str = CGROUP_ROOT, proc_cgroup: str = PROC_SELF_CGROUP
) -> MemoryReading:
    """Read the worker's RSS and the system's (container's, when limited) memory in use."""
    virtual = psutil.virtual_memory()
    limited = cgroup_memory(cgroup_root, proc_cgroup, host_total=virtual.total)
    used, limit = limited or (virtual.total - virtual.available, virtual.total)
    return MemoryReading(
        rss_bytes=process_tree_rss(),
        budget_bytes=budget_bytes,
        system_used_bytes=used,
        system_limit_bytes=limit,
    )


def _check_thresholds(thresholds: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(thresholds) != 3 or not 0 < thresholds[0] < thresholds[1] < thresholds[2]:
        raise ValueError(f"thresholds must be three increasing positive fractions, got {thresholds}")
    return tuple(thresholds)  # type: ignore[return-value]


def classify(reading: MemoryReading, thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS) -> Pressure:
    """The pressure level of the worse of RSS/budget and system used/limit.

    A fraction at or above ``thresholds[0]`` is ELEVATED, ``[1]`` HIGH, ``[2]`` CRITICAL.
    """
    fractions = [
        used / limit
        for used, limit in (
            (reading.rss_bytes, reading.budget_bytes),
            (reading.system_used_bytes, reading.system_limit_bytes),
        )
        if limit > 0
    ]
    worst = max(fractions, default=0.0)
    level = Pressure.NORMAL
    for candidate, threshold in zip((Pressure.ELEVATED, Pressure.HIGH, Pressure.CRITICAL), thresholds):
        if worst >= threshold:
            level = candidate
    return level


class GovernorMetrics(Protocol):
    """Where a governor reports (see :class:`transforms.metrics.BeamGovernorMetrics`)."""

    def record_check(self, level: Pressure, chunk_bytes: int, batch_size: int, level_changed: bool) -> None: ...

    def record_pause(self, seconds: float) -> None: ...


class MemoryGovernor:
    """Adapts chunk and batch sizes to memory pressure and pauses reads under CRITICAL.

    One governor per worker process, shared by its threads. Each memory reading adapts the
    sizes: NORMAL doubles them (up to the maxima), ELEVATED halves them, HIGH quarters them,
    CRITICAL sets the minima.

    Args:
        budget_bytes: the worker's RSS budget.
        thresholds: fractions at which pressure becomes ELEVATED, HIGH and CRITICAL.
        read: ``read(budget_bytes) -> MemoryReading``; injectable for tests.
        sleep, clock: injectable ``time.sleep`` and ``time.monotonic``.
        min_chunk, max_chunk, start_chunk: bounds and start of :attr:`chunk_bytes`.
        min_batch, max_batch, start_batch: bounds and start of :attr:`batch_size`.
        check_interval_s: memory is read at most this often; :meth:`check` returns the last
            level in between, so calling it before every read is cheap.
        pause_step_s: sleep between readings while paused.
        max_pause_s: a pause ends after this long even if pressure is still CRITICAL.
        metrics: optional :class:`GovernorMetrics` sink.
    """

    def __init__(
        self,
        budget_bytes: int,
        thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS,
        *,
        read: Callable[[int], MemoryReading] = read_memory,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        min_chunk: int = 256 * KiB,
        max_chunk: int = 64 * MiB,
        start_chunk: int = 2 * MiB,
        min_batch: int = 1,
        max_batch: int = 1024,
        start_batch: int = 64,
        check_interval_s: float = 0.25,
        pause_step_s: float = 0.1,
        max_pause_s: float = 10.0,
        metrics: GovernorMetrics | None = None,
    ):
        if budget_bytes <= 0:
            raise ValueError(f"budget must be positive, got {budget_bytes}")
        if not 0 < min_chunk <= start_chunk <= max_chunk or not 0 < min_batch <= start_batch <= max_batch:
            raise ValueError("need 0 < min <= start <= max for chunk and batch sizes")
        self.budget_bytes = budget_bytes
        self.thresholds = _check_thresholds(thresholds)
        self._read = read
        self._sleep = sleep
        self._clock = clock
        self._chunk_range = (min_chunk, max_chunk)
        self._batch_range = (min_batch, max_batch)
        self._check_interval_s = check_interval_s
        self._pause_step_s = pause_step_s
        self._max_pause_s = max_pause_s
        self._metrics = metrics
        self._lock = threading.Lock()
        self._last_check: float | None = None
        self.level = Pressure.NORMAL
        self._stuck = False  # a pause timed out and pressure has stayed CRITICAL since
        self.last_reading: MemoryReading | None = None
        self._chunk = start_chunk
        self._batch = start_batch
        self._stats: dict[str, Any] = {
            "checks": 0,
            "level_changes": 0,
            "pauses": 0,
            "pauses_timed_out": 0,
            "pause_seconds": 0.0,
            "max_level": Pressure.NORMAL,
            "chunk_bytes_min": start_chunk,
            "chunk_bytes_max": start_chunk,
            "batch_size_min": start_batch,
            "batch_size_max": start_batch,
        }

    @property
    def chunk_bytes(self) -> int:
        """The current read and slab size."""
        return self._chunk

    @property
    def batch_size(self) -> int:
        """The current number of small files to handle together."""
        return self._batch

    def check(self) -> Pressure:
        """Read memory (at most every ``check_interval_s``), adapt the sizes, return the level."""
        with self._lock:
            now = self._clock()
            if self._last_check is not None and now - self._last_check < self._check_interval_s:
                return self.level
            self._last_check = now
            return self._update(self._read(self.budget_bytes))

    def _update(self, reading: MemoryReading) -> Pressure:
        level = classify(reading, self.thresholds)
        self.last_reading = reading
        self._chunk = _adapt(self._chunk, level, *self._chunk_range)
        self._batch = _adapt(self._batch, level, *self._batch_range)
        stats = self._stats
        stats["checks"] += 1
        stats["max_level"] = max(stats["max_level"], level)
        stats["chunk_bytes_min"] = min(stats["chunk_bytes_min"], self._chunk)
        stats["chunk_bytes_max"] = max(stats["chunk_bytes_max"], self._chunk)
        stats["batch_size_min"] = min(stats["batch_size_min"], self._batch)
        stats["batch_size_max"] = max(stats["batch_size_max"], self._batch)
        changed = level != self.level
        if changed:
            stats["level_changes"] += 1
            logger.log(
                logging.WARNING if level >= Pressure.HIGH else logging.INFO,
                "memory pressure %s -> %s (%s); chunk %d bytes, batch %d",
                self.level.name,
                level.name,
                _describe(reading),
                self._chunk,
                self._batch,
            )
            self.level = level
        if self._metrics is not None:
            self._metrics.record_check(level, self._chunk, self._batch, changed)
        return level

    def before_read(self) -> None:
        """Call before each read: under CRITICAL, wait until pressure falls (at most ``max_pause_s``).

        When a pause times out, the memory in use is not the reads' to free (e.g. a large
        baseline): later reads go on at the smallest chunk size without pausing, until pressure
        falls below CRITICAL and re-arms the pause.
        """
        if self.check() < Pressure.CRITICAL:
            self._stuck = False
            return
        if self._stuck:  # waiting did not help last time: this memory is not ours to free
            return
        started = self._clock()
        logger.warning(
            "memory pressure CRITICAL (%s): pausing reads for up to %.0f s",
            _describe(self.last_reading),
            self._max_pause_s,
        )
        timed_out = True
        while (waited := self._clock() - started) < self._max_pause_s:
            self._sleep(min(self._pause_step_s, self._max_pause_s - waited))
            with self._lock:
                self._last_check = self._clock()
                level = self._update(self._read(self.budget_bytes))
            if level < Pressure.CRITICAL:
                timed_out = False
                break
        paused = self._clock() - started
        with self._lock:
            self._stats["pauses"] += 1
            self._stats["pauses_timed_out"] += timed_out
            self._stats["pause_seconds"] += paused
        if timed_out:
            self._stuck = True
            logger.warning(
                "memory pressure still CRITICAL after %.1f s: resuming reads at the smallest chunk size,"
                " without pausing again until pressure falls",
                paused,
            )
        if self._metrics is not None:
            self._metrics.record_pause(paused)

    def stats(self) -> dict[str, Any]:
        """Counts and size ranges for the run manifest (plain JSON types)."""
        with self._lock:
            stats = dict(self._stats)
        stats["max_level"] = Pressure(stats["max_level"]).name
        stats["level"] = self.level.name
        stats["pause_seconds"] = round(stats["pause_seconds"], 3)
        stats["chunk_bytes_last"] = self._chunk
        stats["batch_size_last"] = self._batch
        return stats


def _adapt(value: int, level: Pressure, low: int, high: int) -> int:
    if level == Pressure.NORMAL:
        return min(value * 2, high)
    if level == Pressure.CRITICAL:
        return low
    return max(value // (2 if level == Pressure.ELEVATED else 4), low)


def _describe(reading: MemoryReading | None) -> str:
    if reading is None:
        return "no reading"
    return (
        f"rss {reading.rss_bytes / MiB:.0f}/{reading.budget_bytes / MiB:.0f} MiB, "
        f"system {reading.system_used_bytes / MiB:.0f}/{reading.system_limit_bytes / MiB:.0f} MiB"
    )
