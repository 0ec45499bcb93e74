"""Answer extraction and equivalence, on hand-written cases and on the real datasets."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ratts.grading.equivalence as equivalence
import ratts.grading.sandbox as sandbox_mod
from ratts.grading import extract_answer, grade, has_boxed, is_equivalent
from ratts.grading.sandbox import Sandbox, sandbox

DATA_DIR = Path(__file__).parents[1].parent / "shared" / "data"


def _records(name: str) -> list[dict[str, Any]]:
    path = DATA_DIR / f"{name}.jsonl"
    assert path.is_file(), f"test data missing: {path} (expected the shared data folder)"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("The choice is $\\boxed{\\text{(C)}}$", "\\text{(C)}"),
        ("first \\boxed{1} then \\boxed{2}, finally \\boxed{3}", "3"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\fbox{17} is framed", "17"),
        ("nested \\boxed{\\boxed{7}}", "7"),
        ("a set \\boxed{\\{1, 2\\}} with escaped braces", "\\{1, 2\\}"),
        ("spaced \\boxed {12}", "12"),
        ("brace-less \\boxed 5 works too", "5"),
        ("unclosed \\boxed{1 + \\boxed{4}", "4"),
        ("an empty \\boxed{} is skipped after \\boxed{8}", "8"),
        ("The answer is 42.", "42"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("the answer is: 3.5.", "3.5"),
        ("After all that,\nthe answer is\n$-7$", "-7"),
        ("She makes 9 * 2 = $18 a day.\n#### 1,234", "1,234"),
        ("He has 12 apples, eats 2 and 1/2, leaving 9.5 apples", "9.5"),
        ("we reach 3 and then 2,125 in total", "2,125"),
        ("the ratio is 3/4", "3/4"),
        ("it drops to -12 degrees", "-12"),
        ("5-3 leaves", "3"),
        ("no numbers at all", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_boxed_beats_later_phrases_and_numbers() -> None:
    text = "We get \\boxed{10}. The answer is 11. #### 12 and then 13"
    assert extract_answer(text) == "10"
    assert extract_answer("The answer is 11. #### 12 and 13") == "11"
    assert extract_answer("#### 12 and 13") == "12"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{5}", True),
        ("\\fbox{\\frac{1}{2}}", True),
        ("so \\boxed{\\frac{1}{2", False),
        ("\\boxed{}", False),
        ("The answer is 5", False),
        ("\\boxed", False),
    ],
)
def test_has_boxed(text: str, expected: bool) -> None:
    assert has_boxed(text) is expected


# --- equivalence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.5", "\\frac{1}{2}"),
        ("1/2", "\\frac{1}{2}"),
        ("\\dfrac{1}{2}", "0.5"),
        ("2125", "2,125"),
        ("25", "025"),
        ("C", "\\boxed{\\text{(C)}}"),
        ("(C)", "\\text{(C)}"),
        ("(3,\\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("-3", "-3"),
        ("-0.25", "-\\frac{1}{4}"),
        ("10", "10\\%"),
        ("0.1", "10\\%"),
        ("18", "\\$18"),
        ("5", "5 \\text{ cm}"),
        ("113", "\\textbf{(113) }"),
        ("x = 4", "4"),
        ("$\\frac{1}{2}$", "0.5"),
        ("\\boxed{7}", "7"),
        ("(x+1)^2", "x^2+2x+1"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
    ],
)
def test_equivalent(pred: str, gold: str) -> None:
    assert is_equivalent(pred, gold) is True


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("0.51", "0.5"),
        ("21", "12"),
        ("-5", "5"),
        ("3", "3 i"),
        ("5x", "5"),
        ("\\frac{1}{3}", "0.33"),
        ("B", "\\text{(C)}"),
        ("(3,\\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("x^2+1", "(x+1)^2"),
        ("2126", "2,125"),
        ("", "5"),
        ("5", ""),
    ],
)
def test_not_equivalent(pred: str, gold: str) -> None:
    assert is_equivalent(pred, gold) is False


def test_none_and_grade() -> None:
    assert is_equivalent(None, "5") is False
    assert grade("5", None) is None
    assert grade(None, "5") is False
    assert grade("\\frac{10}{2}", "5") is True
    assert grade("4", "5") is False


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    text=st.text(max_size=120)
    | st.text(alphabet="\\{}^_$()0123456789.,/-+=frac boxed sqrt pi", max_size=80),
    gold=st.sampled_from(["5", "\\frac{1}{2}", "x^2", "\\text{(C)}", "(1,2)"]),
)
def test_never_raises_and_is_bounded(text: str, gold: str) -> None:
    timeout_s = 1.0
    started = time.monotonic()
    answer = extract_answer(text)
    assert answer is None or isinstance(answer, str)
    assert isinstance(has_boxed(text), bool)
    assert isinstance(is_equivalent(text, gold, timeout_s=timeout_s), bool)
    assert isinstance(is_equivalent(gold, text, timeout_s=timeout_s), bool)
    if answer is not None:
        assert isinstance(is_equivalent(answer, gold, timeout_s=timeout_s), bool)
    assert time.monotonic() - started < 3 * (timeout_s + 3.0)


def test_pathological_expression_is_cut_off() -> None:
    assert sandbox().warm_up(1) == 1
    timeout_s = 1.0
    started = time.monotonic()
    assert is_equivalent("9^{9^{9^{9^{9}}}}", "9^{9^{9^{9^{8}}}}", timeout_s=timeout_s) is False
    assert time.monotonic() - started < timeout_s + 3.0
    # the killed worker is replaced: the next symbolic check still works
    assert is_equivalent("(a+b)^2", "a^2+2ab+b^2") is True


def test_time_limit_works_off_the_main_thread() -> None:
    timeout_s = 1.0

    def check(i: int) -> tuple[bool, float]:
        started = time.monotonic()
        verdict = is_equivalent(f"9^{{9^{{9^{{9^{{{i + 2}}}}}}}}}", "1", timeout_s=timeout_s)
        return verdict, time.monotonic() - started

    assert sandbox().warm_up(2) == 2  # time the checks, not the workers' start-up
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(check, range(2)))
    assert [verdict for verdict, _ in results] == [False, False]
    assert all(elapsed < timeout_s + 3.0 for _, elapsed in results)


def test_concurrent_checks_from_many_threads() -> None:
    pairs = [(f"({i}+y)^2", f"y^2+{2 * i}y+{i * i}", True) for i in range(1, 9)] + [
        (f"({i}+y)^2", f"y^2+{2 * i}y+{i * i + 1}", False) for i in range(1, 9)
    ]

    def check(pair: tuple[str, str, bool]) -> bool:
        # a generous limit: this checks correctness under concurrency, not speed
        return is_equivalent(pair[0], pair[1], timeout_s=10.0) is pair[2]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, pairs))


def test_broken_worker_falls_back_without_raising(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead = tmp_path / "dead_worker.py"
    dead.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(sandbox_mod, "WORKER_SCRIPT", dead)
    fresh = Sandbox(max_workers=1)
    monkeypatch.setattr(equivalence, "sandbox", lambda: fresh)
    assert is_equivalent("0.5", "\\frac{1}{2}") is True  # numeric fallback needs no worker
    assert is_equivalent("(p+1)^2", "p^2+2p+1") is False  # symbolic needs the worker
    assert fresh.verify("1", "1", 1.0) is None


def test_silent_worker_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    silent = tmp_path / "silent_worker.py"
    silent.write_text(
        "import sys, time\nprint('{\"ready\": true}', flush=True)\n"
        "for line in sys.stdin:\n    time.sleep(60)\n"
    )
    monkeypatch.setattr(sandbox_mod, "WORKER_SCRIPT", silent)
    fresh = Sandbox(max_workers=1)
    started = time.monotonic()
    assert fresh.verify("1", "1", 0.5) is None
    assert time.monotonic() - started < 0.5 + 3.0
    fresh.close()


# --- real data ----------------------------------------------------------------------------


def test_math500_gold_answers_are_self_equivalent() -> None:
    answers = [r["answer"] for r in _records("math500")]
    assert len(answers) == 400
    assert all(is_equivalent(a, a) for a in answers)
    # and through math-verify itself, not only the string fast path
    with ThreadPoolExecutor(max_workers=sandbox().max_workers) as pool:
        verdicts = list(pool.map(lambda a: sandbox().verify(a, a, 2.0), answers))
    assert [a for a, ok in zip(answers, verdicts, strict=True) if ok is not True] == []


@pytest.mark.parametrize(("name", "min_rate"), [("math500", 0.98), ("gsm8k_test", 0.98)])
def test_extracted_solution_matches_answer(name: str, min_rate: float) -> None:
    records = _records(name)
    failures = [
        (r["id"], r["answer"], extracted)
        for r in records
        if not is_equivalent(extracted := extract_answer(r["solution"]), r["answer"])
    ]
    assert len(failures) <= (1 - min_rate) * len(records), failures[:20]


def test_aime_solutions_mostly_match() -> None:
    records = _records("aime24")
    hits = sum(is_equivalent(extract_answer(r["solution"]), r["answer"]) for r in records)
    assert hits >= 27  # AoPS write-ups end in signatures and asides, most still box the answer


def test_boxed_gold_is_equivalent_to_bare_gold() -> None:
    answers = [r["answer"] for r in _records("math500")][:100]
    assert all(is_equivalent(f"\\boxed{{{a}}}", a) for a in answers)
    assert all(
        is_equivalent(extract_answer(f"So we get $\\boxed{{{a}}}$.") or "", a) for a in answers
    )
