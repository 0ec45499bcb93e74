"""Context limits and spent compute (issue 11, point 7): a branch that outgrows the
context ends there instead of failing the run, and a run that fails still reports what
the servers served it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import settings_file

from ratts import Orchestrator
from ratts.endpoints.context import ContextWindow, context_from_error, is_context_error
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.usage import spent
from ratts.errors import EndpointError
from ratts.orchestrator.sweep import run_sweep
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.sim import gold_answer
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.types import Problem, RunConfig, StrategyParams

QUESTION = "Sim problem 3: evaluate the recurrence chain."


def by_status(stats: dict[str, Any], endpoint: str, status: int) -> int:
    return sum(1 for i in stats["intervals"] if i["endpoint"] == endpoint and i["status"] == status)


def test_context_errors_are_recognised_with_their_size() -> None:
    vllm = (
        "Error code: 400 - This model's maximum context length is 2048 tokens. However, "
        "your prompt contains at least 2049 input tokens"
    )
    assert is_context_error(vllm) and context_from_error(vllm) == 2048
    too_many = "max_tokens=1024 cannot be greater than max_model_len=512. Please request"
    assert is_context_error(too_many) and context_from_error(too_many) == 512
    assert is_context_error("{'code': 'context_length_exceeded'}")
    assert not is_context_error("n > 1 is not supported by this server")


def test_the_window_clips_max_tokens_to_what_is_left() -> None:
    window = ContextWindow()
    assert window.clip("x" * 400, 256) == 256  # unknown context: nothing to clip
    window.learn(300)
    assert window.clip("x" * 400, 256) == 256  # no token estimate yet: at most the context
    assert window.clip("x" * 400, 1024) == 300
    window.observe(chars=400, tokens=100)  # 4 characters per token seen
    window.observe(chars=300, tokens=100)  # 3 seen: the estimate errs high
    assert window.clip("x" * 600, 256) == 100
    assert window.clip("x" * 3000, 256) == 1  # the server decides whether it still fits
    window.learn(200)
    window.learn(900)  # the smallest stated length wins
    assert window.tokens == 200


async def test_a_prompt_over_the_context_ends_its_branch_and_spends_nothing(
    make_sim: Any,
) -> None:
    server = make_sim(max_model_len=60)
    policy = build_policy(
        PolicySpec(name="sim-weak", base_url=server.v1_url, model="sim-weak", max_retries=0)
    )
    try:
        short = "Problem: what is x?\n\nSolution:\n\n"
        long = "Problem: " + "word " * 200 + "\n\nSolution:\n\n"
        alone = await policy.complete(long, n=3, max_tokens=1024)
        both = await policy.complete_many([short, long], n=2, max_tokens=1024, stop=["\n\n"])
        assert policy.context_tokens == 60  # from /v1/models
        # max_tokens=1024 is over the context: clipped, or the short prompt would fail too
    finally:
        await policy.aclose()
    assert [(c.text, c.finish_reason) for c in alone.choices] == [("", "length")] * 3
    assert alone.usage.policy_tokens == 0 and alone.usage.policy_requests == 0
    assert [c.text != "" for c in both.choices] == [True, True, False, False]
    stats = server.stats()
    assert both.usage.policy_prompt_tokens == stats["prompt_tokens"] > 0
    assert both.usage.policy_requests == by_status(stats, "completions", 200) == 1
    assert by_status(stats, "completions", 400) >= 2  # the over-long prompt, alone and listed


@pytest.mark.parametrize("name", ["beam_search", "dvts"])
async def test_search_in_a_small_context_finishes_with_an_answer(name: str, make_sim: Any) -> None:
    """max_tokens (256 a step, 1024 a rollout) is over the 150-token context, and some
    branches reach its end: they are told to answer instead of stepping on (answer_room)."""
    server = make_sim(max_model_len=150)
    policy = build_policy(PolicySpec(name="sim-strong", base_url=server.v1_url, model="sim-strong"))
    prm = build_prm(
        PRMSpec(name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
    )
    try:
        outcome = await get_strategy(name).run(
            Problem(id="p", question=QUESTION),
            policy,
            prm,
            StrategyParams(n=8, beam_width=2, seed=1),
        )
    finally:
        await policy.aclose()
        await prm.aclose()
    stats = server.stats()
    assert outcome.answer == gold_answer(QUESTION)
    assert all(c.finished for c in outcome.candidates)
    if name == "dvts":  # a branch reached the context and was told to answer
        cue = policy.spec.answer_cue
        assert any(c.steps[-1].startswith(cue) and c.answer for c in outcome.candidates)
    # every request asked more max_tokens than the context holds, yet none failed for it:
    # a 400 here is a prompt that outgrew the context, which only ends its branch
    assert stats["responses_by_status"].get("200", 0) > 0
    assert outcome.usage.policy_prompt_tokens == stats["prompt_tokens"]


async def test_a_run_failing_mid_search_carries_what_the_server_counted(make_sim: Any) -> None:
    """Five requests succeed, the sixth fails (no retries): the error carries the run's
    usage, equal to the server's own counters."""
    server = make_sim(faults={"sequence": ["ok"] * 5 + ["500"] * 10})
    policy = build_policy(
        PolicySpec(name="sim-weak", base_url=server.v1_url, model="sim-weak", max_retries=0)
    )
    prm = build_prm(
        PRMSpec(
            name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm", max_retries=0
        )
    )
    try:
        with pytest.raises(EndpointError) as err:
            await get_strategy("beam_search").run(
                Problem(id="p", question=QUESTION), policy, prm, StrategyParams(n=8, beam_width=2)
            )
    finally:
        await policy.aclose()
        await prm.aclose()
    usage = spent(err.value)
    assert usage is not None
    stats = server.stats()
    assert usage.policy_prompt_tokens == stats["prompt_tokens"] > 0
    assert usage.policy_completion_tokens == stats["completion_tokens"] > 0
    assert usage.prm_tokens == stats["prm_tokens"] > 0
    assert usage.policy_requests == by_status(stats, "completions", 200) >= 2
    assert usage.prm_requests == by_status(stats, "pooling", 200) >= 2
    assert usage.flops > 0 and usage.wall_seconds > 0


async def test_a_failed_sweep_row_records_what_the_server_counted(
    make_sim: Any, tmp_path: Path
) -> None:
    server = make_sim(faults={"sequence": ["ok"] * 5 + ["500"] * 10})
    db = tmp_path / "runs.db"
    settings = load_settings(
        settings_file(tmp_path / "ratts.toml", server.base_url, db, max_retries=0)
    )
    problems = [Problem(id="p", question=QUESTION)]
    config = RunConfig(
        policy="sim-weak",
        prm="sim-prm",
        strategy="beam_search",
        params=StrategyParams(n=8, beam_width=2),
    )
    with open_store(settings.db_url) as store:
        stats = await run_sweep(problems, [config], store, settings)
        (row,) = store.runs(include_failed=True)
    counters = server.stats()
    assert stats.failed == 1 and row["error"]
    assert row["policy_prompt_tokens"] == counters["prompt_tokens"] > 0
    assert row["policy_completion_tokens"] == counters["completion_tokens"] > 0
    assert row["prm_tokens"] == counters["prm_tokens"] > 0
    assert row["policy_requests"] == by_status(counters, "completions", 200)
    assert row["prm_requests"] == by_status(counters, "pooling", 200)
    assert row["flops"] > 0


async def test_a_failed_solve_row_records_what_the_server_counted(
    make_sim: Any, tmp_path: Path
) -> None:
    """Orchestrator.solve logs through the same Runner as the sweep: its failed run's row
    holds what the servers served before the failure, not zeros."""
    server = make_sim(faults={"sequence": ["ok"] * 5 + ["500"] * 10})
    db = tmp_path / "runs.db"
    settings = load_settings(
        settings_file(tmp_path / "ratts.toml", server.base_url, db, max_retries=0)
    )
    async with Orchestrator(settings) as orch:
        with pytest.raises(EndpointError):
            await orch.solve(
                QUESTION,
                strategy="beam_search",
                params=StrategyParams(n=8, beam_width=2),
                prm="sim-prm",
            )
    with open_store(settings.db_url) as store:
        (row,) = store.runs(include_failed=True)
    counters = server.stats()
    assert row["error"]
    assert row["policy_prompt_tokens"] == counters["prompt_tokens"] > 0
    assert row["policy_completion_tokens"] == counters["completion_tokens"] > 0
    assert row["prm_tokens"] == counters["prm_tokens"] > 0
    assert row["policy_requests"] == by_status(counters, "completions", 200)
    assert row["prm_requests"] == by_status(counters, "pooling", 200)
    assert row["flops"] > 0
