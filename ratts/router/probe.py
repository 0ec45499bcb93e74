"""The probe: k whole solutions in ONE request, PRM-scored in ONE call, summarised as
difficulty features; and the reuse of those samples by the strategy the router picks.

Why a probe: the policy's own agreement with itself and the PRM's confidence are the best
cheap signals of how hard a question is *for this deployment*. Why reuse: the probe's
samples are ordinary whole-solution samples, so CoT, majority and Best-of-N can count them
towards their N (Best-of-16 after a probe of 4 draws only 12 more), and the probe is not
wasted compute. Beam search and DVTS sample step by step and cannot reuse them; their
outcome still carries the probe's usage, so a run's usage is always the real total.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage
from ratts.errors import InputError
from ratts.grading import grade
from ratts.strategies import get_strategy
from ratts.strategies.sampling import (
    RunLedger,
    check_problem,
    derive_seed,
    require_prm,
    solution_candidate,
)
from ratts.strategies.scoring import (
    aggregate,
    answer_classes,
    majority_index,
    off_loop,
    select,
)
from ratts.types import Aggregation, Candidate, Outcome, Problem, RunConfig, StrategyParams

DEFAULT_K = 4
REUSABLE = ("cot", "majority", "best_of_n")

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


@dataclass(slots=True)
class ProbeResult:
    """What a probe learned and spent; ``candidates`` are PRM-scored whole solutions."""

    features: dict[str, float]
    candidates: list[Candidate]
    usage: Usage
    policy: str
    prm: str | None
    params: StrategyParams
    answer: str | None = None
    trace: list[dict[str, object]] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.candidates)


def probe_params(params: StrategyParams | None, k: int) -> StrategyParams:
    """The sampling parameters of a probe: ``params`` (default StrategyParams) with N=k."""
    base = params or StrategyParams()
    return base.model_copy(update={"n": k})


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
    largest = max((len(c) for c in classes), default=0)
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    steps = [len(c.steps) for c in candidates]
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


async def probe(
    problem: Problem,
    policy: PolicyClient,
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
    check_problem(problem)
    p = probe_params(params, k)
    run = RunLedger("probe", p.model_copy(update={"seed": derive_seed(p.seed, "probe")}))
    run.event("probe", n=k)
    choices = await run.sample(policy, policy.prompt(problem.question), n=k, step=False)
    candidates = [solution_candidate(c, policy.separator) for c in choices]
    if prm is not None:
        await run.score(prm, problem.question, candidates)
    features, majority = await off_loop(
        summarise,
        candidates,
        run.usage.policy_completion_tokens,
        p.aggregation,
        scored=prm is not None,
    )
    return ProbeResult(
        features=features,
        candidates=candidates,
        usage=run.usage,
        policy=policy.name,
        prm=prm.name if prm is not None else None,
        params=p,
        answer=candidates[majority].answer if majority is not None else None,
        trace=run.trace,
    )


def pass_at_1(result: ProbeResult, gold: str | None) -> float | None:
    """Fraction of the probe's samples graded correct (None without a gold answer)."""
    if gold is None:
        return None
    return sum(bool(grade(c.answer, gold)) for c in result.candidates) / result.k


def can_reuse(result: ProbeResult, config: RunConfig) -> bool:
    """Whether ``config`` can count the probe's samples towards its N: same policy, a
    whole-solution strategy, and the same sampling distribution (temperature, top_p, max
    tokens)."""
    p, q = result.params, config.params
    return (
        config.strategy in REUSABLE
        and config.policy == result.policy
        and (p.temperature, p.top_p, p.max_tokens) == (q.temperature, q.top_p, q.max_tokens)
    )


async def run_with_probe(
    problem: Problem,
    policy: PolicyClient,
    prm: PRM | None,
    config: RunConfig,
    result: ProbeResult,
) -> Outcome:
    """Run ``config`` after ``result``: reuse the probe's samples where ``can_reuse``.

    For CoT, majority and Best-of-N only N - k new samples are drawn (in one request), and
    only new candidates are PRM-scored when the probe used the same PRM. Otherwise the
    strategy runs as usual. Either way the Outcome's usage includes the probe's usage and
    its trace starts with the probe's events.
    """
    if not can_reuse(result, config):
        outcome = await get_strategy(config.strategy).run(problem, policy, prm, config.params)
        outcome.usage = result.usage + outcome.usage
        outcome.trace = [*result.trace, {"event": "probe_not_reused"}, *outcome.trace]
        return outcome
    strategy = get_strategy(config.strategy)
    params = config.params
    strategy.validate(params)
    run = RunLedger(config.strategy, params)
    run.usage += result.usage
    run.trace.extend(result.trace)
    reused = [
        replace(c, steps=list(c.steps), step_scores=list(c.step_scores))
        for c in result.candidates[: params.n]
    ]
    extra = params.n - len(reused)
    run.event("reuse_probe", reused=len(reused), extra=extra)
    fresh: list[Candidate] = []
    if extra > 0:
        request = params.model_copy(update={"seed": derive_seed(params.seed, "after-probe")})
        run.params = request
        choices = await run.sample(policy, policy.prompt(problem.question), n=extra, step=False)
        run.params = params
        fresh = [solution_candidate(c, policy.separator) for c in choices]
    candidates = reused + fresh
    if config.strategy == "best_of_n":
        scorer = require_prm(config.strategy, prm)
        rescore = reused if scorer.name != result.prm else []
        await run.score(scorer, problem.question, [*rescore, *fresh])
        run.event("score", candidates=len(rescore) + len(fresh))
        selected = await off_loop(select, candidates, params.selection, params.aggregation)
    elif config.strategy == "majority":
        selected = await off_loop(majority_index, [c.answer for c in candidates])
    else:  # cot
        selected = 0
    run.event("select", index=selected)
    return run.outcome(candidates, selected)


def remaining_fraction(
    config: RunConfig, policy: str, k: int, params: StrategyParams | None = None
) -> float:
    """Share of ``config``'s samples still to draw after a probe of ``k`` samples from
    ``policy`` with ``params`` (1.0 when it cannot reuse them; 0.0 when the probe covers N).

    Used to price a config after the probe without running it (evaluation, routing).
    """
    p = probe_params(params, k)
    fake = ProbeResult({}, [Candidate([])] * k, Usage(), policy, None, p)
    if not can_reuse(fake, config):
        return 1.0
    n = 1 if config.strategy == "cot" else config.params.n
    return max(0, n - k) / n
