"""Step-score aggregation and answer selection."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratts.errors import InvalidParamsError
from ratts.strategies.scoring import (
    aggregate,
    answer_classes,
    majority_index,
    normalize_answer,
    select,
)
from ratts.types import Aggregation, Candidate

AGGREGATIONS: tuple[Aggregation, ...] = ("last", "min", "mean", "prod")


def cand(answer: str | None, *scores: float, finished: bool = True) -> Candidate:
    return Candidate(
        steps=[f"s{i}" for i in range(len(scores))],
        answer=answer,
        step_scores=list(scores),
        finished=finished,
    )


def test_aggregate_each_rule() -> None:
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate(scores, "prod") == pytest.approx(0.36)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregate_empty_is_zero(how: Aggregation) -> None:
    assert aggregate([], how) == 0.0


def test_aggregate_unknown_rule_is_typed_error() -> None:
    with pytest.raises(InvalidParamsError, match=r"^unknown aggregation 'median'; choose one"):
        aggregate([0.5], "median")  # type: ignore[arg-type]


@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=50),
    st.sampled_from(AGGREGATIONS),
)
def test_aggregate_stays_in_unit_interval(scores: list[float], how: Aggregation) -> None:
    value = aggregate(scores, how)
    assert 0.0 <= value <= 1.0
    if scores:
        assert min(scores) - 1e-12 <= value or how == "prod"
        assert value <= max(scores) + 1e-12


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
def test_aggregate_order_of_rules(scores: list[float]) -> None:
    """prod <= min <= mean <= max for scores in [0, 1]."""
    eps = 1e-12
    assert aggregate(scores, "prod") <= aggregate(scores, "min") + eps
    assert aggregate(scores, "min") <= aggregate(scores, "mean") + eps
    assert aggregate(scores, "mean") <= max(scores) + eps


def test_normalize_answer_fast_path() -> None:
    assert normalize_answer(" 1 2 ") == "12"
    assert normalize_answer("$42$.") == "42"
    assert normalize_answer("\\text{ yes }") == "yes"


def test_answer_classes_group_exact_and_equivalent() -> None:
    answers = ["1/2", None, "0.5", "3", " 3 ", "\\frac{1}{2}", "7"]
    classes = answer_classes(answers)
    assert classes == [[0, 2, 5], [3, 4], [6]]


def test_majority_index_ties_go_to_first_seen_class() -> None:
    assert majority_index(["5", "4", "4", "5"]) == 0
    assert majority_index(["5", "4", "4"]) == 1
    assert majority_index([None, "9"]) == 1
    assert majority_index([None, None]) is None
    assert majority_index([]) is None


def test_select_max_picks_highest_aggregated_score_among_answered() -> None:
    cands = [cand("1", 0.2, 0.6), cand(None, 0.99), cand("2", 0.9, 0.5), cand("3", 0.1, 0.7)]
    assert select(cands, "max", "last") == 3
    assert select(cands, "max", "min") == 2
    assert select(cands, "max", "mean") == 2


def test_select_weighted_sums_scores_per_class() -> None:
    # class "4": 0.3 + 0.3 + 0.3 = 0.9 beats the single 0.8 for "5"
    cands = [cand("5", 0.8), cand("4", 0.3), cand("4.0", 0.35), cand("4", 0.25)]
    assert select(cands, "weighted") == 2  # highest-scored member of the heaviest class
    assert select(cands, "max") == 0
    assert select(cands, "majority") == 1


def test_select_weighted_prefers_one_strong_answer_over_weak_crowd() -> None:
    cands = [cand("4", 0.1), cand("4", 0.1), cand("5", 0.9)]
    assert select(cands, "weighted") == 2
    assert select(cands, "majority") == 0


def test_select_without_answers_falls_back_to_best_score() -> None:
    cands = [cand(None, 0.2), cand(None, 0.7), cand(None, 0.7)]
    for how in ("max", "weighted", "majority"):
        assert select(cands, how) == 1  # type: ignore[arg-type]
    assert select([], "max") is None


def test_select_unknown_rule_is_typed_error() -> None:
    with pytest.raises(InvalidParamsError, match=r"^unknown selection 'best'; choose one"):
        select([cand("1", 0.5)], "best")  # type: ignore[arg-type]


def test_prod_matches_math_prod() -> None:
    scores = [0.5] * 10
    assert aggregate(scores, "prod") == pytest.approx(math.pow(0.5, 10))
