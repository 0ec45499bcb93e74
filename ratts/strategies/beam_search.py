"""Beam search (N, M): N candidates per step, keep the best N/M by PRM score, expand each by M.

When fewer than N/M survive a step the best survivors are duplicated (as search-and-learn
does), so every step still samples N candidates while any beam lives.
"""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.strategies.sampling import RunLedger, check_problem, check_tree, require_prm
from ratts.strategies.tree_search import SearchShape, search, select_leaf
from ratts.types import Outcome, Problem, StrategyParams


class BeamSearch:
    """One search tree of N/M beams; the answer is selected over its pool of leaves."""

    name: ClassVar[str] = "beam_search"
    needs_prm: ClassVar[bool] = True

    def validate(self, params: StrategyParams) -> None:
        check_tree("beam search", params)

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
        shape = SearchShape(
            keep=params.n // params.beam_width, expand=params.beam_width, refill=True
        )
        (leaves,) = await search(run, problem, policy, scorer, shape)
        return run.outcome(leaves, await select_leaf(run, leaves))
