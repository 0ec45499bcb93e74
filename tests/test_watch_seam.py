"""The observation seam: a watched policy sends exactly the requests a bare one sends.

Beam search (N=16, M=4) on one problem, unseeded (the simulator's per-prompt series is
rewound by ``reset``, so every path sees the same samples), counted at the simulator: run
directly on a PolicyClient, through ``Orchestrator.solve`` (which wraps the client in a
WatchedPolicy) and through the sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ratts import Orchestrator
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import Policy, PolicyClient
from ratts.orchestrator.sweep import run_sweep
from ratts.orchestrator.watch import Watch, WatchedPolicy
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimServer
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.types import Problem, RunConfig, StrategyParams

PROBLEM = Problem(id="seam", question="Sim problem 11: evaluate the recurrence chain.")
PARAMS = StrategyParams(n=16, beam_width=4)


def policy_traffic(sim: SimServer) -> dict[str, Any]:
    stats = sim.stats()
    return {
        "requests": stats["requests"],
        "prompts": stats["prompts"],
        "choices": stats["choices"],
        "prompt_tokens": stats["prompt_tokens"],
        "completion_tokens": stats["completion_tokens"],
    }


def test_watched_policy_is_a_policy(weak_policy_spec: PolicySpec) -> None:
    client = build_policy(weak_policy_spec)
    watched = WatchedPolicy(client, Watch())
    assert isinstance(client, Policy) and isinstance(watched, Policy)
    assert not isinstance(watched, PolicyClient)  # delegation, not a subclass
    assert (watched.name, watched.spec, watched.separator, watched.n_supported) == (
        client.name,
        client.spec,
        client.separator,
        client.n_supported,
    )
    assert watched.prompt("q") == client.prompt("q")


async def test_beam_search_sends_the_same_requests_watched_solved_and_swept(
    sim: SimServer, tmp_path: Path, weak_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[weak_policy_spec],
        prms=[prm_spec],
    )

    sim.reset()
    policy, prm = build_policy(weak_policy_spec), build_prm(prm_spec)
    try:
        outcome = await get_strategy("beam_search").run(PROBLEM, policy, prm, PARAMS)
    finally:
        await policy.aclose()
        await prm.aclose()
    direct = policy_traffic(sim)
    steps = [e for e in outcome.trace if e["event"] == "step"]
    expanded = [e for e in steps[:-1] if e["kept"]]
    assert len(expanded) >= 2  # a real multi-step search, so batching is visible
    # one request for the first step, then ONE list-prompt request per expanded step
    assert direct["requests"]["completions"] == 1 + len(expanded)
    assert direct["prompts"] == 1 + sum(e["kept"] for e in expanded)

    sim.reset()
    events: list[str] = []
    async with Orchestrator(settings) as orch:
        solved = await orch.solve(
            PROBLEM,
            strategy="beam_search",
            params=PARAMS,
            on_event=lambda e: events.append(e.kind),
        )
    assert policy_traffic(sim) == direct
    assert solved.answer == outcome.answer
    assert solved.usage.policy_requests == direct["requests"]["completions"]
    # the watch saw every policy call: one "sampled" event per request
    assert events.count("sampled") == direct["requests"]["completions"]

    sim.reset()
    config = RunConfig(policy=weak_policy_spec.name, prm=prm_spec.name, strategy="beam_search")
    config = config.model_copy(update={"params": PARAMS})
    # a fresh log: the solve above logged this (problem, config) and the sweep would skip it
    with open_store(f"sqlite:///{tmp_path / 'sweep.db'}") as store:
        stats = await run_sweep([PROBLEM], [config], store, settings, dataset="seam")
    assert stats.done == 1
    assert policy_traffic(sim) == direct
