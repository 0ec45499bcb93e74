"""PolicyClient: step-wise and whole-solution sampling over OpenAI-compatible completions.

Strategies depend only on the public shape here (Choice, CompletionResult, PolicyClient).
The openai SDK's own retries are off; ``EndpointPool`` does bounded retries with backoff and
maps failures to ``ratts.errors`` types. Response bodies are parsed here (not by the SDK's
models) so vLLM's extra fields (``stop_reason``) and malformed bodies are handled explicitly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from ratts.endpoints.context import (
    ContextWindow,
    context_from_error,
    context_from_models,
    is_context_error,
)
from ratts.endpoints.pool import EndpointPool, MalformedResponse, RetryPolicy, gather_all
from ratts.endpoints.usage import Usage, sum_usage
from ratts.errors import InputError
from ratts.settings import PolicySpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Choice:
    """One sampled continuation.

    ``stop_reason`` follows vLLM: the stop string that ended the text, or None when the
    model emitted EOS (or the server does not say; a stop *token id* also maps to None).
    ``finish_reason`` is "stop" or "length". ``logprobs`` holds, per generated token, the
    server's top alternatives (token -> log probability) when ``logprobs`` was requested.
    """

    text: str
    finish_reason: str
    stop_reason: str | None = None
    logprobs: tuple[Mapping[str, float], ...] | None = field(default=None, compare=False)

    @property
    def hit_eos(self) -> bool:
        return self.finish_reason == "stop" and self.stop_reason is None


@dataclass(slots=True)
class CompletionResult:
    choices: list[Choice]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ParsedCompletion:
    """One HTTP response, parsed: its choices and the server's token counts (if given)."""

    choices: list[Choice]
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int = 0  # prompt tokens served from the server's prefix cache


class _NRejected(Exception):
    """The server answered 400 to a request with ``n`` > 1."""


class _ContextExceeded(Exception):
    """The server answered 400: the prompt (or prompt + max_tokens) exceeds its context."""


def ended_choices(n: int) -> CompletionResult:
    """The answer to a prompt that no longer fits the context: the branch ends where it
    stands (``finish_reason="length"`` with no text), nothing was generated or spent."""
    return CompletionResult(choices=[Choice("", "length")] * n, usage=Usage())


def _parse_logprobs(raw: object) -> tuple[Mapping[str, float], ...] | None:
    if not isinstance(raw, dict):
        return None
    top = raw.get("top_logprobs")
    if not isinstance(top, list):
        return None
    out: list[Mapping[str, float]] = []
    for entry in top:
        if not isinstance(entry, dict):
            out.append({})
            continue
        out.append(
            {
                str(tok): float(lp)
                for tok, lp in entry.items()
                if isinstance(lp, int | float) and not isinstance(lp, bool)
            }
        )
    return tuple(out)


def _count(usage: object, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_completion(body: object, n: int) -> ParsedCompletion:
    """Parse a ``/v1/completions`` body that should hold ``n`` choices.

    Raises MalformedResponse (not retryable) when the shape is wrong.
    """
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    raw_choices = body.get("choices")
    if not isinstance(raw_choices, list):
        raise MalformedResponse("no 'choices' list in the completion response")
    if len(raw_choices) != n:
        raise MalformedResponse(f"asked for {n} choices, got {len(raw_choices)}")
    indexed: list[tuple[int, Choice]] = []
    for position, item in enumerate(raw_choices):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise MalformedResponse(f"choice {position} has no text")
        index = item.get("index", position)
        if not isinstance(index, int):
            raise MalformedResponse(f"choice {position} has a non-integer index")
        finish = item.get("finish_reason")
        stop_reason = item.get("stop_reason")
        indexed.append(
            (
                index,
                Choice(
                    text=item["text"],
                    finish_reason=finish if isinstance(finish, str) else "stop",
                    # vLLM: a stop string, a stop token id (int, treated like EOS), or null.
                    stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                    logprobs=_parse_logprobs(item.get("logprobs")),
                ),
            )
        )
    indexed.sort(key=lambda pair: pair[0])
    usage = body.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    prompt_tokens = _count(usage, "prompt_tokens")
    cached = _count(details, "cached_tokens") or 0
    return ParsedCompletion(
        choices=[choice for _, choice in indexed],
        prompt_tokens=prompt_tokens,
        completion_tokens=_count(usage, "completion_tokens"),
        cached_tokens=min(cached, prompt_tokens or 0),
    )


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


class PolicyClient:
    """Talks to one policy endpoint described by a PolicySpec.

    - ``complete`` sends ONE request with ``n`` choices where ``spec.supports_n`` (falls back
      to n concurrent requests if the server rejects ``n`` > 1 or the spec says so);
    - bounded concurrency per endpoint (``spec.max_concurrency``; one slot per HTTP request,
      however many choices it asks for);
    - bounded retries with exponential backoff on 429, 5xx, timeouts and connection errors;
    - typed errors from ratts.errors with one-line messages;
    - Usage from the server's ``usage`` field (+ FLOPs = 2 x params x tokens, prefix-cached
      prompt tokens excluded; dollars from the spec's prices). ``request_seconds`` sums
      the HTTP time of every attempt (failed attempts included, queueing and backoff
      excluded); ``policy_requests`` counts the successful HTTP requests (failed attempts
      are logged, not counted).
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
        self._pool = EndpointPool(
            who=f"{role} {spec.name!r}",
            url=spec.base_url,
            max_concurrency=spec.max_concurrency,
            max_retries=spec.max_retries,
            timeout_s=spec.timeout_s,
            retry=retry,
        )
        self._n_supported = spec.supports_n
        self._lists_supported = True
        self._window = ContextWindow(spec.context_tokens)
        self._context_asked = spec.context_tokens is not None

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

    def prompt(self, question: str) -> str:
        """The prefix-stable prompt for a question (steps are appended after it)."""
        return self.spec.prompt_template.format(question=question)

    @property
    def context_tokens(self) -> int | None:
        """The policy's context length, once known (settings, /v1/models or a 400)."""
        return self._window.tokens

    async def _learn_context(self) -> None:
        """Ask ``/v1/models`` once for the served model's ``max_model_len`` (vLLM reports
        it; hosted APIs mostly do not, and then the context stays unknown)."""
        if self._context_asked:
            return
        self._context_asked = True
        try:
            body = json.loads(await self._post("/models", None))
        except Exception as exc:  # optional knowledge: the completions call reports failures
            log.debug("policy %r: no context length from /models (%s)", self.name, exc)
            return
        self._window.learn(context_from_models(body, self.spec.model))

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
        """Sample ``n`` continuations of ``prompt``; choices come back in index order.

        ``max_tokens`` is clipped to what the context leaves; a prompt that no longer fits
        (the server's 400 "maximum context length") ends the branch: ``ended_choices``.
        """
        if n < 1:
            raise InputError(f"n must be at least 1, got {n}")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {max_tokens}")
        await self._learn_context()
        clipped = self._window.clip(prompt, max_tokens)
        sampling: dict[str, Any] = {
            "stop": stop,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "logprobs": logprobs,
        }
        try:
            return await self._complete(prompt, n=n, max_tokens=clipped, **sampling)
        except _ContextExceeded as exc:
            retry = self._window.clip(prompt, max_tokens)  # the 400 may have told the context
            if retry < clipped:
                try:
                    return await self._complete(prompt, n=n, max_tokens=retry, **sampling)
                except _ContextExceeded:
                    pass
            log.info("policy %r: the prompt no longer fits the context (%s)", self.name, exc)
            return ended_choices(n)

    async def _complete(
        self,
        prompt: str,
        *,
        n: int,
        stop: list[str] | None,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        logprobs: int | None,
    ) -> CompletionResult:
        """One ``complete`` at a fixed ``max_tokens`` (raises _ContextExceeded)."""
        params: dict[str, Any] = {
            "model": self.spec.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        stops = merge_stops(stop, self.spec.stop)
        if stops:
            params["stop"] = stops
        if logprobs is not None:
            params["logprobs"] = logprobs

        if n > 1 and self._n_supported:
            try:
                timed = await self._pool.call(lambda: self._attempt(params, n, seed, strict_n=True))
            except _NRejected:
                log.info(
                    "policy %r rejected n=%d with HTTP 400; sending %d requests", self.name, n, n
                )
            else:
                return self._result(prompt, [timed.value], timed.seconds)
            result = await self._fan_out(prompt, params, n, seed)
            # Remembered only once single requests work: the 400 was about n, not the prompt.
            self._n_supported = False
            return result
        return await self._fan_out(prompt, params, n, seed)

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
        per prompt), after a server rejected a list, or in a subclass that intercepts
        ``complete``, it is one ``complete`` call per prompt, all in flight together.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise InputError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        if n < 1:
            raise InputError(f"n must be at least 1, got {n}")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {max_tokens}")
        await self._learn_context()
        sampling: dict[str, Any] = {
            "n": n,
            "stop": stop,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "logprobs": logprobs,
        }
        seeded = seeds is not None and any(s is not None for s in seeds)
        intercepted = type(self).complete is not PolicyClient.complete
        if (
            len(prompts) < 2
            or seeded
            or intercepted
            or not self._lists_supported
            or (n > 1 and not self._n_supported)
        ):
            return await self._each(prompts, seeds, sampling)
        params: dict[str, Any] = {
            "model": self.spec.model,
            "prompt": list(prompts),
            "max_tokens": min(self._window.clip(prompt, max_tokens) for prompt in prompts),
            "temperature": temperature,
            "top_p": top_p,
        }
        stops = merge_stops(stop, self.spec.stop)
        if stops:
            params["stop"] = stops
        if logprobs is not None:
            params["logprobs"] = logprobs
        count = len(prompts)
        try:
            timed = await self._pool.call(
                lambda: self._attempt(params, n, None, strict_n=True, prompts=count)
            )
        except _ContextExceeded:
            # some prompt no longer fits: one request each, so only its branch ends
            return await self._each(prompts, seeds, sampling)
        except _NRejected:
            log.info("policy %r rejected a list of prompts with HTTP 400", self.name)
        else:
            return self._result("".join(prompts), [timed.value], timed.seconds)
        result = await self._each(prompts, seeds, sampling)
        # Remembered only once single-prompt requests work: the 400 was about the list.
        self._lists_supported = False
        return result

    async def _each(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int | None] | None,
        sampling: dict[str, Any],
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

    async def _fan_out(
        self, prompt: str, params: dict[str, Any], n: int, seed: int | None
    ) -> CompletionResult:
        """``n`` concurrent single-choice requests (seed + i for request i)."""

        async def one(i: int) -> tuple[ParsedCompletion, float]:
            request_seed = None if seed is None else seed + i
            timed = await self._pool.call(lambda: self._attempt(params, 1, request_seed))
            return timed.value, timed.seconds

        outcomes = await gather_all([one(i) for i in range(n)])
        return self._result(
            prompt, [reply for reply, _ in outcomes], sum(seconds for _, seconds in outcomes)
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

        ``prompts`` > 1: ``params["prompt"]`` is a list and ``n * prompts`` choices come back.
        """
        payload: dict[str, Any] = {**params, "n": n}
        if seed is not None:
            payload["seed"] = seed
        try:
            raw = await self._post("/completions", payload)
        except openai.BadRequestError as exc:
            message = str(exc)
            if is_context_error(message):
                self._window.learn(context_from_error(message))
                raise _ContextExceeded(message) from exc
            if strict_n:
                raise _NRejected(message) from exc
            raise
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise MalformedResponse("body is not valid JSON", retryable=True) from exc
        return parse_completion(body, n * prompts)

    async def _post(self, path: str, payload: dict[str, Any] | None) -> bytes:
        """POST a JSON body to ``path`` under the base URL; the raw response body.
        ``payload=None`` is a GET instead (only ``/models``, for the context length).

        Every HTTP request of a policy goes through here, so the HTTP stack is swapped in
        one place. It uses the SDK's generic POST: its typed ``completions.create`` re-walks
        every parameter against the type annotations on each call, a large share of the
        client's CPU per request (see bench/efficiency.py); the body here is plain JSON
        already. Errors come back as the SDK's typed exceptions (``pool.classify``).
        """
        if payload is None:
            got: bytes = await self._client.get(path, cast_to=bytes)
            return got
        raw: bytes = await self._client.post(path, cast_to=bytes, body=payload)
        return raw

    def _result(
        self, prompt: str, replies: list[ParsedCompletion], seconds: float
    ) -> CompletionResult:
        choices = [choice for reply in replies for choice in reply.choices]
        prompt_tokens = 0
        completion_tokens = 0
        cached_tokens = 0
        estimated = False
        for reply in replies:
            if reply.prompt_tokens is None or reply.completion_tokens is None:
                estimated = True
                prompt_tokens += _estimate_tokens(prompt)
                completion_tokens += sum(_estimate_tokens(c.text) for c in reply.choices)
            else:
                prompt_tokens += reply.prompt_tokens
                completion_tokens += reply.completion_tokens
                cached_tokens += reply.cached_tokens
                self._window.observe(len(prompt), reply.prompt_tokens)
        if estimated:
            log.debug("policy %r: server omitted usage; token counts estimated", self.name)
        spec = self.spec
        usage = Usage(
            policy_prompt_tokens=prompt_tokens,
            policy_completion_tokens=completion_tokens,
            policy_cached_tokens=cached_tokens,
            policy_requests=len(replies),
            # prefix-cached prompt tokens cost no prefill compute
            flops=2.0 * spec.params * (prompt_tokens - cached_tokens + completion_tokens),
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

    async def __aenter__(self) -> PolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
