"""What runs in the isolated extraction process (:mod:`transforms.isolation`).

Everything that reads a file's content runs here: detection, the header unit, the data units.
The extraction process is a fresh interpreter, or a fork of the run's extraction template
(:func:`transforms.isolation.extraction_template`), which is one: it imports this module, the
libraries of the formats it meets and nothing of Beam (nor pyarrow), so it adds only their
memory to the worker's. It keeps one memory governor that watches the whole Beam worker (the worker process
and its children, this one included).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from transforms import partials, work
from transforms.detect import detect
from transforms.formats.base import FileInfo
from transforms.work import Detected, FileWork, Partial, Settings, Unit

_GOVERNOR = None
_LAST_FIGURES: dict[str, Any] = {}
#: Governor figures that add up across calls (the others are extremes or the current state).
_COUNTED = ("checks", "level_changes", "pauses", "pauses_timed_out", "pause_seconds")


def start(environment: dict[str, str]) -> None:
    """Runs first in a new extraction process: the worker's environment as it is now
    (credentials may have been set after the process started) and the plug-in formats. A
    built-in format's library is imported when its first file comes (:class:`Registry`), so a
    run over HDF5 files never loads pydicom or astropy."""
    os.environ.clear()
    os.environ.update(environment)
    from transforms.formats import registry

    registry()


def preload(formats: list[str]) -> None:
    """Load these formats' extractors (and libraries) now, while the process waits for work."""
    from transforms.formats import registry

    for name in formats:
        try:
            registry()[name]
        except Exception:  # noqa: BLE001 - the first file of the format reports it properly
            pass


def read(
    item: FileInfo | Detected,
    settings: Settings,
    budget_bytes: int,
    thresholds: tuple[float, float, float],
    worker_pid: int,
) -> tuple[FileWork, dict[str, Any]]:
    """A listed file's detection (unless ``item`` is already :class:`Detected`) and header unit;
    returns its :class:`FileWork` and the governor's figures."""
    governor = _governor(budget_bytes, thresholds, worker_pid)
    detected = item if isinstance(item, Detected) else detect(item, settings.storage_options)
    return _rolled_up(work.read_detected(detected, settings, governor)), _figures(governor)


def read_many(
    items: list[FileInfo | Detected],
    settings: Settings,
    budget_bytes: int,
    thresholds: tuple[float, float, float],
    worker_pid: int,
) -> tuple[list[FileWork], dict[str, Any]]:
    """:func:`read` of several files, one after the other; their FileWorks in order and the
    governor's figures."""
    governor = _governor(budget_bytes, thresholds, worker_pid)
    out = []
    for item in items:
        detected = item if isinstance(item, Detected) else detect(item, settings.storage_options)
        out.append(_rolled_up(work.read_detected(detected, settings, governor)))
    return out, _figures(governor)


def _rolled_up(result: FileWork) -> FileWork:
    """A complete file's rows with their partial roll-ups (``partials.ROLLUP_PARTIALS``), made here where
    the rows and the format libraries are: the Beam worker then only merges them."""
    if not result.units:
        result.rows[partials.ROLLUP_PARTIALS] = list(partials.batch_partials(result.rows))
    return result


def run_unit(
    unit: Unit, settings: Settings, budget_bytes: int, thresholds: tuple[float, float, float], worker_pid: int
) -> tuple[Partial, dict[str, Any]]:
    """One data unit of a large file; returns its :class:`Partial` and the governor's figures."""
    governor = _governor(budget_bytes, thresholds, worker_pid)
    return work.run_unit(unit, settings, governor=governor), _figures(governor)


def run_units(
    units: list[Unit],
    settings: Settings,
    budget_bytes: int,
    thresholds: tuple[float, float, float],
    worker_pid: int,
    threads: int,
) -> tuple[list[Partial], dict[str, Any]]:
    """Data units on up to ``threads`` threads (:func:`work.run_units`); their partials in
    order and the governor's figures."""
    governor = _governor(budget_bytes, thresholds, worker_pid)
    return work.run_units(units, settings, threads=threads, governor=governor), _figures(governor)


def _governor(budget_bytes: int, thresholds: tuple[float, float, float], worker_pid: int):
    global _GOVERNOR
    if _GOVERNOR is None:
        import psutil

        from transforms.governor import MemoryGovernor, process_tree_rss, read_memory

        from transforms.isolation import template_pid

        worker = psutil.Process(worker_pid)
        me = psutil.Process()
        # Forked by the run's extraction template, this process is among the worker's
        # descendants only when the template is (a local run's in-process workers), and the
        # template is not counted: its pages are those it shares with the processes it forked.
        skip = {template_pid()} - {None}
        outside = worker_pid not in {p.pid for p in me.parents()}

        def read(budget: int):
            rss = process_tree_rss(worker, skip) + (me.memory_info().rss if outside else 0)
            return dataclasses.replace(read_memory(budget), rss_bytes=rss)

        _GOVERNOR = MemoryGovernor(budget_bytes, thresholds, read=read)
    return _GOVERNOR


def _figures(governor) -> dict[str, Any]:
    """The governor's figures since the previous call (counts) and now (state, extremes)."""
    global _LAST_FIGURES
    from transforms.governor import Pressure

    now = governor.stats()
    out = {k: now[k] - _LAST_FIGURES.get(k, 0) for k in _COUNTED}
    out["max_level"] = int(Pressure[now["max_level"]])
    out["level"] = int(Pressure[now["level"]])
    for k in ("chunk_bytes_min", "chunk_bytes_max", "batch_size_min", "batch_size_max", "chunk_bytes_last", "batch_size_last"):
        out[k] = now[k]
    _LAST_FIGURES = now
    return out
