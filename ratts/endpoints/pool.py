"""One endpoint's concurrency limit, bounded retries with backoff, and error mapping.

Shared by the policy and PRM clients so every model call fails the same way: transient
faults (429, 5xx, timeouts, connection errors, unparseable bodies) are retried a bounded
number of times with exponential backoff and jitter; anything else fails at once. The final
failure becomes one of the ``ratts.errors`` types with a one-line message.

Both the openai SDK's exceptions (it uses ``httpx2`` inside) and plain ``httpx`` exceptions
(the pooling PRM) are understood.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import httpx
import openai

from ratts.errors import (
    BadResponseError,
    EndpointError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
)
from ratts.settings import PolicySpec, PRMSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

FailureKind = Literal["unreachable", "timeout", "rate_limited", "server", "bad_response", "client"]


class MalformedResponse(Exception):
    """Raised by a response parser: the server answered, but not in the expected shape.

    ``retryable`` is True for bodies that could not be read at all (truncated or invalid
    JSON: a flaky proxy or server), False for well-formed bodies with the wrong content.
    """

    def __init__(self, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff knobs. Delay before retry k (0-based) is ``min(max_delay, base * 2**k)``
    scaled by a random factor in [0.5, 1], or the server's ``Retry-After`` if longer
    (capped at ``max_retry_after``)."""

    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2.0 ** min(attempt, 60))
        backoff *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_retry_after))
        return backoff


@dataclass(frozen=True, slots=True)
class Failure:
    """One classified failed attempt."""

    kind: FailureKind
    detail: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Timed(Generic[T]):
    """A successful call's value and the HTTP seconds spent on it (all attempts)."""

    value: T
    seconds: float
    attempts: int


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _status_detail(status: int, body: object, fallback: str) -> str:
    message: object = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message is None:
            message = body.get("detail") or body.get("message")
    return _one_line(message or fallback)


def _status_failure(status: int, detail: str, retry_after: float | None) -> Failure:
    if status == 429:
        return Failure("rate_limited", detail, True, status, retry_after)
    if status >= 500:
        return Failure("server", detail, True, status, retry_after)
    return Failure("client", detail, False, status)


def classify(exc: BaseException) -> Failure | None:
    """Map an exception from either HTTP stack to a Failure; None for unknown exceptions."""
    if isinstance(exc, MalformedResponse):
        return Failure("bad_response", _one_line(exc.detail), exc.retryable)
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", "request timed out", True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return Failure("unreachable", _one_line(cause) or "connection error", True)
    if isinstance(exc, openai.APIStatusError):
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        detail = _status_detail(exc.status_code, exc.body, exc.message)
        return _status_failure(exc.status_code, detail, retry_after)
    if isinstance(exc, openai.APIResponseValidationError):
        return Failure("bad_response", _one_line(exc.message), True)
    if isinstance(exc, httpx.TimeoutException):
        return Failure("timeout", "request timed out", True)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        try:
            body: object = response.json()
        except ValueError:
            body = response.text
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        detail = _status_detail(response.status_code, body, response.reason_phrase)
        return _status_failure(response.status_code, detail, retry_after)
    if isinstance(exc, httpx.TransportError):
        # Connect errors, dropped connections and protocol errors: the endpoint is flaky
        # or gone; all are worth another try.
        return Failure("unreachable", _one_line(exc) or type(exc).__name__, True)
    return None


class EndpointPool:
    """Per-endpoint concurrency slots plus the retry loop around each HTTP call.

    A slot is held only while a request is in flight, never during backoff sleeps.
    """

    def __init__(
        self,
        *,
        role: str,
        name: str,
        url: str,
        max_concurrency: int,
        max_retries: int,
        timeout_s: float,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``role`` ("policy", "PRM") and ``name`` say whose endpoint it is, in messages
        and in the errors' fields."""
        self.role = role
        self.name = name
        self.who = f"{role} {name!r}"
        self.url = url
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._slots = asyncio.Semaphore(max_concurrency)

    @classmethod
    def for_spec(
        cls,
        role: str,
        spec: PolicySpec | PRMSpec,
        url: str,
        retry: RetryPolicy | None = None,
    ) -> EndpointPool:
        """The pool for a configured endpoint: its name and limits come from its spec."""
        return cls(
            role=role,
            name=spec.name,
            url=url,
            max_concurrency=spec.max_concurrency,
            max_retries=spec.max_retries,
            timeout_s=spec.timeout_s,
            retry=retry,
        )

    async def call(self, attempt_fn: Callable[[], Awaitable[T]]) -> Timed[T]:
        """Run ``attempt_fn`` with a slot, retrying transient failures; raise EndpointError."""
        seconds = 0.0
        attempt = 0
        while True:
            async with self._slots:
                start = time.perf_counter()
                try:
                    value = await attempt_fn()
                except Exception as exc:
                    seconds += time.perf_counter() - start
                    failure = classify(exc)
                    if failure is None:
                        raise
                    if not failure.retryable or attempt >= self.max_retries:
                        raise self.error(failure, attempt + 1) from exc
                    wait = self.retry.delay(attempt, failure.retry_after)
                    log.debug(
                        "%s at %s: attempt %d failed (%s: %s); retrying in %.2fs",
                        self.who,
                        self.url,
                        attempt + 1,
                        failure.kind,
                        failure.detail,
                        wait,
                    )
                else:
                    seconds += time.perf_counter() - start
                    return Timed(value, seconds, attempt + 1)
            attempt += 1
            await asyncio.sleep(wait)

    def error(self, failure: Failure, attempts: int) -> EndpointError:
        """The typed, one-line error for a final failure, carrying whose endpoint it is."""
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        where = f"{self.who} at {self.url}"
        kind: type[EndpointError]
        if failure.kind == "unreachable":
            kind, message = EndpointUnreachableError, f"cannot reach {where}: {failure.detail}"
        elif failure.kind == "timeout":
            kind, message = (
                EndpointTimeoutError,
                f"{where} did not answer within {self.timeout_s:g}s",
            )
        elif failure.kind == "rate_limited":
            kind, message = RateLimitedError, f"{where} kept answering 429 rate limited"
        elif failure.kind == "server":
            kind = ServerError
            message = f"{where} failed with HTTP {failure.status}: {failure.detail}"
        elif failure.kind == "bad_response":
            kind, message = BadResponseError, f"{where} sent a malformed response: {failure.detail}"
        else:
            kind, tries = RequestRejectedError, ""
            message = f"{where} rejected the request with HTTP {failure.status}: {failure.detail}"
        return kind(
            message + tries,
            endpoint=self.name,
            role=self.role,
            url=self.url,
            status=failure.status,
        )


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await all concurrently, in order; on the first failure cancel the rest and raise it.

    Unlike ``asyncio.gather`` no task is left running behind a raised error, and unlike a
    TaskGroup the caller gets the first exception itself, not an ExceptionGroup.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error
        return [t.result() for t in tasks]
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
