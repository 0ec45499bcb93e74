"""The step-wise PRM-guided search engine behind beam search and DVTS.

One search tree keeps ``keep`` active beams and expands each by ``expand`` children per
step: beam search is one tree with (N/M, M); DVTS is N/M trees with (1, M).

The trees of one run step in lockstep (as in the paper's DVTS): per step, ONE PRM call
scores every active candidate of every tree; each tree moves its finished candidates to
its pool and keeps its top ``keep`` unfinished by aggregated score, and ONE policy request
expands the kept beams of every tree (a list of prompts, ``n=expand`` each; the final
rollouts likewise). Lockstep changes no tree's choices (trees never look at each other,
and each prompt keeps its own seed key), only how many HTTP round trips a step costs.

The paper's (and search-and-learn's) step semantics:
- terminal: EOS, a boxed answer, a step cut by ``max_tokens``, an empty step, a prompt
  that no longer fits the context (see ``sampling.extend_candidate``);
- a branch the context is about to end gets a final answer instead of another step
  (``answer_room``: steps keep room for it free);
- beam search keeps ``keep`` beams alive while any survives: when fewer survive, the best
  survivors are duplicated (``refill``), so every step still samples N candidates;
- a DVTS subtree follows its best child: when that child is terminal the subtree stops
  (``follow_best``);
- a tree stops when nothing is alive or its pool holds ``keep * expand`` finished leaves;
  at ``max_steps`` each kept beam gets a final rollout to the end (one whole-solution
  continuation), so an outcome has an answer whenever a candidate has text;
- each tree's pool is trimmed to ``keep * expand`` leaves (finished first, answered first,
  then by score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ratts.endpoints.policy import Policy
from ratts.endpoints.pool import gather_all
from ratts.endpoints.prm import PRM
from ratts.strategies.answer_room import grow
from ratts.strategies.sampling import RunLedger
from ratts.strategies.scoring import aggregate, off_loop, select
from ratts.types import Aggregation, Candidate, Problem


@dataclass(frozen=True, slots=True)
class SearchShape:
    """How one search tree grows: beams kept per step and children per kept beam;
    ``refill`` duplicates the best survivors up to ``keep``; ``follow_best`` stops a tree
    once its best-scored child is terminal."""

    keep: int
    expand: int
    refill: bool = False
    follow_best: bool = False

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


def _ranked(candidates: Sequence[Candidate], how: Aggregation) -> list[Candidate]:
    """Best aggregated score first; sorted is stable, so ties keep sampling order."""
    return sorted(candidates, key=lambda c: aggregate(c.step_scores, how), reverse=True)


def _keep(alive: list[Candidate], shape: SearchShape) -> list[Candidate]:
    """The top ``keep`` survivors (already ranked); with ``refill``, the best survivors
    repeated in rank order until there are ``keep`` of them."""
    if not shape.refill or not alive or len(alive) >= shape.keep:
        return alive[: shape.keep]
    return [alive[i % len(alive)] for i in range(shape.keep)]


def _trim(pool: list[Candidate], size: int, how: Aggregation) -> list[Candidate]:
    """At most ``size`` leaves: finished ones first (those with an answer before those
    without, so trimming never drops every answer), then by aggregated score."""
    if len(pool) <= size:
        return pool
    ranked = _ranked(pool, how)
    return sorted(ranked, key=lambda c: (not c.finished, c.answer is None))[:size]


async def search(
    run: RunLedger,
    problem: Problem,
    policy: Policy,
    prm: PRM,
    shape: SearchShape,
    trees: Sequence[int | None] = (None,),
) -> list[list[Candidate]]:
    """Run the trees in lockstep; returns each tree's pool of leaves (at most
    ``shape.width``). ``trees`` are the trees' labels (None: one unlabelled tree)."""
    params = run.params
    how = params.aggregation
    forest = [_Tree(label) for label in trees]
    for tree in forest:
        run.event("sample", n=shape.width, **tree.tag())
    firsts = await gather_all(
        [
            grow(run, policy, problem.question, [[]], n=shape.width, keys=[(tree.label, 0)])
            for tree in forest
        ]
    )
    for tree, (first,) in zip(forest, firsts, strict=True):
        tree.active = first

    running = forest
    rolling: list[_Tree] = []
    for depth in range(1, params.max_steps + 1):
        await run.score(prm, problem.question, [c for tree in running for c in tree.active])
        expanding = []
        for tree in running:
            ranked = _ranked(tree.active, how)
            done = [c for c in tree.active if c.finished]
            tree.pool.extend(done)
            alive = [c for c in ranked if not c.finished]
            best_done = shape.follow_best and bool(ranked) and ranked[0].finished
            tree.kept = [] if best_done else _keep(alive, shape)
            run.event(
                "step",
                k=depth,
                kept=len(tree.kept),
                candidates=len(tree.active),
                finished=len(done),
                **({"best_finished": best_done} if shape.follow_best else {}),
                **tree.tag(),
            )
            if not tree.kept or len(tree.pool) >= shape.width:
                continue
            if depth == params.max_steps:
                rolling.append(tree)
            else:
                expanding.append(tree)
        if not expanding:
            break
        children = await _expand(run, problem, policy, expanding, shape.expand, depth)
        for tree, kids in zip(expanding, children, strict=True):
            tree.active = kids
        running = expanding
    if rolling:
        await _roll_out(run, problem, policy, prm, rolling)
    return [_trim(tree.pool, shape.width, how) for tree in forest]


async def _roll_out(
    run: RunLedger, problem: Problem, policy: Policy, prm: PRM, trees: list[_Tree]
) -> None:
    """``max_steps`` reached: each kept beam of every tree continued to the end (one
    request for all of them), the results scored in one PRM call and added to their
    trees' pools."""
    for tree in trees:
        run.event("rollout", beams=len(tree.kept), **tree.tag())
    finals = await _grow_trees(run, problem, policy, trees, n=1, depth="rollout", step=False)
    await run.score(prm, problem.question, [c for leaves in finals for c in leaves])
    for tree, leaves in zip(trees, finals, strict=True):
        tree.pool.extend(leaves)


async def _expand(
    run: RunLedger,
    problem: Problem,
    policy: Policy,
    trees: list[_Tree],
    expand: int,
    depth: int,
) -> list[list[Candidate]]:
    """``expand`` children for each kept beam of every tree (see ``_grow_trees``)."""
    return await _grow_trees(run, problem, policy, trees, n=expand, depth=depth, step=True)


async def _grow_trees(
    run: RunLedger,
    problem: Problem,
    policy: Policy,
    trees: list[_Tree],
    *,
    n: int,
    depth: int | str,
    step: bool,
) -> list[list[Candidate]]:
    """``n`` children of each kept beam of every tree, per tree, in one request for the
    step (a list of prompts: the trees' requests fill the server's batch together and cost
    one round trip). Each prompt keeps its own seed key, so a seeded run (one request per
    prompt) samples exactly what it did with one request per tree."""
    beams = [(tree, b, beam) for tree in trees for b, beam in enumerate(tree.kept)]
    results = await grow(
        run,
        policy,
        problem.question,
        [beam.steps for _, _, beam in beams],
        n=n,
        keys=[(tree.label, depth, b) for tree, b, _ in beams],
        step=step,
    )
    grown: dict[int, list[Candidate]] = {id(tree): [] for tree in trees}
    for (tree, _, _), children in zip(beams, results, strict=True):
        grown[id(tree)] += children
    return [grown[id(tree)] for tree in trees]


async def select_leaf(run: RunLedger, leaves: list[Candidate]) -> int | None:
    """Selection over the leaves, preferring finished ones; all leaves if none finished."""
    params = run.params
    finished = [i for i, c in enumerate(leaves) if c.finished]
    among = finished or list(range(len(leaves)))
    picked = await off_loop(
        select, [leaves[i] for i in among], params.selection, params.aggregation
    )
    selected = None if picked is None else among[picked]
    run.event("select", how=params.selection, index=selected, finished=len(finished))
    return selected
