"""VllmPoolingPRM: step rewards from a vLLM ``/pooling`` server (Qwen2.5-Math-PRM format).

The PRM sees the question as the user turn and the solution as the assistant turn with one
``<extra_0>`` token after every step; vLLM returns, per input, one ``[p_wrong, p_right]``
pair per ``<extra_0>``, so step k's reward is ``data[i].data[k][1]``. Many candidates go in
one request (``spec.batch_size``), and requests run concurrently up to
``spec.max_concurrency``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import httpx

from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.pool import EndpointPool, MalformedResponse, RetryPolicy, gather_all
from ratts.endpoints.prm import PRMResult, check_question, served_at
from ratts.endpoints.usage import Usage
from ratts.settings import PRMSpec

STEP_TAG = "<extra_0>"
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def qwen_prm_input(question: str, steps: Sequence[str]) -> str:
    """The Qwen2.5-Math-PRM text for one candidate: one step tag after each step.

    Step tags inside the text itself are dropped so the number of rewards always equals the
    number of steps.
    """
    solution = "".join(step.replace(STEP_TAG, "").strip() + STEP_TAG for step in steps)
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\nProblem: {question.replace(STEP_TAG, '').strip()}<|im_end|>\n"
        f"<|im_start|>assistant\n{solution}<|im_end|><|endoftext|>"
    )


def server_root(base_url: str) -> str:
    """The server root from a base URL, accepting a trailing ``/v1`` (and slashes)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def _reward(pair: object, where: str) -> float:
    if not isinstance(pair, list) or len(pair) < 2:
        raise MalformedResponse(f"{where}: expected a [p_wrong, p_right] pair")
    value = pair[1]
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise MalformedResponse(f"{where}: reward is not a number")
    return min(1.0, max(0.0, float(value)))


def parse_pooling(body: object, step_counts: Sequence[int]) -> tuple[list[list[float]], int | None]:
    """Rewards per candidate from a ``/pooling`` body, plus the reported prompt tokens.

    Raises MalformedResponse when the shape is wrong, including a candidate whose number of
    rewards differs from its number of steps (a step tag lost in tokenization, or the wrong
    model behind the URL).
    """
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise MalformedResponse("no 'data' list in the pooling response")
    items = body["data"]
    if len(items) != len(step_counts):
        raise MalformedResponse(f"sent {len(step_counts)} inputs, got {len(items)} results")
    ordered: list[tuple[int, object]] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedResponse(f"result {position} is not an object")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < len(step_counts):
            raise MalformedResponse(f"result {position} has a bad index")
        ordered.append((index, item.get("data")))
    ordered.sort(key=lambda pair: pair[0])
    if [index for index, _ in ordered] != list(range(len(step_counts))):
        raise MalformedResponse("result indexes are not 0..n-1")
    scores: list[list[float]] = []
    for (index, rows), expected in zip(ordered, step_counts, strict=True):
        if not isinstance(rows, list):
            raise MalformedResponse(f"result {index} has no reward list")
        if len(rows) != expected:
            raise MalformedResponse(
                f"candidate {index} has {expected} steps but {len(rows)} rewards"
            )
        scores.append([_reward(row, f"candidate {index} step {k}") for k, row in enumerate(rows)])
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        tokens = None
    return scores, tokens


class VllmPoolingPRM(AsyncClosing):
    """A process reward model served by vLLM's ``/pooling`` endpoint."""

    def __init__(self, spec: PRMSpec, *, retry: RetryPolicy | None = None) -> None:
        base_url, _ = served_at(spec)
        self.spec = spec
        self.name = spec.name
        self.url = f"{server_root(base_url)}/pooling"
        headers = {}
        key = spec.api_key()
        if key != "EMPTY":
            headers["Authorization"] = f"Bearer {key}"
        # Keep-alive for every concurrent request: httpx keeps only 20 idle connections by
        # default, so above 20 in flight each request would open (and close) a new one.
        limits = httpx.Limits(
            max_connections=spec.max_concurrency, max_keepalive_connections=spec.max_concurrency
        )
        self._http = httpx.AsyncClient(timeout=spec.timeout_s, headers=headers, limits=limits)
        self._pool = EndpointPool.for_spec("PRM", spec, self.url, retry)

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """Rewards for every step of every candidate; empty candidates get no scores."""
        check_question(question)
        scored = [i for i, steps in enumerate(candidates) if len(steps) > 0]
        size = self.spec.batch_size
        batches = [scored[start : start + size] for start in range(0, len(scored), size)]
        results = await gather_all(
            [self._score_batch(question, [candidates[i] for i in batch]) for batch in batches]
        )
        scores: list[list[float]] = [[] for _ in candidates]
        usage = Usage()
        for batch, (batch_scores, batch_usage) in zip(batches, results, strict=True):
            for i, row in zip(batch, batch_scores, strict=True):
                scores[i] = row
            usage += batch_usage
        return PRMResult(scores=scores, usage=usage)

    async def _score_batch(
        self, question: str, batch: Sequence[Sequence[str]]
    ) -> tuple[list[list[float]], Usage]:
        texts = [qwen_prm_input(question, steps) for steps in batch]
        payload = {"model": self.spec.model, "input": texts}
        counts = [len(steps) for steps in batch]

        async def attempt() -> tuple[list[list[float]], int | None]:
            response = await self._http.post(self.url, json=payload)
            response.raise_for_status()
            try:
                body = response.json()
            except ValueError as exc:
                raise MalformedResponse("body is not valid JSON", retryable=True) from exc
            return parse_pooling(body, counts)

        timed = await self._pool.call(attempt)
        scores, tokens = timed.value
        if tokens is None:
            tokens = sum((len(t) + 3) // 4 for t in texts)  # server omitted usage: estimate
        usage = Usage(
            prm_tokens=tokens,
            prm_requests=1,
            flops=2.0 * self.spec.params * tokens,
            dollars=tokens * self.spec.usd_per_mtok / 1e6,
            request_seconds=timed.seconds,
        )
        return scores, usage

    async def aclose(self) -> None:
        await self._http.aclose()
