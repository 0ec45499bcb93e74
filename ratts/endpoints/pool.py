"""One endpoint's replicas and concurrency limit, bounded retries with backoff, outages
that pause instead of fail, and error mapping.

Shared by the policy and PRM clients so every model call fails the same way: transient
faults (429, 5xx, timeouts, connection errors, unparseable bodies) are retried a bounded
number of times with exponential backoff and jitter; anything else fails at once. The final
failure becomes one of the ``ratts.errors`` types with a one-line message.

The transport's failures arrive as ``ratts.endpoints.http`` exceptions (status, timeout,
unreachable) whatever the HTTP library underneath.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ratts.endpoints.admission import Grant, Lease
from ratts.endpoints.http import HttpStatusError, HttpTimeout, HttpUnreachable, JsonHttp
from ratts.endpoints.replicas import OutageExpired, Outcome, Replica, ReplicaSet
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


def read_json(raw: bytes) -> object:
    """A 2xx body as JSON; one that is not (cut short, garbled) is a retryable
    MalformedResponse. JSON over HTTP is UTF-8 (RFC 8259), so the bytes are decoded as
    that, without ``json.loads``'s guess at other encodings."""
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        raise MalformedResponse("body is not valid JSON", retryable=True) from exc


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


@dataclass(slots=True)  # not frozen: one per request, and frozen init costs twice as much
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
    """Map an exception from the HTTP stack or a parser to a Failure; None for unknown ones."""
    if isinstance(exc, MalformedResponse):
        return Failure("bad_response", _one_line(exc.detail), exc.retryable)
    if isinstance(exc, HttpTimeout):
        return Failure("timeout", "request timed out", True)
    if isinstance(exc, HttpStatusError):
        retry_after = parse_retry_after(exc.retry_after)
        detail = _status_detail(exc.status, exc.parsed_body(), exc.reason or f"HTTP {exc.status}")
        return _status_failure(exc.status, detail, retry_after)
    if isinstance(exc, HttpUnreachable):
        # Connect errors, dropped connections and truncated bodies: the endpoint is flaky
        # or gone; all are worth another try.
        return Failure("unreachable", _one_line(exc) or "connection error", True)
    return None


# Failures that say a replica is down (they count for its breaker); the rest are answers.
DOWN_KINDS: frozenset[FailureKind] = frozenset({"unreachable", "timeout", "server"})


class EndpointPool:
    """An endpoint's replicas: per-replica sequence slots and breakers, and the retry loop
    around each HTTP call.

    ``max_concurrency`` counts sequences in flight on each replica (``ReplicaSlots``): an
    attempt holds ``seqs`` slots while its request is in flight, never during backoff
    sleeps. Requests go to the replica with the fewest sequences outstanding; a retry avoids
    the replica it just failed on.

    Outages: once the endpoint has answered at all, a failure that comes while every
    replica's breaker is open does not use up a retry; the request waits for a half-open
    probe instead, for up to ``outage_grace_s`` from the start of the outage, and then
    fails. An endpoint that never answered (a wrong URL or port) keeps bounded retries and
    fails fast.
    """

    def __init__(
        self,
        *,
        role: str,
        name: str,
        urls: Sequence[str],
        api_key: str | None,
        max_concurrency: int,
        max_retries: int,
        timeout_s: float,
        retry: RetryPolicy | None = None,
        outage_grace_s: float = 60.0,
        breaker_threshold: int = 3,
        breaker_cooldown_s: float = 1.0,
        shown_path: str = "",
    ) -> None:
        """``role`` ("policy", "PRM") and ``name`` say whose endpoint it is, in messages
        and in the errors' fields; ``shown_path`` is appended to a replica's URL there."""
        self.role = role
        self.name = name
        self.who = f"{role} {name!r}"
        self.shown_path = shown_path
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.outage_grace_s = outage_grace_s
        self.set = ReplicaSet(
            urls,
            who=self.who,
            shown_path=shown_path,
            api_key=api_key,
            max_concurrency=max_concurrency,
            timeout_s=timeout_s,
            # At most the retries of one request: a lone request that runs out of them on
            # a dead replica opens its breaker, and so waits out an outage.
            breaker_threshold=min(breaker_threshold, max_retries + 1),
            breaker_cooldown_s=breaker_cooldown_s,
            outage_grace_s=outage_grace_s,
        )
        self.replicas = self.set.replicas
        self.slots = self.set.slots
        self.url = self.replicas[0].url + shown_path
        self._last_down: tuple[Replica, Failure] | None = None

    @classmethod
    def for_spec(
        cls,
        spec: PolicySpec | PRMSpec,
        *,
        role: str,
        retry: RetryPolicy | None = None,
        urls: Sequence[str] | None = None,
        shown_path: str = "",
    ) -> EndpointPool:
        """The pool for a settings record: its replicas (``urls`` if the client maps them,
        else ``spec.urls``), limits, retries, breaker and outage knobs; reads the API key."""
        key = spec.api_key()
        return cls(
            role=role,
            name=spec.name,
            urls=spec.urls if urls is None else urls,
            api_key=None if key == "EMPTY" else key,
            max_concurrency=spec.max_concurrency,
            max_retries=spec.max_retries,
            timeout_s=spec.timeout_s,
            retry=retry,
            outage_grace_s=spec.outage_grace_s,
            breaker_threshold=spec.breaker_threshold,
            breaker_cooldown_s=spec.breaker_cooldown_s,
            shown_path=shown_path,
        )

    def _outage_error(self, attempts: int) -> EndpointError:
        if self._last_down is not None:
            replica, failure = self._last_down
        else:
            replica, failure = self.replicas[0], Failure("unreachable", "no replica up", True)
        return self.error(
            failure,
            attempts,
            replica=replica,
            note=f"every replica down for {self.set.down_for():.0f}s "
            f"(outage_grace_s={self.outage_grace_s:g})",
        )

    # ------------------------------------------------------------------ admission, calls

    async def admit(self, want: int) -> Grant:
        """Up to ``want`` slots on one replica as soon as any are free (FIFO); send that
        many sequences. Raises EndpointError when an outage outlasts ``outage_grace_s``."""
        try:
            replica, count = await self.set.take(want, exact=False, avoid=None)
        except OutageExpired:
            raise self._outage_error(0) from None
        return Grant(count, replica)

    def release(self, grant: Grant, count: int) -> None:
        """Give back ``count`` of ``grant``'s slots that will not be sent."""
        self.slots.give(grant.replica, count)

    def spawn(
        self,
        attempt_fn: Callable[[JsonHttp], Awaitable[T]],
        grant: Grant,
        lease: Lease | None = None,
    ) -> asyncio.Future[Timed[T]]:
        """``call`` in a task whose first attempt uses ``grant``'s slots (freed even if the
        task is cancelled before it starts)."""
        task = asyncio.ensure_future(
            self.call(attempt_fn, seqs=grant.count, grant=grant, lease=lease)
        )

        def give_back(_: asyncio.Future[Timed[T]]) -> None:
            if not grant.used:
                grant.used = True
                self.slots.give(grant.replica, grant.count)

        task.add_done_callback(give_back)
        return task

    async def call(
        self,
        attempt_fn: Callable[[JsonHttp], Awaitable[T]],
        *,
        seqs: int = 1,
        grant: Grant | None = None,
        lease: Lease | None = None,
    ) -> Timed[T]:
        """Run ``attempt_fn`` on a replica's HTTP session holding ``seqs`` slots, retrying
        transient failures; raise EndpointError. A ``grant`` (from ``admit``) holds the
        first attempt's slots; a ``lease`` lets the attempt free slots early
        (``Lease.release_one``)."""
        index: int | None = None
        if grant is not None:
            grant.used = True
            index = grant.replica
        lease = lease if lease is not None else Lease()
        lease.slots = self.slots
        seconds = 0.0
        attempt = 0  # failures that used up a retry
        tries = 0
        avoid: int | None = None
        while True:
            if index is None:
                got = self.set.take_now(seqs, exact=True, avoid=avoid)
                try:
                    index, _ = got or await self.set.take(seqs, exact=True, avoid=avoid)
                except OutageExpired:
                    raise self._outage_error(tries) from None
            replica = self.replicas[index]
            lease.replica, lease.held = index, seqs
            tries += 1
            start = time.perf_counter()
            settled = False  # its outcome reached the breaker (else: cancelled, unknown error)
            try:
                value = await attempt_fn(replica.http)
            except Exception as exc:
                seconds += time.perf_counter() - start
                failure = classify(exc)
                if failure is None:
                    raise
                outcome: Outcome = "down" if failure.kind in DOWN_KINDS else "up"
                if outcome == "down":
                    self._last_down = (replica, failure)
                self.set.record(replica, outcome, failure.detail)
                settled = True
                paused = outcome == "down" and self.set.in_outage
                if not failure.retryable or (not paused and attempt >= self.max_retries):
                    raise self.error(failure, tries, replica=replica) from exc
                if paused:  # the breaker's cool-down is the backoff
                    wait = min(failure.retry_after or 0.0, self.retry.max_retry_after)
                else:
                    wait = self.retry.delay(attempt, failure.retry_after)
                    attempt += 1
                log.debug(
                    "%s at %s: attempt %d failed (%s: %s); %s in %.2fs",
                    self.who,
                    replica.url + self.shown_path,
                    tries,
                    failure.kind,
                    failure.detail,
                    "paused for the outage, probing" if paused else "retrying",
                    wait,
                )
            else:
                seconds += time.perf_counter() - start
                self.set.record(replica, "up")
                settled = True
                return Timed(value, seconds, tries)
            finally:
                if not settled:
                    replica.breaker.record("cancelled")
                self.slots.give(index, lease.held)
                lease.held = 0
            avoid, index = index, None
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.set.aclose()

    def error(
        self, failure: Failure, attempts: int, *, replica: Replica | None = None, note: str = ""
    ) -> EndpointError:
        """The typed, one-line error for a final failure, carrying whose endpoint it is."""
        said = [f"after {attempts} attempts"] if attempts > 1 else []
        said += [note] if note else []
        tries = f" ({'; '.join(said)})" if said else ""
        url = (replica or self.replicas[0]).url + self.shown_path
        where = f"{self.who} at {url}"
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
        error = kind(
            message + tries,
            endpoint=self.name,
            role=self.role,
            url=url,
            status=failure.status,
        )
        error.answered_before = self.set.answered
        return error


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await all concurrently, in order; on the first failure cancel the rest and raise it.

    Unlike ``asyncio.gather`` no task is left running behind a raised error, and unlike a
    TaskGroup the caller gets the first exception itself, not an ExceptionGroup. A single
    awaitable is awaited in place: the same result, error and cancellation, without the
    task and the wait that most requests (one part, one prompt) would otherwise pay for.
    """
    if len(awaitables) == 1:
        return [await awaitables[0]]
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
