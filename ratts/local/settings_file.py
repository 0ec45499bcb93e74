"""Write a served model's endpoint into the settings file, so ``ratts solve`` finds it.

The file (``$RATTS_CONFIG`` or ./ratts.toml) is read with ``tomllib``, the ``[[policies]]``
(or ``[[prms]]``) entry of the same name is replaced (or appended) and the document is
written back with a small serializer for the plain data settings hold (comments in the file
are not kept).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ratts.errors import ConfigError
from ratts.settings import PolicySpec, PRMSpec, Settings

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def settings_path() -> Path:
    """Where settings are read from: ``$RATTS_CONFIG`` or ./ratts.toml."""
    return Path(os.environ.get("RATTS_CONFIG", "ratts.toml"))


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write a {type(value).__name__} to the settings file")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(lines: list[str], prefix: str, table: Mapping[str, Any], header: str | None) -> None:
    simple = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if header is not None:
        lines.append(header)
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in simple.items())
    for k, v in table.items():
        path = f"{prefix}{_key(k)}"
        if isinstance(v, dict):
            lines.append("")
            _table(lines, path + ".", v, f"[{path}]")
        elif _is_table_array(v):
            for item in v:
                lines.append("")
                _table(lines, path + ".", item, f"[[{path}]]")


def dumps(document: Mapping[str, Any]) -> str:
    """TOML text for a document of strings, numbers, booleans, lists and tables."""
    lines: list[str] = []
    _table(lines, "", document, None)
    return "\n".join(lines).lstrip("\n") + "\n"


def read_document(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse settings file {path}: {exc}") from None


def upsert_policy(spec: PolicySpec, path: Path | None = None) -> Path:
    """Put ``spec`` in the file's ``[[policies]]`` (replacing one of the same name), first.

    First, because ``Settings.policy()`` without a name takes the first policy: the model
    just served becomes the default.
    """
    target = path or settings_path()
    doc = read_document(target)
    entry = spec.model_dump(mode="json", exclude_defaults=False)
    entry = {k: v for k, v in entry.items() if v is not None}
    policies = [p for p in doc.get("policies", []) if p.get("name") != spec.name]
    doc["policies"] = [entry, *policies]
    _write(target, doc)
    return target


def upsert_prm(spec: PRMSpec, path: Path | None = None) -> Path:
    """Put ``spec`` first in the file's ``[[prms]]`` (the default PRM), replacing one of the
    same name. A file without ``[[prms]]`` had the built-in ones; they are kept after it."""
    target = path or settings_path()
    doc = read_document(target)
    if "prms" in doc:
        current = list(doc["prms"])
    else:
        defaults = Settings.model_fields["prms"].default_factory() or []  # type: ignore[call-arg,misc]
        current = [p.model_dump(mode="json", exclude_none=True) for p in defaults]
    entry = spec.model_dump(mode="json", exclude_none=True)
    doc["prms"] = [entry, *(p for p in current if p.get("name") != spec.name)]
    _write(target, doc)
    return target


def _write(target: Path, doc: Mapping[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(dumps(doc), encoding="utf-8")
    tmp.replace(target)
