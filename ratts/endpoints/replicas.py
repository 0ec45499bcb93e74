"""Replicas of one endpoint, each behind its own circuit breaker, and the outage clock.

Why a breaker: a replica that keeps failing (connection refused, 5xx, timeouts) would
otherwise take its share of every request and make each of them burn a retry there. After
``threshold`` consecutive failures it is taken out of rotation for a cool-down; then one
request goes to it as a half-open probe: an answer closes the breaker, another failure
opens it again for twice as long (up to ``MAX_COOLDOWN_FACTOR`` times the first).
An answer of any kind (2xx, 4xx, 429, a malformed body) proves the replica is up; only
failures that say it is down count.

Why an outage clock: when every replica of an endpoint that has answered before is out,
the requests that need it wait for a probe to bring one back, for up to ``outage_grace_s``
from the start of the outage, instead of failing at once (the pool's retry loop does not
spend retries on such failures). Before the endpoint has ever answered, the breakers only
steer (with all of them open requests still go out), so a wrong URL fails fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ratts.endpoints.admission import ReplicaSlots
from ratts.endpoints.http import JsonHttp

log = logging.getLogger(__name__)

MAX_COOLDOWN_FACTOR = 8.0

BreakerState = Literal["closed", "open", "half_open"]
Outcome = Literal["up", "down", "cancelled"]


@dataclass(slots=True)
class Breaker:
    """Closed -> open (after ``threshold`` consecutive downs) -> half-open (after the
    cool-down: one probe) -> closed on an answer, open again (longer) on a failure."""

    threshold: int
    cooldown_s: float
    state: BreakerState = "closed"
    failures: int = 0
    probing: bool = False
    opened: int = 0  # times this breaker has opened (for tests and logs)
    reopen_at: float = 0.0
    _cooldown: float = field(default=0.0, repr=False)

    def admits(self, now: float | None = None) -> bool:
        """Whether a request may go to this replica now (a half-open one takes one)."""
        if self.state == "open" and (time.monotonic() if now is None else now) >= self.reopen_at:
            self.state = "half_open"
        if self.state == "half_open":
            return not self.probing
        return self.state == "closed"

    def granted(self) -> None:
        """A request was sent here; in half-open it is the probe."""
        if self.state == "half_open":
            self.probing = True

    def record(self, outcome: Outcome) -> bool:
        """Note one attempt's outcome; True when this opened the breaker."""
        if outcome == "cancelled":
            self.probing = False
            return False
        if outcome == "up":
            self.state, self.failures, self.probing, self._cooldown = "closed", 0, False, 0.0
            return False
        if self.state == "open":
            return False  # a request sent before it opened
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            self._open()
            return True
        return False

    def _open(self) -> None:
        first = self._cooldown == 0.0
        limit = self.cooldown_s * MAX_COOLDOWN_FACTOR
        self._cooldown = self.cooldown_s if first else min(limit, self._cooldown * 2.0)
        self.state, self.probing = "open", False
        self.reopen_at = time.monotonic() + self._cooldown
        self.opened += 1


@dataclass(slots=True)
class Replica:
    """One server of an endpoint: its URL, HTTP session and breaker."""

    index: int
    url: str
    http: JsonHttp
    breaker: Breaker


class OutageExpired(Exception):
    """Every replica has been down for longer than the endpoint's ``outage_grace_s``."""


class ReplicaSet:
    """An endpoint's replicas: one admission queue (``ReplicaSlots``), a breaker each, and
    whether (and since when) all of them are out."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        who: str,
        shown_path: str,
        api_key: str | None,
        max_concurrency: int,
        timeout_s: float,
        breaker_threshold: int,
        breaker_cooldown_s: float,
        outage_grace_s: float,
    ) -> None:
        if not urls:
            raise ValueError(f"{who} has no base URL")
        self.who = who
        self.shown_path = shown_path
        self.outage_grace_s = outage_grace_s
        self.replicas = [
            Replica(
                i,
                url,
                JsonHttp(
                    url, api_key=api_key, timeout_s=timeout_s, max_connections=max_concurrency
                ),
                Breaker(breaker_threshold, breaker_cooldown_s),
            )
            for i, url in enumerate(urls)
        ]
        self.slots = ReplicaSlots(
            max_concurrency, len(self.replicas), admits=self._admits, on_grant=self._granted
        )
        self.answered = False  # any replica ever answered: outages pause from then on
        self.outage_since: float | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def _admits(self, index: int) -> bool:
        breaker = self.replicas[index].breaker
        if breaker.state == "closed":  # every request asks: no clock read for the usual case
            return True
        now = time.monotonic()
        if breaker.admits(now):
            return True
        return not self.answered and not any(r.breaker.admits(now) for r in self.replicas)

    def _granted(self, index: int) -> None:
        self.replicas[index].breaker.granted()

    @property
    def in_outage(self) -> bool:
        """True while an endpoint that has answered before has no replica in rotation."""
        return self.outage_since is not None

    def down_for(self) -> float:
        """Seconds the current outage has lasted (the limit if none is on)."""
        since = self.outage_since
        return time.monotonic() - since if since is not None else self.outage_grace_s

    def record(self, replica: Replica, outcome: Outcome, detail: str = "") -> None:
        """One attempt's outcome on ``replica``: its breaker, the outage clock, waiters."""
        breaker = replica.breaker
        if (
            outcome == "up"
            and self.answered
            and self.outage_since is None
            and breaker.state == "closed"
            and breaker.failures == 0
        ):
            return  # the usual answer changes nothing: no breaker to close, nobody to wake
        if outcome == "up":
            self.answered = True
            if self.outage_since is not None:
                log.info("%s is back after %.1fs", self.who, self.down_for())
                self.outage_since = None
        was_closed = replica.breaker.state == "closed"
        if replica.breaker.record(outcome):
            pause = replica.breaker.reopen_at - time.monotonic()
            log.log(
                logging.WARNING if was_closed else logging.DEBUG,  # once per outage, not per probe
                "%s at %s: out of rotation for %.1fs after %d failures (%s)",
                self.who,
                replica.url + self.shown_path,
                pause,
                replica.breaker.failures,
                detail,
            )
            self._later(pause, self.slots.wake)
            if (
                self.answered
                and self.outage_since is None
                and all(r.breaker.state != "closed" for r in self.replicas)
            ):
                self.outage_since = time.monotonic()
                self._later(self.outage_grace_s, self._outage_check)
        self.slots.wake()

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        self._timers.append(loop.call_later(max(0.0, delay), callback))

    def _over_limit(self) -> bool:
        return self.outage_since is not None and self.down_for() >= self.outage_grace_s

    def _outage_check(self) -> None:
        if self._over_limit():
            self.slots.fail_waiters(OutageExpired())

    def take_now(self, want: int, *, exact: bool, avoid: int | None) -> tuple[int, int] | None:
        """``ReplicaSlots.take_now`` (None also during an outage: ``take`` decides then)."""
        if self.outage_since is not None:
            return None
        return self.slots.take_now(want, exact=exact, avoid=avoid)

    async def take(self, want: int, *, exact: bool, avoid: int | None) -> tuple[int, int]:
        """``ReplicaSlots.take``; raises OutageExpired once an outage outlasts its limit
        (a request that arrives then fails at once unless a replica is due a probe)."""
        if self._over_limit() and not any(r.breaker.admits() for r in self.replicas):
            raise OutageExpired()
        return await self.slots.take(want, exact=exact, avoid=avoid)

    async def aclose(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for replica in self.replicas:
            await replica.http.aclose()
