"""IsolatedRunner with real child processes: results, exceptions, C hangs, crashes, cleanup."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from transforms import forkserver
from transforms.isolation import (
    TEMPLATE_VARIABLE,
    IsolatedRunner,
    RemoteTraceback,
    WorkerCrashed,
    extraction_template,
)

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 30.0  # generous: only the hang tests wait for a timeout, with their own

# Functions the child runs: module level, so that they pickle by reference.


def add(a, b, *, scale=1):
    return (a + b) * scale


def rows(n):
    return {"files": [{"path": f"/data/{i}.h5", "size": i, "error": None} for i in range(n)]}


def raise_value_error(message):
    raise ValueError(message)


class UnpicklableError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable(message):
    raise UnpicklableError(message)


def return_unpicklable():
    return threading.Lock()


def sleep_in_c(seconds):
    """A hang inside C code: libc sleep() cannot be interrupted from Python."""
    ctypes.CDLL(None).sleep(seconds)


def segfault():
    ctypes.string_at(0)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does


def exit_3():
    os._exit(3)


def system_exit_3():
    raise SystemExit(3)  # an interpreter ends with code 3


def keyboard_interrupt_in_initializer():
    raise KeyboardInterrupt  # an interpreter ends killed by SIGINT


_initialized = []


def remember_init(value):
    _initialized.append(value)


def initialized():
    return list(_initialized)


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


#: "template": exec children forked by a run's extraction template (``extraction_template``).
START_METHODS = ["exec", "forkserver", "spawn", "template"]


@contextlib.contextmanager
def isolated(timeout_s: float, start_method: str, **kwargs):
    if start_method == "template":
        with extraction_template(), IsolatedRunner(timeout_s, **kwargs) as runner:
            yield runner
    else:
        with IsolatedRunner(timeout_s, start_method=start_method, **kwargs) as runner:
            yield runner


@pytest.fixture(params=START_METHODS)
def start_method(request):
    return request.param


@pytest.fixture
def runner(start_method):
    with isolated(TIMEOUT_S, start_method) as runner:
        yield runner


def test_returns_result(runner):
    assert runner.call(add, 2, 3, scale=10) == 50
    assert runner.call(rows, 3)["files"][2] == {"path": "/data/2.h5", "size": 2, "error": None}


def test_child_is_reused(runner):
    runner.call(add, 1, 1)
    pid = runner.pid
    runner.call(add, 1, 1)
    assert runner.pid == pid and pid != os.getpid()


def test_exception_reraised_with_type_message_and_remote_traceback(runner):
    with pytest.raises(ValueError, match="^bad header$") as info:
        runner.call(raise_value_error, "bad header")
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "raise_value_error" in str(info.value.__cause__)
    assert runner.call(add, 1, 2) == 3


def test_unpicklable_exception_becomes_runtime_error(runner):
    with pytest.raises(RuntimeError, match="^UnpicklableError: no pickle$"):
        runner.call(raise_unpicklable, "no pickle")
    assert runner.call(add, 1, 2) == 3


def test_unpicklable_result_raises_and_child_survives(runner):
    runner.call(add, 1, 2)
    pid = runner.pid
    with pytest.raises(TypeError, match="pickle"):
        runner.call(return_unpicklable)
    assert runner.call(add, 1, 2) == 3 and runner.pid == pid


def test_unpicklable_argument_raises_in_parent(runner):
    with pytest.raises(Exception, match="pickle|lambda"):
        runner.call(add, lambda: 1, 2)
    assert runner.call(add, 1, 2) == 3


def test_hang_in_c_times_out_and_next_call_works(start_method):
    with isolated(1.0, start_method) as runner:
        runner.call(add, 0, 0)
        hung = runner.pid
        with pytest.raises(TimeoutError, match=r"^extraction did not finish in 1 s$"):
            runner.call(sleep_in_c, 100)
        assert hung not in descendants()  # killed and reaped: no zombie
        runner.call(sleep_in_c, 0)  # a fresh child
        assert runner.pid != hung


@pytest.mark.parametrize(
    "crash, cause",
    [(segfault, "SIGSEGV"), (os.abort, "SIGABRT"), (kill_self, "SIGKILL"), (exit_3, "exit code 3")],
)
def test_crash_raises_worker_crashed_and_next_call_works(runner, crash, cause):
    runner.call(add, 0, 0)
    crashed = runner.pid
    with pytest.raises(WorkerCrashed, match=rf"^extraction process died \({cause}\)$"):
        runner.call(crash)
    assert crashed not in descendants()
    assert runner.call(add, 1, 2) == 3


def test_idle_child_killed_between_calls_is_replaced(runner):
    runner.call(add, 0, 0)
    child = psutil.Process(runner.pid)
    child.kill()
    child.wait(10)
    assert runner.call(add, 1, 2) == 3


def test_close_leaves_no_child(runner):
    runner.call(add, 0, 0)
    pid = runner.pid
    runner.close()
    assert pid not in descendants()
    assert runner.pid is None
    assert runner.call(add, 1, 2) == 3  # a closed runner starts again on demand


def test_initializer_runs_once_per_child():
    with IsolatedRunner(TIMEOUT_S, initializer=remember_init, initargs=("warm",)) as runner:
        runner.call(add, 0, 0)
        assert runner.call(initialized) == ["warm"]
        with pytest.raises(WorkerCrashed):
            runner.call(exit_3)
        assert runner.call(initialized) == ["warm"]
        assert runner.children_started == 2


def fail_init():
    raise RuntimeError("cannot import the format libraries")


def test_initializer_failure_is_a_crash():
    with IsolatedRunner(TIMEOUT_S, initializer=fail_init) as runner:
        with pytest.raises(WorkerCrashed, match=r"died at start \(exit code 1\)"):
            runner.call(add, 1, 2)
        assert runner.pid is None


def test_max_tasks_per_child_recycles():
    with IsolatedRunner(TIMEOUT_S, max_tasks_per_child=2) as runner:
        pids = []
        for _ in range(4):
            runner.call(add, 0, 0)
            pids.append(runner.pid)  # None once the second task retired the child
        assert pids[0] is not None and pids[1] is None
        assert pids[2] not in (None, pids[0]) and pids[3] is None
        assert runner.children_started == 2


def test_max_rss_bytes_recycles_a_grown_child():
    with IsolatedRunner(TIMEOUT_S, max_rss_bytes=1) as runner:
        for _ in range(3):
            runner.call(add, 0, 0)
        assert runner.children_started == 3


def test_calls_from_many_threads_are_serialized():
    with IsolatedRunner(10.0) as runner:
        results = {}

        def work(i):
            results[i] = runner.call(add, i, 1)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {i: i + 1 for i in range(8)}
        assert runner.children_started == 1


def test_fork_is_refused():
    with pytest.raises(ValueError, match="fork"):
        IsolatedRunner(1.0, start_method="fork")


PARENT_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from transforms.isolation import IsolatedRunner, extraction_template
from tests.test_isolation import add, sleep_in_c

if __name__ == "__main__":
    method = {method!r}
    if method == "template":
        extraction_template().__enter__()
        method = "exec"
    runner = IsolatedRunner(1000, start_method=method)
    runner.call(add, 0, 0)
    print(runner.pid, flush=True)
    if {busy!r}:
        runner.call(sleep_in_c, 1000)
    else:
        sys.stdin.read()
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("busy", [True, False], ids=["hung-in-c", "idle"])
def test_child_exits_when_parent_is_killed(tmp_path, method, busy):
    script = tmp_path / "parent.py"
    source = PARENT_SCRIPT.format(repo=str(REPO), method=method, busy=busy)
    script.write_text(textwrap.dedent(source))
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.2)  # let a busy child enter sleep()
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child)
    finally:
        parent.kill()
        parent.wait()


def has_module(name):
    return name in sys.modules


def test_exec_child_imports_only_what_its_tasks_need():
    import apache_beam  # noqa: F401  (the parent has Beam; the child must not pay for it)

    with IsolatedRunner(TIMEOUT_S) as runner:
        assert runner.call(has_module, "apache_beam") is False
        assert runner.call(has_module, "tests.test_isolation") is True


def sleep_and_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def test_extraction_pool_runs_threads_in_separate_processes_up_to_its_size():
    from concurrent.futures import ThreadPoolExecutor

    from transforms.extract import ExtractionPool

    pool = ExtractionPool(TIMEOUT_S, size=2)

    def work(_):
        with pool.borrow() as runner:
            return runner.call(sleep_and_pid, 0.5)

    try:
        with ThreadPoolExecutor(4) as threads:
            pids = list(threads.map(work, range(8)))
    finally:
        pool.close()
    assert len(set(pids)) == 2  # two processes served eight calls from four threads
    assert os.getpid() not in pids


def assert_children_stopped(before: set[int], timeout_s: float = 10) -> None:
    """Every child process started since ``before`` (a :func:`descendants` set) has exited."""
    deadline = time.monotonic() + timeout_s
    while descendants() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not descendants() - before


def test_extraction_started_warms_one_process_and_stops_it_after():
    from transforms.extract import _acquire_pool, _release_pool, extraction_started

    before = descendants()
    with extraction_started(TIMEOUT_S):
        pool = _acquire_pool(TIMEOUT_S)  # the same pool, as a DoFn would get it
        try:
            with pool.borrow() as runner:  # waits for the warming process instead of starting another
                pid = runner.call(os.getpid)
            assert pool._started == 1 and pid in descendants()
        finally:
            _release_pool(TIMEOUT_S)
    assert_children_stopped(before)


def test_extraction_started_warms_a_process_per_worker_thread_up_to_the_pool_size():
    """With two worker threads both extraction processes start while the pipeline is built (the
    second used to start, and load its libraries, only when the second thread's first batch came)."""
    from concurrent.futures import ThreadPoolExecutor

    from transforms.extract import _acquire_pool, _release_pool, extraction_started

    before = descendants()
    with extraction_started(TIMEOUT_S, workers=5):
        pool = _acquire_pool(TIMEOUT_S)
        try:
            size = pool.size
            deadline = time.monotonic() + 30
            while len(pool._idle) < size and time.monotonic() < deadline:  # both warmed, unasked
                time.sleep(0.05)
            assert pool._started == size == len(pool._idle)

            def work(_):
                with pool.borrow() as runner:
                    return runner.call(sleep_and_pid, 0.2)

            with ThreadPoolExecutor(4) as threads:
                pids = set(threads.map(work, range(8)))
            assert len(pids) == size and pool._started == size  # no process beyond the pool's size
        finally:
            _release_pool(TIMEOUT_S)
    assert_children_stopped(before)


def loaded_modules(*names: str) -> list[str]:
    """In the extraction process: which of these modules it has imported."""
    return [name for name in names if name in sys.modules]


def test_extraction_started_preloads_the_likely_formats_libraries():
    """The warm extraction process loads the libraries of the formats the listing's names suggest
    (a hint: detection still reads the bytes), and no others."""
    from transforms.extract import _acquire_pool, _release_pool, extraction_started
    from transforms.formats import likely_formats

    formats = likely_formats(["/a/scan.DCM", "/a/b.nc", "/c/README", "/d.v1/noext"])
    assert formats == ["dicom", "netcdf"]
    with extraction_started(TIMEOUT_S, formats):
        pool = _acquire_pool(TIMEOUT_S)
        try:
            with pool.borrow() as runner:  # after the warm-up call: the libraries are in
                got = runner.call(loaded_modules, "pydicom", "h5py", "astropy.io.fits")
        finally:
            _release_pool(TIMEOUT_S)
    assert got == ["pydicom", "h5py"]  # the netcdf extractor reads NetCDF-4 with h5py


@pytest.mark.parametrize("method", ["exec", "template"])
def test_exec_child_keeps_blas_on_one_thread(monkeypatch, method):
    """The extraction process runs its own threads: BLAS thread pools (numpy's OpenBLAS) stay at one."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    with isolated(TIMEOUT_S, method) as runner:
        got = runner.call(os.getenv, "OPENBLAS_NUM_THREADS"), runner.call(os.getenv, "OMP_NUM_THREADS")
    assert got == ("1", "1")


# --- the extraction template ------------------------------------------------------------------


def parent_pid():
    return os.getppid()


def test_template_forks_the_extraction_processes_and_ends_with_its_block():
    with extraction_template(["dicom", "hdf5"]):
        address = os.environ[TEMPLATE_VARIABLE]
        with IsolatedRunner(TIMEOUT_S) as first, IsolatedRunner(TIMEOUT_S) as second:
            template = {first.call(parent_pid), second.call(parent_pid)}
            assert len(template) == 1 and os.getpid() not in template  # both forked by one template
            assert first.pid != second.pid
            assert first.call(has_module, "pydicom") and first.call(has_module, "h5py")  # preloaded
            assert not first.call(has_module, "apache_beam")
        (pid,) = template
        assert psutil.Process(pid).cmdline()[-1] == "dicom,hdf5"
    assert TEMPLATE_VARIABLE not in os.environ
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(address)
    with IsolatedRunner(TIMEOUT_S) as runner:  # no template: a fresh interpreter again
        assert runner.call(parent_pid) == os.getpid()


def test_template_kills_a_child_whose_requester_went_away():
    with extraction_template():
        left, right = __import__("socket").socketpair()
        child = forkserver.spawn(os.environ[TEMPLATE_VARIABLE], b"extract", [right.fileno()])
        right.close()
        assert psutil.pid_exists(child.pid) and child.poll() is None
        child._conn.close()  # the requester is gone: the template kills what it forked for it
        deadline = time.monotonic() + 30
        while psutil.pid_exists(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(child.pid)
        left.close()


def test_a_template_that_is_gone_means_a_fresh_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv(TEMPLATE_VARIABLE, str(tmp_path / "no-such-socket"))
    with pytest.raises(OSError):
        forkserver.spawn(str(tmp_path / "no-such-socket"), b"extract")
    with IsolatedRunner(TIMEOUT_S) as runner:
        assert runner.call(parent_pid) == os.getpid()
        assert runner.call(os.getenv, TEMPLATE_VARIABLE) is None  # not handed on to the child


def governed_rss(worker_pid):
    """In an extraction process: the RSS its memory governor reads for ``worker_pid``, and its own."""
    from transforms import child

    child._GOVERNOR = None
    governor = child._governor(1 << 40, (0.7, 0.85, 0.95), worker_pid)
    return governor._read(1 << 40).rss_bytes, psutil.Process().memory_info().rss


def test_governor_counts_a_template_child_once_and_not_the_template():
    with extraction_template(), IsolatedRunner(TIMEOUT_S) as runner:
        template = psutil.Process(runner.call(parent_pid))
        # the worker is this process: the template and its child are among its descendants
        read, own = runner.call(governed_rss, os.getpid())
        tree = sum(p.memory_info().rss for p in [psutil.Process(), *psutil.Process().children(recursive=True)])
        assert own <= read < tree - template.memory_info().rss // 2  # the template left out, the child in
        # a worker the template is not under (a multi_processing worker): the child added to it
        other = subprocess.Popen(
            [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(60)"], stdout=subprocess.PIPE
        )
        try:
            other.stdout.readline()  # started
            read, own = runner.call(governed_rss, other.pid)
            alone = psutil.Process(other.pid).memory_info().rss
            assert alone + own * 0.9 <= read <= (alone + own) * 1.1
        finally:
            other.kill()
            other.wait()


def test_runs_of_one_process_share_one_template_until_the_last_ends():
    with extraction_template():
        address = os.environ[TEMPLATE_VARIABLE]
        with extraction_template(), IsolatedRunner(TIMEOUT_S) as inner:
            template = inner.call(parent_pid)
            assert os.environ[TEMPLATE_VARIABLE] == address
        with IsolatedRunner(TIMEOUT_S) as runner:  # the second run's end did not stop it
            assert runner.call(parent_pid) == template
    assert TEMPLATE_VARIABLE not in os.environ


def test_a_temporary_folder_too_long_for_a_socket_means_fresh_interpreters(tmp_path, monkeypatch):
    import tempfile

    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with extraction_template():
        assert TEMPLATE_VARIABLE not in os.environ
        with IsolatedRunner(TIMEOUT_S) as runner:
            assert runner.call(parent_pid) == os.getpid()
    assert not list(deep.iterdir())  # its folder removed


@pytest.mark.parametrize("method", ["exec", "template"])
@pytest.mark.parametrize("initializer, cause", [(system_exit_3, "exit code 3"), (keyboard_interrupt_in_initializer, "SIGINT")])
def test_a_child_ends_as_an_interpreter_would_whether_exec_or_forked(method, initializer, cause):
    """A SystemExit or KeyboardInterrupt that leaves the child's code (here its initializer: a
    task's exceptions are caught and sent back) ends a forked child as it ends a fresh interpreter."""
    with isolated(TIMEOUT_S, method, initializer=initializer) as runner:
        with pytest.raises(WorkerCrashed, match=rf"died at start \({cause}\)"):
            runner.call(add, 1, 2)
