"""The one router: features + candidates + budget -> Decision. It decides; it runs nothing.

``Orchestrator.solve`` (so ``ratts solve`` and ``ratts serve``), the tests and the benches
all ask this object, so the decision that is served is the decision that is evaluated.

- The trained router is looked up in the store's registry on every decision (one small
  query; the artifact is reloaded only when the current version changes), so a long-lived
  server follows ``ratts router train`` / ``ratts router use`` without a restart. Without
  one, the paper's rule (``ColdStartRouter``) decides over ``candidate_configs(settings)``.
- A router artifact that fails to load (tampered, missing) is refused by the registry; the
  cold-start rule then decides and the explanation says so.
- One pricing rule, ``price_after_probe``: a candidate that reuses the probe's samples is
  charged only for the samples it still draws, and the probe's own spend is taken off the
  budget once (``remaining``), so the probe is charged exactly once. ``ratts router eval``
  prices with the same function.

scikit-learn and skops take seconds to import; the registry (and through it the model)
loads on first use.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ratts.endpoints.usage import Usage
from ratts.errors import InputError, RouterError
from ratts.router.candidates import (
    CandidateConfig,
    Choice,
    Cost,
    CostModel,
    CostUnit,
    candidate_configs,
    stepwise_left_out,
)
from ratts.router.coldstart import ColdStartRouter
from ratts.router.modes import PROBE, Mode
from ratts.settings import Settings
from ratts.strategies.probe import DEFAULT_K, ProbeResult
from ratts.strategies.reuse import remaining_fraction
from ratts.types import Budget, RunConfig, StrategyParams

if TYPE_CHECKING:
    from ratts.router.model import TrainedRouter
    from ratts.router.registry import RouterRegistry
    from ratts.store import Store

log = logging.getLogger(__name__)

TOP_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """Which probe a router's features come from (policy, PRM, k and its sampling params):
    what solve runs first. The params matter twice: features mean what they meant in
    training only under the same sampling, and a config reuses the probe's samples only
    when it samples alike (``ratts.strategies.reuse``)."""

    policy: str
    prm: str | None
    k: int
    params: StrategyParams | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy, "prm": self.prm, "k": self.k}
        if self.params is not None:
            out["params"] = self.params.model_dump(mode="json")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeSpec:
        raw = data.get("params")
        params = StrategyParams.model_validate(raw) if isinstance(raw, Mapping) else None
        return cls(str(data["policy"]), data.get("prm"), int(data["k"]), params)


@dataclass(frozen=True, slots=True)
class Considered:
    """One candidate config the router weighed: its prediction and whether it fit."""

    config: RunConfig
    predicted_accuracy: float | None
    predicted_cost: dict[str, float]
    fits_budget: bool
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.label(),
            "policy": self.config.policy,
            "prm": self.config.prm,
            "strategy": self.config.strategy,
            "n": self.config.params.n,
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_cost": dict(self.predicted_cost),
            "fits_budget": self.fits_budget,
            "chosen": self.chosen,
        }


@dataclass(slots=True)
class Decision:
    """The config to run and why: how it was decided, the ranking, the router version."""

    config: RunConfig
    reason: str  # forced | router | exploration | cold_start
    explanation: str = ""
    why: list[Considered] = field(default_factory=list)
    router_version: str | None = None
    predicted_accuracy: float | None = None
    predicted_cost: dict[str, float] = field(default_factory=dict)
    explored: bool = False
    propensity: float = 1.0
    limit: dict[str, float | None] = field(default_factory=dict)
    rule: str = PROBE  # which of the trained router's rules decided (ratts.router.modes)

    def to_log(self) -> dict[str, Any]:
        """The decision as a routed run's log entry: what a router can learn from (the
        candidates weighed, the choice with its predictions, exploration, propensity)."""
        return {
            "reason": self.reason,
            "rule": self.rule,
            "chosen": self.config.label(),
            "chosen_key": self.config.key(),
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_cost": dict(self.predicted_cost),
            "explored": self.explored,
            "propensity": self.propensity,
            "budget_left": dict(self.limit),
            "router_version": self.router_version,
            "candidates": [c.to_dict() for c in self.why],
        }


@dataclass(slots=True)
class Current:
    """The router in charge of one decision: a trained one (with its version) or None."""

    trained: TrainedRouter | None
    version: str | None
    note: str = ""


# ---------------------------------------------------------------- pricing


def price_after_probe(
    candidates: Sequence[CandidateConfig],
    policy: str,
    k: int,
    params: StrategyParams | None = None,
) -> list[CandidateConfig]:
    """THE pricing rule after a probe of ``k`` samples from ``policy`` (with ``params``): a
    config that reuses the probe's samples is charged for the share of its samples it
    still draws (N - k of N); the others are unchanged."""
    out = []
    for cand in candidates:
        share = remaining_fraction(cand.config, policy, k, params)
        if share >= 1.0:
            out.append(cand)
            continue
        c = cand.cost
        cost = Cost(n=c.n, tokens=c.tokens * share, flops=c.flops * share, usd=c.usd * share)
        out.append(CandidateConfig(cand.config, cost, cand.from_log))
    return out


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


# ---------------------------------------------------------------- the router


class Router:
    """Route queries for one deployment (settings) and one run log (store, optional).

    ``epsilon`` explores a random in-budget candidate (seeded by ``seed``); ``lam`` makes it
    maximise accuracy - lam x cost within the budget instead of accuracy alone, with cost in
    ``lam_unit`` (a lam is a price per unit: one calibrated per token means nothing per
    FLOP, so the unit travels with it and never follows the budget's). ``configs``
    replaces the cold-start rule's candidates (default: ``candidate_configs(settings)``).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        epsilon: float = 0.0,
        lam: float | None = None,
        lam_unit: CostUnit = "tokens",
        seed: int | None = None,
        configs: Sequence[RunConfig] | None = None,
    ) -> None:
        self.settings = settings
        self.epsilon = epsilon
        self.lam = lam
        self.lam_unit: CostUnit = lam_unit
        self.registry: RouterRegistry | None = None
        if store is not None:
            from ratts.router.registry import RouterRegistry

            self.registry = RouterRegistry(store)
        self._rng = random.Random(seed)
        self._cold_configs = list(configs) if configs is not None else None
        self.cold = ColdStartRouter.from_settings(settings, epsilon=epsilon, seed=seed)

    def current(self) -> Current:
        """The store's current trained router (blocking: call it off the event loop)."""
        if self.registry is None:
            return Current(None, None, "no run log to hold a trained router")
        try:
            found = self.registry.current()
        except RouterError as exc:
            log.warning("trained router refused, using the cold-start rule: %s", exc)
            return Current(None, None, f"trained router refused ({exc})")
        if found is None:
            return Current(None, None)
        version, trained = found
        problem = self.unservable(trained)
        if problem:
            log.warning(
                "trained router %s refused, using the cold-start rule: %s", version, problem
            )
            return Current(None, None, f"trained router {version} refused ({problem})")
        return Current(trained, version)

    def unservable(self, trained: TrainedRouter) -> str:
        """Why this deployment cannot serve ``trained`` ('' when it can): a router trained
        for policies or PRMs that are not configured would choose configs that cannot run."""
        policies = {p.name for p in self.settings.policies}
        prms = {p.name for p in self.settings.prms}
        runnable = [
            c
            for c in trained.run_configs()
            if c.policy in policies and (c.prm is None or c.prm in prms)
        ]
        if runnable:
            return ""
        wanted = sorted({c.policy for c in trained.run_configs()})
        return (
            f"trained for policies {', '.join(wanted) or 'none'}, but this deployment "
            f"configures {', '.join(sorted(policies)) or 'none'}"
        )

    def probe_spec(
        self,
        current: Current | None = None,
        policy: str | None = None,
        prm: str | None = None,
        k: int = DEFAULT_K,
    ) -> ProbeSpec:
        """The probe to run before deciding: the trained router's own (its features mean
        what it learned) when this deployment can run it, else the requested (or first)
        policy and PRM with ``k`` samples."""
        now = current if current is not None else self.current()
        spec = now.trained.probe if now.trained is not None else {}
        policies = {p.name for p in self.settings.policies}
        prms = {p.name for p in self.settings.prms}
        if spec and spec.get("policy") in policies and spec.get("prm") in prms | {None}:
            return ProbeSpec.from_dict(spec)
        policy_name = self.settings.policy(policy).name
        prm_name = self.settings.prm(prm).name if (prm is not None or self.settings.prms) else None
        return ProbeSpec(policy_name, prm_name, k)

    def rule(
        self, current: Current, lam: float | None = None, unit: CostUnit | None = None
    ) -> Mode:
        """Which rule decides at ``lam`` (default the router's own): ``probe`` (probe first)
        for the cold-start rule, which reads the probe's agreement; for a trained router,
        what its cross-fitted table says (``ratts.router.modes``), so a probe that does not
        pay for itself is not run."""
        if current.trained is None:
            return PROBE
        weight = lam if lam is not None else self.lam
        return current.trained.mode_for(weight, unit or self.lam_unit)

    def _rule_for(
        self,
        current: Current,
        rule: Mode | None,
        probe_result: ProbeResult | None,
        lam: float | None = None,
    ) -> Mode:
        """The rule that decides: the one asked for, else ``probe`` after a probe, else the
        router's ``rule`` at ``lam``."""
        if rule is not None:
            return rule
        return PROBE if probe_result is not None else self.rule(current, lam)

    def candidates(
        self,
        current: Current,
        *,
        policy: str | None = None,
        prm: str | None = None,
        probe_result: ProbeResult | None = None,
    ) -> list[CandidateConfig]:
        """The configs the router in charge may choose (restricted to ``policy``/``prm``
        when given), priced for what they still spend after ``probe_result``."""
        if current.trained is not None:
            cands = current.trained.candidates(self.settings, policy=policy, prm=prm)
        else:
            configs = self._cold_configs or candidate_configs(self.settings)
            configs = [
                c
                for c in configs
                if (policy is None or c.policy == policy) and (prm is None or c.prm in (prm, None))
            ]
            cands = CostModel().with_settings(self.settings).candidates(configs)
        if probe_result is None:
            return cands
        return price_after_probe(cands, probe_result.policy, probe_result.k, probe_result.params)

    def choose(
        self,
        features: Mapping[str, Any],
        budget: Budget | None = None,
        *,
        current: Current | None = None,
        policy: str | None = None,
        prm: str | None = None,
        lam: float | None = None,
        unit: CostUnit | None = None,
        probe_result: ProbeResult | None = None,
        rule: Mode | None = None,
    ) -> Choice:
        """The config to run for a problem with ``features``, never over what is left of
        ``budget`` after the probe unless nothing fits (then flagged ``within_budget``).
        ``rule``: which trained rule predicts (default: ``probe`` after a probe, else the
        router's ``rule``)."""
        now = current if current is not None else self.current()
        spent = probe_result.usage if probe_result is not None else None
        limit = remaining(budget, spent) if budget is not None else Budget()
        cands = self.candidates(now, policy=policy, prm=prm, probe_result=probe_result)
        weight = lam if lam is not None else self.lam
        if unit is None and weight is not None:
            unit = self.lam_unit
        if now.trained is not None:
            choice = now.trained.choose(
                features,
                limit,
                weight,
                rule=self._rule_for(now, rule, probe_result, weight),
                candidates=cands,
                unit=unit,
                epsilon=self.epsilon,
                rng=self._rng,
            )
            choice.router_version = now.version
            return choice
        return self.cold.choose(features, cands, limit, weight, unit=unit)

    def decide(
        self,
        features: Mapping[str, Any],
        budget: Budget | None,
        *,
        current: Current | None = None,
        policy: str | None = None,
        prm: str | None = None,
        probe_result: ProbeResult | None = None,
        rule: Mode | None = None,
    ) -> Decision:
        """``choose``, explained; InputError when no candidate is predicted to fit what is
        left of the budget, or the trained router knows no config for ``policy``/``prm``."""
        now = current if current is not None else self.current()
        try:
            choice = self.choose(
                features,
                budget,
                current=now,
                policy=policy,
                prm=prm,
                probe_result=probe_result,
                rule=rule,
            )
        except RouterError as exc:  # e.g. it knows no config for the requested policy
            raise InputError(str(exc)) from None
        if not choice.within_budget:
            spent = probe_result.usage if probe_result is not None else None
            limit = remaining(budget, spent) if budget is not None else Budget()
            over = "; ".join(choice.predicted_cost.exceeds(limit))
            after = " after the probe" if spent is not None and spent.total_tokens else ""
            raise InputError(
                f"no config fits the budget{after}: even the cheapest, "
                f"{choice.config.label()}, is predicted over it ({over})"
            )
        left_out = stepwise_left_out(self.settings, [policy] if policy else None)
        used = self._rule_for(now, rule, probe_result)
        if choice.explored:
            reason = "exploration"
        else:
            reason = "router" if now.trained is not None else "cold_start"
        spent = probe_result.usage if probe_result is not None else None
        left = remaining(budget, spent) if budget is not None else Budget()
        cost = choice.predicted_cost
        return Decision(
            config=choice.config,
            reason=reason,
            explanation="; ".join(
                [choice.reason, *(note for note in (now.note, left_out) if note)]
            ),
            why=considered(choice),
            router_version=now.version,
            predicted_accuracy=choice.predicted_accuracy,
            predicted_cost={
                "n": float(cost.n),
                "tokens": cost.tokens,
                "flops": cost.flops,
                "usd": cost.usd,
            },
            explored=choice.explored,
            propensity=choice.propensity,
            limit={
                "tokens": None if left.tokens is None else float(left.tokens),
                "flops": left.flops,
                "usd": left.usd,
            },
            rule=used,
        )
