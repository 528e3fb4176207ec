"""Local ``multi_processing`` workers forked from a template process, not started afresh.

Beam's FnApiRunner starts each local worker as ``python -m
apache_beam.runners.worker.sdk_worker_main``: a new interpreter that imports Beam, pyarrow and
this package again before its first file (about 0.9 s of CPU per worker, measured), every worker
at once when the pipeline starts, so that on two cores two workers started hardly faster than one.

:class:`WorkerTemplate` forks the launcher once (:mod:`transforms.forkserver`), right after it
parsed its flags (Beam and this package imported, no thread running yet): the template imports
the SDK harness and then forks one worker per request, each running ``sdk_worker_main.main`` in
the environment Beam gives it (control and logging addresses, pipeline options). A worker is
otherwise the process Beam starts: same harness, same gRPC connection to the runner, its files
read in extraction processes of its own. :func:`forked_workers` has the runner ask the template
where it would start a new interpreter. Linux only; elsewhere, or when the launcher already
runs a thread, Beam starts its workers as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import sys
import tempfile
import threading
import weakref
from typing import Any

from transforms import forkserver

_WORKER_MODULE = "apache_beam.runners.worker.sdk_worker_main"

logger = logging.getLogger(__name__)


class WorkerTemplate:
    """A forked copy of the launcher that forks Beam worker processes on request."""

    def __init__(self, pid: int, folder: str, address: str, extraction: bool):
        self.pid = pid
        self._folder = folder
        self._address = address
        self._extraction = extraction
        self._closed = False

    @classmethod
    def start(cls, extraction: bool = True) -> WorkerTemplate | None:
        """Fork the template now; None where forking is not safe here (threads) or not supported.

        With ``extraction``, each worker starts its first extraction process as it starts
        (:func:`transforms.isolation.prestart`), not when its first DoFn is set up."""
        if not forkserver.supported():
            return None
        folder = tempfile.mkdtemp(prefix="metaextract-workers-")  # private (0700): only we connect
        address = os.path.join(folder, "socket")
        try:
            pid = forkserver.fork_template(address, _run_worker, _import_harness)
        except OSError:  # e.g. a TMPDIR too long for a socket's path: Beam starts its workers
            pid = None
        if pid is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(pid, folder, address, extraction)

    def spawn(self, env: dict[str, str]) -> forkserver.ForkedProcess:
        """A worker process running Beam's SDK harness in ``env``."""
        worker = forkserver.spawn(self._address, pickle.dumps((dict(env), self._extraction)))
        with _WORKERS_LOCK:
            _WORKERS.add(worker)
            if _STOPPING:  # asked for by a runner thread after Ctrl-C: it ends at once
                worker.kill()
        return worker

    def close(self) -> None:
        """End the template (and any worker still running) and wait for it; once."""
        if self._closed:
            return
        self._closed = True
        forkserver.stop(self.pid, self._address)
        shutil.rmtree(self._folder, ignore_errors=True)


_WORKERS: weakref.WeakSet[forkserver.ForkedProcess] = weakref.WeakSet()
_WORKERS_LOCK = threading.Lock()
_STOPPING: list[bool] = []  # set once the launcher was interrupted


def kill_workers() -> None:
    """Kill every worker the templates of this process forked that still runs, and any that a
    runner thread asks for later (the launcher was interrupted: a forked worker ignores Ctrl-C,
    and Beam's runner would wait for it). Called from a signal handler: takes no lock that a
    waiting thread may hold for long."""
    _STOPPING.append(True)
    for worker in list(_WORKERS):
        worker.kill()


@contextlib.contextmanager
def forked_workers(template: WorkerTemplate | None):
    """While the block runs, Beam's local worker processes are forked by ``template``."""
    if template is None:
        yield
        return
    from apache_beam.runners.portability import local_job_service

    real = local_job_service.subprocess

    class _Subprocess:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def Popen(args, *pargs, env=None, **kwargs):
            if _STOPPING:  # interrupted: no new worker (Beam's runner would wait for it)
                raise RuntimeError("the run was interrupted")
            if isinstance(args, str) and args.endswith(f" -m {_WORKER_MODULE}") and env is not None:
                try:
                    return template.spawn(env)
                except OSError as exc:
                    logger.debug("worker template unavailable (%s): starting a new interpreter", exc)
            return real.Popen(args, *pargs, env=env, **kwargs)

    local_job_service.subprocess = _Subprocess()
    try:
        yield
    finally:
        local_job_service.subprocess = real


def _import_harness() -> None:
    import apache_beam.runners.worker.sdk_worker_main  # noqa: F401 - once, for every worker


def _run_worker(payload: bytes, fds: list[int]) -> int:
    """A forked worker: Beam's SDK harness in Beam's environment, as ``python -m
    sdk_worker_main`` runs it (the fork server ends it on an exception as an interpreter would)."""
    env, extraction = pickle.loads(payload)
    # Ctrl-C stays ignored, as in the template: the launcher handles it and ends the run, which
    # ends the workers (their control stream closes; the kernel kills them with the template if
    # the launcher exits first). A worker that took it would end its harness mid-bundle and fill
    # the terminal with the runner's and its own tracebacks.
    os.environ.clear()
    os.environ.update(env)
    root = logging.getLogger()
    for handler in list(root.handlers):  # the launcher's: the harness logs to the runner
        root.removeHandler(handler)
    for name in ("apache_beam", "apache_beam.runners.common"):  # as a fresh interpreter's: the
        logging.getLogger(name).setLevel(logging.NOTSET)  # harness sets its level from the options
        logging.getLogger(name).filters.clear()
    if extraction:
        from transforms.isolation import prestart

        prestart()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
    return 0
