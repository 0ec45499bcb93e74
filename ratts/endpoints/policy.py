"""The Policy protocol, and PolicyClient: step-wise and whole-solution sampling over
OpenAI-compatible completions or chat.

Strategies depend only on the public shape here (Choice, CompletionResult, Policy) and
build prompts as ``policy.prompt(question) + steps``. Requests go through ``JsonHttp`` (the
one lean HTTP stack, one session per replica); ``EndpointPool`` admits sequences, does
bounded retries with backoff and maps failures to ``ratts.errors`` types. Response bodies are
parsed in ``ratts.endpoints.responses``, which reads each server dialect's step-end signal.

Over chat, prompts become messages in ``ratts.endpoints.chat``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, Unpack, runtime_checkable

from ratts.endpoints.admission import Grant, Lease
from ratts.endpoints.chat import CHAT_SPLIT, chat_body, chat_prompt
from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.context import (
    PRIOR_CHARS_PER_TOKEN,
    ContextWindow,
    context_from_error,
    context_from_models,
    is_context_error,
)
from ratts.endpoints.http import HttpStatusError, JsonHttp
from ratts.endpoints.pool import EndpointPool, RetryPolicy, Timed, gather_all, read_json
from ratts.endpoints.responses import Choice, ParsedCompletion, StopReading, parse_completion
from ratts.endpoints.streamed import StreamedCompletion
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


@dataclass(slots=True)
class _Piece:
    """One admitted request: ``k`` choices of each prompt in ``members`` (their indexes in
    the caller's prompt list), and its parsed reply."""

    members: list[int]
    k: int
    timed: Timed[ParsedCompletion]


class _ContextExceeded(Exception):
    """The server answered 400: the prompt (or prompt + max_tokens) exceeds its context."""


def ended_choices(n: int) -> CompletionResult:
    """The answer to a prompt that no longer fits the context: the branch ends where it
    stands (``finish_reason="length"`` with no text), nothing was generated or spent."""
    return CompletionResult(choices=[Choice("", "length")] * n, usage=Usage())


def _estimate_tokens(text: str) -> int:
    """Rough tokens for servers that omit ``usage``."""
    return -(-len(text) // PRIOR_CHARS_PER_TOKEN)


def _per_prompt(
    pieces: Sequence[tuple[list[int], int]], replies: Sequence[ParsedCompletion], prompts: int
) -> list[list[Choice]]:
    """Each prompt's choices from the requests of a split one: piece ``(members, k)`` asked
    ``k`` choices of each prompt in ``members``, and its choice ``index`` is member
    ``index // k``'s (a list request numbers them ``prompt * n + j``; a reply without
    indices counts by position). Pieces are in offset order; a short reply leaves its
    prompts short."""
    per_prompt: list[list[Choice]] = [[] for _ in range(prompts)]
    for (members, k), reply in zip(pieces, replies, strict=True):
        indices = reply.indices or range(len(reply.choices))
        taken = [0] * len(members)
        for index, choice in zip(indices, reply.choices, strict=True):
            member = index // k
            if 0 <= member < len(members) and taken[member] < k:
                taken[member] += 1
                per_prompt[members[member]].append(choice)
    return per_prompt


def _prompt_major(
    pieces: Sequence[tuple[list[int], int]], replies: Sequence[ParsedCompletion], prompts: int
) -> list[Choice]:
    """The choices of a split request, prompt-major (see ``_per_prompt``)."""
    return [choice for got in _per_prompt(pieces, replies, prompts) for choice in got]


def merge_stops(*groups: list[str] | tuple[str, ...] | None) -> list[str]:
    """Concatenate stop lists, dropping empties and duplicates, keeping first order."""
    seen: dict[str, None] = {}
    for group in groups:
        for stop in group or ():
            if stop:
                seen.setdefault(stop, None)
    return list(seen)


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

    async def room(self, prompt: str) -> int | None:
        """Tokens the context leaves after ``prompt``, estimated (None: context unknown)."""
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
    - sequence-level admission per endpoint (``spec.max_concurrency`` counts sequences in
      flight on each replica: ``n=8`` holds 8 slots, a list of prompts holds prompts x n).
      When only k < N slots are free an unseeded request goes out now as ``n=k`` and the
      rest follow as slots free (FIFO, work-conserving). A seeded request is never split by
      timing: it is cut only at fixed offsets (``max_n``, or the whole limit), the part from
      choice ``o`` on sent with ``seed + o`` (vLLM's own rule for the choices of one seeded
      request, so the samples match an unsplit one there);
    - ``spec.stream`` (completions only): a request of several sequences is streamed and
      each sequence's slot frees as its choice finishes;
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
        self._pool = EndpointPool.for_spec(spec, role=role, retry=retry)
        self._chat = spec.api == "chat"
        self._n_supported = spec.supports_n
        self._lists_supported = not self._chat  # the chat API takes one conversation
        self._window = ContextWindow(spec.context_tokens)
        self._context_asked = spec.context_tokens is not None
        self._context_lock = asyncio.Lock()  # concurrent first calls wait for one /models
        self._readings: dict[tuple[str, ...], StopReading] = {}

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
    def sequences_in_flight(self) -> int:
        """Sequences holding a slot now, over all replicas (benches sample it to tell a
        client that leaves slots idle from a server that is slow to fill them)."""
        return self._pool.slots.in_flight

    @property
    def can_continue(self) -> bool:
        """Whether this policy can continue a partial solution (see PolicySpec)."""
        return self.spec.can_continue

    def prompt(self, question: str) -> str:
        """The prefix-stable prompt for a question (steps are appended after it)."""
        if self._chat:
            return chat_prompt(self.spec, question)
        return self.spec.prompt_template.format(question=question)

    @property
    def context_tokens(self) -> int | None:
        """The policy's context length, once known (settings, /v1/models or a 400)."""
        return self._window.tokens

    async def room(self, prompt: str) -> int | None:
        """Tokens the context leaves after ``prompt``, estimated (None: context unknown)."""
        await self._learn_context()
        return self._window.room(prompt)

    async def _learn_context(self) -> None:
        """Ask ``/v1/models`` once for the served model's ``max_model_len`` (vLLM reports
        it; hosted APIs mostly do not, and then the context stays unknown)."""
        if self._context_asked:
            return
        async with self._context_lock:
            if not self._context_asked:
                await self._ask_models()
                self._context_asked = True

    async def _ask_models(self) -> None:
        try:
            # straight to the first replica, outside the pool: optional knowledge must
            # neither spend retries nor count as "the endpoint answered" for outages
            http = self._pool.replicas[0].http
            body = read_json(await http.request("/models"))
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
        params = self._body(prompt, n, stop, max_tokens, temperature, top_p, logprobs)
        if not self._context_asked:
            await self._learn_context()
        clipped = params["max_tokens"] = self._window.clip(prompt, max_tokens)
        try:
            return await self._complete(prompt, params, n, seed)
        except _ContextExceeded as exc:
            retry = self._window.clip(prompt, max_tokens)  # the 400 may have told the context
            if retry < clipped:
                try:
                    return await self._complete(prompt, {**params, "max_tokens": retry}, n, seed)
                except _ContextExceeded:
                    pass
            log.info("policy %r: the prompt no longer fits the context (%s)", self.name, exc)
            return ended_choices(n)

    async def _complete(
        self, prompt: str, params: dict[str, Any], n: int, seed: int | None
    ) -> CompletionResult:
        """One ``complete`` at a fixed ``max_tokens``, topping up short replies (raises
        _ContextExceeded)."""
        replies: list[ParsedCompletion] = []
        seconds = 0.0
        offset = 0  # seed offset of the next request, so no two requests share a seed
        missing = n
        for round_ in range(TOP_UP_ROUNDS + 1):
            if round_:
                log.info("policy %r returned %d choices too few; asking again", self.name, missing)
            asked = missing
            for timed in await self._round(params, asked, seed, offset):
                replies.append(timed.value)
                seconds += timed.seconds
                missing -= len(timed.value.choices)
            offset += asked
            if missing <= 0:
                break
        else:
            raise BadResponseError(
                f"policy {self.name!r} returned {n - missing} of {n} choices after "
                f"{TOP_UP_ROUNDS} top-up requests"
            )
        return self._result(prompt, replies, seconds)

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
    ) -> list[Timed[ParsedCompletion]]:
        """``n`` choices in requests of at most ``max_n`` choices and the slots admitted (or
        one each without ``n``); seeds continue from ``offset``."""
        if n > 1 and self._n_supported:
            try:
                pieces = await self._admitted(params, None, n, seed, offset)
                return [piece.timed for piece in pieces]
            except _NRejected:
                per = min(n, self.spec.max_n or n)
                log.info(
                    "policy %r rejected n=%d with HTTP 400; sending %d requests", self.name, per, n
                )
            result = await self._fan_out(params, n, seed, offset)
            # Remembered only once single requests work: the 400 was about n, not the prompt.
            self._n_supported = False
            return result
        return await self._fan_out(params, n, seed, offset)

    async def _fan_out(
        self, params: dict[str, Any], n: int, seed: int | None, offset: int
    ) -> list[Timed[ParsedCompletion]]:
        """``n`` concurrent single-choice requests (``seed + offset + i`` for request i)."""
        return await gather_all(
            [
                self._pool.call(
                    functools.partial(self._attempt, params, 1, None if seed is None else seed + i)
                )
                for i in range(offset, offset + n)
            ]
        )

    async def _admitted(
        self,
        params: dict[str, Any],
        prompts: list[str] | None,
        n: int,
        seed: int | None,
        offset: int,
    ) -> list[_Piece]:
        """``n`` choices of each prompt in as few requests as ``max_n`` and the free slots
        allow. ``prompts``: a list of prompts, or None for the one in ``params`` (text or
        messages). Raises _NRejected if the server answered 400 to ``n`` > 1 or to a list
        of prompts."""
        per = self.spec.max_n or n
        if seed is not None:
            # Seeded (one prompt): timing never changes the request; it is cut only at
            # fixed offsets (max_n, or the whole limit), part o with seed + offset + o.
            cap = min(self._pool.slots.capacity, per)
            if n <= cap:  # one request, awaited in place
                return [_Piece([0], n, await self._part(params, n, seed + offset))]
            parts = [(o, min(cap, n - o)) for o in range(0, n, cap)]
            timed = await gather_all([self._part(params, k, seed + offset + o) for o, k in parts])
            return [_Piece([0], k, t) for (_, k), t in zip(parts, timed, strict=True)]
        texts = prompts
        count = 1 if texts is None else len(texts)
        remaining = [n] * count  # choices still to request, per prompt
        pieces: list[tuple[list[int], int]] = []  # (prompt indexes, n) of each request
        tasks: list[asyncio.Future[Timed[ParsedCompletion]]] = []
        head = 0
        try:
            while head < count:
                grant = await self._pool.admit(sum(remaining[head:]))
                free = grant.count
                while free > 0 and head < count:
                    k = min(remaining[head], free, per)
                    members = [head]
                    if k == remaining[head]:  # whole prompts with the same count, as many as fit
                        while (
                            head + len(members) < count
                            and remaining[head + len(members)] == k
                            and (len(members) + 1) * k <= free
                        ):
                            members.append(head + len(members))
                    body = params
                    if texts is not None:
                        body = {
                            **params,
                            "prompt": texts[head]
                            if len(members) == 1
                            else [texts[i] for i in members],
                        }
                    used = k * len(members)
                    lease = Lease()
                    tasks.append(
                        self._pool.spawn(
                            functools.partial(
                                self._attempt,
                                body,
                                k,
                                None,
                                strict_n=used > 1,
                                prompts=len(members),
                                lease=lease,
                            ),
                            Grant(used, grant.replica),
                            lease,
                        )
                    )
                    pieces.append((members, k))
                    free -= used
                    for i in members:
                        remaining[i] -= k
                    while head < count and remaining[head] == 0:
                        head += 1
                if free > 0:
                    self._pool.release(grant, free)
            timed = await gather_all(tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [_Piece(m, k, t) for (m, k), t in zip(pieces, timed, strict=True)]

    def _part(
        self, params: dict[str, Any], k: int, seed: int
    ) -> Coroutine[Any, Any, Timed[ParsedCompletion]]:
        """The pool call for one seeded part of a request: ``k`` choices from ``seed``."""
        lease = Lease()
        attempt = functools.partial(self._attempt, params, k, seed, strict_n=k > 1, lease=lease)
        return self._pool.call(attempt, seqs=k, lease=lease)

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
        so a search step costs one HTTP round trip instead of one per beam (or a few, when
        only part of its prompts x n sequences fit the free slots). With seeds (one per
        prompt), over chat, after a server rejected a list, or past ``max_n``, it is one
        ``complete`` call per prompt, all in flight together. A prompt the server left short
        is topped up on its own.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise InputError(f"got {len(seeds)} seeds for {len(prompts)} prompts", param="seeds")
        await self._learn_context()
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
        params["max_tokens"] = min(self._window.clip(prompt, max_tokens) for prompt in prompts)
        try:
            pieces = await self._admitted(params, list(prompts), n, None, 0)
        except _ContextExceeded:
            # some prompt no longer fits: one request each, so only its branch ends
            return await self._each(prompts, seeds, sampling)
        except _NRejected:
            log.info("policy %r rejected a list of prompts with HTTP 400", self.name)
        else:
            return await self._top_up_lists(prompts, n, pieces, sampling)
        result = await self._each(prompts, seeds, sampling)
        # Remembered only once single-prompt requests work: the 400 was about the list.
        self._lists_supported = False
        return result

    async def _top_up_lists(
        self,
        prompts: Sequence[str],
        n: int,
        pieces: list[_Piece],
        sampling: SamplingOptions,
    ) -> CompletionResult:
        """The admitted requests' choices prompt-major, and those a server left out filled
        in, per prompt."""
        replies = [piece.timed.value for piece in pieces]
        seconds = sum(piece.timed.seconds for piece in pieces)
        listed = self._result("".join(prompts), replies, seconds)
        per_prompt = _per_prompt([(p.members, p.k) for p in pieces], replies, len(prompts))
        short = [i for i, got in enumerate(per_prompt) if len(got) < n]
        listed.choices = [c for got in per_prompt for c in got]
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
        http: JsonHttp,
        *,
        strict_n: bool = False,
        prompts: int = 1,
        lease: Lease | None = None,
    ) -> ParsedCompletion:
        """One HTTP request on a replica's session and its parse (run inside the pool's
        retry loop).

        ``prompts`` > 1: ``params["prompt"]`` is a list and ``n * prompts`` choices come back
        (or fewer: the caller tops up). With ``spec.stream`` (completions only) and several
        sequences, the response is streamed and each sequence's slot in ``lease`` is freed
        as its choice finishes.
        """
        payload: dict[str, Any] = {**params, "n": n}
        if seed is not None:
            payload["seed"] = seed
        path = "/chat/completions" if self._chat else "/completions"
        stream = (
            StreamedCompletion(lease.release_one)
            if self.spec.stream and not self._chat and lease is not None and n * prompts > 1
            else None
        )
        body: object
        try:
            if stream is not None:
                payload["stream"] = True
                payload["stream_options"] = {"include_usage": True}
                await http.post_stream(path, payload, stream.feed)
                body = stream.body()
            else:
                raw = await http.request(path, payload)
        except HttpStatusError as exc:
            if exc.status == 400:
                message = exc.body.decode("utf-8", "replace")
                if is_context_error(message):
                    self._window.learn(context_from_error(message))
                    raise _ContextExceeded(message) from exc
                if strict_n:
                    raise _NRejected(str(exc)) from exc
            raise
        if stream is None:
            body = read_json(raw)
        return parse_completion(
            body, n * prompts, self._reading(params.get("stop")), chat=self._chat, short_ok=True
        )

    def _reading(self, stops: list[str] | None) -> StopReading:
        """What the parser needs for a request with these stop strings (kept per stop list:
        a client asks with a few lists, thousands of times)."""
        key = tuple(stops or ())
        reading = self._readings.get(key)
        if reading is None:
            if len(self._readings) >= 64:  # a caller with ever-new stop lists
                self._readings.clear()
            reading = self._readings[key] = StopReading(self.spec.dialect, key)
        return reading

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
        await self._pool.aclose()
