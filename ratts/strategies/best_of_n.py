"""Best-of-N: N whole solutions in one request, PRM-scored in one call, then selection."""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import ScoredStrategy
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.strategies.scoring import off_loop, select
from ratts.types import Outcome, Problem


class BestOfN(ScoredStrategy):
    """Select by ``params.selection`` (max, PRM-weighted vote, majority) over aggregated
    step scores (``params.aggregation``)."""

    name: ClassVar[str] = "best_of_n"
    reuses_samples: ClassVar[bool] = True

    async def _scored(self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM) -> Outcome:
        params = run.params
        run.event("sample", n=params.n)
        choices = await run.sample(policy, policy.prompt(problem.question), n=params.n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        await run.score(prm, problem.question, candidates)
        run.event("score", candidates=len(candidates))
        selected = await off_loop(select, candidates, params.selection, params.aggregation)
        run.event("select", how=params.selection, index=selected)
        return run.outcome(candidates, selected)
