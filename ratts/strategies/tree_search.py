"""The step-wise PRM-guided search engine behind beam search and DVTS.

One search tree keeps ``keep`` active beams and expands each by ``expand`` children per
step: beam search is one tree with (N/M, M); DVTS is N/M trees with (1, M).

The trees of one run step in lockstep (as in the paper's DVTS): per step, ONE PRM call
scores every active candidate of every tree; each tree moves its finished candidates to
its pool, keeps its top ``keep`` unfinished by aggregated score, and expands them with ONE
policy request (its kept beams as a list of prompts, ``n=expand`` each); the trees'
requests are all in flight together. A tree stops when nothing is active, when its pool
holds ``keep * expand`` candidates, or after ``max_steps`` steps; its kept unfinished beams
then join its pool as unfinished candidates. Lockstep changes no tree's choices (trees
never look at each other), only how many HTTP round trips a step costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ratts.endpoints.policy import Policy
from ratts.endpoints.pool import gather_all
from ratts.endpoints.prm import PRM
from ratts.strategies.sampling import RunLedger, extend_candidate, step_prompt
from ratts.strategies.scoring import aggregate, select
from ratts.types import Candidate, Problem


@dataclass(frozen=True, slots=True)
class SearchShape:
    """How one search tree grows: beams kept per step and children per kept beam."""

    keep: int
    expand: int

    @property
    def width(self) -> int:
        """Candidates per step (and the size of the pool that ends the search)."""
        return self.keep * self.expand


@dataclass(slots=True)
class _Tree:
    label: int | None  # labels trace events and seeds when several trees run (DVTS)
    active: list[Candidate] = field(default_factory=list)
    kept: list[Candidate] = field(default_factory=list)
    pool: list[Candidate] = field(default_factory=list)

    def tag(self) -> dict[str, Any]:
        return {} if self.label is None else {"subtree": self.label}


async def search(
    run: RunLedger,
    problem: Problem,
    policy: Policy,
    prm: PRM,
    shape: SearchShape,
    trees: Sequence[int | None] = (None,),
) -> list[list[Candidate]]:
    """Run the trees in lockstep; returns each tree's pool of leaves (finished first, in
    finishing order). ``trees`` are the trees' labels (None: one unlabelled tree)."""
    params = run.params
    sep = policy.separator
    forest = [_Tree(label) for label in trees]
    root = step_prompt(policy, problem.question, [])
    for tree in forest:
        run.event("sample", n=shape.width, **tree.tag())
    firsts = await gather_all(
        [run.sample(policy, root, n=shape.width, step=True, key=(tree.label, 0)) for tree in forest]
    )
    for tree, choices in zip(forest, firsts, strict=True):
        tree.active = [extend_candidate([], choice, sep) for choice in choices]

    running = forest
    for depth in range(1, params.max_steps + 1):
        await run.score(prm, problem.question, [c for tree in running for c in tree.active])
        expanding = []
        for tree in running:
            done = [c for c in tree.active if c.finished]
            tree.pool.extend(done)
            alive = [c for c in tree.active if not c.finished]
            ranked = sorted(
                range(len(alive)),
                key=lambda i: aggregate(alive[i].step_scores, params.aggregation),
                reverse=True,
            )  # sorted is stable: equal scores keep sampling order
            tree.kept = [alive[i] for i in ranked[: shape.keep]]
            run.event(
                "step",
                k=depth,
                kept=len(tree.kept),
                candidates=len(tree.active),
                finished=len(done),
                **tree.tag(),
            )
            if not tree.kept or len(tree.pool) >= shape.width or depth == params.max_steps:
                tree.pool.extend(tree.kept)
            else:
                expanding.append(tree)
        if not expanding:
            break
        children = await gather_all(
            [_expand(run, problem, policy, tree, shape.expand, depth) for tree in expanding]
        )
        for tree, kids in zip(expanding, children, strict=True):
            tree.active = kids
        running = expanding
    return [tree.pool for tree in forest]


async def _expand(
    run: RunLedger,
    problem: Problem,
    policy: Policy,
    tree: _Tree,
    expand: int,
    depth: int,
) -> list[Candidate]:
    """``expand`` children for each kept beam of one tree, in one request."""
    beams = tree.kept
    results = await run.sample_many(
        policy,
        [step_prompt(policy, problem.question, beam.steps) for beam in beams],
        n=expand,
        keys=[(tree.label, depth, b) for b in range(len(beams))],
    )
    return [
        extend_candidate(beam.steps, choice, policy.separator)
        for beam, choices in zip(beams, results, strict=True)
        for choice in choices
    ]


def select_leaf(run: RunLedger, leaves: list[Candidate]) -> int | None:
    """Selection over the leaves, preferring finished ones; all leaves if none finished."""
    params = run.params
    finished = [i for i, c in enumerate(leaves) if c.finished]
    among = finished or list(range(len(leaves)))
    picked = select([leaves[i] for i in among], params.selection, params.aggregation)
    selected = None if picked is None else among[picked]
    run.event("select", how=params.selection, index=selected, finished=len(finished))
    return selected
