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
