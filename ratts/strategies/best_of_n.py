"""Best-of-N: N whole solutions in one request, PRM-scored in one call, then selection."""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.strategies.sampling import (
    RunLedger,
    check_common,
    check_problem,
    require_prm,
    solution_candidate,
)
from ratts.strategies.scoring import off_loop, select
from ratts.types import Outcome, Problem, StrategyParams


class BestOfN:
    """Select by ``params.selection`` (max, PRM-weighted vote, majority) over aggregated
    step scores (``params.aggregation``)."""

    name: ClassVar[str] = "best_of_n"
    needs_prm: ClassVar[bool] = True

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
        scorer = require_prm(self.name, prm)
        check_problem(problem)
        run = RunLedger(self.name, params)
        run.event("sample", n=params.n)
        choices = await run.sample(policy, policy.prompt(problem.question), n=params.n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        await run.score(scorer, problem.question, candidates)
        run.event("score", candidates=len(candidates))
        selected = await off_loop(select, candidates, params.selection, params.aggregation)
        run.event("select", how=params.selection, index=selected)
        return run.outcome(candidates, selected)
