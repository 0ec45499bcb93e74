"""The PRM protocol: per-step scores in [0, 1] for many candidate solutions at once.

INTERFACE; implementations live beside it (prm_pooling.py, prm_judge.py, arithmetic.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ratts.endpoints.usage import Usage
from ratts.errors import ConfigError, InputError
from ratts.settings import PRMSpec


@dataclass(slots=True)
class PRMResult:
    """``scores[i][k]`` is the reward of step k of candidate i, in [0, 1]."""

    scores: list[list[float]]
    usage: Usage


@runtime_checkable
class PRM(Protocol):
    name: str

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """Score every step of every candidate (a candidate is its list of steps)."""
        ...

    async def aclose(self) -> None: ...


def check_question(question: str) -> None:
    """Every PRM refuses to score steps for an empty question (one-line InputError)."""
    if not question.strip():
        raise InputError("cannot score steps for an empty question", param="question")


def served_at(spec: PRMSpec) -> tuple[str, str]:
    """A served PRM's (base_url, model); a ConfigError naming the PRM when one is missing."""
    if not spec.base_url or not spec.model:
        raise ConfigError(
            f"PRM {spec.name!r} needs base_url and model", endpoint=spec.name, role="PRM"
        )
    return spec.base_url, spec.model
