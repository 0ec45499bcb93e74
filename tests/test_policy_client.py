"""PolicyClient against the real simulated server over loopback (faults injected by the sim)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratts.endpoints import PolicyClient, RetryPolicy, build_policy
from ratts.endpoints.policy import merge_stops, parse_completion
from ratts.endpoints.pool import MalformedResponse, gather_all, parse_retry_after, read_json
from ratts.errors import (
    BadResponseError,
    ConfigError,
    EndpointError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    InputError,
    RateLimitedError,
    ServerError,
)
from ratts.serving import ServerThread
from ratts.settings import PolicySpec
from ratts.sim import SimServer

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
QUESTION = "A farmer has 17 sheep and buys 5 more. How many sheep are there?"

MakeSim = Callable[..., SimServer]


def spec_for(server: SimServer, **overrides: Any) -> PolicySpec:
    fields: dict[str, Any] = {
        "name": "sim-weak",
        "base_url": server.v1_url,
        "model": "sim-weak",
        "params": 1e9,
        "usd_per_mtok_prompt": 0.1,
        "usd_per_mtok_completion": 0.4,
    }
    fields.update(overrides)
    return PolicySpec(**fields)


def completions(server: SimServer) -> int:
    return int(server.stats()["requests"].get("completions", 0))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------- n choices, usage, stops


async def test_n_choices_in_one_request_with_usage_from_server(
    sim: SimServer, weak_policy_spec: PolicySpec
) -> None:
    async with PolicyClient(weak_policy_spec) as client:
        result = await client.complete(client.prompt(QUESTION), n=6, stop=["\n\n"], seed=3)
    stats = sim.stats()
    assert completions(sim) == 1
    assert stats["choices"] == 6
    assert len(result.choices) == 6
    u = result.usage
    assert u.policy_requests == 1
    assert u.policy_prompt_tokens == stats["prompt_tokens"] > 0
    assert u.policy_completion_tokens == stats["completion_tokens"] > 0
    tokens = u.policy_prompt_tokens + u.policy_completion_tokens
    assert u.flops == pytest.approx(2 * 1e9 * tokens)
    expected_usd = (u.policy_prompt_tokens * 0.1 + u.policy_completion_tokens * 0.4) / 1e6
    assert u.dollars == pytest.approx(expected_usd)
    assert u.request_seconds > 0
    assert u.prm_tokens == 0 and u.prm_requests == 0
    for choice in result.choices:
        assert choice.stop_reason == "\n\n"
        assert choice.finish_reason == "stop"
        assert "\n\n" not in choice.text
        assert not choice.hit_eos


async def test_whole_solution_ends_at_eos(weak_policy_spec: PolicySpec) -> None:
    async with PolicyClient(weak_policy_spec) as client:
        result = await client.complete(client.prompt(QUESTION), n=2, max_tokens=2000)
    for choice in result.choices:
        assert choice.hit_eos and choice.stop_reason is None
        assert "\\boxed{" in choice.text


async def test_length_finish(weak_policy_spec: PolicySpec) -> None:
    async with PolicyClient(weak_policy_spec) as client:
        result = await client.complete(client.prompt(QUESTION), max_tokens=3)
    assert result.choices[0].finish_reason == "length"
    assert not result.choices[0].hit_eos
    assert result.usage.policy_completion_tokens == 3


async def test_spec_stop_is_merged(sim: SimServer) -> None:
    spec = spec_for(sim, stop=("\n\n",))
    async with PolicyClient(spec) as client:
        result = await client.complete(client.prompt(QUESTION), n=3, stop=None)
    assert all(c.stop_reason == "\n\n" for c in result.choices)


def test_merge_stops_keeps_order_and_drops_duplicates() -> None:
    assert merge_stops(["\n\n", "END"], ("END", "", "<|eot|>")) == ["\n\n", "END", "<|eot|>"]
    assert merge_stops(None, ()) == []


async def test_same_seed_same_text(weak_policy_spec: PolicySpec) -> None:
    async with PolicyClient(weak_policy_spec) as client:
        prompt = client.prompt(QUESTION)
        a = await client.complete(prompt, n=3, seed=11, stop=["\n\n"])
        b = await client.complete(prompt, n=3, seed=11, stop=["\n\n"])
    assert [c.text for c in a.choices] == [c.text for c in b.choices]


async def test_bad_arguments_are_input_errors(weak_policy_spec: PolicySpec) -> None:
    async with PolicyClient(weak_policy_spec) as client:
        with pytest.raises(InputError, match="n must be at least 1"):
            await client.complete("x", n=0)
        with pytest.raises(InputError, match="max_tokens"):
            await client.complete("x", max_tokens=0)


def test_missing_api_key_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RATTS_TEST_NO_SUCH_KEY", raising=False)
    spec = PolicySpec(
        name="hosted",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        api_key_env="RATTS_TEST_NO_SUCH_KEY",
    )
    with pytest.raises(ConfigError, match="RATTS_TEST_NO_SUCH_KEY"):
        build_policy(spec)


# ---------------------------------------------------------------- n fallback


async def test_fallback_to_n_requests_when_server_rejects_n(make_sim: MakeSim) -> None:
    server = make_sim(supports_n=False)
    async with PolicyClient(spec_for(server), retry=FAST) as client:
        assert client.n_supported
        prompt = client.prompt(QUESTION)
        result = await client.complete(prompt, n=3, seed=20, stop=["\n\n"])
        stats = server.stats()
        # one rejected request with n=3, then three single-choice requests
        assert stats["requests"]["completions"] == 4
        assert stats["responses_by_status"] == {"400": 1, "200": 3}
        assert not client.n_supported
        assert len(result.choices) == 3
        assert result.usage.policy_requests == 3
        assert result.usage.policy_prompt_tokens == stats["prompt_tokens"]
        assert result.usage.policy_completion_tokens == stats["completion_tokens"]
        # request i used seed 20 + i: the same text as a single call with that seed
        for i, choice in enumerate(result.choices):
            single = await client.complete(prompt, n=1, seed=20 + i, stop=["\n\n"])
            assert single.choices[0].text == choice.text
        server.reset()
        again = await client.complete(prompt, n=3, stop=["\n\n"])
        assert len(again.choices) == 3
        assert server.stats()["responses_by_status"] == {"200": 3}  # remembered: no 400


async def test_spec_without_n_sends_n_requests(make_sim: MakeSim) -> None:
    server = make_sim()
    async with PolicyClient(spec_for(server, supports_n=False)) as client:
        result = await client.complete(client.prompt(QUESTION), n=4, stop=["\n\n"])
    assert completions(server) == 4
    assert server.stats()["responses_by_status"] == {"200": 4}
    assert result.usage.policy_requests == 4
    assert len(result.choices) == 4


# ---------------------------------------------------------------- retries and errors


async def test_retries_through_5xx_429_and_malformed(make_sim: MakeSim) -> None:
    server = make_sim(faults={"sequence": ["500", "429", "malformed"]})
    async with PolicyClient(spec_for(server, max_retries=3), retry=FAST) as client:
        result = await client.complete(client.prompt(QUESTION), n=2, stop=["\n\n"])
    stats = server.stats()
    assert stats["requests"]["completions"] == 4
    assert stats["faults"] == {"500": 1, "429": 1, "malformed": 1}
    assert len(result.choices) == 2
    assert result.usage.policy_requests == 1  # successful requests only
    assert result.usage.policy_completion_tokens == stats["completion_tokens"]


async def test_retries_are_bounded_then_server_error(make_sim: MakeSim) -> None:
    server = make_sim(faults={"error_500": 1.0})
    async with PolicyClient(spec_for(server, max_retries=2), retry=FAST) as client:
        with pytest.raises(ServerError) as info:
            await client.complete("Problem: 1+1\n\n")
    message = str(info.value)
    assert "\n" not in message
    assert "policy 'sim-weak'" in message and "HTTP 500" in message
    assert "after 3 attempts" in message
    assert completions(server) == 3


async def test_rate_limited_error(make_sim: MakeSim) -> None:
    server = make_sim(faults={"error_429": 1.0})
    async with PolicyClient(spec_for(server, max_retries=1), retry=FAST) as client:
        with pytest.raises(RateLimitedError, match="429"):
            await client.complete("Problem: 1+1\n\n")
    assert completions(server) == 2


async def test_malformed_body_is_bad_response(make_sim: MakeSim) -> None:
    server = make_sim(faults={"malformed": 1.0})
    async with PolicyClient(spec_for(server, max_retries=1), retry=FAST) as client:
        with pytest.raises(BadResponseError, match="malformed response"):
            await client.complete("Problem: 1+1\n\n")
    assert completions(server) == 2


async def test_timeout_then_retry_succeeds(make_sim: MakeSim) -> None:
    server = make_sim(faults={"sequence": ["timeout"], "timeout_s": 1.5})
    spec = spec_for(server, timeout_s=0.3, max_retries=1)
    async with PolicyClient(spec, retry=FAST) as client:
        start = time.perf_counter()
        result = await client.complete(client.prompt(QUESTION), stop=["\n\n"])
        elapsed = time.perf_counter() - start
    assert len(result.choices) == 1
    assert 0.3 <= elapsed < 1.4
    assert result.usage.request_seconds >= 0.3  # the timed-out attempt counts as busy time


async def test_timeout_without_retries(make_sim: MakeSim) -> None:
    server = make_sim(faults={"sequence": ["timeout"], "timeout_s": 1.5})
    async with PolicyClient(spec_for(server, timeout_s=0.3, max_retries=0)) as client:
        with pytest.raises(EndpointTimeoutError, match=r"did not answer within 0\.3s"):
            await client.complete("Problem: 1+1\n\n")


async def test_unreachable_endpoint_fails_fast() -> None:
    port = closed_port()
    spec = PolicySpec(name="gone", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    async with PolicyClient(spec) as client:  # default: 3 retries, default backoff
        start = time.perf_counter()
        with pytest.raises(EndpointUnreachableError) as info:
            await client.complete("hello")
        elapsed = time.perf_counter() - start
    message = str(info.value)
    assert message.startswith(f"cannot reach policy 'gone' at http://127.0.0.1:{port}/v1: ")
    assert "after 4 attempts" in message and "\n" not in message
    assert elapsed < 5.0


async def test_client_errors_are_not_retried(sim: SimServer) -> None:
    spec = spec_for(sim, model="no-such-model", max_retries=3)
    async with PolicyClient(spec, retry=FAST) as client:
        with pytest.raises(EndpointError, match="HTTP 404") as info:
            await client.complete("Problem: 1+1\n\n")
    assert not isinstance(info.value, ServerError | RateLimitedError)
    assert "no-such-model" in str(info.value)
    assert completions(sim) == 1


# ---------------------------------------------------------------- concurrency


async def test_concurrency_is_bounded_per_client(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"base_latency_s": 0.05})
    # The limit counts sequences: 8 slots hold two n=4 requests at a time.
    async with PolicyClient(spec_for(server, max_concurrency=8)) as client:
        prompt = client.prompt(QUESTION)
        results = await asyncio.gather(
            *(client.complete(prompt, n=4, stop=["\n\n"]) for _ in range(6))
        )
    stats = server.stats()
    assert stats["requests"]["completions"] == 6  # n=4 choices is one request, 4 slots
    assert stats["max_in_flight"] == 2
    assert all(len(r.choices) == 4 for r in results)


# ---------------------------------------------------------------- parsing and headers


def test_parse_completion_sorts_by_index_and_reads_vllm_fields() -> None:
    body = {
        "choices": [
            {"index": 1, "text": "b", "finish_reason": "stop", "stop_reason": 151645},
            {"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": "\n\n"},
            {"index": 2, "text": "c", "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    reply = parse_completion(body, 3)
    assert [c.text for c in reply.choices] == ["a", "b", "c"]
    assert reply.choices[0].stop_reason == "\n\n"
    assert reply.choices[1].stop_reason is None and reply.choices[1].hit_eos  # stop token id
    assert reply.choices[2].finish_reason == "length"
    assert (reply.prompt_tokens, reply.completion_tokens) == (7, 3)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": "nope"},
        {"choices": [{"index": 0, "text": "a"}]},  # asked for 2
        {"choices": [{"index": 0, "text": 1}, {"index": 1, "text": "b"}]},
        {"choices": [{"index": "x", "text": "a"}, {"index": 1, "text": "b"}]},
        {"choices": [{"index": 0.0, "text": "a"}, {"index": 1, "text": "b"}]},  # == 0, not int
    ],
)
def test_parse_completion_rejects_wrong_shapes(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_completion(body, 2)


@pytest.mark.parametrize("raw", [b'{"choices": [', b'{"text": "\xff"}', b"<html>502</html>"])
def test_read_json_calls_a_garbled_body_retryable(raw: bytes) -> None:
    with pytest.raises(MalformedResponse) as caught:
        read_json(raw)
    assert caught.value.retryable


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert FAST.delay(0, retry_after=0.5) == 0.5  # longer than the backoff: honoured
    assert RetryPolicy(max_retry_after=1.0).delay(0, retry_after=3600) <= 1.0  # bounded


def _flaky_app() -> FastAPI:
    """A server that first answers 429 with Retry-After, then a completion without usage."""
    app = FastAPI()
    calls: list[float] = []

    @app.post("/v1/completions")
    async def complete(request: Request) -> JSONResponse:
        calls.append(time.perf_counter())
        body = await request.json()
        if len(calls) == 1:
            return JSONResponse(
                {"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0.4"}
            )
        choices = [
            {"index": i, "text": "x" * 40, "finish_reason": "stop"} for i in range(body["n"])
        ]
        return JSONResponse({"id": "c", "object": "text_completion", "choices": choices})

    app.state.calls = calls
    return app


async def test_retry_after_is_honoured_and_missing_usage_estimated() -> None:
    app = _flaky_app()
    with ServerThread(app) as server:
        url = server.base_url
        spec = PolicySpec(name="flaky", base_url=f"{url}/v1", model="m", params=2.0)
        async with PolicyClient(spec, retry=FAST) as client:
            result = await client.complete("p" * 80, n=2)
    calls = app.state.calls
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.4  # waited as told, not the 10 ms backoff
    assert result.choices[0].stop_reason is None  # hosted APIs send no stop_reason
    assert result.usage.policy_prompt_tokens == 20  # 80 chars / 4
    assert result.usage.policy_completion_tokens == 20  # 2 x 40 chars / 4
    assert result.usage.flops == pytest.approx(2 * 2.0 * 40)


async def _held(started: asyncio.Event, cancelled: asyncio.Event) -> int:
    """Sleeps until cancelled, saying when it started and that it was cancelled."""
    started.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    return 1


async def test_gather_all_cancels_the_rest_on_first_failure() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def boom() -> int:
        await asyncio.sleep(0.01)
        raise ServerError("boom")

    async def fine(value: int) -> int:
        return value

    start = time.perf_counter()
    with pytest.raises(ServerError, match="boom"):
        await gather_all([_held(started, cancelled), boom()])
    assert cancelled.is_set()
    assert time.perf_counter() - start < 2.0
    assert await gather_all([fine(3), fine(1), fine(2)]) == [3, 1, 2]
    assert await gather_all([]) == []


async def test_gather_all_of_one_awaitable_keeps_its_error_and_cancellation() -> None:
    """One awaitable is awaited in place (no task): its result, its error, and cancelling
    the caller cancels it, as with several."""

    async def fine(value: int) -> int:
        return value

    async def boom() -> int:
        raise ServerError("boom")

    assert await gather_all([fine(7)]) == [7]
    with pytest.raises(ServerError, match="boom"):
        await gather_all([boom()])

    started, cancelled = asyncio.Event(), asyncio.Event()
    caller = asyncio.ensure_future(gather_all([_held(started, cancelled)]))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()
    # a task given to it is cancelled with the caller
    started.clear()
    cancelled.clear()
    inner = asyncio.ensure_future(_held(started, cancelled))
    caller = asyncio.ensure_future(gather_all([inner]))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert inner.cancelled() and cancelled.is_set()
