"""Replicas of one endpoint, each behind its own circuit breaker.

Why a breaker: a replica that keeps failing (connection refused, 5xx, timeouts) would
otherwise take its share of every request and make each of them burn a retry there. After
``threshold`` consecutive failures it is taken out of rotation for a cool-down; then one
request goes to it as a half-open probe: an answer closes the breaker, another failure
opens it again for twice as long (up to ``MAX_COOLDOWN_FACTOR`` times the first).
An answer of any kind (2xx, 4xx, 429, a malformed body) proves the replica is up; only
failures that say it is down count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from ratts.endpoints.http import JsonHttp

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
