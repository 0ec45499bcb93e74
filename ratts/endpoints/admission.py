"""Sequence slots: an endpoint's limit counts sequences in flight, not HTTP requests.

Why sequences: a server's batch (vLLM's ``max_num_seqs``, a hosted rate limit, a fair
comparison's cap) is spent per sequence, so a request with ``n=8`` holds 8 slots and a
list-prompt request holds prompts x n. Why partial grants: when k slots are free and a call
wants N > k, waiting for N leaves k slots idle through every straggler's tail; granting k
now (the caller sends ``n=k`` and asks again for the rest) keeps the server's batch full,
and the smaller requests of one prompt still share its prefill through the prefix cache.
Why FIFO: grants go to waiters in arrival order, so a large request is served as soon as
it reaches the head of the queue, never starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Waiter:
    want: int
    exact: bool
    future: asyncio.Future[int]


class SequenceSlots:
    """A FIFO-fair counter of sequences in flight with partial (work-conserving) grants."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_flight(self) -> int:
        return self.capacity - self.free

    async def acquire(self, want: int, *, exact: bool = False) -> int:
        """Take up to ``want`` slots (at most the capacity) and return how many were taken.

        ``exact``: wait until all of them are free (a retry of a request whose size is
        already fixed); otherwise take whatever is free, at least one, once first in line.
        """
        want = max(1, min(want, self.capacity))
        if not self._waiters and self.free >= (want if exact else 1):
            granted = want if exact else min(want, self.free)
            self.free -= granted
            return granted
        waiter = _Waiter(want, exact, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())  # granted just as we were cancelled
            else:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._grant()
            raise

    def release(self, count: int) -> None:
        """Give back ``count`` slots and wake the waiters they satisfy, in order."""
        self.free = min(self.capacity, self.free + count)
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            if self.free < (head.want if head.exact else 1):
                return
            granted = head.want if head.exact else min(head.want, self.free)
            self.free -= granted
            self._waiters.popleft()
            head.future.set_result(granted)
