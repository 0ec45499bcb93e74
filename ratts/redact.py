"""Secret redaction: every configured secret VALUE is scrubbed from text ratts shows or stores.

ratts never prints its keys itself, but other parties' text can hold them: an upstream that
echoes the ``Authorization`` header in its 401 body, a vLLM log, a model repeating its prompt.
So redaction works on values, not on where text came from. Values are registered when they
are read from the environment (``api_key_env`` of every policy and PRM, the server token);
``redact`` replaces each with ``<redacted>`` and is applied where text leaves ratts: error
messages (every RattsError), the server's error bodies, the run log's error column, the CLI's
output, the vLLM log tail and every log record (a log record factory, installed on import).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

MASK = "<redacted>"
#: shorter values are not treated as secrets ("EMPTY", "1"): replacing them would garble text
MIN_SECRET_CHARS = 8

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (too-short or empty values are ignored)."""
    global _secrets
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _lock:
        if value not in _secrets:  # longest first, so a secret holding another goes first
            _secrets = tuple(sorted({*_secrets, value}, key=len, reverse=True))


def register_env(names: Iterable[str | None]) -> None:
    """Register the values of the environment variables ``names`` (those that are set)."""
    for name in names:
        if name:
            register(os.environ.get(name))


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``<redacted>``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_any(value: Any) -> Any:
    """Strings inside JSON-like data redacted (dicts, lists, tuples); other values as-is."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_any(v) for v in value)
    return value


_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string is logging's to report, not ours
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_redaction() -> None:
    """Redact every log record from now on (idempotent)."""
    if logging.getLogRecordFactory() is not _redacting_factory:
        logging.setLogRecordFactory(_redacting_factory)


install_log_redaction()
