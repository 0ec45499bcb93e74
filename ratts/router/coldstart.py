"""Routing before any model is trained: the paper's compute-optimal rule of thumb.

Snell et al. (2024, "Scaling LLM Test-Time Compute Optimally...", sec. 5-6 and fig. 3-4):
search (beam search) pays on hard questions, while on easy ones it over-optimises the
verifier and plain Best-of-N is as good or better; the larger the policy, the less search
helps. So, by policy size and the probe's difficulty estimate:

- under 7B parameters: Best-of-N on easy questions, beam search on hard ones;
- 7B to under 72B: DVTS on easy and medium questions, beam search on hard ones;
- 72B and up: Best-of-N;

and the largest N the budget allows. "Hard" is the paper's lowest difficulty bins, where
pass@1 is low: here the probe's majority share is under 1/2 (with k = 4, no answer got two
votes) or its mean PRM score is under 1/2. A question of unknown difficulty (no probe
features) gets the easy-question strategy: the cheaper, safer bet (the demo's beam search
on a 135M policy was its worst row at three times the compute).

When the probe's samples all agree (k >= 2, every sample answered), the rule answers from
the probe: a candidate that reuses the probe's samples and draws nothing more (priced at
zero after the probe) is chosen, so the question costs the probe's compute only.
It predicts no accuracy, so ``lam`` has nothing to trade against and is ignored.
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
LARGE_POLICY_PARAMS = 72e9
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
    large_params: float = LARGE_POLICY_PARAMS
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
        """The paper's strategy for ``policy``'s size and the question's difficulty."""
        size = self.policy_params.get(policy, 0.0)
        if size >= self.large_params:
            return "best_of_n"
        if difficulty == "hard":
            return "beam_search"
        return "best_of_n" if size < self.small_params else "dvts"

    @staticmethod
    def unanimous(features: Mapping[str, Any]) -> bool:
        """Whether the probe's samples (k >= 2, all answered) all gave one answer."""
        k = _finite(features.get("probe_k"))
        agreement = _finite(features.get("probe_agreement"))
        answered = _finite(features.get("probe_answered"))
        return k is not None and k >= 2 and agreement == 1.0 and answered == 1.0

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
        if self.unanimous(features):
            free = [c for c in candidates if c.cost.tokens == 0 and c.cost.fits(budget)]
            if free:
                choice = pick(
                    free,
                    [None] * len(free),
                    budget,
                    unit=u,
                    reason="cold start: the probe's samples all agree; answering from the probe",
                    priority=[float(c.cost.n) for c in free],
                )
                choice.router_version = self.version
                return choice
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
        rules = {self.strategy_for(c.config.policy, level) for c in candidates}
        what = rules.pop().replace("_", " ") if len(rules) == 1 else "the paper's strategy"
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
