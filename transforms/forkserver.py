"""A template process that forks ready-made children on request. Linux only, Beam-free.

Starting a Python process that imports heavy libraries costs the same CPU every time (Beam's
SDK harness about 0.9 s, the format libraries about 0.3 s, measured). A template imports them
once and then forks a child per request, which starts with everything imported and shares the
template's memory pages until it writes them.

The template listens on a Unix socket in a private folder. A request is one connection: one
message (a payload, and file descriptors passed along with it); the template forks a child
that runs the template's handler on them, replies with the child's pid, and later with its exit
status; it kills the child if the connection closes first (its requester is gone). The
requester holds a :class:`ForkedProcess`, a :class:`subprocess.Popen`-like handle (``wait``,
``poll``, ``kill``, ``returncode``) that works though the child is not its own.

Forking is safe only from a process that runs no other thread: a template forks from a fresh
interpreter, or from a process before it starts any (:func:`fork_template` checks).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")
MAX_PAYLOAD = 1 << 20

#: What a child runs: ``handler(payload, fds)``; returns the child's exit code.
Handler = Callable[[bytes, list[int]], int]


def supported() -> bool:
    """Whether this system has what a template needs (Linux: pidfd and fd passing)."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies, even mid-hang in C code."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(address)
    sock.listen(64)
    return sock


def fork_template(address: str, handler: Handler, prepare: Callable[[], None] | None = None) -> int | None:
    """Fork this process into a template serving ``address``; its pid, or None where forking is
    not safe (another thread runs) or not supported. The template runs ``prepare`` (imports)
    after it started listening: a request made meanwhile waits for it."""
    if not supported() or threading.active_count() != 1:
        return None
    listener = listen(address)
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # Ctrl-C at the instant of the fork would run the parent's Python handler inside the
    # interpreter's at-fork callbacks, which swallow its exception: held until both sides are set
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = -1
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                serve(listener, handler, parent, prepare, blocked)
                code = 0
            finally:
                os._exit(code)
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    listener.close()
    return pid


def serve(
    listener: socket.socket,
    handler: Handler,
    parent: int,
    prepare: Callable[[], None] | None = None,
    mask: Collection[int] | None = None,
) -> None:
    """The template's loop, until its parent dies or stops it (:func:`stop`); its children die
    with it (each has the kernel kill it when its parent dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent reports it; this ends with it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop() ends it, whatever its parent's handler
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    die_with_parent(parent)
    if prepare is not None:
        prepare()
    requests: list[socket.socket] = []  # connected, no request read yet
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, its requester's connection)
    by_conn: dict[socket.socket, int] = {}  # a child's requester's connection -> pidfd
    while True:
        ready = select.select([listener, *requests, *by_conn, *children], [], [])[0]
        for item in ready:
            if item is listener:
                requests.append(listener.accept()[0])
            elif isinstance(item, int):  # a child ended: its status to its requester
                pid, conn = children.pop(item)
                by_conn.pop(conn, None)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    conn.send(_STATUS.pack(os.waitstatus_to_exitcode(status)))
                conn.close()
                os.close(item)
            elif item in by_conn:  # a requester closed its connection: its child goes too
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(by_conn[item], signal.SIGKILL)
            else:
                requests.remove(item)
                _fork_child(item, listener, handler, requests, children, by_conn)


def _fork_child(conn, listener, handler, requests, children, by_conn) -> None:
    try:
        payload, fds, _, _ = socket.recv_fds(conn, MAX_PAYLOAD, 8)
    except OSError:
        payload, fds = b"", []
    if not payload:
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for s in (listener, conn, *requests, *by_conn, *(c for _, c in children.values())):
                s.close()
            for fd in children:
                os.close(fd)
            die_with_parent(os.getppid())
            code = handler(payload, fds)
        except SystemExit as exc:  # as an interpreter ends on it
            code = _exit_code(exc)
        except KeyboardInterrupt:  # as an interpreter ends on it: killed by SIGINT
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # noqa: BLE001 - reported as an interpreter reports an uncaught one
            import traceback

            traceback.print_exc()
        finally:
            _flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = (pid, conn)
    by_conn[conn] = pidfd
    try:
        conn.send(_PID.pack(pid))
    except OSError:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _exit_code(exc: SystemExit) -> int:
    """The exit code an interpreter ends with on ``exc`` (``sys.exit("message")`` prints it)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def spawn(address: str, payload: bytes, fds: Sequence[int] = (), timeout_s: float | None = 60.0) -> ForkedProcess:
    """A child of the template at ``address``, running its handler on ``payload`` and ``fds``.
    Raises OSError when no template serves there, or none answers within ``timeout_s`` (still
    loading its libraries, or stuck): the caller starts a process of its own."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.settimeout(timeout_s)
        conn.connect(address)
        socket.send_fds(conn, [payload], list(fds))
        data = conn.recv(_PID.size)
        if len(data) != _PID.size:
            raise ConnectionError("the template ended")
        conn.settimeout(None)
        return ForkedProcess(_PID.unpack(data)[0], conn)
    except BaseException:
        conn.close()
        raise


class ForkedProcess:
    """A template's child, as :class:`subprocess.Popen` and :class:`multiprocessing.Process`
    show a child: ``pid``, ``returncode``/``exitcode``, ``wait``/``poll``/``join``, ``kill``."""

    def __init__(self, pid: int, conn: socket.socket):
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn
        self._pidfd = os.pidfd_open(pid)
        self._lock = threading.Lock()

    def _status(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is None and select.select([self._conn], [], [], timeout)[0]:
                try:
                    data = self._conn.recv(_STATUS.size)
                except OSError:
                    data = b""
                # no status: the template itself was killed, and its children with it
                self.returncode = _STATUS.unpack(data)[0] if len(data) == _STATUS.size else -signal.SIGKILL
                self._conn.close()
            return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return code

    @property
    def exitcode(self) -> int | None:
        return self.poll()

    def join(self, timeout: float | None = None) -> None:
        self._status(timeout)

    def kill(self) -> None:
        # no lock: a thread may be waiting in wait() (and a signal handler may call this); the
        # pidfd stays open until this object goes, so it never names another process
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._pidfd)


def stop(pid: int, address: str) -> None:
    """End a template this process started (its children die with it) and remove its socket."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)
    with contextlib.suppress(OSError):
        os.unlink(address)
