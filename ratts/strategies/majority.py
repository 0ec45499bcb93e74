"""Majority voting: N whole solutions in one request, the most common answer wins."""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import Strategy
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.strategies.scoring import majority_index, off_loop
from ratts.types import Outcome, Problem


class Majority(Strategy):
    """Self-consistency: vote over graded-equivalent answers; ties go to the earliest."""

    name: ClassVar[str] = "majority"
    reuses_samples: ClassVar[bool] = True

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        n = run.params.n
        run.event("sample", n=n)
        choices = await run.sample(policy, policy.prompt(problem.question), n=n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        selected = await off_loop(majority_index, [c.answer for c in candidates])
        run.event("select", how="majority", index=selected)
        return run.outcome(candidates, selected)
