"""Step-score aggregation and answer selection (max, PRM-weighted vote, majority).

Answers are grouped into equivalence classes cheaply: an exact match on a normalised string
first, then ``ratts.grading.is_equivalent`` against each class's representative only.
Candidates without an answer cannot win a vote; when no candidate has an answer, selection
falls back to the highest aggregated score (earliest on ties).

Equivalence checks can take seconds (math-verify in a child process), so strategies run
selection through ``off_loop``: in a worker thread, never on the event loop, with a
bounded total time per outcome (``EQUIVALENCE_BUDGET_S``); once it is spent the remaining
comparisons use only the cheap exact tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ratts.errors import InvalidParamsError
from ratts.grading import is_equivalent
from ratts.types import Aggregation, Candidate, Selection

EQUIVALENCE_TIMEOUT_S = 2.0  # one comparison
EQUIVALENCE_BUDGET_S = 10.0  # all comparisons of one outcome's selection

T = TypeVar("T")


async def off_loop(
    fn: Callable[..., T], *args: object, budget_s: float = EQUIVALENCE_BUDGET_S, **kwargs: object
) -> T:
    """``fn(*args, **kwargs, deadline=...)`` in a worker thread, so slow equivalence checks
    never stall the event loop; the deadline (``budget_s`` from now, queueing included)
    bounds the total time its comparisons may take."""
    deadline = time.monotonic() + budget_s
    return await asyncio.to_thread(fn, *args, deadline=deadline, **kwargs)


def _check_timeout(timeout_s: float, deadline: float | None) -> float:
    """Time one comparison may take: its own limit, cut to what is left of the budget
    (0 when it is spent: cheap tests only)."""
    if deadline is None:
        return timeout_s
    return max(0.0, min(timeout_s, deadline - time.monotonic()))


def aggregate(step_scores: Sequence[float], how: Aggregation) -> float:
    """One score for a candidate from its per-step scores; 0.0 when there are none."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "mean":
        mean = math.fsum(step_scores) / len(step_scores)
        return min(max(mean, min(step_scores)), max(step_scores))  # no rounding overshoot
    if how == "prod":
        return float(math.prod(step_scores))
    raise InvalidParamsError(
        f"unknown aggregation {how!r}; choose one of: last, min, mean, prod", param="aggregation"
    )


def normalize_answer(answer: str) -> str:
    """A cheap canonical form for the exact-match fast path (no maths, no parsing)."""
    text = "".join(answer.split())
    text = text.rstrip(".").strip("$").rstrip(".")
    for wrapper in ("\\text{", "\\mathrm{"):
        if text.startswith(wrapper) and text.endswith("}"):
            text = text[len(wrapper) : -1]
    return text


def answer_classes(
    answers: Sequence[str | None],
    *,
    timeout_s: float = EQUIVALENCE_TIMEOUT_S,
    deadline: float | None = None,
) -> list[list[int]]:
    """Indices grouped by equivalent answer, classes ordered by their first member.

    ``None`` answers belong to no class.
    """
    classes: list[list[int]] = []
    keys: dict[str, int] = {}  # normalised answer -> class index
    reps: list[str] = []  # representative answer of each class
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalize_answer(answer)
        found = keys.get(key)
        if found is None:
            for c, rep in enumerate(reps):
                if is_equivalent(answer, rep, timeout_s=_check_timeout(timeout_s, deadline)):
                    found = c
                    break
        if found is None:
            found = len(classes)
            classes.append([])
            reps.append(answer)
        keys[key] = found
        classes[found].append(i)
    return classes


def majority_index(
    answers: Sequence[str | None],
    *,
    timeout_s: float = EQUIVALENCE_TIMEOUT_S,
    deadline: float | None = None,
) -> int | None:
    """First member of the largest answer class (ties: the class seen first); None if no
    answer at all."""
    classes = answer_classes(answers, timeout_s=timeout_s, deadline=deadline)
    if not classes:
        return None
    best = max(classes, key=len)  # max keeps the first of equal maxima
    return best[0]


def _argmax(values: Sequence[float], among: Sequence[int]) -> int:
    best = among[0]
    for i in among[1:]:
        if values[i] > values[best]:
            best = i
    return best


def select(
    candidates: Sequence[Candidate],
    how: Selection,
    aggregation: Aggregation = "last",
    *,
    timeout_s: float = EQUIVALENCE_TIMEOUT_S,
    deadline: float | None = None,
) -> int | None:
    """Index of the selected candidate, or None when there are no candidates.

    - ``max``: highest aggregated score among candidates with an answer;
    - ``weighted``: sum aggregated scores per answer class, take the heaviest class, return
      its highest-scored member;
    - ``majority``: the largest answer class, its first member.
    """
    if not candidates:
        return None
    scores = [aggregate(c.step_scores, aggregation) for c in candidates]
    answered = [i for i, c in enumerate(candidates) if c.answer is not None]
    if not answered:
        return _argmax(scores, range(len(candidates)))
    if how == "max":
        return _argmax(scores, answered)
    classes = answer_classes([c.answer for c in candidates], timeout_s=timeout_s, deadline=deadline)
    if how == "majority":
        return max(classes, key=len)[0]
    if how == "weighted":
        weights = [math.fsum(scores[i] for i in members) for members in classes]
        heaviest = classes[_argmax(weights, range(len(classes)))]
        return _argmax(scores, heaviest)
    raise InvalidParamsError(
        f"unknown selection {how!r}; choose one of: max, weighted, majority", param="selection"
    )
