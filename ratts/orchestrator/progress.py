"""How far a solve got, and the SolveResult made from it.

The deadline may cut a solve at any point (in the probe, after the decision, mid-search),
so the pipeline records what it has reached in ``Progress`` as it goes, and ``result_of``
turns whatever is there into the answer: the strategy's, else the best one seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ratts.endpoints.usage import Usage
from ratts.orchestrator.result import SolveResult
from ratts.orchestrator.runner import jsonable
from ratts.orchestrator.watch import Watch
from ratts.router import Decision
from ratts.router.features import ROUTING
from ratts.store import budget_label
from ratts.strategies.probe import ProbeResult
from ratts.types import Budget, Outcome, Problem, RunConfig


@dataclass(slots=True)
class Progress:
    """What the pipeline has reached; read when the deadline cuts it short."""

    watch: Watch
    features: dict[str, Any]
    probe: ProbeResult | None = None
    probe_usage: Usage | None = None
    decision: Decision | None = None
    probe_config: RunConfig | None = None


def result_of(
    problem: Problem,
    budget: Budget | None,
    state: Progress,
    outcome: Outcome | None,
    partial: bool,
    error: str | None,
    events: list[dict[str, Any]],
) -> SolveResult:
    """The SolveResult of whatever the pipeline reached: the strategy's outcome, else (cut
    by the deadline) the best answer the watch saw, else the probe's answer."""
    watch = state.watch
    decision = state.decision
    if decision is not None:
        config, reason = decision.config, decision.reason
    else:
        # Stopped before a config was chosen: the work done was the probe; log it as
        # what it was (a run of the probe strategy).
        assert state.probe_config is not None
        config, reason = state.probe_config, "probe_only"
    answer: str | None = None
    text: str | None = None
    source = "strategy"
    if outcome is not None:
        answer = outcome.answer
        if outcome.selected_index is not None:
            chosen = outcome.candidates[outcome.selected_index]
            text = chosen.text(watch.separator)
    elif partial:
        best = watch.best()
        answer, source = best.answer, best.source
        if best.candidate is not None:
            text = best.candidate.text(watch.separator)
        elif state.probe is not None and state.probe.answer is not None and answer is None:
            answer, source = state.probe.answer, "probe"
    else:
        source = "none"
    usage = Usage() + watch.usage
    features = jsonable(state.features)
    if decision is not None and decision.reason != "forced":
        features[ROUTING] = routing_log(decision, usage, state.probe_usage or Usage(), source)
    return SolveResult(
        problem=problem,
        answer=answer,
        config=config,
        usage=usage,
        probe_usage=state.probe_usage or Usage(),
        partial=partial,
        reason=reason,
        why=decision.why if decision is not None else [],
        features=features,
        budget=budget_label(budget),
        outcome=outcome,
        text=text,
        answer_source=source,
        explanation=decision.explanation if decision is not None else "stopped in the probe",
        router_version=decision.router_version if decision is not None else None,
        error=error,
        events=events,
    )


def usage_dict(usage: Usage) -> dict[str, float]:
    return {
        "prompt_tokens": float(usage.policy_prompt_tokens),
        "completion_tokens": float(usage.policy_completion_tokens),
        "prm_tokens": float(usage.prm_tokens),
        "tokens": float(usage.total_tokens),
        "flops": usage.flops,
        "dollars": usage.dollars,
    }


def routing_log(decision: Decision, total: Usage, probe: Usage, source: str) -> dict[str, Any]:
    """A routed run's decision plus its usage split: the run's usage columns hold the
    total (probe once, strategy once); ``probe_usage`` and ``strategy_usage`` say which
    is which, so training fits the cost model on the strategy's share alone."""
    strategy = {
        k: v - probe_v
        for (k, v), probe_v in zip(
            usage_dict(total).items(), usage_dict(probe).values(), strict=True
        )
    }
    return {
        **decision.to_log(),
        "probe_usage": usage_dict(probe),
        "strategy_usage": strategy,
        "answer_source": source,
    }
