"""What a call, a strategy run or a sweep really spent."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Usage:
    """Additive compute accounting.

    Token counts come from the servers' own ``usage`` fields whenever they report them.
    ``policy_cached_tokens`` is the part of ``policy_prompt_tokens`` the server served from
    its prefix cache (``usage.prompt_tokens_details.cached_tokens``): no prefill compute,
    so FLOPs charge only the fresh rest.
    ``request_seconds`` sums the latency of every call (busy time, can exceed wall time
    when calls overlap); ``wall_seconds`` is set by whoever owns a whole run.
    """

    policy_prompt_tokens: int = 0
    policy_completion_tokens: int = 0
    prm_tokens: int = 0
    policy_requests: int = 0
    prm_requests: int = 0
    prm_truncated: int = 0  # candidates whose question was cut to fit the PRM's context
    flops: float = 0.0
    dollars: float = 0.0
    request_seconds: float = 0.0
    wall_seconds: float = 0.0
    policy_cached_tokens: int = 0  # last: positional construction predates it

    @property
    def policy_fresh_prompt_tokens(self) -> int:
        """Prompt tokens the server really prefilled (not served from its prefix cache)."""
        return self.policy_prompt_tokens - self.policy_cached_tokens

    @property
    def policy_tokens(self) -> int:
        return self.policy_prompt_tokens + self.policy_completion_tokens

    @property
    def total_tokens(self) -> int:
        return self.policy_tokens + self.prm_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def __iadd__(self, other: Usage) -> Usage:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def sum_usage(items: list[Usage]) -> Usage:
    total = Usage()
    for item in items:
        total += item
    return total


_SPENT = "ratts_spent"


def attach_spent(exc: BaseException, usage: Usage) -> None:
    """Let whoever catches ``exc`` still log what the failed run spent: the run's own
    (live) Usage rides on the exception; the innermost run that attaches one wins."""
    if getattr(exc, _SPENT, None) is None:
        setattr(exc, _SPENT, usage)


def spent(exc: BaseException) -> Usage | None:
    """The Usage a failed run attached to ``exc`` (see ``attach_spent``), if any."""
    found = getattr(exc, _SPENT, None)
    return found if isinstance(found, Usage) else None
