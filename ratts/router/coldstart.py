"""Routing before any model is trained: the paper's compute-optimal rule of thumb.

Snell et al. (2024) found beam search best for small policies and for hard questions, and
Best-of-N best for large policies on easy-to-medium questions. So: a policy under ~7B
parameters, or a question the probe finds hard (low agreement or low PRM confidence), gets
beam search; otherwise Best-of-N; and the largest N the budget allows. It predicts no
accuracy, so ``lam`` has nothing to trade against and is ignored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ratts.errors import ConfigError
from ratts.router.candidates import CandidateConfig, Choice, CostUnit, budget_unit, pick
from ratts.settings import Settings
from ratts.types import Budget

SMALL_POLICY_PARAMS = 7e9
HARD_AGREEMENT = 0.5
HARD_PRM_MEAN = 0.5
Difficulty = Literal["hard", "not hard", "unknown"]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(slots=True)
class ColdStartRouter:
    """The paper's rule over the same candidates and budget semantics as the learned router.

    ``policy_params`` maps policy names to parameter counts (a policy missing from it counts
    as small). ``epsilon`` > 0 explores a random in-budget candidate, seeded by ``seed``.
    """

    policy_params: Mapping[str, float]
    small_params: float = SMALL_POLICY_PARAMS
    hard_agreement: float = HARD_AGREEMENT
    hard_prm_mean: float = HARD_PRM_MEAN
    epsilon: float = 0.0
    seed: int | None = None
    version: str | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {self.epsilon}")
        self._rng = random.Random(self.seed)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ColdStartRouter:
        return cls({p.name: p.params for p in settings.policies}, **kwargs)

    def difficulty(self, features: Mapping[str, Any]) -> Difficulty:
        """``hard`` when the probe's agreement or mean PRM score is low; ``unknown``
        without probe features."""
        agreement = _finite(features.get("probe_agreement"))
        prm_mean = _finite(features.get("probe_prm_mean"))
        if agreement is None and prm_mean is None:
            return "unknown"
        if (agreement is not None and agreement < self.hard_agreement) or (
            prm_mean is not None and prm_mean < self.hard_prm_mean
        ):
            return "hard"
        return "not hard"

    def strategy_for(self, policy: str, difficulty: Difficulty) -> str:
        small = self.policy_params.get(policy, 0.0) < self.small_params
        return "beam_search" if small or difficulty == "hard" else "best_of_n"

    def choose(
        self,
        features: Mapping[str, Any],
        candidates: Sequence[CandidateConfig],
        budget: Budget,
        lam: float | None = None,
        *,
        unit: CostUnit | None = None,
    ) -> Choice:
        """The rule's strategy for each policy, the largest N within budget, ties to the
        cheaper config; any in-budget candidate when the rule's strategy has none."""
        del lam  # no accuracy prediction to trade against cost
        if not candidates:
            raise ConfigError("no candidate configs to choose from")
        u = unit or budget_unit(budget)
        level = self.difficulty(features)
        preferred = [
            c.config.strategy == self.strategy_for(c.config.policy, level) for c in candidates
        ]
        in_rule = any(
            ok and c.cost.fits(budget) for ok, c in zip(preferred, candidates, strict=True)
        )
        # Priority = N among the rule's candidates (the rest never win), ties to the cheaper.
        scores = [
            float(c.cost.n) if (ok or not in_rule) else None
            for ok, c in zip(preferred, candidates, strict=True)
        ]
        what = (
            "beam search"
            if all(self.strategy_for(c.config.policy, level) == "beam_search" for c in candidates)
            else "the paper's strategy per policy"
        )
        reason = (
            f"cold start (no trained router): {what}, difficulty {level}, largest N in budget"
            if in_rule
            else f"cold start: no {what} config fits the budget; largest N among the rest"
        )
        choice = pick(
            candidates,
            [None] * len(candidates),
            budget,
            unit=u,
            epsilon=self.epsilon,
            rng=self._rng,
            reason=reason,
            priority=scores,
        )
        choice.router_version = self.version
        return choice
