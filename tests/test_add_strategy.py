"""Adding a strategy is one file plus its registration: the toy ``shortest`` strategy
(tests/toy_strategy.py) is logged through ``Orchestrator.solve`` and the sweep, and the
router, cold or trained on a log that holds it, weighs it like any built-in strategy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from toy_strategy import Shortest

from ratts import Budget, Orchestrator, Problem, StrategyParams
from ratts.endpoints.factory import build_policy, build_prm
from ratts.orchestrator.sweep import collect_probes, run_sweep
from ratts.router import Router, candidate_configs
from ratts.router.candidates import DEFAULT_STRATEGIES
from ratts.router.train import train_and_register
from ratts.settings import Settings
from ratts.sim import SimServer, world
from ratts.store import open_store
from ratts.strategies import register_strategy, unregister_strategy
from ratts.types import RunConfig


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    register_strategy(Shortest)
    yield
    unregister_strategy(Shortest.name)


@pytest.fixture
def settings(sim_settings: Settings) -> Settings:
    return sim_settings


def puzzle(i: int | str) -> str:
    return f"Puzzle {i}: follow the hidden chain of operations; give the value."


def problem(i: int | str) -> Problem:
    return Problem(id=f"p{i}", question=puzzle(i), answer=world.gold_answer(puzzle(i)))


async def test_solve_runs_and_logs_the_new_strategy(settings: Settings, sim: SimServer) -> None:
    async with Orchestrator(settings) as orch:
        result = await orch.solve(problem(1), strategy="shortest", params=StrategyParams(n=3))
        assert orch.store is not None
        rows = orch.store.runs()
    assert result.config.strategy == "shortest" and result.config.prm is None
    assert result.outcome is not None and len(result.outcome.candidates) == 3
    assert result.logged and len(rows) == 1
    row = rows[0]
    assert row["strategy"] == "shortest" and row["answer"] == result.answer
    assert row["correct"] == result.correct and row["policy_completion_tokens"] > 0


def test_cold_router_prices_and_ranks_the_new_strategy_from_its_traits(
    settings: Settings,
) -> None:
    configs = candidate_configs(settings, strategies=(*DEFAULT_STRATEGIES, "shortest"), ns=(4,))
    toy = [c for c in configs if c.strategy == "shortest"]
    # needs no PRM, N a parameter: one config per N, without a PRM, like majority
    assert [(c.prm, c.params.n) for c in toy] == [(None, 4)]
    choice = Router(settings, configs=configs).choose({}, Budget(n=4))
    ranked = {r.config.key(): r for r in choice.ranking}
    assert toy[0].key() in ranked and ranked[toy[0].key()].fits
    assert ranked[toy[0].key()].predicted_cost.n == 4


def test_trained_router_considers_the_new_strategy(settings: Settings, sim: SimServer) -> None:
    sweep = [
        RunConfig(policy="sim-weak", prm=None, strategy=name, params=StrategyParams(n=n))
        for name, n in (("cot", 1), ("majority", 4), ("shortest", 4))
    ]
    problems = [problem(i) for i in range(30)]

    async def build() -> None:
        with open_store(settings.db_url) as store:
            await run_sweep(problems, sweep, store, settings, dataset="sim")
            policy = build_policy(settings.policy("sim-weak"))
            prm = build_prm(settings.prm("sim-prm"))
            try:
                await collect_probes(store, problems, policy, prm, k=4, dataset="sim")
            finally:
                await policy.aclose()
                await prm.aclose()

    asyncio.run(build())
    with open_store(settings.db_url) as store:
        assert sum(r["strategy"] == "shortest" for r in store.runs()) == 30
        train_and_register(store, settings, model_params={"max_iter": 40, "min_samples_leaf": 5})
        choice = Router(settings, store).choose({}, Budget())
    assert choice.router_version == "v1"
    toy = [r for r in choice.ranking if r.config.strategy == "shortest"]
    assert len(toy) == 1 and toy[0].predicted_accuracy is not None
    assert 0.0 <= toy[0].predicted_accuracy <= 1.0
