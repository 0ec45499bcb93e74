"""Running strategies for real: ``Orchestrator.solve`` (probe -> route -> run -> log) and the
dataset sweep.

Names are imported lazily so that importing the sweep does not pull in the router.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ratts.orchestrator.orchestrator import Orchestrator
    from ratts.orchestrator.result import SolveResult
    from ratts.orchestrator.watch import ProgressEvent
    from ratts.router.router import Considered, Decision

_LAZY = {
    "Orchestrator": "ratts.orchestrator.orchestrator",
    "Decision": "ratts.router.router",
    "SolveResult": "ratts.orchestrator.result",
    "Considered": "ratts.router.router",
    "ProgressEvent": "ratts.orchestrator.watch",
}

__all__ = ["Considered", "Decision", "Orchestrator", "ProgressEvent", "SolveResult"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ratts.orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
