"""The strategy router: which (policy, PRM, strategy, N) to run for a query, within budget.

``Router`` (ratts.router.router) is the one object that decides, for ``Orchestrator.solve``,
the server, evaluation and the benches: features + candidates + budget -> Decision. It
routes with the store's current trained version (checked on every call, so retraining
needs no restart) and falls back to the paper's rule (``ColdStartRouter``) when no version
is trained yet. Nothing here runs a model: probing and probe reuse are strategies
(``ratts.strategies.probe``, ``ratts.strategies.reuse``).

scikit-learn and skops take seconds to import, so the modules that need them (model,
registry, train, evaluate) load on first use, not when ``ratts.router`` is.
"""

from __future__ import annotations

from ratts.router.candidates import (
    CandidateConfig,
    Choice,
    Cost,
    CostModel,
    CostUnit,
    Ranked,
    candidate_configs,
    pick,
)
from ratts.router.coldstart import ColdStartRouter
from ratts.router.router import (
    Considered,
    Current,
    Decision,
    ProbeSpec,
    Router,
    price_after_probe,
    remaining,
)

__all__ = [
    "CandidateConfig",
    "Choice",
    "ColdStartRouter",
    "Considered",
    "Cost",
    "CostModel",
    "CostUnit",
    "Current",
    "Decision",
    "ProbeSpec",
    "Ranked",
    "Router",
    "candidate_configs",
    "pick",
    "price_after_probe",
    "remaining",
]
