"""DVTS (N, M): N/M independent subtrees run concurrently (in lockstep, one PRM call per step
for all of them), each keeping one beam and expanding it by M per step; a subtree stops
once its best-scored child is terminal (the paper's and search-and-learn's rule); the
answer is selected over all subtrees' leaves.

Independent subtrees trade the single tree's exploitation for diversity, which the paper
shows pays off at large N.
"""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import ScoredStrategy
from ratts.strategies.sampling import RunLedger
from ratts.strategies.tree_search import SearchShape, search, select_leaf
from ratts.types import Outcome, Problem


class DVTS(ScoredStrategy):
    """Diverse verifier tree search."""

    name: ClassVar[str] = "dvts"
    stepwise: ClassVar[bool] = True

    async def _scored(self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM) -> Outcome:
        params = run.params
        shape = SearchShape(keep=1, expand=params.beam_width, follow_best=True)
        subtrees = params.n // params.beam_width
        pools = await search(run, problem, policy, prm, shape, trees=range(subtrees))
        leaves = [leaf for pool in pools for leaf in pool]
        return run.outcome(leaves, await select_leaf(run, leaves))
