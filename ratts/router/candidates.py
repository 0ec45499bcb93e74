"""Candidate configs for a deployment, each with a predicted cost, and the budgeted pick.

Costs are predicted from the log: the mean prompt, completion and PRM tokens of the config's
runs, turned into FLOPs and dollars with the *current* settings' parameter counts and prices
(so a price change needs no retraining). Without logged runs a prior from N and max_tokens
stands in. ``pick`` is the one place that enforces a budget, so every router (learned, cold
start, exploring) obeys it the same way: never over budget, ties to the cheaper config.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Literal

from ratts.errors import ConfigError
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.strategies import get_strategy, with_defaults
from ratts.strategies.reuse import is_stepwise, samples_of
from ratts.types import Budget, RunConfig, StrategyParams

CostUnit = Literal["n", "tokens", "flops", "usd"]
DEFAULT_STRATEGIES = ("cot", "majority", "adaptive", "best_of_n", "beam_search", "dvts")
DEFAULT_NS = (4, 16, 64)
PRIOR_FILL = 0.5  # a sample is assumed to use half its max_tokens
PRIOR_PROMPT_TOKENS = 120.0
PRIOR_TREE_FACTOR = 3.0  # step-wise search re-sends its prefixes and re-scores them
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Cost:
    """Predicted spend of one run: N, tokens (policy + PRM), FLOPs and dollars."""

    n: int
    tokens: float
    flops: float
    usd: float

    def value(self, unit: CostUnit) -> float:
        return {"n": float(self.n), "tokens": self.tokens, "flops": self.flops, "usd": self.usd}[
            unit
        ]

    def exceeds(self, budget: Budget) -> list[str]:
        """The budget limits this cost breaks (empty when it fits)."""
        over = []
        if budget.n is not None and self.n > budget.n:
            over.append(f"N {self.n} > {budget.n}")
        if budget.tokens is not None and self.tokens > budget.tokens:
            over.append(f"tokens {self.tokens:.0f} > {budget.tokens}")
        if budget.flops is not None and self.flops > budget.flops:
            over.append(f"FLOPs {self.flops:.3g} > {budget.flops:.3g}")
        if budget.usd is not None and self.usd > budget.usd:
            over.append(f"${self.usd:.4g} > ${budget.usd:.4g}")
        return over

    def fits(self, budget: Budget) -> bool:
        return not self.exceeds(budget)


@dataclass(frozen=True, slots=True)
class CandidateConfig:
    """A config the router may choose, its predicted cost, and whether the log backs it."""

    config: RunConfig
    cost: Cost
    from_log: bool


@dataclass(frozen=True, slots=True)
class Ranked:
    """One line of a Choice's ranking."""

    config: RunConfig
    predicted_accuracy: float | None
    predicted_cost: Cost
    fits: bool
    score: float


@dataclass(slots=True)
class Choice:
    """The router's answer: the config to run, why, and the ranking it came from."""

    config: RunConfig
    predicted_accuracy: float | None
    predicted_cost: Cost
    ranking: list[Ranked]
    within_budget: bool
    reason: str
    explored: bool = False
    router_version: str | None = None
    propensity: float = 1.0
    """P(this config | features, candidates, budget) under the policy that chose it, in
    (0, 1]: what inverse-propensity weighting and off-policy estimates divide by."""

    def explain(self, top: int = 5) -> list[dict[str, Any]]:
        """The best ``top`` candidates as plain data (for logs, the CLI and the server)."""
        return [
            {
                "config": r.config.label(),
                "predicted_accuracy": r.predicted_accuracy,
                "predicted_cost": {
                    "n": r.predicted_cost.n,
                    "tokens": r.predicted_cost.tokens,
                    "flops": r.predicted_cost.flops,
                    "usd": r.predicted_cost.usd,
                },
                "fits": r.fits,
            }
            for r in self.ranking[:top]
        ]


def budget_unit(budget: Budget, default: CostUnit = "flops") -> CostUnit:
    """The unit a budget is expressed in (dollars, then FLOPs, tokens, N), for ranking costs."""
    if budget.usd is not None:
        return "usd"
    if budget.flops is not None:
        return "flops"
    if budget.tokens is not None:
        return "tokens"
    if budget.n is not None:
        return "n"
    return default


def pick(
    candidates: Sequence[CandidateConfig],
    accuracies: Sequence[float | None],
    budget: Budget,
    *,
    lam: float | None = None,
    unit: CostUnit | None = None,
    epsilon: float = 0.0,
    rng: random.Random | None = None,
    reason: str = "highest predicted accuracy within budget",
    priority: Sequence[float | None] | None = None,
) -> Choice:
    """The candidate with the best score among those that fit ``budget``.

    score = accuracy, or accuracy - lam x cost (cost in ``unit``, default the budget's own
    unit). Ties (within 1e-9) go to the cheaper config, then to the earlier one. A missing
    accuracy scores -inf (so cost decides). When nothing fits, the cheapest candidate is
    returned with ``within_budget=False``. With probability ``epsilon`` (drawn from ``rng``)
    a uniformly random fitting candidate is returned instead, marked ``explored``.
    ``priority``, when given, replaces the accuracies as the base score (a rule's ranking).
    """
    if not candidates:
        raise ConfigError("no candidate configs to choose from")
    if len(accuracies) != len(candidates):
        raise ConfigError(f"{len(candidates)} candidates but {len(accuracies)} accuracies")
    bases = accuracies if priority is None else priority
    if len(bases) != len(candidates):
        raise ConfigError(f"{len(candidates)} candidates but {len(bases)} priorities")
    if lam is not None and (lam < 0 or not math.isfinite(lam)):
        raise ConfigError(f"lambda must be a finite number >= 0, got {lam}")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
    u = unit or budget_unit(budget)
    ranked: list[tuple[float, float, int, Ranked]] = []
    for i, (cand, acc, b) in enumerate(zip(candidates, accuracies, bases, strict=True)):
        cost = cand.cost.value(u)
        base = -math.inf if b is None or math.isnan(b) else b
        score = base if lam is None else base - lam * cost
        ranked.append(
            (score, cost, i, Ranked(cand.config, acc, cand.cost, cand.cost.fits(budget), score))
        )
    fitting = [r for r in ranked if r[3].fits]
    order = _order(fitting) + _order([r for r in ranked if not r[3].fits])
    ranking = [r[3] for r in order]
    if not fitting:
        cheapest = min(ranked, key=lambda r: (r[1], r[2]))[3]
        return Choice(
            cheapest.config,
            cheapest.predicted_accuracy,
            cheapest.predicted_cost,
            ranking,
            within_budget=False,
            reason="no candidate fits the budget; returning the cheapest",
        )
    draw = rng or random.Random()
    best = ranking[0]
    share = epsilon / len(fitting)  # each fitting candidate's chance of being explored
    if epsilon > 0 and draw.random() < epsilon:
        chosen = draw.choice(fitting)[3]
        return Choice(
            chosen.config,
            chosen.predicted_accuracy,
            chosen.predicted_cost,
            ranking,
            within_budget=True,
            reason=f"exploration (epsilon={epsilon:g}): a random candidate within budget",
            explored=True,
            propensity=share + (1.0 - epsilon if chosen is best else 0.0),
        )
    return Choice(
        best.config,
        best.predicted_accuracy,
        best.predicted_cost,
        ranking,
        True,
        reason,
        propensity=1.0 - epsilon + share,
    )


def _order(
    items: list[tuple[float, float, int, Ranked]],
) -> list[tuple[float, float, int, Ranked]]:
    """Best score first; scores within TIE_TOLERANCE of each other rank by cost, then index."""
    by_score = sorted(items, key=lambda r: (-r[0], r[1], r[2]))
    out: list[tuple[float, float, int, Ranked]] = []
    while by_score:
        top = by_score[0][0]
        tied = [r for r in by_score if _close(r[0], top)]
        tied.sort(key=lambda r: (r[1], r[2]))
        out.extend(tied)
        by_score = [r for r in by_score if not _close(r[0], top)]
    return out


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= TIE_TOLERANCE


# ---------------------------------------------------------------- candidate configs


def candidate_configs(
    settings: Settings,
    *,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    ns: Sequence[int] = DEFAULT_NS,
    policies: Sequence[str] | None = None,
    prms: Sequence[str] | None = None,
    params: StrategyParams | None = None,
) -> list[RunConfig]:
    """policies x PRMs x strategies x N from settings, read from each strategy's traits: a
    fixed N (CoT: 1) replaces ``ns``, a strategy that needs no PRM runs without one, a
    step-wise search skips N that is not a multiple of the beam width, and a policy that
    cannot continue a partial solution (chat without prefill) gets no step-wise strategy."""
    base = params or StrategyParams()
    policy_names = list(policies) if policies is not None else [p.name for p in settings.policies]
    prm_names = list(prms) if prms is not None else [p.name for p in settings.prms]
    if not policy_names:
        raise ConfigError("no policies configured: the router has nothing to choose from")
    for name in policy_names:
        settings.policy(name)
    for name in prm_names:
        settings.prm(name)
    out: dict[str, RunConfig] = {}
    for policy, strategy in itertools.product(policy_names, strategies):
        impl = get_strategy(strategy)
        if impl.stepwise and not settings.policy(policy).can_continue:
            continue
        scorers: Sequence[str | None] = prm_names if impl.needs_prm else [None]
        sizes = [impl.fixed_n] if impl.fixed_n is not None else ns
        for prm, n in itertools.product(scorers, sizes):
            if impl.stepwise and n % base.beam_width:
                continue
            config = RunConfig(
                policy=policy,
                prm=prm,
                strategy=strategy,
                params=with_defaults(strategy, base.model_copy(update={"n": n})),
            )
            out.setdefault(config.key(), config)
    return list(out.values())


def stepwise_left_out(settings: Settings, policies: Sequence[str] | None = None) -> str:
    """One line saying which policies get no step-wise candidate and why ("" if none)."""
    names = list(policies) if policies is not None else [p.name for p in settings.policies]
    blocked = [name for name in names if not settings.policy(name).can_continue]
    if not blocked:
        return ""
    who = ", ".join(repr(name) for name in blocked)
    return (
        f"no beam search or DVTS for {who}: over chat without chat_prefill a policy cannot "
        "continue a partial solution"
    )


# ---------------------------------------------------------------- cost prediction

TOKEN_FIELDS = ("policy_prompt_tokens", "policy_completion_tokens", "prm_tokens")


@dataclass(frozen=True, slots=True)
class LoggedCost:
    """Mean spend of one config over its logged runs."""

    runs: int
    prompt_tokens: float
    completion_tokens: float
    prm_tokens: float
    flops: float
    usd: float


@dataclass(slots=True)
class CostModel:
    """Predicts a config's cost from its logged means, scaled by current params/prices."""

    logged: dict[str, LoggedCost] = field(default_factory=dict)
    policies: dict[str, PolicySpec] = field(default_factory=dict)
    prms: dict[str, PRMSpec] = field(default_factory=dict)

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], settings: Settings | None = None
    ) -> CostModel:
        """Means per config key over plain run records (``config_key`` or config fields)."""
        groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for rec in records:
            groups[record_config(rec).key()].append(rec)
        logged = {
            key: LoggedCost(
                runs=len(rows),
                prompt_tokens=fmean(float(r.get("policy_prompt_tokens") or 0) for r in rows),
                completion_tokens=fmean(
                    float(r.get("policy_completion_tokens") or 0) for r in rows
                ),
                prm_tokens=fmean(float(r.get("prm_tokens") or 0) for r in rows),
                flops=fmean(float(r.get("flops") or 0) for r in rows),
                usd=fmean(float(r.get("dollars") or 0) for r in rows),
            )
            for key, rows in groups.items()
        }
        return cls(logged=logged).with_settings(settings)

    def with_settings(self, settings: Settings | None) -> CostModel:
        """A copy that prices with ``settings`` (params and per-token prices)."""
        if settings is None:
            return CostModel(dict(self.logged), dict(self.policies), dict(self.prms))
        return CostModel(
            dict(self.logged),
            {p.name: p for p in settings.policies},
            {p.name: p for p in settings.prms},
        )

    def predict(self, config: RunConfig) -> CandidateConfig:
        """The config's predicted cost (log means when logged, else the prior)."""
        n = samples_of(config)
        logged = self.logged.get(config.key())
        if logged is None:
            prompt, completion, prm_tokens = prior_tokens(config)
        else:
            prompt, completion, prm_tokens = (
                logged.prompt_tokens,
                logged.completion_tokens,
                logged.prm_tokens,
            )
        pol = self.policies.get(config.policy)
        prm = self.prms.get(config.prm) if config.prm else None
        if pol is not None or logged is None:
            params = pol.params if pol is not None else PolicySpec.model_fields["params"].default
            flops = 2.0 * params * (prompt + completion)
            usd = (
                (prompt * pol.usd_per_mtok_prompt + completion * pol.usd_per_mtok_completion) / 1e6
                if pol is not None
                else 0.0
            )
            if prm is not None:
                flops += 2.0 * prm.flops_params * prm_tokens
                usd += prm_tokens * prm.usd_per_mtok / 1e6
        else:
            flops, usd = logged.flops, logged.usd
        cost = Cost(n=n, tokens=prompt + completion + prm_tokens, flops=flops, usd=usd)
        return CandidateConfig(config, cost, from_log=logged is not None)

    def candidates(self, configs: Iterable[RunConfig]) -> list[CandidateConfig]:
        return [self.predict(c) for c in configs]


def prior_tokens(config: RunConfig) -> tuple[float, float, float]:
    """(prompt, completion, PRM) tokens assumed for a config the log has never seen.

    A whole sample is PRIOR_FILL x max_tokens; N samples share one prompt; the PRM reads
    every sample with its prompt; step-wise searches cost PRIOR_TREE_FACTOR times more in
    prompt and PRM tokens (they re-send and re-score prefixes).
    """
    p = config.params
    n = samples_of(config)
    sample = PRIOR_FILL * p.max_tokens
    completion = n * sample
    prompt = PRIOR_PROMPT_TOKENS
    prm_tokens = n * (PRIOR_PROMPT_TOKENS + sample) if config.prm else 0.0
    if is_stepwise(config):
        prompt *= PRIOR_TREE_FACTOR * max(1, n // max(p.beam_width, 1))
        prm_tokens *= PRIOR_TREE_FACTOR
    return prompt, completion, prm_tokens


def record_config(record: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of a plain run record (``policy``, ``prm``, ``strategy``, ``params``)."""
    params = record.get("params") or {}
    return RunConfig(
        policy=str(record["policy"]),
        prm=record.get("prm"),
        strategy=str(record["strategy"]),
        params=StrategyParams.model_validate(params),
    )
