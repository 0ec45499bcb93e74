"""The five strategies end to end over real loopback HTTP against the simulator."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import Choice, PolicyClient
from ratts.endpoints.prm import PRM
from ratts.errors import InputError, InvalidParamsError, UnknownStrategyError
from ratts.grading import grade
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimServer, gold_answer, num_steps
from ratts.strategies import STRATEGIES, get_strategy
from ratts.strategies.sampling import (
    extend_candidate,
    solution_candidate,
    split_steps,
    step_prompt,
)
from ratts.types import Outcome, Problem, StrategyParams

MakeSim = Callable[..., SimServer]
SEP = "\n\n"
# A question the strong policy solves almost surely, with a known number of steps.
EASY = "[difficulty=0.05] Evaluate the easy recurrence chain."
QUESTION = "Sim problem 7: evaluate the recurrence chain."


def policy_spec(server: SimServer, model: str) -> PolicySpec:
    return PolicySpec(name=model, base_url=server.v1_url, model=model, params=1e9)


def prm_for(server: SimServer, model: str) -> PRM:
    return build_prm(
        PRMSpec(name=model, kind="vllm_pooling", base_url=server.base_url, model=model)
    )


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


def completions(stats: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in stats["intervals"] if i["endpoint"] == "completions"]


def max_overlap(intervals: list[dict[str, Any]]) -> int:
    """The most requests the server had in flight at once, from its recorded intervals."""
    edges = sorted([(i["start"], 1) for i in intervals] + [(i["end"], -1) for i in intervals])
    best = now = 0
    for _, delta in edges:
        now += delta
        best = max(best, now)
    return best


def assert_usage_matches(outcome: Outcome, stats: dict[str, Any]) -> None:
    """The Outcome's usage is the exact sum of what the server counted, policy and PRM."""
    usage = outcome.usage
    assert usage.policy_prompt_tokens == stats["prompt_tokens"] > 0
    assert usage.policy_completion_tokens == stats["completion_tokens"] > 0
    assert usage.prm_tokens == stats["prm_tokens"]
    assert usage.policy_requests == stats["requests"].get("completions", 0)
    assert usage.prm_requests == stats["requests"].get("pooling", 0)
    assert usage.wall_seconds > 0


# ---------------------------------------------------------------- registry


def test_registry_holds_the_six_strategies() -> None:
    assert list(STRATEGIES) == ["cot", "majority", "best_of_n", "beam_search", "dvts", "adaptive"]
    for name, strategy in STRATEGIES.items():
        assert get_strategy(name) is strategy
        assert strategy.name == name
    assert [s.needs_prm for s in STRATEGIES.values()] == [False, False, True, True, True, False]


def test_unknown_strategy_is_one_line_error() -> None:
    with pytest.raises(UnknownStrategyError) as err:
        get_strategy("x")
    assert str(err.value) == (
        "unknown strategy 'x'; choose one of: cot, majority, best_of_n, beam_search, dvts, adaptive"
    )


# ---------------------------------------------------------------- sampling helpers


def test_step_prompt_is_prefix_stable(weak: PolicyClient) -> None:
    base = weak.prompt("What is 2+2?")
    assert step_prompt(weak, "What is 2+2?", []) == base
    one = step_prompt(weak, "What is 2+2?", ["Step 1: a."])
    two = step_prompt(weak, "What is 2+2?", ["Step 1: a.", "Step 2: b."])
    assert one == base + "Step 1: a." + SEP
    assert two.startswith(one) and two == one + "Step 2: b." + SEP


def test_split_steps_drops_blank_pieces() -> None:
    assert split_steps("a\n\n\n\nb\n\n  \n\nc\n\n", SEP) == ["a", "b", "c"]
    assert split_steps("", SEP) == []


def test_finished_rules_whole_solution_mode() -> None:
    eos = Choice("Step 1: x.\n\nso 4", "stop", None)
    cut = Choice("Step 1: x.\n\nStep 2", "length", None)
    boxed = Choice("Step 1: x.\n\nThe answer is \\boxed{4}.", "abort", None)
    other = Choice("Step 1: x.", "weird", None)
    assert solution_candidate(eos, SEP).finished
    assert solution_candidate(cut, SEP).finished  # the model had its whole budget
    assert solution_candidate(cut, SEP).answer is None  # "2" is no answer it wrote
    assert solution_candidate(eos, SEP).answer == "4"
    c = solution_candidate(boxed, SEP)
    assert c.finished and c.answer == "4" and c.steps == ["Step 1: x.", "The answer is \\boxed{4}."]
    assert not solution_candidate(other, SEP).finished


def test_finished_rules_step_mode() -> None:
    parent = ["Step 1: x = 3."]
    at_sep = extend_candidate(parent, Choice("Step 2: y = 4.", "stop", SEP), SEP)
    assert not at_sep.finished and at_sep.steps == [*parent, "Step 2: y = 4."]
    assert at_sep.answer is None  # "4" is an intermediate value, not an answer
    # issue 11: a step cut by its token limit is terminal, with an answer only if it wrote one
    cut = extend_candidate(parent, Choice("Step 2: y = 4 and", "length", None), SEP)
    assert cut.finished and cut.answer is None and cut.steps == [*parent, "Step 2: y = 4 and"]
    cut_stated = extend_candidate(parent, Choice("The answer is 7.\nSince", "length", None), SEP)
    assert cut_stated.finished and cut_stated.answer == "7"
    eos = extend_candidate(parent, Choice("So y is four.", "stop", None), SEP)
    assert eos.finished
    other_stop = extend_candidate(parent, Choice("Step 2", "stop", "</s>"), SEP)
    assert other_stop.finished
    boxed = extend_candidate(parent, Choice("Thus \\boxed{7}", "stop", SEP), SEP)
    assert boxed.finished and boxed.answer == "7"
    blank = extend_candidate(parent, Choice("  ", "stop", SEP), SEP)
    assert blank.steps == parent and parent == ["Step 1: x = 3."]  # parent never mutated
    assert blank.finished  # issue 11: an empty step is terminal (nothing new to grow)


# ---------------------------------------------------------------- end to end


RUNS: list[tuple[str, StrategyParams]] = [
    ("cot", StrategyParams(n=1)),
    ("majority", StrategyParams(n=8)),
    ("best_of_n", StrategyParams(n=8)),
    ("beam_search", StrategyParams(n=8, beam_width=2)),
    ("dvts", StrategyParams(n=8, beam_width=2)),
]


@pytest.mark.parametrize(("name", "params"), RUNS, ids=[name for name, _ in RUNS])
async def test_each_strategy_runs_end_to_end(
    name: str, params: StrategyParams, sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    strategy = get_strategy(name)
    outcome = await strategy.run(Problem(id="p7", question=QUESTION), weak, prm, params)
    stats = sim.stats()

    assert outcome.strategy == name and outcome.params == params
    assert outcome.answer is not None and outcome.answer.isdigit()
    assert outcome.selected_index is not None
    assert outcome.candidates[outcome.selected_index].answer == outcome.answer
    assert outcome.candidates and all(c.steps for c in outcome.candidates)
    assert_usage_matches(outcome, stats)
    assert outcome.trace and all(isinstance(e["event"], str) for e in outcome.trace)
    if strategy.needs_prm:
        for c in outcome.candidates:
            assert len(c.step_scores) == len(c.steps)
            assert all(0.0 <= s <= 1.0 for s in c.step_scores)
        assert outcome.final_reward is not None
    else:
        assert stats["requests"].get("pooling", 0) == 0
        assert all(c.step_scores == [] for c in outcome.candidates)


async def test_cot_greedy_is_one_deterministic_sample(sim: SimServer, strong: PolicyClient) -> None:
    params = StrategyParams(n=1, temperature=0.0)
    cot = get_strategy("cot")
    first = await cot.run(Problem(id="e", question=EASY), strong, None, params)
    second = await cot.run(Problem(id="e", question=EASY), strong, None, params)
    assert [c.steps for c in first.candidates] == [c.steps for c in second.candidates]
    assert len(first.candidates) == 1 and first.candidates[0].finished
    assert first.answer == gold_answer(EASY)
    assert [i["n"] for i in completions(sim.stats())] == [1, 1]


async def test_majority_picks_the_most_common_answer(sim: SimServer, weak: PolicyClient) -> None:
    outcome = await get_strategy("majority").run(
        Problem(id="p", question=QUESTION), weak, None, StrategyParams(n=16, seed=3)
    )
    answers = [c.answer for c in outcome.candidates]
    counts = Counter(a for a in answers if a is not None)
    top = max(counts.values())
    expected = next(a for a in answers if a is not None and counts[a] == top)  # earliest
    assert outcome.answer == expected
    assert outcome.selected_index == answers.index(expected)
    assert [i["n"] for i in completions(sim.stats())] == [16]


async def test_best_of_n_sends_one_request_with_n(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    params = StrategyParams(n=16, selection="max", aggregation="last")
    outcome = await get_strategy("best_of_n").run(
        Problem(id="p", question=QUESTION), weak, prm, params
    )
    stats = sim.stats()
    assert stats["requests"] == {"completions": 1, "pooling": 1}
    assert [i["n"] for i in completions(stats)] == [16]
    assert len(outcome.candidates) == 16
    best = max(c.step_scores[-1] for c in outcome.candidates if c.answer is not None)
    assert outcome.final_reward == best


async def test_beam_search_keeps_n_over_m_beams_per_step(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    n, m = 16, 4
    params = StrategyParams(n=n, beam_width=m, seed=11)
    outcome = await get_strategy("beam_search").run(
        Problem(id="p", question=QUESTION), weak, prm, params
    )
    stats = sim.stats()
    steps = [e for e in outcome.trace if e["event"] == "step"]
    assert steps and [e["k"] for e in steps] == list(range(1, len(steps) + 1))
    for e in steps:
        alive = e["candidates"] - e["finished"]
        assert e["kept"] == min(n // m, alive)
        if alive >= n // m:
            assert e["kept"] == n // m
    assert steps[0]["candidates"] == n
    for before, after in itertools.pairwise(steps):
        assert after["candidates"] == before["kept"] * m  # every kept beam expanded by M
    sizes = [i["n"] for i in completions(stats)]
    assert sizes[0] == n and sizes[1:] and set(sizes[1:]) == {m}
    assert len(sizes) == 1 + sum(e["kept"] for e in steps[:-1])
    assert stats["requests"]["pooling"] == len(steps)  # one batched PRM call per step
    assert_usage_matches(outcome, stats)


async def test_beam_search_stops_when_the_pool_is_full(
    sim: SimServer, strong: PolicyClient, prm: PRM
) -> None:
    params = StrategyParams(n=8, beam_width=2, seed=5, selection="weighted")
    outcome = await get_strategy("beam_search").run(
        Problem(id="e", question=EASY), strong, prm, params
    )
    steps = [e for e in outcome.trace if e["event"] == "step"]
    assert len(steps) == num_steps(EASY) + 1  # value steps, then the answer step
    assert steps[-1]["finished"] == 8 and steps[-1]["kept"] == 0
    assert len(outcome.candidates) == 8 and all(c.finished for c in outcome.candidates)
    assert outcome.answer == gold_answer(EASY)


async def test_beam_search_max_steps_rolls_kept_beams_out_to_an_answer(
    sim: SimServer, strong: PolicyClient, prm: PRM
) -> None:
    """issue 11: at max_steps with nothing finished, each kept beam gets one whole-solution
    continuation, so the outcome has an answer (it used to be None)."""
    params = StrategyParams(n=8, beam_width=2, max_steps=2, seed=5)
    outcome = await get_strategy("beam_search").run(
        Problem(id="e", question=EASY), strong, prm, params
    )
    steps = [e for e in outcome.trace if e["event"] == "step"]
    assert [e["k"] for e in steps] == [1, 2]
    assert all(e["finished"] == 0 for e in steps)  # nothing finished within max_steps
    rollouts = [e for e in outcome.trace if e["event"] == "rollout"]
    assert rollouts == [{"event": "rollout", "beams": 4}]
    assert len(outcome.candidates) == 4  # one rolled-out leaf per kept beam
    assert all(c.finished and len(c.steps) > 2 for c in outcome.candidates)
    assert all(len(c.step_scores) == len(c.steps) for c in outcome.candidates)
    assert outcome.answer == gold_answer(EASY)
    stats = sim.stats()
    calls = completions(stats)
    # seeded, so one request per beam: the root, 4 step-2 requests, 4 rollouts to the end
    assert len(calls) == 1 + 4 + 4
    assert [c["n"] for c in calls[-4:]] == [1] * 4
    assert stats["requests"]["pooling"] == 3  # two steps and the rollout, one call each
    assert_usage_matches(outcome, stats)


async def test_beam_search_is_reproducible_with_a_seed(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    params = StrategyParams(n=8, beam_width=2, seed=21)
    bs = get_strategy("beam_search")
    first = await bs.run(Problem(id="p", question=QUESTION), weak, prm, params)
    second = await bs.run(Problem(id="p", question=QUESTION), weak, prm, params)
    assert [c.steps for c in first.candidates] == [c.steps for c in second.candidates]
    assert first.answer == second.answer and first.selected_index == second.selected_index


async def test_dvts_runs_subtrees_concurrently(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"base_latency_s": 0.03})
    n, m = 8, 2
    policy, scorer = build_policy(policy_spec(server, "sim-weak")), prm_for(server, "sim-prm")
    try:
        outcome = await get_strategy("dvts").run(
            Problem(id="p", question=QUESTION), policy, scorer, StrategyParams(n=n, beam_width=m)
        )
    finally:
        await policy.aclose()
        await scorer.aclose()
    stats = server.stats()
    calls = completions(stats)
    assert max_overlap(calls) >= n // m  # all first-step requests were in flight together
    assert stats["max_in_flight"] > 1
    assert [i["n"] for i in calls] == [m] * len(calls)

    steps = [e for e in outcome.trace if e["event"] == "step"]
    assert {e["subtree"] for e in steps} == set(range(n // m))
    assert all(e["kept"] <= 1 and e["candidates"] == m for e in steps)
    samples = [e for e in outcome.trace if e["event"] == "sample"]
    assert sorted(e["subtree"] for e in samples) == list(range(n // m))
    assert_usage_matches(outcome, stats)


# ---------------------------------------------------------------- quality on the sim


async def accuracy(
    name: str, policy: PolicyClient, prm: PRM | None, params: StrategyParams, n_problems: int
) -> int:
    questions = [f"Sim problem {i}: evaluate the recurrence chain." for i in range(n_problems)]
    outcomes = await asyncio.gather(
        *(
            get_strategy(name).run(Problem(id=str(i), question=q), policy, prm, params)
            for i, q in enumerate(questions)
        )
    )
    return sum(
        bool(grade(o.answer, gold_answer(q))) for o, q in zip(outcomes, questions, strict=True)
    )


async def test_prm_quality_matters_on_sim_problems(sim: SimServer, weak: PolicyClient) -> None:
    """Same policy, same N: a good PRM beats majority voting and beats a weak PRM."""
    params = StrategyParams(n=16, selection="max", seed=1)
    good, poor = prm_for(sim, "sim-prm"), prm_for(sim, "sim-prm-weak")
    try:
        majority = await accuracy("majority", weak, None, params, 60)
        with_good = await accuracy("best_of_n", weak, good, params, 60)
        with_poor = await accuracy("best_of_n", weak, poor, params, 60)
    finally:
        await good.aclose()
        await poor.aclose()
    assert with_good >= majority + 4, (with_good, majority)
    assert with_good >= with_poor + 4, (with_good, with_poor)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("cot", StrategyParams(n=0), "N must be a positive integer, got 0"),
        ("majority", StrategyParams(n=0), "N must be a positive integer, got 0"),
        ("best_of_n", StrategyParams(n=-2), "N must be a positive integer, got -2"),
        ("cot", StrategyParams(n=4), "cot samples one solution: N must be 1, got 4"),
        (
            "beam_search",
            StrategyParams(n=6, beam_width=4),
            "beam search needs N to be a multiple of M (N=6, M=4)",
        ),
        (
            "dvts",
            StrategyParams(n=6, beam_width=4),
            "dvts needs N to be a multiple of M (N=6, M=4)",
        ),
        (
            "beam_search",
            StrategyParams(n=2, beam_width=4),
            "beam search needs N to be a multiple of M (N=2, M=4)",
        ),
        ("dvts", StrategyParams(n=4, beam_width=0), "M must be a positive integer, got 0"),
        (
            "beam_search",
            StrategyParams(n=4, max_steps=0),
            "max_steps must be a positive integer, got 0",
        ),
        (
            "majority",
            StrategyParams(n=4, max_tokens=0),
            "max_tokens must be a positive integer, got 0",
        ),
    ],
)
async def test_invalid_params_are_rejected_before_any_request(
    name: str, params: StrategyParams, message: str, sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    strategy = get_strategy(name)
    with pytest.raises(InvalidParamsError) as err:
        strategy.validate(params)
    assert str(err.value) == message
    with pytest.raises(InvalidParamsError) as err:
        await strategy.run(Problem(id="p", question=QUESTION), weak, prm, params)
    assert str(err.value) == message
    assert sim.stats()["requests"] == {}


@pytest.mark.parametrize("name", ["best_of_n", "beam_search", "dvts"])
async def test_prm_strategies_need_a_prm(name: str, sim: SimServer, weak: PolicyClient) -> None:
    with pytest.raises(InvalidParamsError) as err:
        await get_strategy(name).run(
            Problem(id="p", question=QUESTION), weak, None, StrategyParams(n=4, beam_width=2)
        )
    assert str(err.value) == f"{name} needs a PRM"
    assert sim.stats()["requests"] == {}


@pytest.mark.parametrize("name", list(STRATEGIES))
async def test_empty_question_is_an_input_error(
    name: str, sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    params = StrategyParams(n=1 if name == "cot" else 4, beam_width=2)
    with pytest.raises(InputError) as err:
        await get_strategy(name).run(Problem(id="p", question=" \n\t "), weak, prm, params)
    assert str(err.value) == "the question is empty"
    assert sim.stats()["requests"] == {}
