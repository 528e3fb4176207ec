"""Classify extraction errors as transient or permanent, and retry the transient ones.

Transient: the storage failed, not the file (network errors, throttling, 5xx, a timeout on a
remote read); trying again may succeed. Permanent: the file is broken, or a local file hung or
crashed the parser (it would again). Exception classes of aiohttp, botocore, gcsfs, google-api
and requests are recognized by name, without importing those libraries. Beam-free.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import fsspec.utils

from transforms.formats.base import format_error

T = TypeVar("T")
ErrorKind = Literal["transient", "permanent"]
ATTEMPTS_ATTRIBUTE = "metaextract_attempts"

LOCAL_PROTOCOLS = frozenset({"file", "local", "memory"})

TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNRESET", "ECONNABORTED", "ECONNREFUSED", "ETIMEDOUT", "EAGAIN", "EWOULDBLOCK",
        "ENETUNREACH", "ENETDOWN", "ENETRESET", "EHOSTUNREACH", "EHOSTDOWN", "EPIPE", "EBUSY",
        "EREMOTEIO",
    )
    if hasattr(errno, name)
)  # fmt: skip

# Exception classes (or base classes) that always mean the connection or the service failed.
TRANSIENT_CLASS_NAMES = frozenset(
    {
        "ConnectionError",  # builtin, requests
        "IncompleteRead",  # http.client
        "FSTimeoutError",  # fsspec
        "ClientConnectionError", "ClientPayloadError", "ServerTimeoutError",  # aiohttp
        "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",  # botocore
        "ConnectTimeoutError", "ResponseStreamingError", "IncompleteReadError",  # botocore
        "ChunkedEncodingError", "ProtocolError",  # requests, urllib3
        "TransportError",  # google.auth
        "TooManyRequests", "InternalServerError", "BadGateway", "ServiceUnavailable",  # google
        "GatewayTimeout", "DeadlineExceeded",  # google.api_core
    }
)  # fmt: skip

# botocore ClientError codes for throttling and server-side trouble.
TRANSIENT_SERVICE_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
        "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "ProvisionedThroughputExceededException",
        "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
        "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
    }
)  # fmt: skip


def is_remote(url: str) -> bool:
    """True unless the innermost fsspec protocol of ``url`` is local (``file``, ``memory``)."""
    return fsspec.utils.get_protocol(url.split("::")[-1]) not in LOCAL_PROTOCOLS


def classify(exc: BaseException, remote: bool) -> ErrorKind:
    """``"transient"`` when any exception in ``exc``'s cause chain is, else ``"permanent"``.

    Args:
      exc: the error that stopped the file's extraction.
      remote: whether the file is on remote storage. A ``TimeoutError`` (a remote read, or the
        extraction watchdog) is transient for a remote file and permanent for a local one: a
        local file that hangs the parser would hang it again.
    """
    return "transient" if any(_is_transient(e, remote) for e in _chain(exc)) else "permanent"


def retry(
    fn: Callable[[], T],
    *,
    max_retries: int,
    remote: bool,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    sleep: Callable[[float], Any] = time.sleep,
    jitter: Callable[[], float] = random.random,
    transient_result: Callable[[T], bool] | None = None,
) -> tuple[T, int]:
    """``(fn(), attempts)``, trying again up to ``max_retries`` times after a transient error.

    Args:
      fn: the attempt; called with no arguments.
      max_retries: retries after the first attempt (0: no retry).
      remote: passed to :func:`classify`.
      backoff_s: the wait before the first retry; doubles each retry, at most ``max_backoff_s``,
        times a jitter factor in ``[0.5, 1)``.
      sleep, jitter: injectable for tests (``jitter()`` returns a float in ``[0, 1)``).
      transient_result: for an ``fn`` that reports errors in its result instead of raising:
        says whether a result is a transient failure. The last such result is returned when the
        retries run out.

    Raises:
      The last exception, when it is permanent or the retries ran out; its
      ``metaextract_attempts`` attribute says how many attempts were made.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            result = fn()
        except Exception as exc:
            if attempts > max_retries or classify(exc, remote) == "permanent":
                setattr(exc, ATTEMPTS_ATTRIBUTE, attempts)
                raise
        else:
            if attempts > max_retries or transient_result is None or not transient_result(result):
                return result, attempts
        sleep(backoff_delay(attempts, backoff_s, max_backoff_s, jitter))


def backoff_delay(
    attempt: int, backoff_s: float, max_backoff_s: float, jitter: Callable[[], float]
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): capped, jittered."""
    return min(max_backoff_s, backoff_s * 2 ** (attempt - 1)) * (0.5 + 0.5 * jitter())


def error_fields(exc: BaseException, remote: bool) -> dict[str, Any]:
    """The ``files`` columns of a file whose extraction raised ``exc`` (after :func:`retry`)."""
    return {
        "status": "error",
        "error": format_error(exc),
        "error_kind": classify(exc, remote),
        "attempts": getattr(exc, ATTEMPTS_ATTRIBUTE, 1),
    }


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its explicit cause or implicit context, and so on (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )


def _is_transient(exc: BaseException, remote: bool) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & TRANSIENT_CLASS_NAMES:
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    if "TimeoutError" in names:  # builtin, socket.timeout, asyncio / concurrent.futures (3.10)
        return remote
    if _service_code(exc) in TRANSIENT_SERVICE_CODES:
        return True
    status = _http_status(exc)
    return status is not None and (status in (408, 429) or 500 <= status <= 599)


def _service_code(exc: BaseException) -> str | None:
    """A botocore ``ClientError``'s error code (``response["Error"]["Code"]``)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (gcsfs ``HttpError.code``, aiohttp ``.status``,
    requests ``.response.status_code``, botocore ``response["ResponseMetadata"]``)."""
    response = getattr(exc, "response", None)
    candidates = [
        getattr(exc, "status", None),
        getattr(exc, "status_code", None),
        getattr(exc, "code", None),
        getattr(response, "status_code", None),
    ]
    if isinstance(response, dict):
        candidates.append(response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None
