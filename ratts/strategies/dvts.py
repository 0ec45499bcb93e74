"""DVTS (N, M): N/M independent subtrees run concurrently (in lockstep, one PRM call per step
for all of them), each keeping one beam and expanding it by M per step; a subtree stops
once its best-scored child is terminal (the paper's and search-and-learn's rule); the
answer is selected over all subtrees' leaves.

Independent subtrees trade the single tree's exploitation for diversity, which the paper
shows pays off at large N.
"""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.strategies.sampling import RunLedger, check_problem, check_tree, require_prm
from ratts.strategies.tree_search import SearchShape, search, select_leaf
from ratts.types import Outcome, Problem, StrategyParams


class DVTS:
    """Diverse verifier tree search."""

    name: ClassVar[str] = "dvts"
    needs_prm: ClassVar[bool] = True

    def validate(self, params: StrategyParams) -> None:
        check_tree("dvts", params)

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
        shape = SearchShape(keep=1, expand=params.beam_width, follow_best=True)
        subtrees = params.n // params.beam_width
        pools = await search(run, problem, policy, scorer, shape, trees=range(subtrees))
        leaves = [leaf for pool in pools for leaf in pool]
        return run.outcome(leaves, await select_leaf(run, leaves))
