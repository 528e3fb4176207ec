"""Fuzzing every extractor: mutated small valid files (bit flips, byte insertions and deletions,
truncations, integer fields overwritten with extreme values) through ``catalog_rows``.

Each example runs in a child process, so that a hang or a crash inside a C library (libhdf5,
netCDF) fails the example, with the file kept, rather than the test run. The guarantees checked
are those of tests/test_adversarial.py: one ``files`` row, an ``ok`` row or a ``Type: message``
error, rows the Parquet sink can write, no allocation in proportion to a claimed size.

Bounded run (the test suite): ``METAEXTRACT_FUZZ_EXAMPLES`` examples per format (default 100).
Hunting::

    METAEXTRACT_FUZZ_EXAMPLES=100000 python -m pytest -q tests/test_fuzz.py -x
    python -m tests.test_fuzz --atheris hdf5 -max_total_time=3600   # coverage-guided (atheris)

Failing inputs are written to ``METAEXTRACT_FUZZ_FAILURES`` (default ``fuzz-failures/``).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import struct
import sys
import tempfile
import traceback

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.adversarial import VALID, valid_bytes

EXAMPLES = int(os.environ.get("METAEXTRACT_FUZZ_EXAMPLES", "100"))
FAILURES = os.environ.get("METAEXTRACT_FUZZ_FAILURES", "fuzz-failures")
#: Seconds one example may take in the child before it counts as a hang.
TIMEOUT_S = float(os.environ.get("METAEXTRACT_FUZZ_TIMEOUT_S", "30"))
#: Errors that are bugs of ours, not a clear verdict on the file.
BUG_ERRORS = ("RecursionError", "MemoryError", "SystemError", "AttributeError", "NameError",
              "UnboundLocalError", "AssertionError")


@functools.cache
def seed(fmt: str) -> bytes:
    return valid_bytes(fmt)


# --- mutations ---------------------------------------------------------------------------------


def _extreme(kind: str, width: int) -> int:
    top = (1 << (8 * width)) - 1
    return {"zero": 0, "one": 1, "max": top, "max-1": top - 1, "sign": 1 << (8 * width - 1),
            "sign-1": (1 << (8 * width - 1)) - 1, "fff0": min(top, 0xFFFFFFF0)}[kind]


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutation ops (see :func:`mutations`) in order; positions wrap to the data."""
    out = bytearray(data)
    for op, pos, *args in ops:
        pos = pos % (len(out) + 1)
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << args[0]
        elif op == "insert":
            out[pos:pos] = args[0]
        elif op == "delete":
            del out[pos : pos + args[0]]
        elif op == "truncate":
            del out[pos:]
        elif op == "overwrite":
            width, kind, endian = args
            out[pos : pos + width] = _extreme(kind, width).to_bytes(width, endian)
    return bytes(out)


def mutations(size: int) -> st.SearchStrategy[list[tuple]]:
    """Lists of 1-4 mutations, half of them in the first 512 bytes (where headers are)."""
    pos = st.one_of(st.integers(0, min(size, 512)), st.integers(0, size))
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("overwrite"), pos, st.sampled_from([1, 2, 4, 8]),
                  st.sampled_from(["zero", "one", "max", "max-1", "sign", "sign-1", "fff0"]),
                  st.sampled_from(["little", "big"])),
    )
    return st.lists(op, min_size=1, max_size=4)


# --- the check, in a child process ---------------------------------------------------------------


def check_file(path: str) -> str | None:
    """None when ``path`` keeps every guarantee, else what failed."""
    import tracemalloc

    from tests.test_adversarial import check_rows, rows_of

    tracemalloc.start()
    try:
        rows = rows_of(path)
        peak = tracemalloc.get_traced_memory()[1]
        row = check_rows(rows, path)
    except BaseException:  # noqa: BLE001 - reported to the parent
        return traceback.format_exc()
    finally:
        tracemalloc.stop()
    if row["status"] == "error" and row["error"].startswith(BUG_ERRORS):
        return f"error row that is a bug: {row['error']}"
    if peak > 64 * (1 << 20) + 16 * os.path.getsize(path):
        return f"allocated {peak} bytes for a {os.path.getsize(path)}-byte file"
    return None


def _serve(conn) -> None:
    while True:
        path = conn.recv()
        conn.send(check_file(path))


class Worker:
    """One child process that checks files; restarted after a hang or a crash."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        self.started = False  # the first file also waits for the child's imports

    def _restart(self) -> None:
        self.proc.kill()
        self.proc.join()
        self._start()

    def check(self, path: str) -> str | None:
        self.conn.send(path)
        if not self.conn.poll(TIMEOUT_S + (0 if self.started else 120)):
            self._restart()
            return f"hang: no answer after {TIMEOUT_S} s"
        try:
            self.started = True
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            code = self.proc.exitcode
            self._restart()
            return f"crash: the child process died (exit code {code})"

    def close(self) -> None:
        self.proc.kill()
        self.proc.join()


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def keep_failure(fmt: str, data: bytes, problem: str) -> str:
    os.makedirs(FAILURES, exist_ok=True)
    path = os.path.join(FAILURES, f"{fmt}-{abs(hash(data)):016x}")
    with open(path, "wb") as f:
        f.write(data)
    return f"{problem}\nreproduce: python -m tests.test_fuzz --check {path}"


@pytest.mark.parametrize("fmt", sorted(VALID))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_keep_the_guarantees(worker, fmt, data):
    original = seed(fmt)
    mutated = mutate(original, data.draw(mutations(len(original)), label="ops"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"fuzz-{fmt}")
        with open(path, "wb") as f:
            f.write(mutated)
        problem = worker.check(path)
    if problem is not None:
        pytest.fail(keep_failure(fmt, mutated, problem))


#: Mutations the fuzzer found that broke a guarantee once (regressions, checked every run).
FOUND = [
    # a corrupt soft-link value: h5py reported the link callback's RuntimeError as a SystemError
    ("hdf5", [("flip", 161, 0), ("insert", 1721, b"\x00" * 10)]),
]


@pytest.mark.parametrize("fmt, ops", FOUND)
def test_mutations_found_by_the_fuzzer(worker, tmp_path, fmt, ops):
    path = tmp_path / f"found-{fmt}"
    path.write_bytes(mutate(seed(fmt), ops))
    assert worker.check(str(path)) is None


def test_mutate():
    data = bytes(range(8))
    assert mutate(data, [("flip", 0, 0)])[0] == 1
    assert mutate(data, [("insert", 2, b"xy")])[:4] == b"\0\1xy"
    assert mutate(data, [("delete", 2, 3)]) == bytes([0, 1, 5, 6, 7])
    assert mutate(data, [("truncate", 3)]) == bytes([0, 1, 2])
    assert mutate(data, [("overwrite", 0, 4, "fff0", "little")])[:4] == struct.pack("<I", 0xFFFFFFF0)


# --- atheris (coverage-guided, for hunting) --------------------------------------------------------


def _atheris(fmt: str, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():
        from transforms.formats import dicom, fits, hdf5, netcdf  # noqa: F401
    folder = tempfile.mkdtemp(prefix="metaextract-atheris-")
    corpus = os.path.join(folder, "corpus")
    os.makedirs(corpus)
    with open(os.path.join(corpus, "seed"), "wb") as f:
        f.write(seed(fmt))
    path = os.path.join(folder, f"input-{fmt}")

    def one(data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
        problem = check_file(path)
        if problem is not None:
            raise AssertionError(problem)

    atheris.Setup([sys.argv[0], *argv, corpus], one)
    atheris.Fuzz()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--atheris"]:
        _atheris(sys.argv[2], sys.argv[3:])
    elif sys.argv[1:2] == ["--check"]:
        print(check_file(sys.argv[2]) or "ok: every guarantee holds")
    else:
        sys.exit("usage: python -m tests.test_fuzz --atheris FORMAT [libFuzzer options] | --check FILE")
