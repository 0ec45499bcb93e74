"""Untrusted text: refuse what cannot be stored or sent, and show the rest as plain text.

Questions, dataset fields, model answers and upstream error bodies come from outside. A lone
surrogate (``\\udcff``, e.g. from a file read with ``errors="surrogateescape"``) is a valid
Python ``str`` that cannot be encoded as UTF-8, so it would fail deep inside an HTTP client,
a hash or the database; it is refused at the edge instead. Text that is shown is never read
as rich markup (``[/bold]``, ``[link=...]``) and never reaches the terminal as control or
escape sequences (ANSI CSI, OSC hyperlinks, bells): those characters are shown as ``\\x1b``
style escapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rich.markup import escape as _escape_markup

from ratts.errors import InputError
from ratts.redact import redact

# C0 controls except tab and newline, DEL, C1 controls, lone surrogates; plus the Unicode
# line/paragraph separators and bidi overrides that reorder what a terminal shows.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int | None:
    """Index of the first character UTF-8 cannot encode (a lone surrogate), or None."""
    match = _SURROGATE.search(text)
    return match.start() if match else None


def check_text(text: str, what: str = "the question") -> str:
    """``text`` unchanged if it is valid Unicode; else InputError naming ``what`` and where."""
    where = lone_surrogate(text)
    if where is not None:
        raise InputError(
            f"{what} is not valid Unicode text: lone surrogate U+{ord(text[where]):04X} at "
            f"character {where} (was the input decoded with errors='surrogateescape'?)"
        )
    return text


def find_bad_text(value: Any, where: str = "") -> str | None:
    """The path (e.g. ``meta.tags[2]``) of the first string in a JSON value holding a lone
    surrogate, keys included, or None when every string is valid."""
    if isinstance(value, str):
        return where or "text" if lone_surrogate(value) is not None else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and lone_surrogate(key) is not None:
                return f"{where}.<key>" if where else "<key>"
            found = find_bad_text(item, path)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = find_bad_text(item, f"{where}[{i}]")
            if found:
                return found
    return None


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` as a string a terminal shows literally: control characters, escape
    sequences and lone surrogates become visible ``\\x..``/``\\u....`` escapes."""
    return _UNSAFE.sub(_escape_char, str(text))


def plain(text: object) -> str:
    """``text`` fit to embed in a rich markup string: secrets redacted, printable, with
    markup escaped."""
    return _escape_markup(printable(redact(str(text))))
