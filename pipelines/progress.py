"""Live progress for local runs: workers report to a folder, the driver draws one line.

Each worker process writes its running totals to ``<dir>/<pid>.json`` (atomically, a few times a
second at most); the driver sums the files it finds. This works in-process and with
``--direct_running_mode=multi_processing`` alike.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TextIO

_MIN_INTERVAL_S = 0.25


class ProgressReporter:
    """Worker side: accumulate files and bytes done, write them out now and then."""

    def __init__(self, directory: str):
        self._path = os.path.join(directory, f"{os.getpid()}-{id(self)}.json")
        self._files = 0
        self._bytes = 0
        self._last = 0.0

    def add(self, files: int, nbytes: int) -> None:
        self._files += files
        self._bytes += nbytes
        now = time.monotonic()
        if now - self._last >= _MIN_INTERVAL_S:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        tmp = self._path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"files": self._files, "bytes": self._bytes}, f)
            os.replace(tmp, self._path)
        except OSError:  # progress is best effort; never fail a file for it
            pass


def read_progress(directory: str) -> tuple[int, int]:
    files = nbytes = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0, 0
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        files += data.get("files", 0)
        nbytes += data.get("bytes", 0)
    return files, nbytes


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """Driver side: a thread that redraws ``files done/total, bytes, rate, ETA`` on stderr."""

    def __init__(self, directory: str, total_files: int, total_bytes: int, stream: TextIO = sys.stderr, interval_s: float = 0.5):
        self._directory = directory
        self._total_files = total_files
        self._total_bytes = total_bytes
        self._stream = stream
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metaextract-progress", daemon=True)
        self._start = time.monotonic()
        self._tty = getattr(stream, "isatty", lambda: False)()
        self._last_line_at = 0.0

    def line(self) -> str:
        files, nbytes = read_progress(self._directory)
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = files / elapsed
        eta = (self._total_files - files) / rate if rate > 0 else None
        pct = 100.0 * files / self._total_files if self._total_files else 100.0
        return (
            f"{files:,}/{self._total_files:,} files ({pct:.0f}%), "
            f"{human_bytes(nbytes)}/{human_bytes(self._total_bytes)}, "
            f"{rate:,.0f} files/s, ETA {_duration(eta) if eta is not None else '--:--:--'}"
        )

    def _draw(self, final: bool = False) -> None:
        text = self.line()
        if self._tty:
            self._stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:  # logs: one line every 10 s
            now = time.monotonic()
            if not final and now - self._last_line_at < 10:
                return
            self._last_line_at = now
            self._stream.write(text + "\n")
        self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._draw()

    def __enter__(self) -> "ProgressDisplay":
        self._start = time.monotonic()
        self._last_line_at = self._start
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._draw(final=True)
