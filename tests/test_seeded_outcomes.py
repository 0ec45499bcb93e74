"""Seeded beam search and DVTS runs on the simulator, pinned: changes to the shared request
machinery (admission, batching, lockstep) must not change what a strategy computes.

Each case runs once over real loopback HTTP; its Outcome (every candidate's steps, answer,
finished flag and step scores, the selection and the server-counted tokens) is reduced to
one digest, recorded from the code before the machinery changed. A digest that moves means
a seeded run now computes something else: find out why before updating it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.prm import PRM
from ratts.settings import PolicySpec, PRMSpec
from ratts.strategies import get_strategy
from ratts.types import Outcome, Problem, StrategyParams

QUESTIONS = [f"Sim problem {i}: evaluate the recurrence chain." for i in (3, 7, 12)]

# (strategy, N, M, max_steps, cap on sequences in flight) -> digest of the three questions'
# outcomes, run concurrently through one client. A seeded request is cut only at fixed
# offsets that depend on the cap, so each cap has its own digest.
PINNED: dict[tuple[str, int, int, int, int], str] = {
    ("beam_search", 8, 2, 8, 64): "ceafb515ae8b11bc",
    ("beam_search", 16, 4, 3, 64): "c26bdc005fadfa84",  # max_steps reached: rollouts
    ("dvts", 8, 2, 8, 64): "f0bc04850dfcb1fe",
    ("dvts", 16, 4, 3, 64): "f5478ab16d3941c1",
    ("beam_search", 8, 2, 8, 3): "d480ff443da6712c",
    ("beam_search", 16, 4, 3, 3): "4686d7b57ec49dc0",
    ("dvts", 8, 2, 8, 3): "f0bc04850dfcb1fe",
    ("dvts", 16, 4, 3, 3): "72287edadb1050e3",
}


@pytest.fixture
async def prm(prm_spec: PRMSpec) -> AsyncIterator[PRM]:
    client = build_prm(prm_spec)
    yield client
    await client.aclose()


def digest(outcomes: list[Outcome]) -> str:
    record = [
        {
            "answer": o.answer,
            "selected": o.selected_index,
            "candidates": [
                [c.steps, c.answer, c.finished, [round(s, 9) for s in c.step_scores]]
                for c in o.candidates
            ],
            "tokens": [o.usage.policy_prompt_tokens, o.usage.policy_completion_tokens],
        }
        for o in outcomes
    ]
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(PINNED))
async def test_seeded_search_outcomes_are_unchanged(
    case: tuple[str, int, int, int, int], weak_policy_spec: PolicySpec, prm: PRM
) -> None:
    name, n, m, max_steps, cap = case
    weak = build_policy(weak_policy_spec.model_copy(update={"max_concurrency": cap}))
    params = StrategyParams(n=n, beam_width=m, max_steps=max_steps, seed=5)
    strategy = get_strategy(name)
    try:
        outcomes = await asyncio.gather(
            *(
                strategy.run(Problem(id=str(i), question=q), weak, prm, params)
                for i, q in enumerate(QUESTIONS)
            )
        )
    finally:
        await weak.aclose()
    assert digest(list(outcomes)) == PINNED[case]
