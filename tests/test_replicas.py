"""Replicas, the circuit breaker and outages that pause instead of fail, against real
simulator servers on loopback (a replica goes down by stopping its server, and comes back
by starting a new one on the same port)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import sim_dataset
from test_admission import _max_sequences
from test_policy_client import QUESTION, closed_port, completions

from ratts.endpoints import PolicyClient
from ratts.endpoints.pool import RetryPolicy
from ratts.endpoints.prm_judge import JudgePRM
from ratts.endpoints.prm_pooling import VllmPoolingPRM
from ratts.endpoints.replicas import MAX_COOLDOWN_FACTOR, Breaker
from ratts.errors import EndpointUnreachableError
from ratts.orchestrator.sweep import load_problems, run_sweep
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.sim import SimConfig, SimServer
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
MakeSim = Callable[..., SimServer]
CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot"),
    RunConfig(policy="sim-weak", prm=None, strategy="majority", params=StrategyParams(n=4)),
]


def replicated(*urls: str, **overrides: Any) -> PolicySpec:
    fields: dict[str, Any] = {"name": "sim-weak", "base_urls": list(urls), "model": "sim-weak"}
    fields.update(overrides)
    return PolicySpec(**fields)


def settings_toml(path: Path, urls: list[str], db: Path, **knobs: object) -> Path:
    """A ratts.toml whose one policy lists ``urls`` as its replicas."""
    listed = ", ".join(f'"{u}/v1"' for u in urls)
    extra = "\n".join(f"{k} = {v}" for k, v in knobs.items())
    path.write_text(
        f'db_url = "sqlite:///{db}"\n\n[[policies]]\nname = "sim-weak"\n'
        f'base_urls = [{listed}]\nmodel = "sim-weak"\ntimeout_s = 20\n{extra}\n',
        encoding="utf-8",
    )
    return path


def restart(server: SimServer, port: int) -> SimServer:
    """A fresh simulator on the port a stopped one had (the replica comes back)."""
    return SimServer(SimConfig.model_validate(server.config.model_dump()), port=port).start()


# ---------------------------------------------------------------- settings


def test_base_url_is_the_one_replica_form_of_base_urls() -> None:
    one = PolicySpec(name="p", base_url="http://a/v1", model="m")
    two = replicated("http://a/v1", "http://b/v1")
    assert one.urls == ("http://a/v1",)
    assert two.urls == ("http://a/v1", "http://b/v1") and two.base_url == "http://a/v1"
    with pytest.raises(ValueError, match="base_url must be one of base_urls"):
        PolicySpec(name="p", base_url="http://c/v1", base_urls=["http://a/v1"], model="m")
    with pytest.raises(ValueError, match="twice"):
        replicated("http://a/v1", "http://a/v1")
    with pytest.raises(ValueError, match="base_url"):
        PolicySpec(name="p", model="m")


# ---------------------------------------------------------------- the breaker itself


def test_breaker_opens_half_opens_and_backs_off() -> None:
    breaker = Breaker(threshold=3, cooldown_s=10.0)
    assert breaker.admits()
    assert not breaker.record("down") and not breaker.record("down")
    assert breaker.record("down")  # the third failure in a row opens it
    assert breaker.state == "open" and not breaker.admits()
    now = time.monotonic()
    assert breaker.reopen_at == pytest.approx(now + 10.0, abs=0.5)
    assert breaker.admits(now + 10.5) and breaker.state == "half_open"
    breaker.granted()  # the probe
    assert not breaker.admits(now + 10.5)  # one probe at a time
    assert breaker.record("down")  # the probe failed: open again, for twice as long
    assert breaker.reopen_at == pytest.approx(time.monotonic() + 20.0, abs=0.5)
    for _ in range(5):
        breaker.admits(breaker.reopen_at)
        breaker.granted()
        breaker.record("down")
    limit = 10.0 * MAX_COOLDOWN_FACTOR
    assert breaker.reopen_at == pytest.approx(time.monotonic() + limit, abs=0.5)
    breaker.admits(breaker.reopen_at)
    breaker.granted()
    breaker.record("cancelled")  # a cancelled probe frees the half-open slot
    assert breaker.admits(breaker.reopen_at)
    breaker.granted()
    assert not breaker.record("up")
    assert breaker.state == "closed" and breaker.failures == 0 and breaker.opened == 7
    breaker.record("down")
    breaker.record("up")  # an answer resets the streak
    assert not breaker.record("down") and breaker.state == "closed"


# ---------------------------------------------------------------- balancing


async def test_requests_spread_over_replicas_each_with_its_own_limit(make_sim: MakeSim) -> None:
    a = make_sim(capacity={"base_latency_s": 0.1})
    b = make_sim(capacity={"base_latency_s": 0.1})
    spec = replicated(a.v1_url, b.v1_url, max_concurrency=4)
    async with PolicyClient(spec) as client:
        prompt = client.prompt(QUESTION)
        results = await asyncio.gather(
            *[client.complete(prompt, n=2, stop=["\n\n"]) for _ in range(8)]
        )
        assert client._pool.slots.free == 8
    assert all(len(r.choices) == 2 for r in results)
    # fewest outstanding: an even split, give or take one as requests finish
    assert completions(a) + completions(b) == 8 and min(completions(a), completions(b)) >= 3
    assert _max_sequences(a) == _max_sequences(b) == 4  # each replica's own limit, full


async def test_one_replica_down_its_share_moves_to_the_live_one(make_sim: MakeSim) -> None:
    a = make_sim()
    b = make_sim()
    spec = replicated(a.v1_url, b.v1_url, breaker_threshold=2, breaker_cooldown_s=0.3)
    async with PolicyClient(spec, retry=FAST) as client:
        prompt = client.prompt(QUESTION)
        for _ in range(6):
            await client.complete(prompt, stop=["\n\n"])
        assert completions(a) == completions(b) == 3  # both up: round-robin when idle
        port = b.port
        b.stop()
        for _ in range(10):
            await client.complete(prompt, stop=["\n\n"])  # none fails: A carries the load
        dead = client._pool.replicas[1].breaker
        assert dead.state == "open" and dead.opened == 1
        assert completions(a) == 3 + 10

        await asyncio.sleep(0.35)  # cool-down over: the next request probes B, still down
        before = time.monotonic()
        await client.complete(prompt, stop=["\n\n"])
        after = time.monotonic()
        assert dead.opened == 2 and dead.state == "open"
        assert before + 0.6 <= dead.reopen_at <= after + 0.6  # the cool-down doubled

        back = restart(b, port)
        try:
            await asyncio.sleep(0.65)
            for _ in range(6):
                await client.complete(prompt, stop=["\n\n"])
            assert dead.state == "closed"  # the half-open probe succeeded
            assert completions(back) == 3  # and B takes its share again
        finally:
            back.stop()


async def test_a_sweep_with_one_of_two_replicas_down_completes(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    a = make_sim()
    b = make_sim()
    db = tmp_path / "runs.db"
    settings = load_settings(settings_toml(tmp_path / "ratts.toml", [a.base_url, b.base_url], db))
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 20))).problems
    with open_store(settings.db_url) as store:
        first = await run_sweep(problems[:10], CONFIGS, store, settings, concurrency=4)
        assert (first.done, first.failed) == (20, 0)
        share_a, share_b = completions(a), completions(b)
        assert share_a > 0 and share_b > 0  # both replicas served the first half
        assert sum(r["policy_requests"] for r in store.runs()) == share_a + share_b
        a.reset()
        b.stop()
        second = await run_sweep(problems[10:], CONFIGS, store, settings, concurrency=4)
        assert (second.done, second.failed) == (20, 0)
        rows = store.runs()
    assert len(rows) == 40 and all(r["error"] is None and r["correct"] is not None for r in rows)
    # every request of the second half was answered by A: B's share moved to it
    assert sum(r["policy_requests"] for r in rows) - share_a - share_b == completions(a)


# ---------------------------------------------------------------- outages


async def test_an_outage_past_its_limit_fails_with_one_line(make_sim: MakeSim) -> None:
    server = make_sim()
    spec = replicated(server.v1_url, outage_grace_s=1.0, breaker_cooldown_s=0.2, max_retries=1)
    async with PolicyClient(spec, retry=FAST) as client:
        await client.complete("Problem: 1+1\n\n")  # it answered: outages now pause
        server.stop()
        start = time.perf_counter()
        with pytest.raises(EndpointUnreachableError) as info:
            await client.complete("Problem: 1+1\n\n")
        elapsed = time.perf_counter() - start
    message = str(info.value)
    assert 1.0 <= elapsed < 3.0  # paused for the grace, not failed after 2 attempts
    assert "\n" not in message and "every replica down for 1s (outage_grace_s=1)" in message


async def test_a_never_reached_endpoint_still_fails_fast() -> None:
    spec = replicated(
        f"http://127.0.0.1:{closed_port()}/v1", f"http://127.0.0.1:{closed_port()}/v1"
    )
    async with PolicyClient(spec, retry=FAST) as client:
        start = time.perf_counter()
        with pytest.raises(EndpointUnreachableError, match="after 4 attempts"):
            await client.complete("hello")
    assert time.perf_counter() - start < 2.0


async def test_a_sweep_through_a_ten_second_outage_grades_every_run(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    server = make_sim(capacity={"base_latency_s": 0.05})
    db = tmp_path / "runs.db"
    toml = settings_toml(tmp_path / "ratts.toml", [server.base_url], db, breaker_cooldown_s=0.5)
    settings = load_settings(toml)
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 40))).problems
    seen: list[int] = []
    with open_store(settings.db_url) as store:
        sweep = asyncio.ensure_future(
            run_sweep(
                problems,
                CONFIGS,
                store,
                settings,
                concurrency=4,
                on_progress=lambda s: seen.append(s.done),
            )
        )
        while not seen or seen[-1] < 10:
            await asyncio.sleep(0.05)
            assert not sweep.done()
        port = server.port
        await asyncio.to_thread(server.stop)
        done_at_stop = seen[-1]
        await asyncio.sleep(10.0)
        done_in_outage = seen[-1] - done_at_stop
        assert not sweep.done()  # paused, not failed through
        back = await asyncio.to_thread(restart, server, port)
        try:
            stats = await asyncio.wait_for(sweep, timeout=60)
        finally:
            back.stop()
        rows = store.runs()
    assert done_in_outage <= 4  # at most the runs already answered when it went down
    assert (stats.done, stats.failed) == (80, 0)
    assert len(rows) == 80 and all(r["error"] is None and r["correct"] is not None for r in rows)


# ---------------------------------------------------------------- PRMs


async def test_prm_replicas_pooling_and_judge_route_around_a_dead_one(make_sim: MakeSim) -> None:
    live = make_sim()
    dead = f"http://127.0.0.1:{closed_port()}"
    steps = [["Step one: 2 + 3 = 5.", "So the answer is \\boxed{5}."]] * 4
    pooling = PRMSpec(name="p", kind="vllm_pooling", base_urls=[dead, live.base_url],
                      model="sim-prm", batch_size=1)  # fmt: skip
    judge = PRMSpec(name="j", kind="judge", base_urls=[f"{dead}/v1", live.v1_url],
                    model="sim-weak")  # fmt: skip
    for spec, client in ((pooling, VllmPoolingPRM(pooling, retry=FAST)),
                         (judge, JudgePRM(judge, retry=FAST))):  # fmt: skip
        async with client:
            result = await client.score(QUESTION, steps)
        assert [len(s) for s in result.scores] == [2] * 4, spec.name
    stats = live.stats()["requests"]
    assert stats["pooling"] == 4 and stats["completions"] == 8  # all on the live replica
