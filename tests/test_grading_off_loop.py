"""Answer equivalence never runs on the event loop (issue 11, point 4)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratts.endpoints.policy import PolicyClient
from ratts.grading import equivalence, is_equivalent
from ratts.grading.sandbox import sandbox
from ratts.settings import PolicySpec
from ratts.strategies import get_strategy
from ratts.strategies.scoring import majority_index, off_loop
from ratts.types import Problem, StrategyParams

SLOW_CHECK_S = 0.2


def symbolic_answers_app() -> FastAPI:
    """A completions server whose every choice answers a different surd, so grouping the
    answers needs a symbolic comparison for each pair (fresh ones per request: no cache)."""
    app = FastAPI()
    counter = itertools.count()

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        n = body.get("n", 1)
        base = next(counter) * 1000
        choices = [
            {
                "index": j,
                "text": f"Step 1: simplify.\n\nThe answer is \\boxed{{\\sqrt{{{base + j + 2}}}}}.",
                "finish_reason": "stop",
                "stop_reason": None,
            }
            for j in range(n)
        ]
        usage = {"prompt_tokens": 10, "completion_tokens": 10 * n, "total_tokens": 10 + 10 * n}
        return JSONResponse({"choices": choices, "usage": usage})

    return app


@contextlib.contextmanager
def surd_server() -> Iterator[str]:
    """``symbolic_answers_app`` in its own process (a real server's HTTP work is not the
    client's event loop's), yielding its /v1 URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "tests.test_grading_off_loop:symbolic_answers_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the surd server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def slow_math_verify(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Fault injection: every math-verify comparison blocks its thread for SLOW_CHECK_S (or
    its own limit, if shorter, as the real sandbox does). Returns the limits it was given."""
    limits: list[float] = []
    lock = threading.Lock()

    def verify(gold: str, pred: str, timeout_s: float) -> bool | None:
        with lock:
            limits.append(timeout_s)
        time.sleep(min(SLOW_CHECK_S, timeout_s))
        return False if timeout_s >= SLOW_CHECK_S else None

    monkeypatch.setattr(sandbox(), "verify", verify)
    return limits


async def test_64_concurrent_solves_with_slow_checks_keep_the_loop_responsive(
    slow_math_verify: list[float],
) -> None:
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        tick = 0.01
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(tick)
            lags.append(time.perf_counter() - before - tick)

    with surd_server() as url:
        spec = PolicySpec(name="p", base_url=url, model="p", max_concurrency=8)
        policy = PolicyClient(spec)
        # one solve first: the client's one-off costs (lazy imports, first connection) are
        # not what this test measures
        await get_strategy("majority").run(
            Problem(id="warm", question="Warm up."), policy, None, StrategyParams(n=3)
        )
        slow_math_verify.clear()
        beat = asyncio.create_task(heartbeat())
        started = time.perf_counter()
        try:
            outcomes = await asyncio.gather(
                *(
                    get_strategy("majority").run(
                        Problem(id=str(i), question=f"Simplify surd {i}."),
                        policy,
                        None,
                        StrategyParams(n=3),
                    )
                    for i in range(64)
                )
            )
        finally:
            elapsed = time.perf_counter() - started
            stop.set()
            await beat
            await policy.aclose()
    assert len(outcomes) == 64 and all(o.answer is not None for o in outcomes)
    # 3 distinct surds per solve: 1 + 2 symbolic comparisons each, all really slow
    assert len(slow_math_verify) == 64 * 3
    assert elapsed >= SLOW_CHECK_S  # the checks did take time ...
    assert lags and max(lags) < 0.1, [
        (i, round(x, 3)) for i, x in enumerate(lags) if x > 0.03
    ]  # ... but never on the event loop


async def test_an_outcomes_checks_share_one_bounded_budget(slow_math_verify: list[float]) -> None:
    """Six distinct surds need 15 comparisons (3 s at 0.2 s each); with a 0.5 s budget the
    vote returns in about the budget, later comparisons cut to the cheap tests."""
    answers = [f"\\sqrt{{{k}}}" for k in range(2, 8)]
    started = time.perf_counter()
    winner = await off_loop(majority_index, answers, budget_s=0.5)
    elapsed = time.perf_counter() - started
    assert winner == 0
    assert elapsed < 0.5 + SLOW_CHECK_S + 0.3, elapsed
    assert 0 < len(slow_math_verify) < 15  # some ran symbolically, the rest were cut


@pytest.mark.parametrize(
    ("pred", "gold", "same"),
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac{2}{4}", "1/2", True),
        ("3", "3.0", True),
        ("\\frac{1}{3}", "0.3333", False),
        ("2,125", "2125", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("7", "\\frac{14}{3}", False),
    ],
)
def test_exact_rationals_compare_without_math_verify(
    pred: str, gold: str, same: bool, slow_math_verify: list[float]
) -> None:
    equivalence._cache.clear()
    assert is_equivalent(pred, gold) is same
    assert slow_math_verify == []  # decided by exact arithmetic alone


def test_a_non_rational_still_goes_to_math_verify(slow_math_verify: list[float]) -> None:
    equivalence._cache.clear()
    is_equivalent("\\sqrt{4}", "\\frac{3}{2}")
    assert len(slow_math_verify) == 1
