"""Majority voting: N whole solutions in one request, the most common answer wins."""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.strategies.sampling import (
    RunLedger,
    check_common,
    check_problem,
    solution_candidate,
)
from ratts.strategies.scoring import majority_index, off_loop
from ratts.types import Outcome, Problem, StrategyParams


class Majority:
    """Self-consistency: vote over graded-equivalent answers; ties go to the earliest."""

    name: ClassVar[str] = "majority"
    needs_prm: ClassVar[bool] = False

    def validate(self, params: StrategyParams) -> None:
        check_common(params)

    async def run(
        self,
        problem: Problem,
        policy: PolicyClient,
        prm: PRM | None,
        params: StrategyParams,
    ) -> Outcome:
        self.validate(params)
        check_problem(problem)
        run = RunLedger(self.name, params)
        run.event("sample", n=params.n)
        choices = await run.sample(policy, policy.prompt(problem.question), n=params.n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        selected = await off_loop(majority_index, [c.answer for c in candidates])
        run.event("select", how="majority", index=selected)
        return run.outcome(candidates, selected)
