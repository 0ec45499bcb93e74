"""ratts: Reward-Aware Test-Time Scaling.

Route each query to the compute-optimal (policy, PRM, strategy, N) and run it::

    import asyncio
    from ratts import Budget, Orchestrator

    async def main() -> None:
        async with Orchestrator() as orch:
            result = await orch.solve("What is 17 * 3?", budget=Budget(n=16))
            print(result.answer, result.config.label(), result.usage.total_tokens)

    asyncio.run(main())

Names are imported lazily, so ``import ratts`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratts.lazy import lazy_getattr

if TYPE_CHECKING:
    from ratts.endpoints.usage import Usage
    from ratts.orchestrator.orchestrator import Orchestrator
    from ratts.orchestrator.result import SolveResult
    from ratts.router.router import Considered
    from ratts.settings import Settings, load_settings
    from ratts.types import Budget, Candidate, Outcome, Problem, RunConfig, StrategyParams

__version__ = "0.1.0"

_LAZY = {
    "Orchestrator": "ratts.orchestrator.orchestrator",
    "SolveResult": "ratts.orchestrator.result",
    "Considered": "ratts.router.router",
    "Budget": "ratts.types",
    "Candidate": "ratts.types",
    "Outcome": "ratts.types",
    "Problem": "ratts.types",
    "RunConfig": "ratts.types",
    "StrategyParams": "ratts.types",
    "Usage": "ratts.endpoints.usage",
    "Settings": "ratts.settings",
    "load_settings": "ratts.settings",
}

__all__ = [
    "Budget",
    "Candidate",
    "Considered",
    "Orchestrator",
    "Outcome",
    "Problem",
    "RunConfig",
    "Settings",
    "SolveResult",
    "StrategyParams",
    "Usage",
    "__version__",
    "load_settings",
]


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
