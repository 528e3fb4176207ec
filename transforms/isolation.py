"""Run extraction in a watchdog child process, like Apache Tika's forked parsers.

A parser that hangs inside C code (HDF5, netCDF, zlib) cannot be interrupted from Python, and
one that segfaults or aborts takes its process down. :class:`IsolatedRunner` keeps one
persistent child process, sends it one task at a time over a pipe and waits with a timeout: a
task that does not finish in time gets the child killed (``SIGKILL``) and raises
:class:`TimeoutError`; a child that dies raises :class:`WorkerCrashed`. Either way the next
call starts a fresh child, so one bad file costs one error, not the run. Beam-free.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

# fork is unsafe in a process with threads (Beam's SDK harness, gRPC, fsspec's event loop):
# the forkserver forks children from a clean, single-threaded process.
DEFAULT_START_METHOD = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_READY = b"ready"
# Starting a child and importing the format libraries can take seconds on a busy machine; it is
# not the file's fault, so it gets at least this long (``timeout_s`` if longer).
START_TIMEOUT_S = 60.0


class WorkerCrashed(RuntimeError):
    """The child process died during a task (segfault, abort, ``os._exit``, OOM kill)."""


class RemoteTraceback(Exception):
    """The child's formatted traceback, attached as ``__cause__`` of a re-raised exception."""

    def __str__(self) -> str:
        return self.args[0]


class IsolatedRunner:
    """Calls functions in a persistent child process, with a timeout and crash containment.

    Calls are serialized by a lock: use one runner per DoFn instance (Beam gives each thread
    its own instance), create it in ``DoFn.setup`` and close it in ``DoFn.teardown``.

    Args:
      timeout_s: seconds a call may take before the child is killed.
      start_method: ``"forkserver"`` (default where available) or ``"spawn"``; never ``fork``.
      max_tasks_per_child: restart the child after this many calls (bounds leaks in C
        libraries); ``None`` for never.
      max_rss_bytes: restart the child after a call that left its resident memory above this.
      initializer: a picklable module-level function the child runs once at start, e.g. to
        import the format libraries before the first task.
      initargs: arguments for ``initializer``.
    """

    def __init__(
        self,
        timeout_s: float,
        *,
        start_method: str = DEFAULT_START_METHOD,
        max_tasks_per_child: int | None = None,
        max_rss_bytes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Sequence[Any] = (),
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if start_method == "fork":
            raise ValueError("start_method 'fork' is unsafe with threads: use forkserver or spawn")
        self.timeout_s = timeout_s
        self.max_tasks_per_child = max_tasks_per_child
        self.max_rss_bytes = max_rss_bytes
        self._start_method = start_method
        self._context = multiprocessing.get_context(start_method)
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._tasks = 0
        self.children_started = 0  # first start, then one per timeout, crash or recycling

    @property
    def pid(self) -> int | None:
        """The current child's process id, or ``None`` when none runs (started on the next call)."""
        return self._process.pid if self._process is not None else None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the child; its result, or its exception re-raised here."""
        return self.call_within(self.timeout_s, fn, *args, **kwargs)

    def call_within(self, timeout_s: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`call` with a time limit of its own (e.g. one that grows with a unit's size).

        Raises:
          TimeoutError: the call did not finish in ``timeout_s`` (the child was killed).
          WorkerCrashed: the child died during the call.
          RuntimeError: ``"Type: message"`` when fn's exception cannot be pickled.
        """
        with self._lock:
            conn = self._send((fn, args, kwargs))
            try:
                # poll() also wakes on EOF: only the child holds the other end of the pipe.
                reply = conn.recv() if conn.poll(timeout_s) else None
            except (EOFError, OSError):
                raise WorkerCrashed(f"extraction process died ({self._stop(wait_s=5.0)})") from None
            except BaseException:  # e.g. KeyboardInterrupt: the child's reply would come late
                self._stop()
                raise
            if reply is None:
                self._stop()
                raise TimeoutError(f"extraction did not finish in {timeout_s:g} s")
            ok, value, rss = reply
            self._tasks += 1
            self._recycle_if_due(rss)
        if ok:
            return value
        exc, type_name, message, remote_traceback = value
        if exc is None:
            exc = RuntimeError(f"{type_name}: {message}" if message else type_name)
        raise exc from RemoteTraceback(remote_traceback)

    def close(self) -> None:
        """Stop the child; the runner starts a new one if called again."""
        with self._lock:
            self._stop()

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, task: tuple) -> multiprocessing.connection.Connection:
        """Send a task, starting a child first if needed (or if the idle one died)."""
        payload = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)  # errors raise here
        for _ in range(2):
            if self._conn is None:
                self._start()
            try:
                self._conn.send_bytes(payload)
                return self._conn
            except OSError:  # the idle child died (e.g. OOM-killed): start another
                self._stop()
        raise WorkerCrashed("extraction process died before it received its task")

    def _start(self) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve,
            args=(
                child_conn,
                self._start_method,
                self.max_rss_bytes is not None,
                self._initializer,
                self._initargs,
            ),
            name="metaextract-isolated",
            daemon=True,
        )
        process.start()
        child_conn.close()
        self.children_started += 1
        self._process, self._conn, self._tasks = process, parent_conn, 0
        # Wait for the initializer, so that the timeout of the first task is its own.
        try:
            start_timeout_s = max(self.timeout_s, START_TIMEOUT_S)
            started = parent_conn.poll(start_timeout_s) and parent_conn.recv_bytes() == _READY
        except (EOFError, OSError):
            raise WorkerCrashed(f"extraction process died at start ({self._stop(wait_s=5.0)})")
        if not started:
            self._stop()
            raise TimeoutError(f"extraction process did not start in {start_timeout_s:g} s")

    def _stop(self, wait_s: float = 0.0) -> str:
        """Kill the child (``SIGKILL``: it holds nothing to clean up) and reap it; say how it ended.

        Args:
          wait_s: how long to let a dying child finish dying first, to report its own cause.
        """
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return "not started"
        conn.close()
        process.join(wait_s)
        if process.exitcode is None:
            process.kill()
        process.join()
        code = process.exitcode
        if code is not None and code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"

    def _recycle_if_due(self, rss: int) -> None:
        if self.max_tasks_per_child is not None and self._tasks >= self.max_tasks_per_child:
            self._stop()
        elif self.max_rss_bytes is not None and rss > self.max_rss_bytes:
            self._stop()


def _serve(
    conn: multiprocessing.connection.Connection,
    start_method: str,
    report_rss: bool,
    initializer: Callable[..., Any] | None,
    initargs: tuple,
) -> None:
    """The child's loop: run each task, reply ``(ok, result or error, RSS)``; stop on EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent(start_method)
    if initializer is not None:
        initializer(*initargs)
    conn.send_bytes(_READY)
    me = psutil.Process()
    while True:
        try:
            task = conn.recv_bytes()
        except (EOFError, OSError):  # the runner closed or died
            return
        try:
            fn, args, kwargs = pickle.loads(task)
            ok, value = True, fn(*args, **kwargs)
        except Exception as exc:
            ok, value = False, _portable(exc)
        rss = me.memory_info().rss if report_rss else 0
        try:
            conn.send((ok, value, rss))
        except Exception as exc:  # an unpicklable result
            conn.send((False, _portable(exc), rss))


def _portable(exc: BaseException) -> tuple[BaseException | None, str, str, str]:
    """``(exc if it survives pickling else None, type name, message, formatted traceback)``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        portable = None
    else:
        portable = exc
    return portable, type(exc).__name__, " ".join(str(exc).split()), text


def _exit_with_parent(start_method: str) -> None:
    """Make this child die with the runner's process, even while it hangs in C code.

    A forkserver child is killed by the kernel when the forkserver exits, which it does as soon
    as the runner's process dies (Linux ``PR_SET_PDEATHSIG``; it cannot serve spawn children,
    as it fires when the forking *thread* exits). Elsewhere a daemon thread polls the parent;
    it needs the GIL, so a hang that holds the GIL outlives it. An idle child also exits when
    its pipe reports EOF.
    """
    parent = os.getppid()
    if start_method == "forkserver":
        from multiprocessing import forkserver

        # The forkserver exits when every copy of its "alive" pipe is closed, and it hands one
        # copy to each child it forks: this child's must go, or each waits for the other.
        alive_fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
        if alive_fd is not None:
            os.close(alive_fd)
            forkserver._forkserver._forkserver_alive_fd = None
        if sys.platform == "linux":
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the forkserver died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
