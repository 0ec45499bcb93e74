"""The step-wise PRM-guided search engine behind beam search and DVTS.

One search keeps ``keep`` active beams and expands each by ``expand`` children per step:
beam search is one search with (N/M, M); DVTS is N/M concurrent searches with (1, M).

Per step: PRM-score every active candidate in ONE call, move finished ones to the pool,
keep the top ``keep`` unfinished by aggregated score, expand each kept beam with one
``complete(n=expand)`` request, all requests issued together. Stops when nothing is active,
when the pool holds ``keep * expand`` candidates, or after ``max_steps`` steps; the kept
unfinished beams then join the pool as unfinished candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ratts.endpoints.policy import PolicyClient
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


async def search(
    run: RunLedger,
    problem: Problem,
    policy: PolicyClient,
    prm: PRM,
    shape: SearchShape,
    *,
    tree: int | None = None,
) -> list[Candidate]:
    """Run one search tree; returns its pool of leaves (finished first, in finishing order).

    ``tree`` labels trace events and seeds when several trees run side by side (DVTS).
    """
    params = run.params
    sep = policy.separator
    label: dict[str, Any] = {} if tree is None else {"subtree": tree}

    run.event("sample", n=shape.width, **label)
    first = await run.sample(
        policy,
        step_prompt(policy, problem.question, []),
        n=shape.width,
        step=True,
        key=(tree, 0),
    )
    active = [extend_candidate([], choice, sep) for choice in first]
    pool: list[Candidate] = []

    for depth in range(1, params.max_steps + 1):
        await run.score(prm, problem.question, active)
        done = [c for c in active if c.finished]
        pool.extend(done)
        alive = [c for c in active if not c.finished]
        ranked = sorted(
            range(len(alive)),
            key=lambda i: aggregate(alive[i].step_scores, params.aggregation),
            reverse=True,
        )  # sorted is stable: equal scores keep sampling order
        kept = [alive[i] for i in ranked[: shape.keep]]
        run.event(
            "step",
            k=depth,
            kept=len(kept),
            candidates=len(active),
            finished=len(done),
            **label,
        )
        if not kept or len(pool) >= shape.width or depth == params.max_steps:
            pool.extend(kept)
            break
        active = await _expand(run, problem, policy, kept, shape.expand, depth, tree)
    return pool


async def _expand(
    run: RunLedger,
    problem: Problem,
    policy: PolicyClient,
    beams: list[Candidate],
    expand: int,
    depth: int,
    tree: int | None,
) -> list[Candidate]:
    """``expand`` children for each beam: one request per beam, all in flight together."""
    requests = [
        run.sample(
            policy,
            step_prompt(policy, problem.question, beam.steps),
            n=expand,
            step=True,
            key=(tree, depth, b),
        )
        for b, beam in enumerate(beams)
    ]
    results = await gather_all(requests)
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
