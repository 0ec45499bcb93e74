"""What ``Orchestrator.solve`` returns: the answer, the config and why, real usage, the log row.

One record serves all three front doors (Python, ``ratts solve --json``, the server's
``ratts`` field) through ``to_dict``, so they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ratts.endpoints.usage import Usage
from ratts.router.router import Considered
from ratts.store import RunKey
from ratts.types import Outcome, Problem, RunConfig


def json_safe(value: Any) -> Any:
    """A copy fit for strict JSON: non-finite floats (NaN features) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass(slots=True)
class SolveResult:
    """The outcome of one ``solve``.

    ``usage`` is everything this solve spent, the probe included (``probe_usage`` is that
    part). ``partial`` is True when the deadline cut the run short: ``answer`` is then the
    best one seen so far (``answer_source`` says how it was picked) and ``outcome`` is None
    if the strategy had not finished. ``reason`` says how the config was picked:
    ``forced``, ``router``, ``cold_start``, ``exploration`` or ``probe_only`` (stopped
    before a config was chosen); ``explanation`` says it in words and ``why`` lists the
    top candidates the router weighed. ``run_key`` identifies the
    logged row (``logged`` is False when the store already held that key, or logging is
    off).
    """

    problem: Problem
    answer: str | None
    config: RunConfig
    usage: Usage
    probe_usage: Usage
    partial: bool
    reason: str
    why: list[Considered]
    features: dict[str, Any]
    budget: str
    outcome: Outcome | None = None
    text: str | None = None
    answer_source: str = "strategy"
    explanation: str = ""
    correct: bool | None = None
    router_version: str | None = None
    run_key: RunKey | None = None
    logged: bool = False
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_reward(self) -> float | None:
        return None if self.outcome is None else self.outcome.final_reward

    def to_dict(self, *, explain: bool = True) -> dict[str, Any]:
        """Strict-JSON-able data; ``explain`` adds the router's candidates, features, scores."""
        out: dict[str, Any] = {
            "answer": self.answer,
            "partial": self.partial,
            "answer_source": self.answer_source,
            "correct": self.correct,
            "config": {
                "label": self.config.label(),
                "policy": self.config.policy,
                "prm": self.config.prm,
                "strategy": self.config.strategy,
                "params": self.config.params.model_dump(mode="json"),
            },
            "reason": self.reason,
            "explanation": self.explanation,
            "router_version": self.router_version,
            "budget": self.budget,
            "final_reward": self.final_reward,
            "usage": {
                **self.usage.to_dict(),
                "total_tokens": self.usage.total_tokens,
            },
            "probe_usage": self.probe_usage.to_dict(),
            "run": None
            if self.run_key is None
            else {**self.run_key._asdict(), "logged": self.logged},
        }
        if self.error is not None:
            out["error"] = self.error
        if self.outcome is not None and self.outcome.prm_fallback is not None:
            out["prm_fallback"] = self.outcome.prm_fallback  # the PRM was down: majority vote
        if explain:
            out["candidates"] = [c.to_dict() for c in self.why]
            out["features"] = dict(self.features)
            if self.outcome is not None:
                out["scores"] = [
                    {
                        "answer": c.answer,
                        "finished": c.finished,
                        "step_scores": list(c.step_scores),
                        "selected": i == self.outcome.selected_index,
                    }
                    for i, c in enumerate(self.outcome.candidates)
                ]
        cleaned: dict[str, Any] = json_safe(out)
        return cleaned
