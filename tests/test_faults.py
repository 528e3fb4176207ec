"""Error classification (transient or permanent) and retry with backoff; fake errors, fake sleep."""

from __future__ import annotations

import errno
import socket

import pytest

from transforms.faults import backoff_delay, classify, error_fields, is_remote, retry
from transforms.isolation import WorkerCrashed

# Stand-ins for the libraries' classes: classification goes by class name.


class ClientError(Exception):  # botocore
    def __init__(self, code: str, status: int):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class HttpError(Exception):  # gcsfs
    def __init__(self, code: int):
        super().__init__(f"HTTP {code}")
        self.code = code


class ClientConnectionError(Exception):  # aiohttp
    pass


class ServerDisconnectedError(ClientConnectionError):  # a subclass counts too
    pass


class FSTimeoutError(Exception):  # fsspec
    pass


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset by peer"),
        BrokenPipeError(),
        OSError(errno.ETIMEDOUT, "timed out"),
        OSError(errno.EAGAIN, "try again"),
        OSError(errno.ENETUNREACH, "unreachable"),
        ClientError("SlowDown", 503),
        ClientError("Throttling", 400),
        ClientError("RequestLimitExceeded", 400),
        ClientError("ServiceUnavailable", 503),
        ClientError("SomethingNew", 502),
        HttpError(429),
        HttpError(503),
        ServerDisconnectedError(),
        FSTimeoutError(),
    ],
    ids=repr,
)
def test_transient(exc):
    assert classify(exc, remote=True) == "transient"
    assert classify(exc, remote=False) == "transient"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad header"),
        KeyError("NAXIS"),
        EOFError(),
        MemoryError(),
        OSError(errno.EIO, "Unable to open file (truncated file)"),
        FileNotFoundError(errno.ENOENT, "gone"),
        PermissionError(errno.EACCES, "denied"),
        ClientError("NoSuchKey", 404),
        ClientError("AccessDenied", 403),
        HttpError(404),
        WorkerCrashed("extraction process died (SIGSEGV)"),
        RuntimeError("NetCDF: HDF error"),
    ],
    ids=repr,
)
def test_permanent(exc):
    assert classify(exc, remote=True) == "permanent"
    assert classify(exc, remote=False) == "permanent"


@pytest.mark.parametrize("exc", [TimeoutError("did not finish in 1 s"), socket.timeout()])
def test_timeout_is_transient_only_for_remote_files(exc):
    assert classify(exc, remote=True) == "transient"
    assert classify(exc, remote=False) == "permanent"


def test_chain_is_classified_by_cause_and_context():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as exc:
            raise ValueError("could not parse header") from exc
    except ValueError as exc:
        explicit = exc
    try:
        try:
            raise ClientError("SlowDown", 503)
        except ClientError:
            raise OSError(errno.EIO, "read failed")  # implicit context
    except OSError as exc:
        implicit = exc
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError:
            raise ValueError("bad file") from None  # context suppressed
    except ValueError as exc:
        suppressed = exc
    assert classify(explicit, remote=True) == "transient"
    assert classify(implicit, remote=True) == "transient"
    assert classify(suppressed, remote=True) == "permanent"


def test_cyclic_chain_terminates():
    a, b = ValueError("a"), KeyError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a, remote=True) == "permanent"


def test_real_botocore_throttling_translated_by_s3fs_is_transient():
    botocore_exceptions = pytest.importorskip("botocore.exceptions")
    s3fs_errors = pytest.importorskip("s3fs.errors")
    client_error = botocore_exceptions.ClientError(
        {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "GetObject"
    )
    translated = s3fs_errors.translate_boto_error(client_error)
    assert classify(client_error, remote=True) == "transient"
    assert classify(translated, remote=True) == "transient"
    missing = botocore_exceptions.ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    assert classify(s3fs_errors.translate_boto_error(missing), remote=True) == "permanent"


def test_real_aiohttp_errors():
    aiohttp = pytest.importorskip("aiohttp")
    assert classify(aiohttp.ServerDisconnectedError(), remote=True) == "transient"
    assert classify(aiohttp.ServerTimeoutError(), remote=False) == "transient"


@pytest.mark.parametrize(
    "url, remote",
    [
        ("/data/a.h5", False),
        ("file:///data/a.h5", False),
        ("memory://a.h5", False),
        ("s3://bucket/a.h5", True),
        ("gs://bucket/a.h5", True),
        ("simplecache::s3://bucket/a.h5", True),
    ],
)
def test_is_remote(url, remote):
    assert is_remote(url) is remote


class Flaky:
    """Fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def no_jitter():
    return 1.0  # the upper bound: delays are exactly backoff_s * 2**n, capped


def test_success_first_time():
    sleeps = []
    assert retry(Flaky(), max_retries=3, remote=True, sleep=sleeps.append) == ("ok", 1)
    assert sleeps == []


def test_transient_then_success():
    fn = Flaky(ConnectionResetError(), HttpError(503))
    sleeps = []
    result = retry(fn, max_retries=3, remote=True, sleep=sleeps.append, jitter=no_jitter)
    assert result == ("ok", 3)
    assert sleeps == [0.5, 1.0]


def test_transient_retried_max_retries_times_then_raised_with_attempts():
    fn = Flaky(*[ConnectionResetError(f"reset {i}") for i in range(10)])
    sleeps = []
    with pytest.raises(ConnectionResetError, match="reset 3") as info:
        retry(fn, max_retries=3, remote=True, sleep=sleeps.append, jitter=no_jitter)
    assert fn.calls == 4
    assert info.value.metaextract_attempts == 4
    assert len(sleeps) == 3
    assert error_fields(info.value, remote=True) == {
        "status": "error",
        "error": "ConnectionResetError: reset 3",
        "error_kind": "transient",
        "attempts": 4,
    }


def test_permanent_not_retried():
    fn = Flaky(ValueError("bad header"))
    sleeps = []
    with pytest.raises(ValueError) as info:
        retry(fn, max_retries=5, remote=True, sleep=sleeps.append)
    assert fn.calls == 1 and sleeps == []
    assert error_fields(info.value, remote=True)["error_kind"] == "permanent"
    assert error_fields(info.value, remote=True)["attempts"] == 1


def test_local_watchdog_timeout_not_retried_remote_one_is():
    with pytest.raises(TimeoutError):
        retry(Flaky(TimeoutError("hang")), max_retries=2, remote=False, sleep=lambda s: None)
    assert retry(Flaky(TimeoutError("slow")), max_retries=2, remote=True, sleep=lambda s: None) == (
        "ok",
        2,
    )


def test_zero_retries():
    fn = Flaky(ConnectionResetError())
    with pytest.raises(ConnectionResetError) as info:
        retry(fn, max_retries=0, remote=True, sleep=lambda s: None)
    assert fn.calls == 1 and info.value.metaextract_attempts == 1


def test_backoff_grows_and_is_bounded():
    delays = [backoff_delay(n, 0.5, 30.0, no_jitter) for n in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    low = [backoff_delay(n, 0.5, 30.0, lambda: 0.0) for n in range(1, 10)]
    assert low == [d / 2 for d in delays]  # jitter keeps each wait within [delay/2, delay)


def test_jitter_is_applied_per_retry():
    factors = iter([0.0, 0.5, 1.0])
    sleeps = []
    fn = Flaky(ConnectionResetError(), ConnectionResetError(), ConnectionResetError())
    jitter = factors.__next__
    retry(fn, max_retries=3, remote=True, backoff_s=1.0, sleep=sleeps.append, jitter=jitter)
    assert sleeps == [0.5, 1.5, 4.0]


def test_transient_result_is_retried_and_last_result_returned():
    results = iter([{"error_kind": "transient"}, {"error_kind": "transient"}, {"error_kind": None}])
    sleeps = []
    result = retry(
        lambda: next(results),
        max_retries=5,
        remote=True,
        sleep=sleeps.append,
        transient_result=lambda r: r["error_kind"] == "transient",
    )
    assert result == ({"error_kind": None}, 3) and len(sleeps) == 2

    always = retry(
        lambda: {"error_kind": "transient"},
        max_retries=2,
        remote=True,
        sleep=lambda s: None,
        transient_result=lambda r: r["error_kind"] == "transient",
    )
    assert always == ({"error_kind": "transient"}, 3)
