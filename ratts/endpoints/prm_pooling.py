"""VllmPoolingPRM: step rewards from a vLLM ``/pooling`` server (``--runner pooling``).

Each candidate is rendered in the PRM's format (``prm_formats``: the Qwen2.5-Math-PRM chat
template with ``<extra_0>`` after every step, or Math-Shepherd's `` ки``) and sent as text
with ``task = token_classify``; vLLM's STEP pooler returns, per input, one row of class
probabilities per step tag, and step k's reward is ``data[i].data[k][1]`` (the positive
class: see ``prm_formats.POSITIVE_COLUMN``). Many candidates go in one request
(``spec.batch_size``), and requests run concurrently up to ``spec.max_concurrency``.

With ``spec.max_context`` set (``ratts models serve-prm`` writes it), a candidate that might
not fit (more UTF-8 bytes than context tokens) is counted with the server's ``/tokenize``
and its question cut from the left with ``/detokenize``, by the same rule as TransformersPRM
(``prm_formats.left_cuts``); ``usage.prm_truncated`` counts them. Without it, vLLM answers
an over-long input with HTTP 400, a one-line EndpointError.

vLLM skips the prefix cache for token-classification requests (every position's output is
needed), so re-scoring a beam's shared prefix costs a full prefill each time; see
bench/prm_throughput.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.http import JsonHttp
from ratts.endpoints.pool import (
    EndpointPool,
    MalformedResponse,
    RetryPolicy,
    gather_all,
    read_json,
)
from ratts.endpoints.prm import PRMResult, check_question, served_at
from ratts.endpoints.prm_formats import FORMATS, POSITIVE_COLUMN, left_cuts
from ratts.endpoints.usage import Usage
from ratts.errors import InputError
from ratts.settings import PRMSpec


def server_root(base_url: str) -> str:
    """The server root from a base URL, accepting a trailing ``/v1`` (and slashes)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def _reward(pair: object, where: str) -> float:
    if not isinstance(pair, list) or len(pair) <= POSITIVE_COLUMN:
        raise MalformedResponse(f"{where}: expected a [p_wrong, p_right] pair")
    value = pair[POSITIVE_COLUMN]
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
        served_at(spec)
        self.spec = spec
        self.name = spec.name
        self.format = FORMATS[spec.format or "qwen2.5-math-prm"]
        self._pool = EndpointPool.for_spec(
            spec,
            role="PRM",
            retry=retry,
            urls=[server_root(url) for url in spec.urls],
            shown_path="/pooling",
        )
        self.url = self._pool.url

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
        texts, truncated = await self._fit(question, batch)
        # token_classify: a Math-Shepherd model served with --convert classify also offers
        # (sequence) classify, which a request without a task could get.
        payload = {"model": self.spec.model, "input": texts, "task": "token_classify"}
        counts = [len(steps) for steps in batch]

        async def attempt(http: JsonHttp) -> tuple[list[list[float]], int | None]:
            raw = await http.request("/pooling", payload)
            body = read_json(raw)
            return parse_pooling(body, counts)

        timed = await self._pool.call(attempt)
        scores, tokens = timed.value
        if tokens is None:
            tokens = sum((len(t) + 3) // 4 for t in texts)  # server omitted usage: estimate
        usage = Usage(
            prm_tokens=tokens,
            prm_requests=1,
            prm_truncated=truncated,
            flops=2.0 * self.spec.flops_params * tokens,
            dollars=tokens * self.spec.usd_per_mtok / 1e6,
            request_seconds=timed.seconds,
        )
        return scores, usage

    async def _fit(self, question: str, batch: Sequence[Sequence[str]]) -> tuple[list[str], int]:
        """The batch's texts, each cut to ``spec.max_context`` tokens; and how many were cut."""
        texts = [self.format.render(question, steps) for steps in batch]
        context = self.spec.max_context
        if context is None:
            return texts, 0
        truncated = 0
        q_ids: list[int] | None = None
        for k, steps in enumerate(batch):
            if len(texts[k].encode()) <= context:  # a token is at least one byte
                continue
            total = len(await self._tokenize(texts[k]))
            if total <= context:
                continue
            if q_ids is None:
                q_ids = await self._tokenize(question.strip(), special=False)
            cuts = left_cuts(len(q_ids), total, context)
            try:
                cut = next(cuts)
                while True:
                    shorter = await self._detokenize(q_ids[cut:])
                    text = self.format.render(shorter, steps)
                    total = len(await self._tokenize(text))
                    if total <= context and shorter.strip():
                        texts[k], truncated = text, truncated + 1
                        break
                    cut = cuts.send(total if shorter.strip() else context + 1)
            except StopIteration:
                raise InputError(
                    f"PRM {self.name!r}: the steps alone do not fit its context of {context} "
                    "tokens, even with the question cut away"
                ) from None
        return texts, truncated

    async def _tokenize(self, text: str, *, special: bool = True) -> list[int]:
        body = await self._call_json(
            "/tokenize", {"model": self.spec.model, "prompt": text, "add_special_tokens": special}
        )
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise MalformedResponse("no 'tokens' list in the /tokenize response")
        return tokens

    async def _detokenize(self, tokens: list[int]) -> str:
        body = await self._call_json("/detokenize", {"model": self.spec.model, "tokens": tokens})
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise MalformedResponse("no 'prompt' in the /detokenize response")
        return prompt

    async def _call_json(self, path: str, payload: dict[str, object]) -> dict[str, object]:
        """POST ``payload`` to ``path`` under a replica's server root; the JSON object back."""

        async def attempt(http: JsonHttp) -> dict[str, object]:
            raw = await http.request(path, payload)
            body = read_json(raw)
            if not isinstance(body, dict):
                raise MalformedResponse(f"{path} answered with no JSON object")
            return body

        return (await self._pool.call(attempt)).value

    async def aclose(self) -> None:
        await self._pool.aclose()
