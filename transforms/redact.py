"""Keep secrets out of logs, error strings, the manifest and the catalog."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(
    r"secret|token|password|passwd|pwd|credential|key|auth|session|signature|sas|connection_string|"
    r"private|cookie",
    re.I,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
#: Query parameters that carry credentials: X-Amz-Signature, X-Amz-Credential, X-Goog-Signature,
#: sig (Azure SAS), token, access_token, key, AWSAccessKeyId, password, ...
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&][\w.-]*?(?:secret|token|password|passwd|pwd|credential|key|auth|session|signature|sig)"
    r"[\w.-]*=)[^&#\s'\"]+",
    re.I,
)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_AUTH_HEADER = re.compile(r"\b(?P<scheme>Bearer|Basic)\s+[\w.~+/=-]{8,}", re.I)
#: Shorter explicit secret values are not masked in text: they would mask ordinary words.
MIN_SECRET_LENGTH = 4


def printable(text: str) -> str:
    """``text`` as valid UTF-8: undecodable bytes of OS names (lone surrogates from
    ``os.fsdecode``) become ``\\xNN``; other lone surrogates become ``\\udNNN``."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def redact_userinfo(text: str) -> str:
    """Mask the ``user:password@`` part of any URL in ``text``."""
    return _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)


def redact_url(text: str) -> str:
    """Mask the ``user:password@`` part and credential query parameters of any URL in ``text``."""
    text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    return _SECRET_QUERY.sub(rf"\g<name>{MASK}", text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text (error messages, log lines) with credentials masked, as valid UTF-8.

    Masks URL credentials (:func:`redact_url`), AWS access key ids, ``Bearer``/``Basic``
    credentials and every value in ``secrets`` (e.g. :func:`secret_values` of the storage
    options) of at least ``MIN_SECRET_LENGTH`` characters.
    """
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    text = redact_url(text)
    text = _ACCESS_KEY_ID.sub(MASK, text)
    text = _AUTH_HEADER.sub(rf"\g<scheme> {MASK}", text)
    return printable(text)


def secret_values(options: Mapping[str, Any] | None) -> list[str]:
    """Every string held under a secret-looking key (``key``, ``secret``, ``token``,
    ``password``, ...) anywhere in ``options``, e.g. fsspec storage options."""
    found: list[str] = []

    def collect(value: Any, secret: bool) -> None:
        if isinstance(value, str):
            if secret:
                found.append(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                collect(v, secret or bool(_SECRET_KEY.search(str(k))))
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v, secret)

    collect(options or {}, False)
    return found


def _redact(key: str, value: Any) -> Any:
    if key == "storage_options" and isinstance(value, dict):
        return {k: MASK for k in value}
    if isinstance(value, str):
        return MASK if _SECRET_KEY.search(key) else redact_text(value)
    if isinstance(value, list):
        return [_redact(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    return value


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options with secret-looking values masked, URL credentials removed, text made UTF-8."""
    return {k: _redact(k, v) for k, v in options.items()}


class RedactingFilter(logging.Filter):
    """Masks credentials (:func:`redact_text`) in every record a handler emits, tracebacks
    included: libraries log URLs as they got them (fsspec's HTTP logger at DEBUG, for one)."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


def install_log_redaction(secrets: Iterable[str] = ()) -> None:
    """Put one :class:`RedactingFilter` (replacing an earlier one) on every handler of the root
    logger, so that records of every library are redacted before they are written."""
    redacting = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
