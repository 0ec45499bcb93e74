"""Adaptive consistency: majority voting that stops sampling once the vote is settled.

Aggarwal et al. (2023), "Let's Sample Step by Step: Adaptive-Consistency for Efficient
Reasoning with LLMs": easy questions need few samples, because the samples agree early.
Samples come in rounds of ``ROUND``; after each round the leading answer's share p of the
answer distribution gets a Beta posterior (uniform prior; a = votes for the leader,
b = every other sample, unanswered ones included), and sampling stops once
P(p > 1/2) >= ``CONFIDENCE`` (the leader is the majority answer) or N samples are spent.
With four unanimous samples P = 31/32, so a probe whose four samples agree settles it at
once (the router's probe reuse then draws nothing more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import Strategy
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.strategies.scoring import answer_classes, majority_index
from ratts.types import Candidate, Outcome, Problem

ROUND = 2
CONFIDENCE = 0.95


def majority_posterior(lead: int, rest: int) -> float:
    """P(p > 1/2) under Beta(lead + 1, rest + 1), exactly: for integer parameters it is
    P(Binomial(lead + rest + 1, 1/2) <= lead)."""
    if lead < 0 or rest < 0:
        raise ValueError("vote counts must be >= 0")
    trials = lead + rest + 1
    return float(sum(math.comb(trials, i) for i in range(lead + 1))) / float(2**trials)


def settled(answers: Sequence[str | None], confidence: float = CONFIDENCE) -> bool:
    """Whether the leading answer is the majority with posterior >= ``confidence``."""
    classes = answer_classes(answers)
    if not classes:
        return False
    lead = max(len(c) for c in classes)
    return majority_posterior(lead, len(answers) - lead) >= confidence


class AdaptiveConsistency(Strategy):
    """Majority vote over at most N samples, drawn in rounds until the vote is settled."""

    name: ClassVar[str] = "adaptive"
    reuses_samples: ClassVar[bool] = True

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        return await self.continue_from(run, problem, policy, [])

    async def continue_from(
        self, run: RunLedger, problem: Problem, policy: Policy, have: Sequence[Candidate]
    ) -> Outcome:
        """Vote over ``have`` (e.g. a probe's samples) plus as many rounds as it takes."""
        n = run.params.n
        candidates = list(have[:n])
        prompt = policy.prompt(problem.question)
        rounds = 0
        while len(candidates) < n and not settled([c.answer for c in candidates]):
            size = min(ROUND, n - len(candidates))
            run.event("sample", n=size, round=rounds)
            choices = await run.sample(
                policy, prompt, n=size, step=False, key=("adaptive", len(have), rounds)
            )
            candidates += [solution_candidate(c, policy.separator) for c in choices]
            rounds += 1
        selected = majority_index([c.answer for c in candidates])
        run.event("select", how="adaptive", index=selected, samples=len(candidates))
        return run.outcome(candidates, selected)
