"""Beam search (N, M): N candidates per step, keep the best N/M by PRM score, expand each by M.

When fewer than N/M survive a step the best survivors are duplicated (as search-and-learn
does), so every step still samples N candidates while any beam lives.
"""

from __future__ import annotations

from typing import ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.strategies.base import ScoredStrategy
from ratts.strategies.sampling import RunLedger
from ratts.strategies.tree_search import SearchShape, search, select_leaf
from ratts.types import Outcome, Problem


class BeamSearch(ScoredStrategy):
    """One search tree of N/M beams; the answer is selected over its pool of leaves."""

    name: ClassVar[str] = "beam_search"
    stepwise: ClassVar[bool] = True

    async def _scored(self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM) -> Outcome:
        params = run.params
        shape = SearchShape(
            keep=params.n // params.beam_width, expand=params.beam_width, refill=True
        )
        (leaves,) = await search(run, problem, policy, prm, shape)
        return run.outcome(leaves, await select_leaf(run, leaves))
