"""Run extraction in a watchdog child process, like Apache Tika's forked parsers.

A parser that hangs inside C code (HDF5, netCDF, zlib) cannot be interrupted from Python, and
one that segfaults or aborts takes its process down. :class:`IsolatedRunner` keeps one
persistent child process, sends it one task at a time over a pipe and waits with a timeout: a
task that does not finish in time gets the child killed (``SIGKILL``) and raises
:class:`TimeoutError`; a child that dies raises :class:`WorkerCrashed`. Either way the next
call starts a fresh child, so one bad file costs one error, not the run. Beam-free.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psutil

from transforms import forkserver
from transforms.forkserver import die_with_parent

T = TypeVar("T")

# fork is unsafe in a process with threads (Beam's SDK harness, gRPC, fsspec's event loop).
# "exec" starts a fresh interpreter that imports only what its tasks need: multiprocessing's
# forkserver and spawn children import the parent's ``__main__`` (with Beam, ~100 MB) first.
START_METHODS = ("exec", "forkserver", "spawn")

#: Environment variables that keep BLAS libraries on one thread in an exec'd extraction process.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_START_METHOD = "exec"
_READY = b"ready"
#: Where the run's extraction template listens (:func:`extraction_template`), for this process
#: and the worker processes it starts.
TEMPLATE_VARIABLE = "METAEXTRACT_EXTRACTION_TEMPLATE"
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
      start_method: ``"exec"`` (default: a fresh interpreter, started with :mod:`subprocess`),
        or multiprocessing's ``"forkserver"`` or ``"spawn"``; never ``fork``.
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
            raise ValueError("start_method 'fork' is unsafe with threads: use exec, forkserver or spawn")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {', '.join(START_METHODS)}, got {start_method!r}")
        self.timeout_s = timeout_s
        self.max_tasks_per_child = max_tasks_per_child
        self.max_rss_bytes = max_rss_bytes
        self._start_method = start_method
        self._context = multiprocessing.get_context(None if start_method == "exec" else start_method)
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
        setup = (self.max_rss_bytes is not None, self._initializer, self._initargs)
        if self._start_method == "exec":
            process, parent_conn = _ExecProcess.start(setup, _take_prestarted())
        else:
            parent_conn, child_conn = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_serve,
                args=(child_conn, self._start_method, *setup),
                name="metaextract-isolated",
                daemon=True,
            )
            process.start()
            child_conn.close()
        self.children_started += 1
        self._process, self._conn, self._tasks = process, parent_conn, 0
        self._wait_ready(parent_conn)

    def _wait_ready(self, parent_conn: multiprocessing.connection.Connection) -> None:
        """Wait for the initializer, so that the timeout of the first task is its own."""
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


class _ExecProcess:
    """A child started with :mod:`subprocess` (a fresh interpreter), with the little of
    :class:`multiprocessing.Process` that :class:`IsolatedRunner` uses."""

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen
        self.pid = popen.pid

    @classmethod
    def start(
        cls, setup: tuple, launched: tuple[_ExecProcess, multiprocessing.connection.Connection] | None = None
    ) -> tuple[_ExecProcess, multiprocessing.connection.Connection]:
        """Launch a child (or take ``launched``, one that waits for its set-up) and set it up."""
        process, conn = launched or cls.launch()
        try:
            conn.send(setup)
        except OSError:
            pass  # the child died at once: the ready wait reports it
        return process, conn

    @classmethod
    def launch(cls) -> tuple[_ExecProcess | forkserver.ForkedProcess, multiprocessing.connection.Connection]:
        """A child that waits for its set-up: forked by this run's extraction template if there
        is one (:func:`extraction_template`), else a fresh interpreter importing this module."""
        parent_sock, child_sock = socket.socketpair()
        with parent_sock, child_sock:
            template = os.environ.get(TEMPLATE_VARIABLE)
            process = None
            if template:
                try:
                    process = forkserver.spawn(template, b"extract", [child_sock.fileno()], START_TIMEOUT_S)
                except OSError:  # the template is gone (its run ended): a fresh interpreter
                    pass
            if process is None:
                command = [
                    sys.executable, "-c", "from transforms.isolation import _exec_main; _exec_main()",
                    str(child_sock.fileno()), str(os.getpid()),
                ]  # fmt: skip
                process = cls(_launch(command, env=_child_environment(), pass_fds=(child_sock.fileno(),)))
            conn = multiprocessing.connection.Connection(os.dup(parent_sock.fileno()))
        return process, conn

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        self._popen.kill()


_PRESTARTED: list[tuple[_ExecProcess, multiprocessing.connection.Connection]] = []
_PRESTARTED_LOCK = threading.Lock()


def prestart() -> None:
    """Launch an ``exec`` child now, before any runner needs one: the first runner of this
    process to start a child takes it, set up as its own. A worker process that will read files
    calls it first thing, so that the child's interpreter and imports overlap the worker's own
    start (an unused child ends with this process, or when it closes the pipe)."""
    launched = _ExecProcess.launch()
    with _PRESTARTED_LOCK:
        _PRESTARTED.append(launched)


def _take_prestarted() -> tuple[_ExecProcess, multiprocessing.connection.Connection] | None:
    with _PRESTARTED_LOCK:
        while _PRESTARTED:
            process, conn = _PRESTARTED.pop()
            if process.exitcode is None:
                return process, conn
            conn.close()
    return None


_LAUNCHER: concurrent.futures.ThreadPoolExecutor | None = None
_LAUNCHER_LOCK = threading.Lock()


def _launch(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a child from one long-lived thread: ``PR_SET_PDEATHSIG`` fires when the *thread*
    that started a child exits, so children of short-lived threads would die with them."""
    global _LAUNCHER
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None:
            _LAUNCHER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metaextract-launcher")
        launcher = _LAUNCHER
    # a session (process group) of its own: a terminal's Ctrl-C (sent to the foreground group) is the
    # parent's to handle, also while the child is still importing (before it ignores SIGINT)
    return launcher.submit(
        subprocess.Popen, command, stdin=subprocess.DEVNULL, close_fds=True, start_new_session=True, **kwargs
    ).result()


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(TEMPLATE_VARIABLE, None)
    # The child finds this package (and anything else the parent can import) the same way.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # The process runs its own threads (--unit_threads); a BLAS library's thread pool on top of
    # them (numpy's OpenBLAS starts one per core) made two busy threads wait on each other's
    # spinning BLAS threads: measured 300x slower.
    env.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
    return env


@contextlib.contextmanager
def extraction_template(preload: Sequence[str] = ()):
    """Within the block, this process and the processes it starts (Beam's local workers) fork
    their extraction processes from one template (:mod:`transforms.forkserver`) instead of
    starting fresh interpreters: the template imports this module and the ``preload`` formats'
    libraries once, from now on, while the run is being set up; each extraction process then
    starts in milliseconds, also after a timeout or a crash. A no-op where forking is not
    supported (or no socket can be made). Runs of one process share one template; it and its
    children end with the last block."""
    with _TEMPLATE_LOCK:
        if _TEMPLATE:  # another run of this process has one: share it, the last user stops it
            _TEMPLATE[2] += 1
        elif forkserver.supported() and TEMPLATE_VARIABLE not in os.environ:
            _TEMPLATE[:] = _start_template(preload) or []
        joined = bool(_TEMPLATE)
    try:
        yield
    finally:
        with _TEMPLATE_LOCK:
            if joined:
                _TEMPLATE[2] -= 1
                if _TEMPLATE[2] == 0:
                    popen, folder, _ = _TEMPLATE
                    _TEMPLATE.clear()
                    os.environ.pop(TEMPLATE_VARIABLE, None)
                    popen.terminate()
                    popen.wait()
                    shutil.rmtree(folder, ignore_errors=True)


_TEMPLATE: list = []  # [Popen, its folder, users] while this process has an extraction template
_TEMPLATE_LOCK = threading.Lock()


def _start_template(preload: Sequence[str]) -> list | None:
    folder = tempfile.mkdtemp(prefix="metaextract-template-")  # private (0700): only we connect
    address = os.path.join(folder, "socket")
    try:
        listener = forkserver.listen(address)  # requests made before the template is ready wait
    except OSError:  # e.g. a TMPDIR too long for a socket's path: fresh interpreters, as before
        shutil.rmtree(folder, ignore_errors=True)
        return None
    command = [
        sys.executable, "-c", "from transforms.isolation import _template_main; _template_main()",
        str(listener.fileno()), str(os.getpid()), ",".join(preload),
    ]  # fmt: skip
    with listener:
        popen = subprocess.Popen(  # a session of its own: Ctrl-C is the launcher's to handle
            command, env=_child_environment(), pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    os.environ[TEMPLATE_VARIABLE] = address
    return [popen, folder, 1]


def _template_main() -> None:
    """Entry point of the extraction template: ``argv`` holds its listening socket's
    descriptor, the parent's pid and the formats to load."""
    fd, parent, formats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    def prepare() -> None:
        from transforms import child

        child.preload([f for f in formats.split(",") if f])

    forkserver.serve(socket.socket(fileno=fd), _template_child, parent, prepare)


_TEMPLATE_PID: list[int] = []  # in a process forked by an extraction template: the template's pid


def template_pid() -> int | None:
    """The extraction template that forked this process, if one did."""
    return _TEMPLATE_PID[0] if _TEMPLATE_PID else None


def _template_child(payload: bytes, fds: list[int]) -> int:
    """An extraction process forked by the template: as :func:`_exec_main`, on the passed socket."""
    _TEMPLATE_PID.append(os.getppid())
    _set_up_and_serve(fds[0])
    return 0


def _exec_main() -> None:
    """Entry point of an ``exec`` child: ``argv`` holds the socket's descriptor and the parent's pid."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent)
    _set_up_and_serve(fd)


def _set_up_and_serve(fd: int) -> None:
    """Wait on the socket ``fd`` for the runner's set-up, then serve its tasks (nothing: it closed)."""
    conn = multiprocessing.connection.Connection(fd)
    try:
        report_rss, initializer, initargs = conn.recv()
    except (EOFError, OSError):
        return
    _serve(conn, "exec", report_rss, initializer, initargs)


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

    On Linux the kernel kills it (``PR_SET_PDEATHSIG``) when the process that started it exits:
    for an exec child, the runner's process (children are started from one long-lived thread,
    as the signal fires when the starting *thread* exits); for a forkserver child, the
    forkserver, which exits as soon as the runner's process dies. Spawn children, and any
    child elsewhere, get a daemon thread that polls the parent;
    it needs the GIL, so a hang that holds the GIL outlives it. An idle child also exits when
    its pipe reports EOF.
    """
    parent = os.getppid()
    if start_method == "exec":
        if sys.platform == "linux":
            return  # die_with_parent did it
    elif start_method == "forkserver":
        from multiprocessing import forkserver

        # The forkserver exits when every copy of its "alive" pipe is closed, and it hands one
        # copy to each child it forks: this child's must go, or each waits for the other.
        alive_fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
        if alive_fd is not None:
            os.close(alive_fd)
            forkserver._forkserver._forkserver_alive_fd = None
        if sys.platform == "linux":
            die_with_parent(parent)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
