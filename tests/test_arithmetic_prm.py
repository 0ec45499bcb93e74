"""ArithmeticPRM: claim finding, the exact evaluator, scores, and robustness on any text."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratts.endpoints import ArithmeticPRM, build_prm
from ratts.endpoints.arithmetic import (
    AFTER_ERROR_CAP,
    FALSE_SCORE,
    NEUTRAL_SCORE,
    TRUE_SCORE,
    evaluate,
    find_claims,
    score_steps,
    step_verdict,
)
from ratts.errors import InputError
from ratts.settings import PRMSpec


def verdicts(text: str) -> list[bool]:
    return [c.holds for c in find_claims(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7", [True]),
        ("3 + 4 = 8", [False]),
        ("So she earns 12 * $15 = $180 per week.", [True]),
        ("1,250 + 750 = 2,000 dollars", [True]),
        ("0.5 * 3.2 = 1.6", [True]),
        ("0.1 + 0.2 = 0.3", [True]),  # exact arithmetic, no float error
        ("2 * (3 + 4) = 14", [True]),
        ("(2 + 3) * (4 - 1) = 16", [False]),
        ("5 - 8 = -3", [True]),
        ("3 × 4 = 12, and 12 ÷ 4 = 3.", [True, True]),
        ("3 x 4 = 12", [True]),
        ("$3 \\times 4 = 12$ and $12 \\div 3 = 5$", [True, False]),
        ("2 * (3 + 4) = 2 * 7 = 14", [True, True]),
        ("3 + 4 = 7 * 2 = 14", [False, True]),  # each "=" against the previous expression
        ("10 / 3 = 3.33", [True]),  # rounded to the digits written
        ("2 / 3 = 0.66", [True]),  # or truncated
        ("2 / 3 = 0.6", [True]),
        ("2 / 3 = 0.5", [False]),
        ("7 / 2 = 3", [False]),  # an integer is exact
        ("100 / 3 ≈ 33", [True]),
        ("100 / 3 ≈ 30", [False]),
        ("5 / 0 = 1", [False]),  # division by zero: a false claim, no crash
        ("5 / (2 - 2) = 0", [False]),
        ("3 + 4 = \\boxed{7}", [True]),
    ],
)
def test_claims(text: str, expected: list[bool]) -> None:
    assert verdicts(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "half of 10 = 5",  # no operator: not a computation
        "10 = 10",
        "3x + 2 = 5",  # algebra
        "2^3 + 1 = 9",  # powers are not in the grammar
        "20% of 50 = 10",
        "2(3+4) = 14",  # implicit multiplication is not guessed
        "Step 1: we note from x_0 = 1234 we get x_1 = 5678.",  # the sim's step text
        "The final answer is \\boxed{42}.",
        "Let a = b + c.",
        "",
    ],
)
def test_no_checkable_claim(text: str) -> None:
    assert find_claims(text) == []
    assert step_verdict(text) is None


def test_gsm8k_annotations() -> None:
    good = "Natalia sold 48/2 = <<48/2=24>>24 clips in May."
    bad = "Natalia sold 48/2 = <<48/2=25>>25 clips in May."
    assert verdicts(good) == [True, True]
    assert verdicts(bad) == [False, False]
    assert all(c.left == "48/2" for c in find_claims(good))


def test_percent_and_units_do_not_fool_it() -> None:
    assert verdicts("1/2 = 0.5 = 50%") == [True]
    assert verdicts("3 apples + 4 apples = 7 apples") == []


def test_lines_are_separate() -> None:
    assert verdicts("Total: 5\n2 + 3 = 5") == [True]


def test_evaluate() -> None:
    assert evaluate("(1 + 2) * 3 / 4") == Fraction(9, 4)
    assert evaluate("-(-2) - -3") == 5
    assert evaluate("1,000.5 × 2") == Fraction(2001)
    with pytest.raises(ZeroDivisionError):
        evaluate("1 / (3 - 3)")
    for bad in ["2 ** 3", "import os", "1 +", "(1 + 2", "", "__import__('os')", "2^3"]:
        with pytest.raises(ValueError):
            evaluate(bad)


def test_huge_inputs_stay_bounded() -> None:
    huge = "9" * 5000
    assert find_claims(f"{huge} * {huge} = 1") == []  # numbers over MAX_DIGITS are skipped
    assert len(verdicts("123456789012345678901234567890 * 2 = 246913578024691357802469135780")) == 1
    long_chain = " * ".join(["999999999"] * 200) + " = 1"
    nested = "(" * 5000 + "1" + ")" * 5000 + " + 1 = 2"
    many = " ".join(f"{i} + 1 = {i + 1}." for i in range(5000))
    numbers = " ".join(["7"] * 50_000)
    start = time.perf_counter()
    assert find_claims(long_chain) == []  # over MAX_SEGMENT_TOKENS: skipped
    assert find_claims(nested) == []
    assert len(find_claims(many)) == 64  # MAX_CLAIMS per step
    assert find_claims(numbers) == []
    assert time.perf_counter() - start < 5.0


def test_score_steps() -> None:
    steps = [
        "He buys 3 * 12 = 36 pencils.",
        "We look at what is left.",
        "36 - 7 = 28 pencils remain.",
        "28 + 2 = 30.",
        "The answer is \\boxed{30}.",
    ]
    assert score_steps(steps) == [
        TRUE_SCORE,
        NEUTRAL_SCORE,
        FALSE_SCORE,
        AFTER_ERROR_CAP,  # true arithmetic, but built on a wrong value
        AFTER_ERROR_CAP,
    ]
    assert score_steps(["3 * 12 = 36.", "36 - 7 = 29.", "\\boxed{29}"]) == [
        TRUE_SCORE,
        TRUE_SCORE,
        NEUTRAL_SCORE,
    ]
    assert score_steps([]) == []
    assert FALSE_SCORE < AFTER_ERROR_CAP < NEUTRAL_SCORE < TRUE_SCORE


async def test_prm_protocol() -> None:
    prm = build_prm(PRMSpec(name="arith", kind="arithmetic"))
    assert isinstance(prm, ArithmeticPRM)
    result = await prm.score("How many?", [["3 + 4 = 7", "7 * 2 = 15"], [], ["no numbers"]])
    assert result.scores == [[TRUE_SCORE, FALSE_SCORE], [], [NEUTRAL_SCORE]]
    assert result.usage.total_tokens == 0 and result.usage.prm_requests == 0
    assert result.usage.flops == 0 and result.usage.dollars == 0
    with pytest.raises(InputError):
        await prm.score("", [["1 + 1 = 2"]])
    await prm.aclose()


async def test_a_growing_branch_reads_each_step_once() -> None:
    """A tree search scores every candidate's whole prefix at each depth: the verdicts of
    the steps it already read come from the cache, and the scores are what a fresh read
    gives (the cache changes the cost, never a score)."""
    prm = ArithmeticPRM()
    steps = ["Tom has 17 * 3 = 51 apples.", "He eats 51 - 9 = 41.", "So 41 + 1 = 42 left."]
    step_verdict.cache_clear()
    first = await prm.score("How many?", [steps[:2]])
    before = step_verdict.cache_info()
    deeper = await prm.score("How many?", [steps, steps[:2]])
    after = step_verdict.cache_info()
    assert after.misses - before.misses == 1  # only the new third step was parsed
    assert after.hits - before.hits == 4
    assert deeper.scores[1] == first.scores[0]
    assert deeper.scores[0] == [TRUE_SCORE, FALSE_SCORE, AFTER_ERROR_CAP]
    fresh = [step_verdict.__wrapped__(s) for s in steps]
    assert [step_verdict(s) for s in steps] == fresh == [True, False, True]


async def test_scores_do_not_depend_on_the_question() -> None:
    prm = ArithmeticPRM()
    steps = [["3 + 4 = 7", "7 * 2 = 15", "so \\boxed{15}"]]
    a = await prm.score("What is (3 + 4) * 2? The answer is 14.", steps)
    b = await prm.score("Something else entirely.", steps)
    assert a.scores == b.scores


ARITH_ALPHABET = st.sampled_from([*"0123456789+-*/x×÷=≈()., $%^\n", "<<", ">>", "\\times"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    scores = score_steps([text, text[::-1]])
    assert all(0.0 <= s <= 1.0 for s in scores)


@settings(max_examples=300, deadline=None)
@given(st.lists(ARITH_ALPHABET, max_size=120).map("".join))
def test_never_raises_on_arithmetic_noise(text: str) -> None:
    for claim in find_claims(text):
        assert isinstance(claim.holds, bool)
    assert step_verdict(text) in (True, False, None)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(10**12), 10**12),
    st.integers(-(10**12), 10**12),
    st.sampled_from(["+", "-", "*"]),
)
def test_agrees_with_integer_arithmetic(a: int, b: int, op: str) -> None:
    value = a + b if op == "+" else a - b if op == "-" else a * b
    rhs = f"({b})" if b < 0 else str(b)
    assert verdicts(f"Compute: {a} {op} {rhs} = {value}.") == [True]
    assert verdicts(f"Compute: {a} {op} {rhs} = {value + 1}.") == [False]
