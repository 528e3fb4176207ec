"""Beam metrics reported by the extraction step (runner UIs show them)."""

from __future__ import annotations

from typing import Any

from apache_beam.metrics import Metrics

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


class GovernorFigureMetrics:
    """The memory governor's figures, returned by the extraction process, as Beam metrics:
    counters ``memory_level_changes``, ``memory_pauses`` and ``cumulativeThrottlingSeconds``,
    gauges ``memory_pressure_level`` and ``chunk_bytes``, distribution ``chunk_bytes_used``."""

    def __init__(self, namespace: str = NAMESPACE):
        self._changes = Metrics.counter(namespace, "memory_level_changes")
        self._pauses = Metrics.counter(namespace, "memory_pauses")
        self._throttled = Metrics.counter(namespace, "cumulativeThrottlingSeconds")
        self._level = Metrics.gauge(namespace, "memory_pressure_level")
        self._chunk = Metrics.gauge(namespace, "chunk_bytes")
        self._chunks = Metrics.distribution(namespace, "chunk_bytes_used")

    def record(self, figures: dict[str, Any]) -> None:
        if not figures:
            return
        self._changes.inc(figures.get("level_changes", 0))
        self._pauses.inc(figures.get("pauses", 0))
        self._throttled.inc(int(round(figures.get("pause_seconds", 0.0))))
        self._level.set(figures.get("level", 0))
        if "chunk_bytes_last" in figures:
            self._chunk.set(figures["chunk_bytes_last"])
            self._chunks.update(figures["chunk_bytes_last"])
