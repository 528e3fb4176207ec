"""Keep secrets out of logs and the manifest."""

from __future__ import annotations

import re
from typing import Any

_SECRET_KEY = re.compile(r"(secret|token|password|passwd|credential|key|auth|session)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """Drop the ``user:password@`` part of any URL in ``text``."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def _redact(key: str, value: Any) -> Any:
    if key == "storage_options" and isinstance(value, dict):
        return {k: "***" for k in value}
    if isinstance(value, str):
        return "***" if _SECRET_KEY.search(key) else redact_url(value)
    if isinstance(value, list):
        return [_redact(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _redact(k, v) for k, v in value.items()}
    return value


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options with secret-looking values masked and URL credentials removed."""
    return {k: _redact(k, v) for k, v in options.items()}
