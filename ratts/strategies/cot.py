"""Chain of thought: one whole-solution sample; its answer is the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.errors import InvalidParamsError
from ratts.strategies.sampling import (
    RunLedger,
    check_common,
    check_problem,
    solution_candidate,
)
from ratts.types import Outcome, Problem, StrategyParams


class CoT:
    """The baseline: a single sample (greedy with temperature 0, sampled otherwise)."""

    name: ClassVar[str] = "cot"
    needs_prm: ClassVar[bool] = False
    # The paper's CoT baseline is greedy; a caller's explicit temperature still wins.
    param_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.0}

    def validate(self, params: StrategyParams) -> None:
        check_common(params)
        if params.n != 1:
            raise InvalidParamsError(f"cot samples one solution: N must be 1, got {params.n}")

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
        run.event("sample", n=1)
        choices = await run.sample(policy, policy.prompt(problem.question), n=1, step=False)
        candidate = solution_candidate(choices[0], policy.separator)
        return run.outcome([candidate], 0)
