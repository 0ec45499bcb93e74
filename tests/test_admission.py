"""Sequence-level admission: slots count sequences, partial grants, FIFO, seeded requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from test_policy_client import QUESTION, MakeSim, spec_for

from ratts.endpoints import PolicyClient
from ratts.endpoints.admission import SequenceSlots
from ratts.endpoints.policy import Choice, ParsedCompletion, _prompt_major
from ratts.serving import ServerThread
from ratts.settings import PolicySpec
from ratts.sim import SimServer


def _choices(server: SimServer) -> list[int]:
    """Choices asked per completions request, in arrival order."""
    spans = sorted(
        (i for i in server.stats()["intervals"] if i["endpoint"] == "completions"),
        key=lambda i: i["start"],
    )
    return [int(i["choices"]) for i in spans]


def _max_sequences(server: SimServer) -> int:
    """The most sequences the server had in flight at once."""
    spans = [i for i in server.stats()["intervals"] if i["endpoint"] == "completions"]
    edges = sorted(
        [(i["start"], i["choices"]) for i in spans] + [(i["end"], -i["choices"]) for i in spans]
    )
    level = peak = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    return peak


async def _until(predicate: Any) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_partial_grants_are_fifo_and_work_conserving() -> None:
    slots = SequenceSlots(8)
    assert await slots.acquire(5) == 5
    assert await slots.acquire(8) == 3  # 3 free: take 3 now, not wait for 8
    big = asyncio.ensure_future(slots.acquire(8))
    small = asyncio.ensure_future(slots.acquire(1))
    await asyncio.sleep(0)
    slots.release(2)
    await asyncio.sleep(0)
    assert big.done() and big.result() == 2  # first in line gets what is free
    assert not small.done()  # and nobody jumps the queue
    slots.release(1)
    await asyncio.sleep(0)
    assert small.result() == 1
    exact = asyncio.ensure_future(slots.acquire(4, exact=True))
    after = asyncio.ensure_future(slots.acquire(1))
    slots.release(3)
    await asyncio.sleep(0)
    assert not exact.done() and not after.done()  # an exact waiter holds its place
    slots.release(1)
    await asyncio.sleep(0)
    assert exact.result() == 4 and not after.done()
    after.cancel()
    with pytest.raises(asyncio.CancelledError):
        await after
    assert slots.free == 0 and not slots._waiters


async def test_samples_split_across_requests_when_only_part_of_the_slots_are_free(
    make_sim: MakeSim,
) -> None:
    server = make_sim(capacity={"base_latency_s": 0.3})
    async with PolicyClient(spec_for(server, max_concurrency=8)) as client:
        prompt = client.prompt(QUESTION)
        first = asyncio.ensure_future(client.complete(prompt, n=5, stop=["\n\n"]))
        await _until(lambda: client._pool.slots.free == 3)
        result = await client.complete(prompt, n=8, stop=["\n\n"])
        await first
    # 3 slots free: n=3 went at once, the other 5 when the first request's slots freed
    assert _choices(server) == [5, 3, 5]
    assert _max_sequences(server) == 8
    assert len(result.choices) == 8
    assert result.usage.policy_requests == 2
    stats = server.stats()
    assert stats["choices"] == 13


async def test_list_request_splits_by_prompt_and_keeps_prompt_major_order(
    make_sim: MakeSim,
) -> None:
    server = make_sim(capacity={"base_latency_s": 0.3})
    async with PolicyClient(spec_for(server, max_concurrency=6)) as client:
        prompts = [client.prompt(f"{QUESTION} (variant {i})") for i in range(3)]
        first = asyncio.ensure_future(client.complete(prompts[0], n=1, stop=["\n\n"]))
        await _until(lambda: client._pool.slots.free == 5)
        result = await client.complete_many(prompts, n=2, stop=["\n\n"])
        await first
    # 5 free: prompts 0 and 1 (4 sequences) in one list request, 1 of prompt 2's choices;
    # then its second choice when a slot frees
    assert _choices(server) == [1, 4, 1, 1]
    assert _max_sequences(server) <= 6
    assert len(result.choices) == 6
    assert result.usage.policy_requests == 3


def test_prompt_major_recuts_split_replies() -> None:
    def reply(*texts: str) -> ParsedCompletion:
        return ParsedCompletion([Choice(t, "stop") for t in texts], 1, 1)

    pieces = [([0, 1], 2), ([2], 1), ([2], 1)]
    replies = [reply("a0", "a1", "b0", "b1"), reply("c0"), reply("c1")]
    assert [c.text for c in _prompt_major(pieces, replies, 3)] == [
        "a0",
        "a1",
        "b0",
        "b1",
        "c0",
        "c1",
    ]


async def test_seeded_request_is_not_split_by_timing(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"base_latency_s": 0.2})
    async with PolicyClient(spec_for(server, max_concurrency=8)) as client:
        prompt = client.prompt(QUESTION)
        alone = await client.complete(prompt, n=6, seed=11, stop=["\n\n"])
        server.reset()
        first = asyncio.ensure_future(client.complete(prompt, n=5, stop=["\n\n"]))
        await _until(lambda: client._pool.slots.free == 3)
        crowded = await client.complete(prompt, n=6, seed=11, stop=["\n\n"])
        await first
    assert _choices(server) == [5, 6]  # waited for 6 slots instead of sending n=3
    assert [c.text for c in crowded.choices] == [c.text for c in alone.choices]


async def test_seeded_request_larger_than_the_limit_is_cut_at_fixed_offsets(
    make_sim: MakeSim,
) -> None:
    server = make_sim()
    spec: PolicySpec = spec_for(server, max_concurrency=4)
    async with PolicyClient(spec) as client:
        prompt = client.prompt(QUESTION)
        result = await client.complete(prompt, n=6, seed=30, stop=["\n\n"])
        tail = await client.complete(prompt, n=2, seed=34, stop=["\n\n"])
    assert sorted(_choices(server)[:2]) == [2, 4]
    assert [c.text for c in result.choices[4:]] == [c.text for c in tail.choices]


def _streaming_app() -> FastAPI:
    """A vLLM-like /v1/completions that streams: with n > 1, choice 0 ends at once and the
    others 0.6 s later; n = 1 answers at once. Records each request's n."""
    app = FastAPI()
    seen: list[int] = []

    def event(data: object) -> bytes:
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    @app.post("/v1/completions")
    async def complete(request: Request) -> Response:
        body = await request.json()
        n = int(body["n"])
        seen.append(n)
        if not body.get("stream"):
            choices = [{"index": 0, "text": "quick", "finish_reason": "stop"}]
            usage = {"prompt_tokens": 3, "completion_tokens": 1}
            return JSONResponse({"choices": choices, "usage": usage})

        async def chunks() -> AsyncIterator[bytes]:
            yield event({"choices": [{"index": 0, "text": "a", "finish_reason": None}]})
            yield event(
                {
                    "choices": [
                        {"index": 0, "text": "b", "finish_reason": "stop", "stop_reason": "\n\n"}
                    ]
                }
            )
            for i in range(1, n):
                yield event({"choices": [{"index": i, "text": f"x{i}", "finish_reason": None}]})
            await asyncio.sleep(0.6)
            for i in range(1, n):
                yield event({"choices": [{"index": i, "text": "y", "finish_reason": "length"}]})
            usage = {"prompt_tokens": 5, "completion_tokens": 2 * n}
            yield event({"choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app.state.seen = seen
    return app


async def test_streamed_request_frees_each_slot_as_its_sequence_ends() -> None:
    app = _streaming_app()
    with ServerThread(app) as server:
        spec = PolicySpec(
            name="streams",
            base_url=f"{server.base_url}/v1",
            model="m",
            max_concurrency=3,
            stream=True,
        )
        async with PolicyClient(spec) as client:
            slow = asyncio.ensure_future(client.complete("p", n=3))
            # choice 0 ends at once: its slot serves another request while 1 and 2 still run
            quick = await asyncio.wait_for(client.complete("q", n=1), timeout=0.5)
            assert not slow.done()
            result = await slow
            assert client._pool.slots.free == 3
    assert quick.choices[0].text == "quick"
    assert app.state.seen == [3, 1]
    assert [c.text for c in result.choices] == ["ab", "x1y", "x2y"]
    assert [c.finish_reason for c in result.choices] == ["stop", "length", "length"]
    assert result.choices[0].stop_reason == "\n\n"
    assert result.usage.policy_prompt_tokens == 5
    assert result.usage.policy_completion_tokens == 6


async def test_chunks_are_capped_at_both_max_n_and_the_free_slots(make_sim: MakeSim) -> None:
    """max_n (the server's cap) and the slot grant both bound every request's n."""
    server = make_sim(capacity={"base_latency_s": 0.3}, max_n=4)
    async with PolicyClient(spec_for(server, max_concurrency=8, max_n=4)) as client:
        prompt = client.prompt(QUESTION)
        first = asyncio.ensure_future(client.complete(prompt, n=5, stop=["\n\n"]))
        await _until(lambda: client._pool.slots.free == 3)
        result = await client.complete(prompt, n=8, stop=["\n\n"])
        await first
    # first: 4 + 1 (max_n); then 3 at once (the free slots), the other 5 as 4 + 1 (max_n)
    assert sorted(_choices(server)) == [1, 1, 3, 4, 4]
    assert server.stats()["responses_by_status"] == {"200": 5}  # no n was refused
    assert _max_sequences(server) <= 8
    assert len(result.choices) == 8
    assert result.usage.policy_requests == 3
