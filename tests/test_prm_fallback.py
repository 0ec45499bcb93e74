"""A PRM that is down (after its retries) makes the strategies that need it vote instead:
majority vote over the run's own whole samples (Best-of-N) or over N fresh ones (the tree
searches), with the Outcome, its trace, the solve's JSON and the run row saying so. A PRM
that answers with errors (5xx, 4xx) is up but failing, a fault to show: the run fails.


The policy is a simulator on loopback; the PRM is a second simulator that answers, then is
stopped. A PRM that never answered (a port nobody listens on) is a misconfiguration: the
run fails with its one-line error, as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sweep_helpers import sim_dataset
from test_policy_client import closed_port

from ratts import Orchestrator, Problem
from ratts.errors import ServerError
from ratts.orchestrator.runner import PRM_FALLBACK
from ratts.orchestrator.sweep import SweepStats, load_problems, run_sweep
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimServer, world
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

MakeSim = Callable[..., SimServer]
#: a PRM that went down fails its calls within a second (its outage grace), not a minute
DOWN_FAST: dict[str, object] = {"outage_grace_s": 0.3, "breaker_cooldown_s": 0.1, "max_retries": 1}
QUESTION = "Puzzle fallback: follow the hidden chain of operations; give the value."


def _settings(tmp_path: Path, policy_url: str, prm_url: str, **prm: object) -> Settings:
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[PolicySpec(name="sim-weak", base_url=f"{policy_url}/v1", model="sim-weak")],
        prms=[
            PRMSpec(
                name="sim-prm",
                kind="vllm_pooling",
                base_url=prm_url,
                model=str(prm.pop("model", "sim-prm")),
                **prm,  # type: ignore[arg-type]
            )
        ],
    )


def _completions(server: SimServer) -> list[int]:
    """n of each completions request the policy server got."""
    return [i["n"] for i in server.stats()["intervals"] if i["endpoint"] == "completions"]


@pytest.mark.parametrize(
    ("strategy", "params", "fresh"),
    [
        ("best_of_n", StrategyParams(n=4), False),  # votes over the 4 samples it drew
        ("beam_search", StrategyParams(n=4, beam_width=2), True),  # over 4 fresh samples
        ("dvts", StrategyParams(n=4, beam_width=2), True),
    ],
)
async def test_a_dead_prm_makes_scored_strategies_vote_and_the_row_says_so(
    sim: SimServer,
    make_sim: MakeSim,
    tmp_path: Path,
    strategy: str,
    params: StrategyParams,
    fresh: bool,
) -> None:
    prm_server = make_sim()
    settings = _settings(tmp_path, sim.base_url, prm_server.base_url, **DOWN_FAST)
    gold = world.gold_answer(QUESTION)
    async with Orchestrator(settings) as orch:
        warm = await orch.solve("Warm-up: 1 + 1?", strategy="best_of_n", budget=2)
        assert warm.outcome is not None and warm.outcome.prm_fallback is None  # it was up
        await asyncio.to_thread(prm_server.stop)  # now the PRM dies
        sim.reset()
        result = await orch.solve(
            Problem(id="p1", question=QUESTION, answer=gold), strategy=strategy, params=params
        )
        assert orch.store is not None
        row = orch.store.runs()[-1]
    outcome = result.outcome
    assert outcome is not None and result.error is None
    note = outcome.prm_fallback
    assert note is not None and note.startswith("EndpointUnreachableError: cannot reach PRM")
    assert "\n" not in note
    assert any(e["event"] == "prm_down" and e["fallback"] == "majority" for e in outcome.trace)
    # a majority vote over whole, unscored solutions, graded as any run is
    answers = [c.answer for c in outcome.candidates]
    assert len(answers) == 4 and all(not c.step_scores for c in outcome.candidates)
    assert all(c.finished for c in outcome.candidates)
    assert result.answer == answers[outcome.selected_index or 0]
    assert answers.count(result.answer) == max(answers.count(a) for a in answers)
    assert result.final_reward is None and result.correct is not None
    assert result.to_dict(explain=False)["prm_fallback"] == note
    # the row: graded, not failed, and it says why there is no PRM score
    assert row["error"] is None and row["correct"] == result.correct
    assert row["features"][PRM_FALLBACK] == note and row["final_reward"] is None
    assert row["prm_requests"] == 0
    requests = _completions(sim)
    assert requests[-1] == 4 if fresh else requests == [4]  # the vote's samples
    assert row["policy_requests"] == len(requests)


async def test_a_prm_killed_mid_sweep_falls_back_and_the_sweep_fails_nothing(
    sim: SimServer, make_sim: MakeSim, tmp_path: Path
) -> None:
    prm_server = make_sim()
    settings = _settings(tmp_path, sim.base_url, prm_server.base_url, **DOWN_FAST)
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 24))).problems
    configs = [
        RunConfig(
            policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=4)
        )
    ]
    killed: list[int] = []

    def kill_after_eight(stats: SweepStats) -> None:
        """Stop the PRM from inside the event loop once 8 runs are logged: nothing else runs
        until it is down, so the runs still to start (at least 14) all find it gone."""
        if not killed and stats.done + stats.failed >= 8:
            prm_server.stop()  # the PRM dies mid-sweep; the policy lives on
            killed.append(stats.done + stats.failed)

    with open_store(settings.db_url) as store:
        stats = await run_sweep(
            problems, configs, store, settings, concurrency=2, on_progress=kill_after_eight
        )
        rows = store.runs()
    assert killed == [8]
    assert (stats.done, stats.failed) == (24, 0)
    assert len(rows) == 24 and all(r["error"] is None and r["correct"] is not None for r in rows)
    before = [r for r in rows if r["final_reward"] is not None]
    after = [r for r in rows if r["final_reward"] is None]
    # scored while it was up: the 8 logged and at most the 2 then in flight; no note on those
    assert 8 <= len(before) <= 10
    assert all(not r["features"] for r in before)
    assert all("PRM 'sim-prm'" in r["features"][PRM_FALLBACK] for r in after)


async def test_a_prm_that_refuses_the_request_still_fails_the_run(
    sim: SimServer, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, sim.base_url, sim.base_url, model="no-such-prm")
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 2))).problems
    config = RunConfig(
        policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=2)
    )
    with open_store(settings.db_url) as store:
        stats = await run_sweep(problems, [config], store, settings)
        rows = store.runs()
    assert (stats.done, stats.failed) == (0, 2)
    assert all(r["error"].startswith("RequestRejectedError") for r in rows)


async def test_a_prm_that_answers_with_errors_still_fails_the_run(
    sim: SimServer, make_sim: MakeSim, tmp_path: Path
) -> None:
    failing = make_sim(faults={"sequence": ["ok"], "error_500": 1.0})  # up, then only 500s
    settings = _settings(tmp_path, sim.base_url, failing.base_url, **DOWN_FAST)
    async with Orchestrator(settings) as orch:
        await orch.solve("Warm-up: 1 + 1?", strategy="best_of_n", budget=2)
        with pytest.raises(ServerError, match="HTTP 500"):
            await orch.solve(QUESTION, strategy="best_of_n", budget=4)
        assert orch.store is not None
        row = orch.store.runs()[-1]
    assert row["error"].startswith("ServerError") and PRM_FALLBACK not in row["features"]


async def test_a_prm_that_never_answered_fails_the_run_as_misconfigured(
    sim: SimServer, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"  # a wrong port, not an outage
    settings = _settings(tmp_path, sim.base_url, dead, max_retries=0)
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 2))).problems
    config = RunConfig(
        policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=2)
    )
    with open_store(settings.db_url) as store:
        stats = await run_sweep(problems, [config], store, settings)
        rows = store.runs()
    assert (stats.done, stats.failed) == (0, 2)
    assert all(r["error"].startswith("EndpointUnreachableError") for r in rows)


async def test_a_routed_solve_with_its_prm_down_probes_unscored_and_answers(
    sim: SimServer, make_sim: MakeSim, tmp_path: Path
) -> None:
    prm_server = make_sim()
    settings = _settings(tmp_path, sim.base_url, prm_server.base_url, **DOWN_FAST)
    async with Orchestrator(settings) as orch:
        await orch.solve("Warm-up: 1 + 1?", strategy="best_of_n", budget=2)
        await asyncio.to_thread(prm_server.stop)
        result = await orch.solve(QUESTION, budget=16)
        assert orch.store is not None
        row = orch.store.runs()[-1]
    assert result.answer is not None and result.error is None
    assert result.features["probe_prm_mean"] is None  # the probe went unscored
    note = result.to_dict(explain=False)["prm_fallback"]
    assert note.startswith("EndpointUnreachableError") and row["features"][PRM_FALLBACK] == note
    assert row["error"] is None
