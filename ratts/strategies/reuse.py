"""Reusing a probe's samples: a strategy whose samples are independent whole solutions
(``reuses_samples``) counts the probe's k samples towards its N, so the probe is not
wasted compute (Best-of-16 after a probe of 4 draws only 12 more).

Step-wise searches cannot reuse them; they run as usual. Either way the Outcome's usage
includes the probe's usage, so a run's usage is always the real total.
"""

from __future__ import annotations

from dataclasses import replace

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.errors import EndpointError
from ratts.strategies import STRATEGIES, get_strategy
from ratts.strategies.adaptive import AdaptiveConsistency
from ratts.strategies.base import vote_instead
from ratts.strategies.probe import ProbeResult
from ratts.strategies.sampling import (
    RunLedger,
    derive_seed,
    prm_down,
    require_prm,
    solution_candidate,
)
from ratts.strategies.scoring import majority_index, off_loop, select
from ratts.types import Candidate, Outcome, Problem, RunConfig, StrategyParams


def samples_of(config: RunConfig) -> int:
    """The N ``config`` really uses: its strategy's ``fixed_n``, else its N (also for a
    logged strategy that is no longer registered)."""
    strategy = STRATEGIES.get(config.strategy)
    fixed = strategy.fixed_n if strategy is not None else None
    return fixed if fixed is not None else config.params.n


def is_stepwise(config: RunConfig) -> bool:
    """Whether ``config``'s strategy samples step by step (False when not registered)."""
    strategy = STRATEGIES.get(config.strategy)
    return strategy is not None and strategy.stepwise


def can_reuse(result: ProbeResult, config: RunConfig) -> bool:
    """Whether ``config`` can count the probe's samples towards its N: same policy, a
    strategy that ``reuses_samples``, and the same sampling distribution (temperature,
    top_p, max tokens)."""
    return _compatible(config, result.policy, result.params)


def _compatible(config: RunConfig, policy: str, params: StrategyParams) -> bool:
    q = config.params
    return (
        get_strategy(config.strategy).reuses_samples
        and config.policy == policy
        and (params.temperature, params.top_p, params.max_tokens)
        == (q.temperature, q.top_p, q.max_tokens)
    )


def remaining_fraction(
    config: RunConfig, policy: str, k: int, params: StrategyParams | None = None
) -> float:
    """Share of ``config``'s samples still to draw after a probe of ``k`` samples from
    ``policy`` with ``params`` (1.0 when it cannot reuse them; 0.0 when the probe covers N).

    What the router's pricing charges for a config after the probe, without running it.
    """
    base = params or StrategyParams()
    if not _compatible(config, policy, base):
        return 1.0
    n = samples_of(config)
    return max(0, n - k) / n


async def run_with_probe(
    problem: Problem,
    policy: Policy,
    prm: PRM | None,
    config: RunConfig,
    result: ProbeResult,
) -> Outcome:
    """Run ``config`` after ``result``: reuse the probe's samples where ``can_reuse``.

    Only N - k new samples are drawn (in one request), and only new candidates are
    PRM-scored when the probe used the same PRM; the answer is then selected as the
    strategy would (PRM selection when it needs a PRM, the single sample for a fixed N of
    one, else the majority). Otherwise the strategy runs as usual. Either way the
    Outcome's usage includes the probe's usage and its trace starts with the probe's events.
    """
    strategy = get_strategy(config.strategy)
    if not can_reuse(result, config):
        outcome = await strategy.run(problem, policy, prm, config.params)
        outcome.usage = result.usage + outcome.usage
        outcome.trace = [*result.trace, {"event": "probe_not_reused"}, *outcome.trace]
        outcome.prm_fallback = outcome.prm_fallback or result.prm_fallback
        return outcome
    params = config.params
    strategy.validate(params)
    run = RunLedger(config.strategy, params)
    run.usage += result.usage
    run.trace.extend(result.trace)
    run.prm_fallback = result.prm_fallback  # a PRM down at the probe is down for this solve
    n = samples_of(config)
    reused = [
        replace(c, steps=list(c.steps), step_scores=list(c.step_scores))
        for c in result.candidates[:n]
    ]
    if isinstance(strategy, AdaptiveConsistency):  # it decides itself how many more to draw
        run.event("reuse_probe", reused=len(reused), extra=None)
        return await strategy.continue_from(run, problem, policy, reused)
    extra = n - len(reused)
    run.event("reuse_probe", reused=len(reused), extra=extra)
    fresh: list[Candidate] = []
    if extra > 0:
        request = params.model_copy(update={"seed": derive_seed(params.seed, "after-probe")})
        run.params = request
        choices = await run.sample(policy, policy.prompt(problem.question), n=extra, step=False)
        run.params = params
        fresh = [solution_candidate(c, policy.separator) for c in choices]
    candidates = reused + fresh
    if strategy.needs_prm:
        scorer = require_prm(config.strategy, prm)
        rescore = reused if scorer.name != result.prm else []
        try:
            await run.score(scorer, problem.question, [*rescore, *fresh])
        except EndpointError as exc:
            if not prm_down(exc):
                raise
            run.prm_is_down(exc)  # vote over the samples instead (as ScoredStrategy does)
            return await vote_instead(run, problem, policy, candidates)
        run.event("score", candidates=len(rescore) + len(fresh))
        selected = await off_loop(select, candidates, params.selection, params.aggregation)
    elif n == 1:
        selected = 0
    else:
        selected = await off_loop(majority_index, [c.answer for c in candidates])
    run.event("select", index=selected)
    return run.outcome(candidates, selected)
