"""Lazy re-exports for package ``__init__`` modules, so light imports skip heavy modules.

``ratts`` (and the CLI's start-up) and ``ratts.endpoints`` name their public objects up
front but import a module only when one of its names is first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps a name to the module that
    defines it (absolute, or relative like ``".policy"``); the value is cached on first use."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
