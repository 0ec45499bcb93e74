"""The paper's step semantics in beam search and DVTS (issue 11, point 3), over real
loopback HTTP against the simulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.orchestrator.sweep_config import configs_from_flags
from ratts.router.candidates import DEFAULT_STRATEGIES
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimServer, gold_answer
from ratts.strategies import get_strategy, with_defaults
from ratts.types import Problem, StrategyParams

QUESTION = "Sim problem 7: evaluate the recurrence chain."
EASY = "[difficulty=0.05] Evaluate the easy recurrence chain."


@pytest.fixture
async def weak(weak_policy_spec: PolicySpec) -> AsyncIterator[PolicyClient]:
    client = build_policy(weak_policy_spec)
    yield client
    await client.aclose()


@pytest.fixture
async def strong(strong_policy_spec: PolicySpec) -> AsyncIterator[PolicyClient]:
    client = build_policy(strong_policy_spec)
    yield client
    await client.aclose()


@pytest.fixture
async def prm(prm_spec: PRMSpec) -> AsyncIterator[PRM]:
    client = build_prm(prm_spec)
    yield client
    await client.aclose()


def steps_of(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in trace if e["event"] == "step"]


def completion_calls(sim: SimServer) -> list[dict[str, Any]]:
    return [i for i in sim.stats()["intervals"] if i["endpoint"] == "completions"]


async def test_a_length_cut_step_is_terminal_and_holds_no_unwritten_answer(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    """Every first step is cut by max_step_tokens: all candidates end there, no separator
    is spliced into a cut sentence, and none holds an answer (none wrote one)."""
    params = StrategyParams(n=8, beam_width=2, max_step_tokens=3, seed=1)
    outcome = await get_strategy("beam_search").run(
        Problem(id="p", question=QUESTION), weak, prm, params
    )
    assert len(steps_of(outcome.trace)) == 1
    assert len(completion_calls(sim)) == 1  # no step was ever continued
    assert len(outcome.candidates) == 8
    assert all(c.finished and len(c.steps) == 1 for c in outcome.candidates)
    assert all(c.answer is None for c in outcome.candidates)
    assert outcome.answer is None


async def test_an_empty_step_is_terminal(make_sim: Any, prm_spec: PRMSpec) -> None:
    """With "\\n" as the separator the sim's next step after the first starts with the
    rest of its "\\n\\n", so it comes back empty: the candidate ends instead of being scored
    and expanded again with the same prefix until max_steps."""
    server = make_sim()
    spec = PolicySpec(
        name="sim-weak", base_url=server.v1_url, model="sim-weak", step_separator="\n"
    )
    policy = build_policy(spec)
    scorer = build_prm(prm_spec.model_copy(update={"base_url": server.base_url}))
    try:
        outcome = await get_strategy("beam_search").run(
            Problem(id="p", question=QUESTION),
            policy,
            scorer,
            StrategyParams(n=4, beam_width=2, max_steps=10),
        )
    finally:
        await policy.aclose()
        await scorer.aclose()
    steps = steps_of(outcome.trace)
    assert [e["k"] for e in steps] == [1, 2]
    assert steps[-1]["finished"] == steps[-1]["candidates"] == 4
    assert all(c.finished and len(c.steps) == 1 for c in outcome.candidates)
    calls = [i for i in server.stats()["intervals"] if i["endpoint"] == "completions"]
    assert len(calls) == 2  # the root and one expansion; no re-expansion of empty steps


async def test_the_leaf_pool_never_exceeds_n(sim: SimServer, weak: PolicyClient, prm: PRM) -> None:
    """Leaves that finish in the step that fills the pool used to be kept too (up to 2N-1);
    the pool is trimmed to N, finished leaves first."""
    n, m = 8, 2
    overflowed = 0
    for seed in range(12):
        params = StrategyParams(n=n, beam_width=m, seed=seed)
        outcome = await get_strategy("beam_search").run(
            Problem(id="p", question=QUESTION), weak, prm, params
        )
        finished_total = sum(e["finished"] for e in steps_of(outcome.trace))
        assert len(outcome.candidates) <= n
        if finished_total > n:
            overflowed += 1
            assert len(outcome.candidates) == n
            assert all(c.finished for c in outcome.candidates)
    assert overflowed > 0  # the case the trim exists for did happen


@pytest.fixture
async def rushing(make_sim: Any) -> AsyncIterator[tuple[PolicyClient, PRM]]:
    """A policy whose wrong chains answer early and a weak PRM that keeps some of them, so
    candidates of one step finish at different depths."""
    server = make_sim(policies={"sim-rush": {"skill": 0.3, "rush": 0.5}})
    policy = build_policy(PolicySpec(name="sim-rush", base_url=server.v1_url, model="sim-rush"))
    scorer = build_prm(
        PRMSpec(name="w", kind="vllm_pooling", base_url=server.base_url, model="sim-prm-weak")
    )
    yield policy, scorer
    await policy.aclose()
    await scorer.aclose()


async def test_beam_search_refills_to_n_over_m_beams(rushing: tuple[PolicyClient, PRM]) -> None:
    """When fewer than N/M candidates survive a step, the best survivors are duplicated so
    N/M beams (N candidates) go on, as in search-and-learn."""
    policy, scorer = rushing
    n, m = 4, 1
    refilled = 0
    for seed in range(6):
        params = StrategyParams(n=n, beam_width=m, seed=seed)
        outcome = await get_strategy("beam_search").run(
            Problem(id="p", question=QUESTION), policy, scorer, params
        )
        steps = steps_of(outcome.trace)
        for before, after in itertools.pairwise(steps):
            assert before["kept"] == n // m  # every step keeps N/M beams while any lives
            assert after["candidates"] == n  # so every step samples N candidates
        for e in steps[:-1]:
            alive = e["candidates"] - e["finished"]
            if alive < n // m:
                refilled += 1
        assert len(outcome.candidates) <= n
    assert refilled > 0  # the duplication was exercised


async def test_dvts_subtree_stops_when_its_best_child_finishes(
    rushing: tuple[PolicyClient, PRM],
) -> None:
    policy, scorer = rushing
    n, m = 16, 4
    stopped_early = 0
    for seed in range(4):
        params = StrategyParams(n=n, beam_width=m, seed=seed)
        outcome = await get_strategy("dvts").run(
            Problem(id="p", question=QUESTION), policy, scorer, params
        )
        steps = steps_of(outcome.trace)
        for subtree in range(n // m):
            mine = [e for e in steps if e["subtree"] == subtree]
            for e in mine[:-1]:
                assert not e["best_finished"] and e["kept"] == 1
            last = mine[-1]
            assert last["best_finished"] or last["k"] == params.max_steps
            assert last["kept"] == 0
            if last["finished"] < last["candidates"]:
                stopped_early += 1  # unfinished siblings were not followed
        assert len(outcome.candidates) <= n
    assert stopped_early > 0


async def test_dvts_at_max_steps_rolls_out_each_subtree(
    sim: SimServer, strong: PolicyClient, prm: PRM
) -> None:
    params = StrategyParams(n=8, beam_width=2, max_steps=1)
    outcome = await get_strategy("dvts").run(Problem(id="e", question=EASY), strong, prm, params)
    rollouts = [e for e in outcome.trace if e["event"] == "rollout"]
    assert sorted(e["subtree"] for e in rollouts) == [0, 1, 2, 3]
    assert outcome.answer == gold_answer(EASY)
    assert all(c.finished for c in outcome.candidates)


def test_cot_is_greedy_by_default_and_an_explicit_temperature_wins() -> None:
    assert with_defaults("cot", StrategyParams(n=1)).temperature == 0.0
    assert with_defaults("cot", StrategyParams(n=1, temperature=0.7)).temperature == 0.7
    assert with_defaults("majority", StrategyParams(n=4)).temperature == 0.8


def test_cot_configs_from_flags_are_greedy() -> None:
    settings = Settings.model_validate(
        {
            "policies": [{"name": "p", "base_url": "http://127.0.0.1:1/v1", "model": "p"}],
            "prms": [{"name": "r", "kind": "arithmetic"}],
        }
    )
    (cot,) = configs_from_flags(settings, strategies=["cot"])
    assert cot.params.temperature == 0.0
    (hot,) = configs_from_flags(settings, strategies=["cot"], params={"temperature": 0.5})
    assert hot.params.temperature == 0.5


def test_dvts_is_a_default_router_candidate() -> None:
    assert "dvts" in DEFAULT_STRATEGIES
