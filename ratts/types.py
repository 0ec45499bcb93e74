"""Core records shared by every layer: problems, budgets, candidates, outcomes, configs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ratts.endpoints.usage import Usage

Aggregation = Literal["last", "min", "mean", "prod"]
Selection = Literal["max", "weighted", "majority"]


@dataclass(frozen=True, eq=True)
class Problem:
    """A question to solve; ``answer`` is the gold answer when known."""

    id: str
    question: str
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


class StrategyParams(BaseModel):
    """Plain-data strategy parameters, so a config is a hashable record.

    ``n`` is the budget in the paper's sense: generations per step (Best-of-N: samples;
    beam search: candidates kept per step x expansion; DVTS: total leaves per step).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(default=1, description="generations per step (the paper's budget N)")
    beam_width: int = Field(default=4, description="M: children per kept beam")
    max_steps: int = 40
    max_tokens: int = 1024
    max_step_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 1.0
    aggregation: Aggregation = "last"
    selection: Selection = "weighted"
    seed: int | None = None


class Budget(BaseModel):
    """A per-query compute budget; any unset limit is unconstrained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int | None = None
    tokens: int | None = None
    flops: float | None = None
    usd: float | None = None


class RunConfig(BaseModel):
    """(policy, PRM, strategy, params): the unit the store logs and the router chooses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    prm: str | None
    strategy: str
    params: StrategyParams = StrategyParams()

    def key(self) -> str:
        """Stable hash over the full record (params with defaults filled in)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Human-readable: ``strategy(N=..[,M=..])@policy[+prm]``; M only for step-wise."""
        # Lazy: the strategies import this module. An unregistered name shows no M.
        from ratts.strategies import STRATEGIES

        strategy = STRATEGIES.get(self.strategy)
        p = self.params
        extra = f",M={p.beam_width}" if strategy is not None and strategy.stepwise else ""
        return f"{self.strategy}(N={p.n}{extra})@{self.policy}" + (
            f"+{self.prm}" if self.prm else ""
        )


@dataclass(slots=True)
class Candidate:
    """One complete or partial solution: its steps, extracted answer and PRM step scores."""

    steps: list[str]
    answer: str | None = None
    step_scores: list[float] = field(default_factory=list)
    finished: bool = False

    def text(self, separator: str = "\n\n") -> str:
        return separator.join(self.steps)


@dataclass(slots=True)
class Outcome:
    """What a strategy returns: the selected answer, all candidates and real usage."""

    strategy: str
    params: StrategyParams
    answer: str | None
    candidates: list[Candidate]
    selected_index: int | None
    usage: Usage
    trace: list[dict[str, Any]] = field(default_factory=list)
    partial: bool = False
    prm_fallback: str | None = None
    """Set when the PRM was down (after its retries) and the answer is a majority vote
    instead: the PRM's one-line error."""

    @property
    def step_scores(self) -> list[list[float]]:
        return [c.step_scores for c in self.candidates]

    @property
    def final_reward(self) -> float | None:
        if self.selected_index is None:
            return None
        scores = self.candidates[self.selected_index].step_scores
        return scores[-1] if scores else None
