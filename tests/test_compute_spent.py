"""Compute really spent (issue 11, point 6): prefix-cached prompt tokens are recorded apart
and charge no prefill FLOPs; a PRM without a parameter count cannot serve a FLOPs budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ratts import Budget, Orchestrator, Problem
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import parse_completion
from ratts.endpoints.usage import Usage
from ratts.errors import ConfigError
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.types import RunConfig, StrategyParams

QUESTION = "Sim problem 7: evaluate the recurrence chain."


def test_cached_tokens_are_parsed_from_prompt_tokens_details() -> None:
    body = {
        "choices": [{"index": 0, "text": "x", "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 96},
        },
    }
    parsed = parse_completion(body, 1)
    assert (parsed.prompt_tokens, parsed.cached_tokens) == (120, 96)
    body["usage"]["prompt_tokens_details"] = None  # servers that report no details
    assert parse_completion(body, 1).cached_tokens == 0


async def test_search_records_cached_tokens_and_charges_fresh_prefill_only(
    make_sim: Any,
) -> None:
    server = make_sim(prefix_cache=True)
    params = 1e9
    policy = build_policy(
        PolicySpec(name="sim-weak", base_url=server.v1_url, model="sim-weak", params=params)
    )
    prm = build_prm(
        PRMSpec(name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
    )
    try:
        outcome = await get_strategy("beam_search").run(
            Problem(id="p", question=QUESTION),
            policy,
            prm,
            StrategyParams(n=8, beam_width=2, seed=3),
        )
    finally:
        await policy.aclose()
        await prm.aclose()
    stats = server.stats()
    usage = outcome.usage
    assert usage.policy_prompt_tokens == stats["prompt_tokens"]  # still the server's total
    assert usage.policy_cached_tokens == stats["cached_tokens"] > 0
    # every step re-sends its beam's prefix: most of the prompt was cached
    assert usage.policy_cached_tokens > usage.policy_prompt_tokens / 2
    fresh = usage.policy_prompt_tokens - usage.policy_cached_tokens
    assert usage.policy_fresh_prompt_tokens == fresh
    # the PRM has no parameter count: it adds no FLOPs (and a FLOPs budget refuses it)
    assert usage.flops == pytest.approx(2 * params * (fresh + usage.policy_completion_tokens))


def test_cached_tokens_go_into_the_run_row(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        config = RunConfig(policy="p", prm=None, strategy="cot")
        usage = Usage(policy_prompt_tokens=50, policy_cached_tokens=30, policy_completion_tokens=5)
        store.record_run(Problem(id="q", question="Q?"), config, "n=1", usage=usage)
        (row,) = store.runs()
    finally:
        store.close()
    assert row["policy_cached_tokens"] == 30 and row["policy_prompt_tokens"] == 50


async def test_a_flops_budget_needs_the_prms_parameter_count(
    sim: Any, sim_settings: Settings
) -> None:
    unsized = PRMSpec(name="prm", kind="vllm_pooling", base_url=sim.base_url, model="sim-prm")
    async with Orchestrator(sim_settings.model_copy(update={"prms": [unsized]})) as orch:
        with pytest.raises(ConfigError) as err:
            await orch.solve(QUESTION, budget=Budget(flops=1e15))
        assert str(err.value) == (
            "PRM 'prm' has no parameter count, so its FLOPs are unknown: "
            "set params in its [[prms]] entry to use a FLOPs budget"
        )
        with pytest.raises(ConfigError):
            await orch.solve(QUESTION, budget=Budget(flops=1e15), strategy="best_of_n", prm="prm")
        # no FLOPs budget, or a strategy that uses no PRM: nothing to refuse
        done = await orch.solve(QUESTION, budget=Budget(flops=1e15), strategy="majority")
        assert done.answer is not None
    assert sim.stats()["requests"].get("pooling", 0) == 0  # refused before any PRM call
    sized = unsized.model_copy(update={"params": 1.5e9})
    async with Orchestrator(sim_settings.model_copy(update={"prms": [sized]})) as orch:
        result = await orch.solve(QUESTION, budget=Budget(flops=1e15))
    assert result.answer is not None
