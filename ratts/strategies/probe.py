"""The probe: k whole solutions in ONE request, PRM-scored in ONE call, summarised as
difficulty features.

Why a probe: the policy's own agreement with itself and the PRM's confidence are the best
cheap signals of how hard a question is *for this deployment*. It is a real strategy (the
same ``run`` opening, an Outcome with real usage, logged by the one runner under the
strategy name ``probe``), whose Outcome also carries the features. It is not in the
``STRATEGIES`` registry: it measures a question rather than answering it, so neither users
nor the router pick it; the runner resolves it by name (``strategy_for``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.errors import EndpointError, InputError
from ratts.grading import grade
from ratts.strategies import get_strategy
from ratts.strategies.base import Strategy
from ratts.strategies.sampling import RunLedger, derive_seed, prm_down, solution_candidate
from ratts.strategies.scoring import aggregate, answer_classes, off_loop
from ratts.types import Aggregation, Candidate, Outcome, Problem, RunConfig, StrategyParams

DEFAULT_K = 4
PROBE = "probe"

PROBE_NUMERIC = (
    "probe_k",
    "probe_agreement",
    "probe_distinct",
    "probe_answered",
    "probe_finished",
    "probe_prm_mean",
    "probe_prm_min",
    "probe_prm_max",
    "probe_prm_std",
    "probe_prm_vote",
    "probe_prm_majority",
    "probe_tokens_mean",
    "probe_steps_mean",
    "probe_steps_max",
)


@dataclass(slots=True, kw_only=True)
class ProbeResult(Outcome):
    """A probe's Outcome plus what it learned: ``features``, and which policy and PRM ran
    it (so a later run knows whether it can reuse the samples)."""

    features: dict[str, float] = field(default_factory=dict)
    policy: str = ""
    prm: str | None = None

    @property
    def k(self) -> int:
        return len(self.candidates)


def probe_params(params: StrategyParams | None, k: int) -> StrategyParams:
    """The sampling parameters of a probe: ``params`` (default StrategyParams) with N=k."""
    base = params or StrategyParams()
    return base.model_copy(update={"n": k})


def probe_config(
    policy: str, prm: str | None, k: int, params: StrategyParams | None = None
) -> RunConfig:
    """What a probe runs and is logged under: the probe strategy with N = k."""
    return RunConfig(policy=policy, prm=prm, strategy=PROBE, params=probe_params(params, k))


def _std(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0 if values else math.nan


def summarise(
    candidates: Sequence[Candidate],
    completion_tokens: int,
    aggregation: Aggregation = "last",
    *,
    scored: bool = True,
    deadline: float | None = None,
) -> tuple[dict[str, float], int | None]:
    """The probe features of ``candidates`` and the index of the majority answer.

    PRM features are NaN when the candidates were not scored (no PRM).
    """
    k = len(candidates)
    if k == 0:
        raise InputError("a probe needs at least one sample")
    answers = [c.answer for c in candidates]
    classes = answer_classes(answers, deadline=deadline)
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    steps = [len(c.steps) for c in candidates]
    largest = max((len(c) for c in classes), default=0)
    features: dict[str, float] = {
        "probe_k": float(k),
        "probe_agreement": largest / k,
        "probe_distinct": float(len(classes)),
        "probe_answered": sum(a is not None for a in answers) / k,
        "probe_finished": sum(c.finished for c in candidates) / k,
        "probe_tokens_mean": completion_tokens / k,
        "probe_steps_mean": statistics.fmean(steps),
        "probe_steps_max": float(max(steps)),
    }
    if scored:
        total = math.fsum(scores)
        weights = [math.fsum(scores[i] for i in members) for members in classes]
        top = max(range(len(classes)), key=lambda c: len(classes[c])) if classes else None
        features.update(
            {
                "probe_prm_mean": statistics.fmean(scores),
                "probe_prm_min": min(scores),
                "probe_prm_max": max(scores),
                "probe_prm_std": _std(scores),
                "probe_prm_vote": max(weights) / total if weights and total > 0 else 0.0,
                "probe_prm_majority": (
                    statistics.fmean(scores[i] for i in classes[top])
                    if top is not None
                    else math.nan
                ),
            }
        )
    else:
        for key in PROBE_NUMERIC:
            features.setdefault(key, math.nan)
    majority = max(classes, key=len)[0] if classes else None
    return features, majority


class Probe(Strategy):
    """k = N whole solutions in one request, scored in one PRM call when a PRM is given."""

    name: ClassVar[str] = PROBE

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> ProbeResult:
        p = run.params
        k = p.n
        run.params = p.model_copy(update={"seed": derive_seed(p.seed, "probe")})
        run.event("probe", n=k)
        choices = await run.sample(policy, policy.prompt(problem.question), n=k, step=False)
        run.params = p
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        scored = prm is not None
        if prm is not None:
            try:
                await run.score(prm, problem.question, candidates)
            except EndpointError as exc:
                if not prm_down(exc):
                    raise
                run.prm_is_down(exc)  # the probe goes on unscored: its PRM features missing
                scored = False
        features, majority = await off_loop(
            summarise,
            candidates,
            run.usage.policy_completion_tokens,
            p.aggregation,
            scored=scored,
        )
        plain = run.outcome(candidates, majority)
        return ProbeResult(
            **{f.name: getattr(plain, f.name) for f in fields(plain)},
            features=features,
            policy=policy.name,
            prm=prm.name if prm is not None and scored else None,
        )


PROBE_STRATEGY = Probe()


def strategy_for(name: str) -> Strategy:
    """The strategy a logged config names: the probe, or one from the registry."""
    return PROBE_STRATEGY if name == PROBE else get_strategy(name)


async def probe(
    problem: Problem,
    policy: Policy,
    prm: PRM | None,
    k: int = DEFAULT_K,
    params: StrategyParams | None = None,
) -> ProbeResult:
    """Sample ``k`` whole solutions in one request, score them in one PRM call, summarise.

    ``params`` supplies temperature, top_p, max_tokens, seed and the score aggregation.
    Raises InputError for k < 1 or an empty question; endpoint errors pass through.
    """
    if k < 1:
        raise InputError(f"the probe needs k >= 1 samples, got {k}")
    outcome = await PROBE_STRATEGY.run(problem, policy, prm, probe_params(params, k))
    assert isinstance(outcome, ProbeResult)
    return outcome


def pass_at_1(result: Outcome, gold: str | None) -> float | None:
    """Fraction of the samples graded correct (None without a gold answer). Blocking."""
    if gold is None or not result.candidates:
        return None
    return sum(bool(grade(c.answer, gold)) for c in result.candidates) / len(result.candidates)
