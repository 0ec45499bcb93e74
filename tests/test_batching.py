"""Fewer HTTP round trips per unit of work: list-prompt requests and lockstep tree search.

Over real loopback HTTP against the simulator (and one small FastAPI app that refuses lists).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratts.endpoints import RetryPolicy
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import CompletionResult, PolicyClient
from ratts.endpoints.prm import PRM
from ratts.errors import InputError
from ratts.serving import ServerThread
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimServer
from ratts.sim.world import problem_model
from ratts.strategies import get_strategy
from ratts.types import Problem, StrategyParams

QUESTION = "Sim problem 11: evaluate the recurrence chain."
SEP = "\n\n"


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


def step_prompts(client: PolicyClient) -> list[str]:
    """Three prompts that need different next steps: after 0, 1 and 2 right prior steps."""
    x = problem_model(QUESTION, 0).values
    steps = [f"Step {k}: from x_{k - 1} = {x[k - 1]} we get x_{k} = {x[k]}." for k in (1, 2)]
    base = client.prompt(QUESTION)
    return [base, base + steps[0] + SEP, base + steps[0] + SEP + steps[1] + SEP]


# ---------------------------------------------------------------- PolicyClient.complete_many


async def test_unseeded_prompts_share_one_request(sim: SimServer, weak: PolicyClient) -> None:
    prompts = step_prompts(weak)
    result = await weak.complete_many(prompts, n=3, stop=[SEP], max_tokens=64)
    stats = sim.stats()
    assert stats["requests"] == {"completions": 1}
    assert stats["prompts"] == 3 and stats["choices"] == 9
    (interval,) = stats["intervals"]
    assert interval["n"] == 3 and interval["choices"] == 9
    assert len(result.choices) == 9
    # prompt-major: choices 3i..3i+2 continue prompt i, whose next step is i + 1
    for i in range(3):
        for choice in result.choices[3 * i : 3 * i + 3]:
            assert choice.text.startswith(f"Step {i + 1}:"), choice.text
    usage = result.usage
    assert usage.policy_requests == 1
    assert usage.policy_prompt_tokens == stats["prompt_tokens"] > 0
    assert usage.policy_completion_tokens == stats["completion_tokens"] > 0


async def test_seeded_prompts_go_one_per_request_and_repeat(
    sim: SimServer, weak: PolicyClient
) -> None:
    prompts = step_prompts(weak)
    first = await weak.complete_many(prompts, n=2, stop=[SEP], seeds=[1, 2, 3])
    assert sim.stats()["requests"] == {"completions": 3}
    again = await weak.complete_many(prompts, n=2, stop=[SEP], seeds=[1, 2, 3])
    assert [c.text for c in again.choices] == [c.text for c in first.choices]
    assert first.usage.policy_requests == 3
    single = await weak.complete(prompts[1], n=2, stop=[SEP], seed=2)
    assert [c.text for c in single.choices] == [c.text for c in first.choices[2:4]]


async def test_seed_count_must_match_prompts(weak: PolicyClient) -> None:
    with pytest.raises(InputError, match="got 1 seeds for 2 prompts"):
        await weak.complete_many(["a", "b"], seeds=[1])


class Recording(PolicyClient):
    """A subclass that overrides ``complete`` (the old way the orchestrator watched calls)."""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec)
        self.seen: list[str] = []

    async def complete(self, prompt: str, **kwargs: Any) -> CompletionResult:  # type: ignore[override]
        self.seen.append(prompt)
        return await super().complete(prompt, **kwargs)


async def test_overriding_complete_does_not_change_what_complete_many_sends(
    sim: SimServer, weak_policy_spec: PolicySpec
) -> None:
    """The client never inspects its own type: observers wrap a ``Policy`` by delegation
    (see test_watch_seam.py), so the list request is the same for every caller."""
    client = Recording(weak_policy_spec)
    try:
        prompts = step_prompts(client)
        result = await client.complete_many(prompts, n=2, stop=[SEP])
    finally:
        await client.aclose()
    assert client.seen == []
    assert len(result.choices) == 6
    assert sim.stats()["requests"] == {"completions": 1}
    assert sim.stats()["prompts"] == 3


def no_lists_app(log: list[Any]) -> FastAPI:
    """An OpenAI-compatible server that answers 400 to a list of prompts."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        log.append(body["prompt"])
        if isinstance(body["prompt"], list):
            return JSONResponse({"error": {"message": "prompt must be a string"}}, 400)
        n = body.get("n", 1)
        choices = [
            {"index": j, "text": f"{body['prompt'][-1]}-{j}", "finish_reason": "stop"}
            for j in range(n)
        ]
        usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
        return JSONResponse({"choices": choices, "usage": usage})

    return app


async def test_a_server_that_refuses_lists_gets_one_prompt_per_request() -> None:
    log: list[Any] = []
    with ServerThread(no_lists_app(log)) as server:
        url = server.base_url
        spec = PolicySpec(name="p", base_url=f"{url}/v1", model="p", max_retries=0)
        client = PolicyClient(spec, retry=RetryPolicy(base_delay=0.01, max_delay=0.01))
        try:
            first = await client.complete_many(["pa", "pb"], n=2)
            assert [c.text for c in first.choices] == ["a-0", "a-1", "b-0", "b-1"]
            assert first.usage.policy_requests == 2  # the refused list is not counted
            assert log[0] == ["pa", "pb"] and sorted(log[1:]) == ["pa", "pb"]
            log.clear()
            second = await client.complete_many(["pc", "pd"], n=2)  # remembered: no list now
            assert sorted(log) == ["pc", "pd"]
            assert [c.text for c in second.choices] == ["c-0", "c-1", "d-0", "d-1"]
        finally:
            await client.aclose()


# ---------------------------------------------------------------- lockstep tree search


async def test_unseeded_beam_search_sends_one_policy_request_per_step(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    n, m = 16, 4
    outcome = await get_strategy("beam_search").run(
        Problem(id="b", question=QUESTION), weak, prm, StrategyParams(n=n, beam_width=m)
    )
    stats = sim.stats()
    steps = [e for e in outcome.trace if e["event"] == "step"]
    expanded = [e for e in steps[:-1] if e["kept"]]
    # the first sample, then one request per step carrying every kept beam as a prompt
    assert stats["requests"]["completions"] == 1 + len(expanded)
    assert stats["prompts"] == 1 + sum(e["kept"] for e in expanded)
    assert stats["requests"]["pooling"] == len(steps)
    assert outcome.usage.policy_requests == stats["requests"]["completions"]
    assert outcome.usage.policy_prompt_tokens == stats["prompt_tokens"]


async def test_dvts_scores_all_subtrees_in_one_prm_call_per_step(
    sim: SimServer, weak: PolicyClient, prm: PRM
) -> None:
    n, m = 16, 4
    outcome = await get_strategy("dvts").run(
        Problem(id="d", question=QUESTION), weak, prm, StrategyParams(n=n, beam_width=m)
    )
    stats = sim.stats()
    steps = [e for e in outcome.trace if e["event"] == "step"]
    depth = max(e["k"] for e in steps)
    assert {e["subtree"] for e in steps} == set(range(n // m))
    assert stats["requests"]["pooling"] == depth  # one PRM call per lockstep step
    expanded = [e for e in steps if e["kept"] and not _last_of_subtree(e, steps)]
    # the roots (one request per subtree), then ONE request per step carrying every
    # subtree's kept beam as a prompt
    assert stats["requests"]["completions"] == n // m + len({e["k"] for e in expanded})
    assert stats["prompts"] == n // m + len(expanded)
    assert len(outcome.candidates) >= 1 and outcome.usage.prm_requests == depth


def _last_of_subtree(event: dict[str, Any], steps: list[dict[str, Any]]) -> bool:
    return event["k"] == max(e["k"] for e in steps if e["subtree"] == event["subtree"])
