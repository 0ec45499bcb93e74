"""The Policy protocol, and PolicyClient: step-wise and whole-solution sampling over
OpenAI-compatible completions or chat.

Strategies depend only on the public shape here (Choice, CompletionResult, Policy) and
build prompts as ``policy.prompt(question) + steps``. The openai SDK's own retries are off;
``EndpointPool`` does bounded retries with backoff and maps failures to ``ratts.errors``
types. Response bodies are parsed in ``ratts.endpoints.responses`` (not by the SDK's models),
which reads each server dialect's step-end signal.

Over chat, prompts become messages in ``ratts.endpoints.chat``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, Unpack, runtime_checkable

import openai

from ratts.endpoints.chat import CHAT_SPLIT, chat_body, chat_prompt
from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.pool import EndpointPool, MalformedResponse, RetryPolicy, gather_all
from ratts.endpoints.responses import Choice, ParsedCompletion, StopReading, parse_completion
from ratts.endpoints.usage import Usage, sum_usage
from ratts.errors import BadResponseError, InputError
from ratts.settings import PolicySpec

log = logging.getLogger(__name__)

# Extra requests for choices a server left out, before that is an error.
TOP_UP_ROUNDS = 3

__all__ = [
    "CHAT_SPLIT",
    "Choice",
    "CompletionResult",
    "ParsedCompletion",
    "Policy",
    "PolicyClient",
    "merge_stops",
    "parse_completion",
]


@dataclass(slots=True)
class CompletionResult:
    choices: list[Choice]
    usage: Usage


class _NRejected(Exception):
    """The server answered 400 to a request with ``n`` > 1 (or a list of prompts)."""


def _estimate_tokens(text: str) -> int:
    """Rough tokens for servers that omit ``usage`` (about 4 characters per token)."""
    return (len(text) + 3) // 4


def merge_stops(*groups: list[str] | tuple[str, ...] | None) -> list[str]:
    """Concatenate stop lists, dropping empties and duplicates, keeping first order."""
    seen: dict[str, None] = {}
    for group in groups:
        for stop in group or ():
            if stop:
                seen.setdefault(stop, None)
    return list(seen)


def _chunks(n: int, per: int) -> list[int]:
    """``n`` split into requests of at most ``per`` choices."""
    return [per] * (n // per) + ([n % per] if n % per else [])


class SamplingOptions(TypedDict, total=False):
    """The sampling keywords of ``Policy.complete``/``complete_many`` (besides the seeds);
    a key left out takes ``PolicyClient``'s default."""

    n: int
    stop: list[str] | None
    max_tokens: int
    temperature: float
    top_p: float
    logprobs: int | None


@runtime_checkable
class Policy(Protocol):
    """What strategies need from a policy endpoint: prompts, one-prompt and many-prompt
    sampling, and its identity. INTERFACE, like ``PRM``.

    ``PolicyClient`` implements it over HTTP; wrappers that observe calls (the
    orchestrator's ``WatchedPolicy``) implement it by delegating every method, so a wrapped
    policy sends exactly the requests the bare one sends.
    """

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> PolicySpec: ...

    @property
    def separator(self) -> str:
        """The step separator: a step-wise continuation stops here."""
        ...

    @property
    def n_supported(self) -> bool:
        """Whether ``n`` > 1 goes in one request."""
        ...

    def prompt(self, question: str) -> str:
        """The prefix-stable prompt for a question (steps are appended after it)."""
        ...

    async def complete(
        self, prompt: str, *, seed: int | None = None, **options: Unpack[SamplingOptions]
    ) -> CompletionResult:
        """Sample ``n`` continuations of ``prompt``; choices in index order."""
        ...

    async def complete_many(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int | None] | None = None,
        **options: Unpack[SamplingOptions],
    ) -> CompletionResult:
        """Sample ``n`` continuations of each prompt (``seeds``: one per prompt); choice
        ``j`` of prompt ``i`` is ``choices[i * n + j]``."""
        ...

    async def aclose(self) -> None: ...


class PolicyClient(AsyncClosing):
    """Talks to one policy endpoint described by a PolicySpec.

    - ``complete`` asks for ``n`` choices in one request where ``spec.supports_n`` (at most
      ``spec.max_n`` per request; falls back to n concurrent requests if the server rejects
      ``n`` > 1), and tops up when a server returns fewer choices than asked;
    - ``spec.api``: ``/completions`` with a text prompt, or ``/chat/completions`` with
      messages from the spec's templates (a partial solution only with ``chat_prefill``);
    - bounded concurrency per endpoint (``spec.max_concurrency``; one slot per HTTP request,
      however many choices it asks for);
    - bounded retries with exponential backoff on 429, 5xx, timeouts and connection errors;
    - typed errors from ratts.errors with one-line messages;
    - Usage from the server's ``usage`` field (+ FLOPs = 2 x params x tokens, dollars from
      the spec's prices). ``request_seconds`` sums the HTTP time of every attempt (failed
      attempts included, queueing and backoff excluded); ``policy_requests`` counts the
      successful HTTP requests (failed attempts are logged, not counted).
    """

    spec: PolicySpec

    def __init__(
        self, spec: PolicySpec, *, retry: RetryPolicy | None = None, role: str = "policy"
    ) -> None:
        """``role`` names the endpoint in error messages (a judge PRM passes "PRM")."""
        self.spec = spec
        self._client = openai.AsyncOpenAI(
            base_url=spec.base_url,
            api_key=spec.api_key(),
            max_retries=0,
            timeout=spec.timeout_s,
        )
        self._pool = EndpointPool.for_spec(role, spec, spec.base_url, retry)
        self._chat = spec.api == "chat"
        self._n_supported = spec.supports_n
        self._lists_supported = not self._chat  # the chat API takes one conversation

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def separator(self) -> str:
        return self.spec.step_separator

    @property
    def n_supported(self) -> bool:
        """Whether ``n`` > 1 goes in one request (False after the server rejected it)."""
        return self._n_supported

    @property
    def can_continue(self) -> bool:
        """Whether this policy can continue a partial solution (see PolicySpec)."""
        return self.spec.can_continue

    def prompt(self, question: str) -> str:
        """The prefix-stable prompt for a question (steps are appended after it)."""
        if self._chat:
            return chat_prompt(self.spec, question)
        return self.spec.prompt_template.format(question=question)

    async def complete(
        self,
        prompt: str,
        *,
        n: int = 1,
        stop: list[str] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 1.0,
        seed: int | None = None,
        logprobs: int | None = None,
    ) -> CompletionResult:
        """Sample ``n`` continuations of ``prompt``; choices come back in index order."""
        params = self._body(prompt, n, stop, max_tokens, temperature, top_p, logprobs)
        replies: list[tuple[ParsedCompletion, float]] = []
        offset = 0  # seed offset of the next request, so no two requests share a seed
        missing = n
        for round_ in range(TOP_UP_ROUNDS + 1):
            if round_:
                log.info("policy %r returned %d choices too few; asking again", self.name, missing)
            got = await self._round(params, missing, seed, offset)
            replies += got
            offset += missing
            missing -= sum(len(reply.choices) for reply, _ in got)
            if missing <= 0:
                break
        else:
            raise BadResponseError(
                f"policy {self.name!r} returned {n - missing} of {n} choices after "
                f"{TOP_UP_ROUNDS} top-up requests"
            )
        return self._result(prompt, [r for r, _ in replies], sum(s for _, s in replies))

    def _body(
        self,
        prompt: str | list[str],
        n: int,
        stop: list[str] | None,
        max_tokens: int,
        temperature: float,
        top_p: float,
        logprobs: int | None,
    ) -> dict[str, Any]:
        """The request body but ``n`` and ``seed``; bad ``n``/``max_tokens`` are InputErrors.
        Over chat the prompt (one conversation, never a list) becomes messages."""
        if n < 1:
            raise InputError(f"n must be at least 1, got {n}", param="n")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        params: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if self._chat and isinstance(prompt, str):
            params.update(chat_body(self.spec, prompt))
        else:
            params["prompt"] = prompt
        stops = merge_stops(stop, self.spec.stop)
        if stops:
            params["stop"] = stops
        if logprobs is not None:
            if self._chat:
                params["logprobs"] = True
                params["top_logprobs"] = logprobs
            else:
                params["logprobs"] = logprobs
        return params

    async def _round(
        self, params: dict[str, Any], n: int, seed: int | None, offset: int
    ) -> list[tuple[ParsedCompletion, float]]:
        """``n`` choices in requests of at most ``max_n`` (or one each without ``n``)."""
        if n > 1 and self._n_supported:
            per = min(n, self.spec.max_n or n)
            try:
                return await self._requests(params, _chunks(n, per), seed, offset, strict=True)
            except _NRejected:
                log.info(
                    "policy %r rejected n=%d with HTTP 400; sending %d requests", self.name, per, n
                )
            result = await self._requests(params, [1] * n, seed, offset)
            # Remembered only once single requests work: the 400 was about n, not the prompt.
            self._n_supported = False
            return result
        return await self._requests(params, [1] * n, seed, offset)

    async def _requests(
        self,
        params: dict[str, Any],
        sizes: list[int],
        seed: int | None,
        offset: int,
        *,
        strict: bool = False,
    ) -> list[tuple[ParsedCompletion, float]]:
        """One request per size, all in flight together; request k's seed is offset by the
        choices before it (``seed + i`` for the i-th of n single-choice requests)."""
        starts = [offset + sum(sizes[:k]) for k in range(len(sizes))]

        async def one(size: int, start: int) -> tuple[ParsedCompletion, float]:
            request_seed = None if seed is None else seed + start
            timed = await self._pool.call(
                lambda: self._attempt(params, size, request_seed, strict_n=strict and size > 1)
            )
            return timed.value, timed.seconds

        return list(
            await gather_all([one(size, start) for size, start in zip(sizes, starts, strict=True)])
        )

    async def complete_many(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        stop: list[str] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 1.0,
        seeds: Sequence[int | None] | None = None,
        logprobs: int | None = None,
    ) -> CompletionResult:
        """Sample ``n`` continuations of each prompt; choice ``j`` of prompt ``i`` is
        ``choices[i * n + j]``, and usage is the total.

        Unseeded, the prompts go in ONE request with a list ``prompt`` (vLLM and the OpenAI
        completions API accept one; vLLM schedules each prompt as its own sequence group),
        so a search step costs one HTTP round trip instead of one per beam. With seeds (one
        per prompt), over chat, after a server rejected a list, or past ``max_n``, it is one
        ``complete`` call per prompt, all in flight together. A prompt the server left short
        is topped up on its own.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise InputError(f"got {len(seeds)} seeds for {len(prompts)} prompts", param="seeds")
        sampling: SamplingOptions = {
            "n": n,
            "stop": stop,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "logprobs": logprobs,
        }
        seeded = seeds is not None and any(s is not None for s in seeds)
        max_n = self.spec.max_n
        if (
            len(prompts) < 2
            or seeded
            or not self._lists_supported
            or (n > 1 and not self._n_supported)
            or (max_n is not None and n > max_n)
        ):
            return await self._each(prompts, seeds, sampling)
        params = self._body(list(prompts), n, stop, max_tokens, temperature, top_p, logprobs)
        count = len(prompts)
        try:
            timed = await self._pool.call(
                lambda: self._attempt(params, n, None, strict_n=True, prompts=count)
            )
        except _NRejected:
            log.info("policy %r rejected a list of prompts with HTTP 400", self.name)
        else:
            listed = self._result("".join(prompts), [timed.value], timed.seconds)
            return await self._top_up_lists(prompts, n, timed.value, listed, sampling)
        result = await self._each(prompts, seeds, sampling)
        # Remembered only once single-prompt requests work: the 400 was about the list.
        self._lists_supported = False
        return result

    async def _top_up_lists(
        self,
        prompts: Sequence[str],
        n: int,
        reply: ParsedCompletion,
        listed: CompletionResult,
        sampling: SamplingOptions,
    ) -> CompletionResult:
        """Fill in the choices a list request left out, per prompt, keeping prompt order."""
        per_prompt: list[list[Choice]] = [[] for _ in prompts]
        for index, choice in zip(reply.indices, reply.choices, strict=True):
            if 0 <= index // n < len(prompts) and len(per_prompt[index // n]) < n:
                per_prompt[index // n].append(choice)
        short = [i for i, got in enumerate(per_prompt) if len(got) < n]
        if not short:
            return listed
        log.info("policy %r left %d prompts of a list short; topping up", self.name, len(short))
        requests = []
        for i in short:
            options: SamplingOptions = {**sampling, "n": n - len(per_prompt[i])}
            requests.append(self.complete(prompts[i], **options))
        extra = await gather_all(requests)
        for i, result in zip(short, extra, strict=True):
            per_prompt[i] += result.choices
        return CompletionResult(
            choices=[c for got in per_prompt for c in got],
            usage=sum_usage([listed.usage, *(r.usage for r in extra)]),
        )

    async def _each(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int | None] | None,
        sampling: SamplingOptions,
    ) -> CompletionResult:
        """One ``complete`` call per prompt, concurrently; choices prompt-major."""
        results = await gather_all(
            [
                self.complete(prompt, seed=None if seeds is None else seeds[i], **sampling)
                for i, prompt in enumerate(prompts)
            ]
        )
        return CompletionResult(
            choices=[choice for r in results for choice in r.choices],
            usage=sum_usage([r.usage for r in results]),
        )

    async def _attempt(
        self,
        params: dict[str, Any],
        n: int,
        seed: int | None,
        *,
        strict_n: bool = False,
        prompts: int = 1,
    ) -> ParsedCompletion:
        """One HTTP request and its parse (run inside the pool's retry loop).

        ``prompts`` > 1: ``params["prompt"]`` is a list and ``n * prompts`` choices come back
        (or fewer: the caller tops up).
        """
        payload: dict[str, Any] = {**params, "n": n}
        if seed is not None:
            payload["seed"] = seed
        path = "/chat/completions" if self._chat else "/completions"
        try:
            raw = await self._post(path, payload)
        except openai.BadRequestError as exc:
            if strict_n:
                raise _NRejected(str(exc)) from exc
            raise
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise MalformedResponse("body is not valid JSON", retryable=True) from exc
        reading = StopReading(self.spec.dialect, tuple(params.get("stop") or ()))
        return parse_completion(body, n * prompts, reading, chat=self._chat, short_ok=True)

    async def _post(self, path: str, payload: dict[str, Any]) -> bytes:
        """POST a JSON body to ``path`` under the base URL; the raw response body.

        Every HTTP request of a policy goes through here, so the HTTP stack is swapped in
        one place. It uses the SDK's generic POST: its typed ``completions.create`` re-walks
        every parameter against the type annotations on each call, a large share of the
        client's CPU per request (see bench/efficiency.py); the body here is plain JSON
        already. Errors come back as the SDK's typed exceptions (``pool.classify``).
        """
        raw: bytes = await self._client.post(path, cast_to=bytes, body=payload)
        return raw

    def _result(
        self, prompt: str, replies: list[ParsedCompletion], seconds: float
    ) -> CompletionResult:
        choices = [choice for reply in replies for choice in reply.choices]
        prompt_tokens = 0
        completion_tokens = 0
        estimated = False
        for reply in replies:
            if reply.prompt_tokens is None or reply.completion_tokens is None:
                estimated = True
                prompt_tokens += _estimate_tokens(prompt)
                completion_tokens += sum(_estimate_tokens(c.text) for c in reply.choices)
            else:
                prompt_tokens += reply.prompt_tokens
                completion_tokens += reply.completion_tokens
        if estimated:
            log.debug("policy %r: server omitted usage; token counts estimated", self.name)
        spec = self.spec
        usage = Usage(
            policy_prompt_tokens=prompt_tokens,
            policy_completion_tokens=completion_tokens,
            policy_requests=len(replies),
            flops=2.0 * spec.params * (prompt_tokens + completion_tokens),
            dollars=(
                prompt_tokens * spec.usd_per_mtok_prompt
                + completion_tokens * spec.usd_per_mtok_completion
            )
            / 1e6,
            request_seconds=seconds,
        )
        return CompletionResult(choices=choices, usage=usage)

    async def aclose(self) -> None:
        await self._client.close()
