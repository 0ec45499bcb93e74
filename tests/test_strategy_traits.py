"""Strategy traits live on the strategy class; a new strategy is one class plus registration."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import ClassVar

import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.errors import ConfigError, InputError, InvalidParamsError
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimServer
from ratts.strategies import (
    STRATEGIES,
    ScoredStrategy,
    Strategy,
    get_strategy,
    register_strategy,
    unregister_strategy,
)
from ratts.strategies.sampling import RunLedger, solution_candidate
from ratts.strategies.scoring import select
from ratts.types import Outcome, Problem, RunConfig, StrategyParams

QUESTION = "Sim problem 7: evaluate the recurrence chain."


class FirstOfTwo(ScoredStrategy):
    """A toy PRM strategy: two whole samples, the better-scored one wins."""

    name: ClassVar[str] = "first_of_two"
    fixed_n: ClassVar[int | None] = 2
    reuses_samples: ClassVar[bool] = True

    async def _scored(
        self, run: RunLedger, problem: Problem, policy: PolicyClient, prm: PRM
    ) -> Outcome:
        choices = await run.sample(policy, policy.prompt(problem.question), n=2, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
        await run.score(prm, problem.question, candidates)
        return run.outcome(candidates, select(candidates, "max", "last"))


@pytest.fixture
def toy() -> Iterator[Strategy]:
    strategy = register_strategy(FirstOfTwo)
    yield strategy
    unregister_strategy(FirstOfTwo.name)


@pytest.fixture
async def weak(weak_policy_spec: PolicySpec) -> AsyncIterator[PolicyClient]:
    client = build_policy(weak_policy_spec)
    yield client
    await client.aclose()


@pytest.fixture
async def prm(prm_spec: PRMSpec) -> AsyncIterator[PRM]:
    client = build_prm(prm_spec)
    yield client
    await client.aclose()


def test_builtin_traits() -> None:
    traits = {
        name: (s.needs_prm, s.stepwise, s.fixed_n, s.reuses_samples)
        for name, s in STRATEGIES.items()
    }
    assert traits == {
        "cot": (False, False, 1, True),
        "majority": (False, False, None, True),
        "best_of_n": (True, False, None, True),
        "beam_search": (True, True, None, False),
        "dvts": (True, True, None, False),
        "adaptive": (False, False, None, True),
    }


def test_traits_are_declared_once_on_the_base() -> None:
    for trait in ("needs_prm", "stepwise", "fixed_n", "reuses_samples"):
        assert trait in vars(Strategy), trait
        assert vars(Strategy)[trait] in (False, None)


def test_label_reads_stepwise_not_the_name(toy: Strategy) -> None:
    params = StrategyParams(n=2, beam_width=3)
    assert RunConfig(policy="p", prm="r", strategy="first_of_two", params=params).label() == (
        "first_of_two(N=2)@p+r"
    )
    assert RunConfig(policy="p", prm="r", strategy="dvts", params=params).label() == (
        "dvts(N=2,M=3)@p+r"
    )
    # A name nobody registered still labels (store rows of retired strategies).
    assert RunConfig(policy="p", prm=None, strategy="gone", params=params).label() == (
        "gone(N=2)@p"
    )


def test_register_strategy_is_idempotent_and_refuses_a_taken_name(toy: Strategy) -> None:
    assert get_strategy("first_of_two") is toy
    assert register_strategy(FirstOfTwo) is toy
    assert list(STRATEGIES)[-1] == "first_of_two"

    class Impostor(FirstOfTwo):
        pass

    with pytest.raises(ConfigError) as err:
        register_strategy(Impostor())
    assert str(err.value) == (
        "strategy name 'first_of_two' is taken by FirstOfTwo; choose another name for Impostor"
    )
    unregister_strategy("first_of_two")
    assert "first_of_two" not in STRATEGIES


async def test_a_registered_strategy_gets_the_shared_run_opening(
    toy: Strategy, sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    problem = Problem(id="p", question=QUESTION)
    with pytest.raises(InvalidParamsError) as err:
        await toy.run(problem, weak, prm, StrategyParams(n=3))
    assert str(err.value) == "first_of_two samples 2 solutions: N must be 2, got 3"
    with pytest.raises(InvalidParamsError) as err:
        await toy.run(problem, weak, None, StrategyParams(n=2))
    assert str(err.value) == "first_of_two needs a PRM"
    with pytest.raises(InputError):
        await toy.run(Problem(id="p", question="  "), weak, prm, StrategyParams(n=2))
    assert sim.stats()["requests"] == {}

    outcome = await get_strategy("first_of_two").run(problem, weak, prm, StrategyParams(n=2))
    assert outcome.strategy == "first_of_two"
    assert len(outcome.candidates) == 2 and outcome.selected_index in (0, 1)
    assert all(c.step_scores for c in outcome.candidates)
    assert outcome.usage.policy_requests == sim.stats()["requests"]["completions"] == 1
