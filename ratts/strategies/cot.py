"""Chain of thought: one whole-solution sample; its answer is the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import Strategy
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.types import Outcome, Problem


class CoT(Strategy):
    """The baseline: a single sample (greedy with temperature 0, sampled otherwise)."""

    name: ClassVar[str] = "cot"
    fixed_n: ClassVar[int | None] = 1
    reuses_samples: ClassVar[bool] = True
    # The paper's CoT baseline is greedy; a caller's explicit temperature still wins.
    param_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.0}

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        run.event("sample", n=1)
        choices = await run.sample(policy, policy.prompt(problem.question), n=1, step=False)
        candidate = solution_candidate(choices[0], policy.separator)
        return run.outcome([candidate], 0)
