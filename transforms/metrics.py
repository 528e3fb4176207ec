"""Beam metrics reported by the extraction step (runner UIs show them)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from apache_beam.metrics import Metrics

if TYPE_CHECKING:
    from transforms.governor import Pressure

NAMESPACE = "metaextract"


class ExtractMetrics:
    """Counts files and bytes by format and status, and times each extraction."""

    def __init__(self, namespace: str = NAMESPACE):
        self._namespace = namespace
        self._files = Metrics.counter(namespace, "files")
        self._bytes = Metrics.counter(namespace, "bytes")
        self._latency_us = Metrics.distribution(namespace, "extract_latency_us")
        self._by_outcome: dict[tuple[str, str], Any] = {}

    def record(self, file_row: dict[str, Any], seconds: float) -> None:
        self._files.inc()
        self._bytes.inc(file_row["size_bytes"])
        self._latency_us.update(int(seconds * 1e6))
        key = (file_row["format"], file_row["status"])
        counter = self._by_outcome.get(key)
        if counter is None:
            counter = self._by_outcome[key] = Metrics.counter(self._namespace, f"files_{key[0]}_{key[1]}")
        counter.inc()


class BeamGovernorMetrics:
    """Reports a governor's checks and pauses as Beam metrics (counter, gauge, distribution).

    Names in ``namespace``: counters ``memory_level_changes``, ``memory_pauses`` and
    ``cumulativeThrottlingSeconds`` (Beam's convention for a step that throttled itself);
    gauges ``memory_pressure_level`` (0-3), ``chunk_bytes``, ``batch_size``; distributions
    ``chunk_bytes_used`` (the chunk size at each reading) and ``memory_pause_ms``.
    Create it where Beam metrics are live (in ``DoFn.setup``/``process``). A governor in this
    process reports through ``record_check``/``record_pause``; one in the extraction process
    returns its figures with each file, reported through :meth:`record_figures`.
    """

    def __init__(self, namespace: str = NAMESPACE):
        self._level_changes = Metrics.counter(namespace, "memory_level_changes")
        self._pauses = Metrics.counter(namespace, "memory_pauses")
        self._throttled_seconds = Metrics.counter(namespace, "cumulativeThrottlingSeconds")
        self._level = Metrics.gauge(namespace, "memory_pressure_level")
        self._chunk_gauge = Metrics.gauge(namespace, "chunk_bytes")
        self._batch_gauge = Metrics.gauge(namespace, "batch_size")
        self._chunk_distribution = Metrics.distribution(namespace, "chunk_bytes_used")
        self._pause_ms = Metrics.distribution(namespace, "memory_pause_ms")

    def record_check(self, level: Pressure, chunk_bytes: int, batch_size: int, level_changed: bool) -> None:
        if level_changed:
            self._level_changes.inc()
        self._level.set(int(level))
        self._chunk_gauge.set(chunk_bytes)
        self._batch_gauge.set(batch_size)
        self._chunk_distribution.update(chunk_bytes)

    def record_pause(self, seconds: float) -> None:
        self._pauses.inc()
        self._throttled_seconds.inc(math.ceil(seconds))
        self._pause_ms.update(int(seconds * 1000))

    def record_figures(self, figures: dict[str, Any]) -> None:
        """The figures the extraction process's governor returned with one file or unit."""
        if not figures:
            return
        self._level_changes.inc(figures.get("level_changes", 0))
        self._pauses.inc(figures.get("pauses", 0))
        if figures.get("pauses"):
            self._throttled_seconds.inc(math.ceil(figures.get("pause_seconds", 0.0)))
            self._pause_ms.update(int(figures.get("pause_seconds", 0.0) * 1000))
        self._level.set(figures.get("level", 0))
        if "chunk_bytes_last" in figures:
            self._chunk_gauge.set(figures["chunk_bytes_last"])
            self._chunk_distribution.update(figures["chunk_bytes_last"])
        if "batch_size_last" in figures:
            self._batch_gauge.set(figures["batch_size_last"])
