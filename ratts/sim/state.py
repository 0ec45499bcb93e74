"""The simulator's mutable state: request counters, recorded intervals, the fault RNG, the
per-prompt sample counters, the prefix cache and the batch-slot semaphores (one
``SimState`` per app)."""

from __future__ import annotations

import asyncio
import random
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ratts.sim import world
from ratts.sim.config import FaultKind, SimConfig

MAX_INTERVALS = 10_000


@dataclass(slots=True)
class Interval:
    start: float
    end: float
    endpoint: str
    model: str
    n: int
    status: int
    choices: int = 0  # sequences asked for: n x prompts (completions), inputs (pooling)


@dataclass
class SimStats:
    """Counters exposed at ``GET /sim/stats``; ``POST /sim/reset`` zeroes them (and rewinds
    the per-prompt sample counters and the fault RNG)."""

    requests: dict[str, int] = field(default_factory=dict)
    requests_by_model: dict[str, int] = field(default_factory=dict)
    responses_by_status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    choices: int = 0
    prompts: int = 0  # sequence groups: one per prompt of a request (vLLM's unit of work)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    prm_inputs: int = 0
    prm_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    busy_slot_seconds: float = 0.0
    intervals: deque[Interval] = field(default_factory=lambda: deque(maxlen=MAX_INTERVALS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "requests": dict(self.requests),
            "requests_by_model": dict(self.requests_by_model),
            "responses_by_status": dict(self.responses_by_status),
            "faults": dict(self.faults),
            "choices": self.choices,
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "prm_inputs": self.prm_inputs,
            "prm_tokens": self.prm_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "busy_slot_seconds": self.busy_slot_seconds,
            "intervals": [
                {
                    "start": i.start,
                    "end": i.end,
                    "endpoint": i.endpoint,
                    "model": i.model,
                    "n": i.n,
                    "choices": i.choices,
                    "status": i.status,
                }
                for i in self.intervals
            ],
        }


def bump(counter: dict[str, int], key: str, by: int = 1) -> None:
    counter[key] = counter.get(key, 0) + by


class SimState:
    """Everything mutable in one app: counters, the fault RNG, slot semaphores."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._fault_rng = random.Random(world.stable_hash(config.seed, "faults"))
        self._fault_pos = 0
        self._prompt_counts: dict[int, int] = {}
        self._served: set[int] = set()  # hashes of prompts served (the prefix cache)
        self._policy_slots: asyncio.Semaphore | None = None
        self._prm_slots: asyncio.Semaphore | None = None

    def reset(self) -> None:
        """Zero the counters and rewind the randomness, as if the server had just started."""
        in_flight = self.stats.in_flight
        self.stats = SimStats(in_flight=in_flight, max_in_flight=in_flight)
        self._fault_rng = random.Random(world.stable_hash(self.config.seed, "faults"))
        self._fault_pos = 0
        self._prompt_counts.clear()
        self._served.clear()

    def cached_tokens(self, model: str, prompt: str) -> int:
        """Tokens of the longest earlier-served prompt that starts this one (cut at a step
        boundary), as a prefix cache would reuse them; then remember this prompt."""
        cuts = [len(prompt)]
        cuts += [m.end() for m in re.finditer(re.escape(world.SEPARATOR), prompt)]
        cuts += [m.start() for m in world.STEP_MARK.finditer(prompt)]
        best = max(
            (c for c in cuts if c and world.stable_hash(model, prompt[:c]) in self._served),
            default=0,
        )
        if len(self._served) > 500_000:
            self._served.clear()
        self._served.add(world.stable_hash(model, prompt))
        return world.count_tokens(prompt[:best]) if best else 0

    def next_fault(self) -> FaultKind:
        f = self.config.faults
        if self._fault_pos < len(f.sequence):
            self._fault_pos += 1
            return f.sequence[self._fault_pos - 1]
        u = self._fault_rng.random()
        for kind, rate in (
            ("500", f.error_500),
            ("429", f.error_429),
            ("timeout", f.timeout),
            ("malformed", f.malformed),
        ):
            if u < rate:
                return kind  # type: ignore[return-value]
            u -= rate
        return "ok"

    def sample_key(self, model: str, prompt: str, seed: int | None) -> tuple[object, ...]:
        """Randomness key for a prompt: the request seed, or a per-prompt request counter."""
        if seed is not None:
            return ("seed", seed)
        h = world.stable_hash(model, prompt)
        count = self._prompt_counts.get(h, 0)
        if len(self._prompt_counts) > 500_000:
            self._prompt_counts.clear()
        self._prompt_counts[h] = count + 1
        return ("count", count)

    async def occupy(self, kind: Literal["policy", "prm"], seconds: float) -> None:
        """Hold one batch slot for ``seconds`` (no slot, no sleep when the model is instant)."""
        if seconds <= 0:
            return
        cap = self.config.capacity
        if kind == "policy":
            if self._policy_slots is None:
                self._policy_slots = asyncio.Semaphore(cap.slots)
            sem = self._policy_slots
        else:
            if self._prm_slots is None:
                self._prm_slots = asyncio.Semaphore(cap.prm_slots)
            sem = self._prm_slots
        async with sem:
            await asyncio.sleep(seconds)
            self.stats.busy_slot_seconds += seconds
