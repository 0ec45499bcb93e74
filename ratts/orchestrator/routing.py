"""The orchestrator's side of routing: which router answers, which probe feeds it, and the
router's Choice turned into a Decision the result can explain.

- The trained router is looked up in the store's registry on every routed solve (one small
  query; the artifact is reloaded only when the current version changes), so a long-lived
  server follows ``ratts router train`` / ``ratts router use`` without a restart.
- A trained router was fitted on features from one probe (policy, PRM, k); solve probes the
  same way so the features mean what the model learned. Without a trained router the probe
  uses the requested (or first configured) policy and PRM, and the cold-start rule decides.
- A router artifact that fails to load (tampered, missing) is refused by the registry; the
  solve then falls back to the cold-start rule and says so in the explanation, instead of
  failing every request of a running server.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ratts.endpoints.usage import Usage
from ratts.errors import InputError, RouterError
from ratts.orchestrator.result import Considered
from ratts.router.candidates import Choice, CostModel, candidate_configs
from ratts.router.coldstart import ColdStartRouter
from ratts.router.registry import RouterRegistry
from ratts.settings import Settings
from ratts.store import Store
from ratts.types import Budget, RunConfig

if TYPE_CHECKING:
    from ratts.router.model import TrainedRouter  # scikit-learn: imported only to load one

log = logging.getLogger(__name__)

TOP_CANDIDATES = 5


@dataclass(slots=True)
class Decision:
    """The config to run and why: how it was decided, the ranking, the router version."""

    config: RunConfig
    reason: str  # forced | router | exploration | cold_start
    explanation: str = ""
    why: list[Considered] = field(default_factory=list)
    router_version: str | None = None


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """How to probe for the router that will decide."""

    policy: str
    prm: str | None
    k: int


@dataclass(slots=True)
class Current:
    """The router in charge of one solve: a trained one (with its version) or None."""

    trained: TrainedRouter | None
    version: str | None
    note: str = ""


class Routing:
    """Routers and candidates for one Orchestrator (settings restricted to its endpoints)."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        *,
        epsilon: float = 0.0,
        lam: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.epsilon = epsilon
        self.lam = lam
        self._registry = RouterRegistry(store) if store is not None else None
        self._rng = random.Random(seed)
        self._cold = ColdStartRouter.from_settings(settings, epsilon=epsilon, seed=seed)

    def current(self) -> Current:
        """The store's current trained router (blocking: call it off the event loop)."""
        if self._registry is None:
            return Current(None, None, "no run log to hold a trained router")
        try:
            found = self._registry.current()
        except RouterError as exc:
            log.warning("trained router refused, using the cold-start rule: %s", exc)
            return Current(None, None, f"trained router refused ({exc})")
        if found is None:
            return Current(None, None)
        version, trained = found
        return Current(trained, version)

    def probe_plan(
        self, current: Current, policy: str | None, prm: str | None, default_k: int
    ) -> ProbePlan:
        """The trained router's own probe when this deployment can run it, else the
        requested (or first) policy and PRM with ``default_k`` samples."""
        known_policies = {p.name for p in self.settings.policies}
        known_prms = {p.name for p in self.settings.prms}
        spec = current.trained.probe if current.trained is not None else {}
        if spec and spec.get("policy") in known_policies and spec.get("prm") in known_prms | {None}:
            return ProbePlan(str(spec["policy"]), spec.get("prm"), int(spec["k"]))
        policy_name = self.settings.policy(policy).name
        prm_name = self.settings.prm(prm).name if (prm is not None or self.settings.prms) else None
        return ProbePlan(policy_name, prm_name, default_k)

    def decide(
        self,
        current: Current,
        features: dict[str, object],
        budget: Budget | None,
        policy: str | None,
        prm: str | None,
        spent: Usage | None = None,
    ) -> Decision:
        """Ask the trained router (or the cold-start rule) for the best config in budget.

        ``spent`` (the probe's usage) is charged to the budget first, so the probe plus the
        chosen run stay within it (conservative when the run reuses the probe's samples).
        Raises InputError when no candidate is predicted to fit what is left.
        """
        limit = remaining(budget, spent) if budget is not None else Budget()
        if current.trained is not None:
            try:
                choice = current.trained.choose(
                    features,
                    limit,
                    self.lam,
                    settings=self.settings,
                    policy=policy,
                    prm=prm,
                    epsilon=self.epsilon,
                    rng=self._rng,
                )
            except RouterError as exc:  # e.g. it knows no config for the requested policy
                raise InputError(str(exc)) from None
            reason = "exploration" if choice.explored else "router"
            version = current.version
        else:
            configs = candidate_configs(
                self.settings,
                policies=[policy] if policy is not None else None,
                prms=[prm] if prm is not None else None,
            )
            candidates = CostModel().with_settings(self.settings).candidates(configs)
            choice = self._cold.choose(features, candidates, limit)
            reason = "exploration" if choice.explored else "cold_start"
            version = None
        if not choice.within_budget:
            cheapest = choice.config.label()
            over = "; ".join(choice.predicted_cost.exceeds(limit))
            after = " after the probe" if spent is not None and spent.total_tokens else ""
            raise InputError(
                f"no config fits the budget{after}: even the cheapest, {cheapest}, is "
                f"predicted over it ({over})"
            )
        explanation = choice.reason + (f"; {current.note}" if current.note else "")
        return Decision(
            config=choice.config,
            reason=reason,
            explanation=explanation,
            why=considered(choice),
            router_version=version,
        )


def remaining(budget: Budget, spent: Usage | None) -> Budget:
    """What is left of ``budget`` after ``spent`` (N is per step, so it is not consumed)."""
    if spent is None:
        return budget
    return Budget(
        n=budget.n,
        tokens=None if budget.tokens is None else budget.tokens - spent.total_tokens,
        flops=None if budget.flops is None else budget.flops - spent.flops,
        usd=None if budget.usd is None else budget.usd - spent.dollars,
    )


def considered(choice: Choice, top: int = TOP_CANDIDATES) -> list[Considered]:
    """The best ``top`` of the ranking (plus the chosen config if it ranked lower)."""
    out: list[Considered] = []
    chosen_key = choice.config.key()
    for i, r in enumerate(choice.ranking):
        is_chosen = r.config.key() == chosen_key
        if i >= top and not is_chosen:
            continue
        cost = r.predicted_cost
        out.append(
            Considered(
                config=r.config,
                predicted_accuracy=r.predicted_accuracy,
                predicted_cost={
                    "n": float(cost.n),
                    "tokens": cost.tokens,
                    "flops": cost.flops,
                    "usd": cost.usd,
                },
                fits_budget=r.fits,
                chosen=is_chosen,
            )
        )
    return out
