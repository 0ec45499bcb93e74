"""The Orchestrator against the simulated server: plain-asyncio use and its log row, forced
strategies, probe reuse, deadlines, cancellation, bad input, solve_many, explicit clients,
and routing among a cheap weak and a pricey strong policy with a router trained on a real
sweep log (picked up by a running Orchestrator without a restart)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ratts import Budget, Orchestrator, Problem, StrategyParams
from ratts.endpoints.factory import build_policy, build_prm
from ratts.errors import ConfigError, InputError, InvalidParamsError, UnknownStrategyError
from ratts.grading import grade
from ratts.orchestrator.sweep import collect_probes, run_sweep
from ratts.router.train import train_and_register
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, SimServer, world
from ratts.store import open_store
from ratts.types import RunConfig


def make_settings(
    tmp_path: Path, policies: list[PolicySpec], prms: list[PRMSpec], name: str = "runs.db"
) -> Settings:
    return Settings(
        db_url=f"sqlite:///{tmp_path / name}",
        data_dir=tmp_path / "data",
        policies=policies,
        prms=prms,
    )


def sim_tokens(sim: SimServer) -> int:
    stats = sim.stats()
    return int(stats["prompt_tokens"] + stats["completion_tokens"] + stats["prm_tokens"])


def puzzle(i: int | str, difficulty: float | None = None) -> str:
    tag = f" [difficulty={difficulty}]" if difficulty is not None else ""
    return f"Puzzle {i}: follow the hidden chain of operations; give the value.{tag}"


@pytest.fixture
def settings(tmp_path: Path, weak_policy_spec: PolicySpec, prm_spec: PRMSpec) -> Settings:
    return make_settings(tmp_path, [weak_policy_spec], [prm_spec])


# ---------------------------------------------------------------- the plain asyncio user


def test_solve_from_plain_asyncio_logs_its_row(settings: Settings, sim: SimServer) -> None:
    question = puzzle("user")
    gold = world.gold_answer(question)

    async def main() -> Any:
        async with Orchestrator(settings) as orch:
            return await orch.solve(
                Problem(id="user-1", question=question, answer=gold), budget=Budget(n=16)
            )

    result = asyncio.run(main())  # exactly as a script would

    # routed by the cold-start rule (no trained router yet): small policy -> beam search
    assert result.reason == "cold_start" and result.router_version is None
    assert result.config.strategy == "beam_search" and result.config.params.n <= 16
    assert result.why and sum(c.chosen for c in result.why) == 1
    assert all(c.predicted_cost["n"] <= 16 for c in result.why if c.fits_budget)
    assert result.answer is not None and not result.partial
    assert result.correct == grade(result.answer, gold)
    # real usage: everything the sim served, the probe included
    assert result.usage.total_tokens == sim_tokens(sim)
    assert 0 < result.probe_usage.total_tokens < result.usage.total_tokens
    assert {e["event"] for e in result.events} >= {"start", "probe", "routed", "step"}

    with open_store(settings.db_url) as store:
        rows = store.runs()
    assert len(rows) == 1
    row = rows[0]
    assert result.run_key is not None and result.logged
    key = (row["problem_key"], row["config_key"], row["budget"], row["repeat"])
    assert key == tuple(result.run_key)  # the run key includes the repeat index (0)
    assert row["budget"] == "n=16" and row["label"] == result.config.label()
    assert row["answer"] == result.answer and row["correct"] == result.correct
    assert row["gold"] == gold and row["error"] is None and row["router_version"] is None
    assert row["policy_prompt_tokens"] == result.usage.policy_prompt_tokens
    assert row["policy_completion_tokens"] == result.usage.policy_completion_tokens
    assert row["prm_tokens"] == result.usage.prm_tokens == sim.stats()["prm_tokens"]
    assert row["dollars"] == pytest.approx(result.usage.dollars) and row["dollars"] > 0
    features = row["features"]
    assert features["probe_k"] == 4 and 0 <= features["probe_agreement"] <= 1
    assert features["text_numbers"] == result.features["text_numbers"]


# ---------------------------------------------------------------- forced strategies


@pytest.mark.parametrize(
    ("strategy", "n", "requests"),
    [("cot", None, 1), ("majority", 8, 1), ("best_of_n", 8, 1), ("dvts", 8, None)],
)
async def test_forced_strategy_runs_without_probe(
    settings: Settings, sim: SimServer, strategy: str, n: int | None, requests: int | None
) -> None:
    async with Orchestrator(settings) as orch:
        result = await orch.solve(puzzle(strategy), strategy=strategy, budget=n)
    assert result.reason == "forced" and result.why == []
    assert result.config.strategy == strategy
    assert result.config.params.n == (n or 1)
    assert result.probe_usage.total_tokens == 0
    assert result.usage.total_tokens == sim_tokens(sim)
    assert result.outcome is not None
    assert result.usage.total_tokens == result.outcome.usage.total_tokens
    if requests is not None:
        assert sim.stats()["requests"]["completions"] == requests
    assert result.text is not None and result.answer in result.text


async def test_probe_samples_are_reused_by_best_of_n(
    tmp_path: Path, sim: SimServer, strong_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    # A 72B policy: the cold-start rule picks Best-of-N, largest N in budget (16); after
    # the probe's 4 samples only 12 more are drawn. (The question is one the probe does
    # not answer unanimously: a unanimous probe is answered from the probe itself.)
    large = strong_policy_spec.model_copy(update={"params": 7.2e10})
    settings = make_settings(tmp_path, [large], [prm_spec])
    async with Orchestrator(settings) as orch:
        result = await orch.solve(puzzle("easy", 0.7), budget=16)
    assert result.features["probe_agreement"] < 1.0
    assert result.config.strategy == "best_of_n" and result.config.params.n == 16
    stats = sim.stats()
    assert stats["choices"] == 16 and stats["requests"]["completions"] == 2
    assert result.outcome is not None and len(result.outcome.candidates) == 16
    assert result.usage.total_tokens == sim_tokens(sim)


# ---------------------------------------------------------------- deadlines, cancellation


@pytest.fixture
def slow_sim(make_sim: Callable[..., SimServer]) -> SimServer:
    # every request waits 0.15s; decoding runs at 400 tokens/s per sequence
    return make_sim(capacity={"base_latency_s": 0.15, "decode_tps": 400.0})


def slow_settings(tmp_path: Path, sim: SimServer) -> Settings:
    return make_settings(
        tmp_path,
        [PolicySpec(name="sim-weak", base_url=sim.v1_url, model="sim-weak", params=1e9)],
        [PRMSpec(name="sim-prm", kind="vllm_pooling", base_url=sim.base_url, model="sim-prm")],
    )


async def test_timeout_returns_the_best_answer_so_far(tmp_path: Path, slow_sim: SimServer) -> None:
    settings = slow_settings(tmp_path, slow_sim)
    deadline = 1.5
    async with Orchestrator(settings) as orch:
        start = time.perf_counter()
        result = await orch.solve(puzzle("slow"), budget=64, timeout=deadline)
        elapsed = time.perf_counter() - start
    assert elapsed < deadline + 0.5
    assert result.partial and result.error == f"partial: deadline of {deadline:g}s reached"
    # the probe finished (0.3s), the chosen beam search did not: its best scored answer
    assert result.reason == "cold_start" and result.config.strategy == "beam_search"
    assert result.outcome is None and result.answer is not None
    assert result.answer_source == "scored" and result.text and result.answer in result.text
    assert result.usage.total_tokens > result.probe_usage.total_tokens > 0
    assert result.events[-1]["event"] == "deadline"
    with open_store(settings.db_url) as store:
        (row,) = store.runs()
    assert row["answer"] == result.answer and row["error"].startswith("partial: deadline")
    assert row["prm_tokens"] == result.usage.prm_tokens > 0


async def test_timeout_during_the_probe_logs_the_probe(
    tmp_path: Path, make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim(capacity={"base_latency_s": 2.0})
    settings = slow_settings(tmp_path, sim)
    async with Orchestrator(settings) as orch:
        start = time.perf_counter()
        result = await orch.solve(puzzle("very slow"), timeout=0.4)
        assert time.perf_counter() - start < 0.9
    assert result.partial and result.answer is None and result.answer_source == "none"
    assert result.reason == "probe_only" and result.config.strategy == "probe"
    assert result.config.params.n == 4 and result.logged


async def test_cancelling_the_caller_cancels_in_flight_requests(
    tmp_path: Path, slow_sim: SimServer
) -> None:
    settings = slow_settings(tmp_path, slow_sim)
    async with Orchestrator(settings) as orch:
        task = asyncio.create_task(
            orch.solve(puzzle("cancel", 0.9), strategy="beam_search", budget=16)
        )
        # wait until the search is a few steps in, with requests in flight
        for _ in range(200):
            stats = await asyncio.to_thread(slow_sim.stats)
            if stats["requests"].get("pooling", 0) >= 2 and stats["in_flight"] > 0:
                break
            await asyncio.sleep(0.02)
        assert stats["in_flight"] > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled_at = time.perf_counter()
        while (await asyncio.to_thread(slow_sim.stats))["in_flight"]:
            assert time.perf_counter() - cancelled_at < 2.0, "requests still in flight"
            await asyncio.sleep(0.02)
        settled = (await asyncio.to_thread(slow_sim.stats))["requests"]
        await asyncio.sleep(0.6)  # ~3 search steps' time: nothing new may be sent
        assert (await asyncio.to_thread(slow_sim.stats))["requests"] == settled
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []  # no orphaned pipeline task keeps running
        assert orch.store is not None
        assert await asyncio.to_thread(orch.store.count_runs) == 0  # a cancelled solve logs nothing


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"question": ""}, InputError, "the question is empty"),
        ({"question": "  \n "}, InputError, "the question is empty"),
        ({"budget": -4}, InputError, "budget n must be positive"),
        ({"budget": Budget(usd=0.0)}, InputError, "budget usd must be positive"),
        ({"budget": Budget(tokens=-1)}, InputError, "budget tokens must be positive"),
        ({"timeout": 0}, InputError, "timeout must be a positive"),
        ({"strategy": "tree_of_thought"}, UnknownStrategyError, "unknown strategy"),
        ({"strategy": "beam_search", "budget": 6}, InvalidParamsError, "multiple of M"),
        ({"policy": "gpt-9"}, ConfigError, "unknown policy 'gpt-9'"),
        ({"strategy": "best_of_n", "prm": "oracle"}, ConfigError, "unknown PRM 'oracle'"),
        ({"params": StrategyParams(n=2)}, InputError, "params need a strategy"),
        (
            {"strategy": "best_of_n", "params": StrategyParams(n=32), "budget": 8},
            InputError,
            "over the budget",
        ),
    ],
)
async def test_bad_input_raises_one_line_errors_and_runs_nothing(
    settings: Settings, sim: SimServer, kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    question = kwargs.pop("question", puzzle("bad"))
    async with Orchestrator(settings) as orch:
        with pytest.raises(error, match=needle) as info:
            await orch.solve(question, **kwargs)
        assert "\n" not in str(info.value)
        assert orch.store is not None and orch.store.count_runs() == 0
    assert sim.stats()["requests"] == {}


async def test_budget_too_small_for_any_config_is_an_input_error(
    settings: Settings, sim: SimServer
) -> None:
    async with Orchestrator(settings) as orch:
        with pytest.raises(InputError, match="no config fits the budget after the probe"):
            await orch.solve(puzzle("tiny"), budget=Budget(tokens=10))


# ---------------------------------------------------------------- many, explicit clients


async def test_solve_many_keeps_order_and_bounds_concurrency(
    settings: Settings, sim: SimServer
) -> None:
    questions = [puzzle(f"many {i}") for i in range(7)]
    async with Orchestrator(settings) as orch:
        results = await orch.solve_many(questions, concurrency=2, strategy="majority", budget=4)
        assert orch.store is not None and orch.store.count_runs() == 7
    assert [r.problem.question for r in results] == questions
    assert sim.stats()["max_in_flight"] <= 2  # one request per majority solve


async def test_solve_many_can_return_exceptions(settings: Settings) -> None:
    async with Orchestrator(settings) as orch:
        results = await orch.solve_many(
            [puzzle("fine"), ""], strategy="cot", return_exceptions=True
        )
    assert not isinstance(results[0], BaseException) and results[0].answer is not None
    assert isinstance(results[1], InputError)


async def test_explicit_clients_are_used_and_left_open(
    tmp_path: Path, sim: SimServer, weak_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    policy = build_policy(weak_policy_spec)
    prm = build_prm(prm_spec)
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    empty = Settings(db_url=url, data_dir=tmp_path, policies=[], prms=[])
    async with Orchestrator(empty, policies=[policy], prms=[prm], store=url) as orch:
        result = await orch.solve(puzzle("explicit"), strategy="best_of_n", budget=4)
    assert result.config.policy == "sim-weak" and result.config.prm == "sim-prm"
    again = await policy.complete(policy.prompt("still open?"), max_tokens=8)
    assert again.choices  # the orchestrator did not close a client it was given
    await policy.aclose()
    await prm.aclose()


# ---------------------------------------------------------------- a small and a large model


@dataclass
class TrainedWorld:
    sim: SimServer
    settings: Settings

    def copy(self, tmp_path: Path) -> Settings:
        """These settings over a private copy of the log (each test trains its own router)."""
        target = tmp_path / "copy.db"
        source = self.settings.db_url.removeprefix("sqlite:///")
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return self.settings.model_copy(
            update={"db_url": f"sqlite:///{target}", "data_dir": tmp_path / "data"}
        )


CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot", params=StrategyParams(n=1, seed=0)),
    RunConfig(
        policy="sim-weak",
        prm="sim-prm-weak",
        strategy="beam_search",
        params=StrategyParams(n=16, seed=0),
    ),
    RunConfig(policy="sim-strong", prm=None, strategy="cot", params=StrategyParams(n=1, seed=0)),
]


@pytest.fixture(scope="module")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedWorld]:
    """A local small model (cheap, weak) and a hosted large one (20x the price per token,
    much stronger); a real sweep of 30 problems x 3 configs graded against the sim's gold
    answers, probes logged, a router trained and registered as v1."""
    tmp = tmp_path_factory.mktemp("mixed")
    config = SimConfig(
        policies={"sim-weak": {"skill": 0.15, "params": 1e9}, "sim-strong": {"skill": 0.95}}
    )
    with SimServer(config) as sim:
        settings = make_settings(
            tmp,
            [
                PolicySpec(
                    name="sim-weak",
                    base_url=sim.v1_url,
                    model="sim-weak",
                    params=1e9,
                    usd_per_mtok_prompt=0.02,
                    usd_per_mtok_completion=0.05,
                ),
                PolicySpec(
                    name="sim-strong",
                    base_url=sim.v1_url,
                    model="sim-strong",
                    params=7e10,
                    usd_per_mtok_prompt=3.0,
                    usd_per_mtok_completion=15.0,
                ),
            ],
            [
                PRMSpec(
                    name="sim-prm", kind="vllm_pooling", base_url=sim.base_url, model="sim-prm"
                ),
                PRMSpec(
                    name="sim-prm-weak",
                    kind="vllm_pooling",
                    base_url=sim.base_url,
                    model="sim-prm-weak",
                ),
            ],
        )
        problems = [
            Problem(id=f"p{i}", question=puzzle(i), answer=world.gold_answer(puzzle(i)))
            for i in range(30)
        ]

        async def build() -> None:
            with open_store(settings.db_url) as store:
                await run_sweep(problems, CONFIGS, store, settings, dataset="sim")
                policy = build_policy(settings.policy("sim-weak"))
                prm = build_prm(settings.prm("sim-prm"))
                try:
                    await collect_probes(store, problems, policy, prm, k=4, dataset="sim")
                finally:
                    await policy.aclose()
                    await prm.aclose()

        asyncio.run(build())
        yield TrainedWorld(sim, settings)


def _train(settings: Settings) -> str:
    with open_store(settings.db_url) as store:
        version, _ = train_and_register(
            store, settings, model_params={"max_iter": 60, "min_samples_leaf": 5}
        )
    return version


async def test_running_orchestrator_picks_up_a_newly_trained_router(
    trained_world: TrainedWorld, tmp_path: Path
) -> None:
    settings = trained_world.copy(tmp_path)
    async with Orchestrator(settings, log_runs=False) as orch:
        before = await orch.solve(puzzle("pickup"), budget=Budget(usd=0.01))
        assert before.reason == "cold_start" and before.router_version is None
        version = await asyncio.to_thread(_train, settings)
        after = await orch.solve(puzzle("pickup"), budget=Budget(usd=0.01))
    assert version == "v1"
    assert after.reason == "router" and after.router_version == "v1"
    # the trained router predicts accuracy and knows only the logged configs
    assert all(c.predicted_accuracy is not None for c in after.why)
    assert {c.config.key() for c in after.why} <= {c.key() for c in CONFIGS}


async def test_choice_moves_from_small_model_search_to_large_model_cot_as_dollars_grow(
    trained_world: TrainedWorld, tmp_path: Path
) -> None:
    settings = trained_world.copy(tmp_path)
    sim = trained_world.sim
    await asyncio.to_thread(_train, settings)
    # A question of medium difficulty: the weak model needs search, the strong one does not.
    question = puzzle("A", 0.6)
    picks: dict[float, Any] = {}
    async with Orchestrator(settings, log_runs=False) as orch:
        for usd in (0.00003, 0.0005, 0.005):
            sim.reset()  # the same probe samples each time: only the budget changes
            picks[usd] = await orch.solve(question, budget=Budget(usd=usd))
    labels = {usd: r.config.label() for usd, r in picks.items()}
    assert labels == {
        0.00003: "cot(N=1)@sim-weak",
        0.0005: "beam_search(N=16,M=4)@sim-weak+sim-prm-weak",
        0.005: "cot(N=1)@sim-strong",
    }, labels
    predictions = [{c.config.label(): c.predicted_accuracy for c in r.why} for r in picks.values()]
    assert predictions[0] == predictions[1] == predictions[2]  # same features, same model
    acc = predictions[0]
    assert acc["cot(N=1)@sim-strong"] > acc["beam_search(N=16,M=4)@sim-weak+sim-prm-weak"]
    assert acc["beam_search(N=16,M=4)@sim-weak+sim-prm-weak"] > acc["cot(N=1)@sim-weak"]
    for usd, r in picks.items():
        assert r.reason == "router"
        left = usd - r.probe_usage.dollars
        chosen = next(c for c in r.why if c.chosen)
        assert chosen.fits_budget and chosen.predicted_cost["usd"] <= left
        # every config predicted more accurate than the pick was over budget
        better = [
            c for c in r.why if (c.predicted_accuracy or 0) > (chosen.predicted_accuracy or 0)
        ]
        assert all(not c.fits_budget and c.predicted_cost["usd"] > left for c in better)
