"""Sequence slots: an endpoint's limit counts sequences in flight, not HTTP requests.

Why sequences: a server's batch (vLLM's ``max_num_seqs``, a hosted rate limit, a fair
comparison's cap) is spent per sequence, so a request with ``n=8`` holds 8 slots and a
list-prompt request holds prompts x n. Why partial grants: when k slots are free and a call
wants N > k, waiting for N leaves k slots idle through every straggler's tail; granting k
now (the caller sends ``n=k`` and asks again for the rest) keeps the server's batch full,
and the smaller requests of one prompt still share its prefill through the prefix cache.
Why FIFO: grants go to waiters in arrival order, so a large request is served as soon as
it reaches the head of the queue, never starved by a stream of small ones.

Replicas: one queue for all of an endpoint's replicas, each with its own limit; a grant
goes to the admitted replica with the fewest sequences outstanding (a request never spans
replicas). ``admits`` lets the owner (the circuit breaker) keep a replica out of rotation.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Waiter:
    want: int
    exact: bool
    avoid: int | None
    future: asyncio.Future[tuple[int, int]] = field(repr=False)


def _always(_: int) -> bool:
    return True


class ReplicaSlots:
    """A FIFO-fair counter of sequences in flight on each of several replicas, with partial
    (work-conserving) grants."""

    def __init__(
        self,
        capacity: int,
        replicas: int = 1,
        *,
        admits: Callable[[int], bool] = _always,
        on_grant: Callable[[int], None] | None = None,
    ) -> None:
        """``capacity`` is each replica's limit; ``admits(i)`` says whether replica ``i`` may
        take a request now, ``on_grant(i)`` hears of each grant (a half-open probe)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if replicas < 1:
            raise ValueError(f"need at least one replica, got {replicas}")
        self.capacity = capacity
        self.frees = [capacity] * replicas
        self._admits = admits
        self._on_grant = on_grant
        self._waiters: deque[_Waiter] = deque()
        self._turn = 0  # the replica that wins the next tie

    @property
    def free(self) -> int:
        return sum(self.frees)

    @property
    def in_flight(self) -> int:
        return self.capacity * len(self.frees) - self.free

    def _pick(self, need: int, avoid: int | None) -> int | None:
        """The admitted replica with the most free slots (>= ``need``), ``avoid`` last;
        ties go round-robin, so a light load still reaches every replica."""
        if len(self.frees) == 1:  # the common endpoint: no choice to make
            return 0 if self.frees[0] >= need and self._admits(0) else None
        ready = [i for i, free in enumerate(self.frees) if free >= need and self._admits(i)]
        preferred = [i for i in ready if i != avoid] or ready
        if not preferred:
            return None
        count = len(self.frees)
        best = max(preferred, key=lambda i: (self.frees[i], -((i - self._turn) % count)))
        self._turn = (best + 1) % count
        return best

    def _take(self, want: int, exact: bool, avoid: int | None) -> tuple[int, int] | None:
        replica = self._pick(want if exact else 1, avoid)
        if replica is None:
            return None
        granted = want if exact else min(want, self.frees[replica])
        self.frees[replica] -= granted
        if self._on_grant is not None:
            self._on_grant(replica)
        return replica, granted

    def take_now(
        self, want: int, *, exact: bool = False, avoid: int | None = None
    ) -> tuple[int, int] | None:
        """``take`` if it would not wait (nobody queued, the slots free); else None. The
        hot path's way in: most takes are granted at once, and need no coroutine."""
        if self._waiters:
            return None
        return self._take(max(1, min(want, self.capacity)), exact, avoid)

    async def take(
        self, want: int, *, exact: bool = False, avoid: int | None = None
    ) -> tuple[int, int]:
        """Take up to ``want`` slots (at most the capacity) on one replica: (replica, taken).

        ``exact``: wait until all of them are free on one replica (a retry of a request
        whose size is already fixed); otherwise take whatever is free, at least one, once
        first in line. ``avoid``: a replica to use only if no other can serve (the one a
        retry just failed on). A waiter fails with whatever ``fail_waiters`` is given.
        """
        got = self.take_now(want, exact=exact, avoid=avoid)
        if got is not None:
            return got
        want = max(1, min(want, self.capacity))
        waiter = _Waiter(want, exact, avoid, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.give(*waiter.future.result())  # granted just as we were cancelled
            else:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self.wake()
            raise

    def give(self, replica: int, count: int) -> None:
        """Give back ``count`` slots of ``replica`` and wake the waiters they satisfy."""
        self.frees[replica] = min(self.capacity, self.frees[replica] + count)
        self.wake()

    def wake(self) -> None:
        """Grant what can be granted, in order (also after a replica is admitted again)."""
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            got = self._take(head.want, head.exact, head.avoid)
            if got is None:
                return
            self._waiters.popleft()
            head.future.set_result(got)

    def fail_waiters(self, error: BaseException) -> None:
        """Fail every waiting ``take`` with ``error`` (an outage past its limit)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)


@dataclass(slots=True)
class Grant:
    """Slots taken by ``EndpointPool.admit`` on one replica, for a request not yet sent.

    ``used`` turns True as the request's first attempt starts holding them; a grant whose
    task was cancelled before that is given back by ``EndpointPool.spawn``'s callback.
    """

    count: int
    replica: int
    used: bool = False


@dataclass(slots=True)
class Lease:
    """The slots one attempt holds, for a caller that frees them one by one as sequences
    end (a streamed request); ``EndpointPool.call`` frees the rest when the attempt ends."""

    slots: ReplicaSlots | None = None
    replica: int = 0
    held: int = 0

    def release_one(self) -> None:
        if self.slots is not None and self.held > 0:
            self.held -= 1
            self.slots.give(self.replica, 1)


class SequenceSlots(ReplicaSlots):
    """One replica's slots: ``acquire``/``release`` without replica numbers."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, 1)

    async def acquire(self, want: int, *, exact: bool = False) -> int:
        """Take up to ``want`` slots; see ``ReplicaSlots.take``."""
        return (await self.take(want, exact=exact))[1]

    def release(self, count: int) -> None:
        self.give(0, count)
