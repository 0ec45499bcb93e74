"""The strategy router: which (policy, PRM, strategy, N) to run for a query, within budget.

``Router`` is what the orchestrator talks to: it routes with the store's current trained
version (checked on every call, so retraining needs no restart) and falls back to the
paper's rule (``ColdStartRouter``) when no version is trained yet.

scikit-learn and skops take seconds to import, so the modules that need them (model,
registry, train, evaluate) load on first use, not when ``ratts.router.features`` is.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from ratts.settings import Settings
from ratts.strategies.probe import DEFAULT_K, ProbeResult
from ratts.strategies.reuse import remaining_fraction
from ratts.types import Budget, RunConfig

if TYPE_CHECKING:
    from ratts.router.model import TrainedRouter
    from ratts.router.registry import RouterRegistry
    from ratts.store import Store


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """Which probe a router's features come from (policy, PRM, k)."""

    policy: str
    prm: str | None
    k: int

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "prm": self.prm, "k": self.k}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeSpec:
        return cls(str(data["policy"]), data.get("prm"), int(data["k"]))


class Router:
    """Route queries for one deployment (settings) and one run log (store, optional).

    ``choose`` uses the current trained version when there is one, else the paper's rule
    over ``candidate_configs(settings)``. ``probe_spec`` says which probe the current
    version expects (cold start: the first policy and PRM, k = DEFAULT_K). With a probe
    result, configs that reuse its samples are priced for the samples they still draw.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        epsilon: float = 0.0,
        seed: int | None = None,
        configs: Sequence[RunConfig] | None = None,
    ) -> None:
        self.settings = settings
        self.registry: RouterRegistry | None = None
        if store is not None:
            from ratts.router.registry import RouterRegistry

            self.registry = RouterRegistry(store)
        self.epsilon = epsilon
        self._rng = random.Random(seed)
        self._cold_configs = list(configs) if configs is not None else None
        self.cold = ColdStartRouter.from_settings(settings, epsilon=epsilon, seed=seed)

    def current(self) -> tuple[str, TrainedRouter] | None:
        return self.registry.current() if self.registry is not None else None

    def probe_spec(self) -> ProbeSpec:
        found = self.current()
        if found is not None and found[1].probe:
            return ProbeSpec.from_dict(found[1].probe)
        policy = self.settings.policy().name
        prm = self.settings.prms[0].name if self.settings.prms else None
        return ProbeSpec(policy, prm, DEFAULT_K)

    def choose(
        self,
        features: Mapping[str, Any],
        budget: Budget | None = None,
        *,
        policy: str | None = None,
        prm: str | None = None,
        lam: float | None = None,
        unit: CostUnit | None = None,
        probe_result: ProbeResult | None = None,
    ) -> Choice:
        """The config to run for a problem with ``features`` (restricted to ``policy`` and
        ``prm`` when given), never over ``budget`` unless nothing fits (then flagged)."""
        limit = budget or Budget()
        found = self.current()
        if found is not None:
            version, trained = found
            candidates = _after_probe(
                trained.candidates(self.settings, policy=policy, prm=prm), probe_result
            )
            choice = trained.model.choose(
                features, candidates, limit, lam, unit=unit, epsilon=self.epsilon, rng=self._rng
            )
            choice.router_version = version
            return choice
        configs = self._cold_configs or candidate_configs(self.settings)
        configs = [
            c
            for c in configs
            if (policy is None or c.policy == policy) and (prm is None or c.prm in (prm, None))
        ]
        candidates = _after_probe(
            CostModel().with_settings(self.settings).candidates(configs), probe_result
        )
        return self.cold.choose(features, candidates, limit, lam, unit=unit)


def _after_probe(
    candidates: list[CandidateConfig], result: ProbeResult | None
) -> list[CandidateConfig]:
    """Reprice configs that reuse the probe's samples: only the rest of their N is spent."""
    if result is None:
        return candidates
    out = []
    for cand in candidates:
        share = remaining_fraction(cand.config, result.policy, result.k, result.params)
        if share >= 1.0:
            out.append(cand)
            continue
        c = cand.cost
        cost = Cost(n=c.n, tokens=c.tokens * share, flops=c.flops * share, usd=c.usd * share)
        out.append(CandidateConfig(cand.config, cost, cand.from_log))
    return out


__all__ = [
    "DEFAULT_K",
    "CandidateConfig",
    "Choice",
    "ColdStartRouter",
    "Cost",
    "CostModel",
    "ProbeResult",
    "ProbeSpec",
    "Ranked",
    "Router",
    "candidate_configs",
    "pick",
]
