"""A strategy defined in one file, as a user would add one: ``shortest`` samples N whole
solutions and answers with the shortest one that has an answer (a deliberately odd rule, so
nothing in ratts can have been written with it in mind)."""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies import Strategy
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.types import Outcome, Problem


class Shortest(Strategy):
    """N samples in one request; the shortest answered one wins (no PRM)."""

    name: ClassVar[str] = "shortest"

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        n = run.params.n
        run.event("sample", n=n)
        choices = await run.sample(policy, policy.prompt(problem.question), n=n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        answered = [i for i, c in enumerate(candidates) if c.answer is not None]
        selected = min(answered, key=lambda i: len(candidates[i].text())) if answered else None
        return run.outcome(candidates, selected)
