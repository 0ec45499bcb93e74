"""JSONL loading on the real data files and on broken ones; the arithmetic generator."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from ratts.datasets import (
    LineError,
    arithmetic_problems,
    load_dataset,
    load_jsonl,
)
from ratts.errors import DatasetError
from ratts.types import Problem

DATA_DIR = Path(__file__).parents[1].parent / "shared" / "data"


def _data(name: str) -> Path:
    path = DATA_DIR / name
    assert path.is_file(), f"test data missing: {path} (expected the shared data folder)"
    return path


# --- JSONL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "count", "dataset", "first_id"),
    [
        ("math500.jsonl", 400, "math500", "test/precalculus/807.json"),
        ("gsm8k_test.jsonl", 1000, "gsm8k", "gsm8k-test-0"),
        ("aime24.jsonl", 30, "aime24", "2024-I-1"),
    ],
)
def test_load_real_files(file: str, count: int, dataset: str, first_id: str) -> None:
    result = load_jsonl(_data(file))
    assert result.errors == []
    assert len(result.problems) == count
    assert result.problems[0].id == first_id
    assert len({p.id for p in result.problems}) == count
    for problem in result.problems:
        assert problem.question.strip()
        assert problem.answer is not None and problem.answer.strip()
        assert problem.meta["dataset"] == dataset
        assert "solution" in problem.meta
        assert not {"id", "problem", "answer"} & set(problem.meta)


def test_real_file_fields_land_in_meta() -> None:
    math = load_jsonl(_data("math500.jsonl")).problems
    assert {p.meta["level"] for p in math} == {1, 2, 3, 4, 5}
    assert len({p.meta["subject"] for p in math}) == 7
    assert math[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    aime = load_jsonl(_data("aime24.jsonl")).problems
    assert {p.meta["contest"] for p in aime} == {"AIME I", "AIME II"}
    assert "025" in {p.answer for p in aime}  # kept as written: leading zeros survive
    gsm = load_jsonl(_data("gsm8k_test.jsonl")).problems
    assert gsm[0].answer == "18"
    assert any("," in (p.answer or "") for p in gsm)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_lines_are_reported_and_good_lines_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"id": "a", "problem": "1+1?", "answer": "2", "level": 1}),
            json.dumps({"question": "2+2?", "answer": 4}),
            '{"id": "c", "problem": "broken',
            "",
            json.dumps({"id": "d", "answer": "5"}),
            json.dumps(["not", "an", "object"]),
            json.dumps({"id": "a", "problem": "again?"}),
            json.dumps({"id": "g", "problem": "3+3?"}),
        ],
    )
    result = load_jsonl(path)
    assert [p.id for p in result.problems] == ["a", "mixed-1", "g"]
    assert [e.line for e in result.errors] == [3, 5, 6, 7]
    assert all(isinstance(e, LineError) and "\n" not in e.message for e in result.errors)
    assert "invalid JSON" in result.errors[0].message
    assert "problem" in result.errors[1].message
    assert "JSON object" in result.errors[2].message
    assert "duplicate id 'a'" in result.errors[3].message and "line 1" in result.errors[3].message
    first, second, last = result.problems
    assert first == Problem("a", "1+1?", "2")
    assert first.meta == {"level": 1, "dataset": "mixed"}
    assert second.question == "2+2?" and second.answer == "4"
    assert last.answer is None


def test_invalid_utf8_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"problem": "ok"}\n{"problem": "\xff\xfe"}\n')
    result = load_jsonl(path)
    assert len(result.problems) == 1
    assert result.errors == [LineError(2, "not valid UTF-8")]


def test_missing_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetError) as info:
        load_jsonl(missing)
    assert str(info.value) == f"dataset file not found: {missing}"
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_dataset(str(missing))


@pytest.mark.parametrize("lines", [[], ["", "  "], ["{bad", json.dumps({"answer": "1"})]])
def test_file_without_good_lines_is_an_error(tmp_path: Path, lines: list[str]) -> None:
    path = _write(tmp_path / "empty.jsonl", lines)
    with pytest.raises(DatasetError, match="no valid problems in") as info:
        load_jsonl(path)
    assert "\n" not in str(info.value)
    if lines and lines[0] == "{bad":
        assert "line 1" in str(info.value)


def test_dataset_name_override_and_known_stems(tmp_path: Path) -> None:
    path = _write(tmp_path / "gsm8k_test.jsonl", [json.dumps({"problem": "x?"})])
    assert load_jsonl(path).problems[0].meta["dataset"] == "gsm8k"
    assert load_jsonl(path).problems[0].id == "gsm8k_test-0"
    assert load_jsonl(path, dataset="mine").problems[0].meta["dataset"] == "mine"


def test_load_dataset_paths_and_n() -> None:
    problems = load_dataset(str(_data("aime24.jsonl")), n=5)
    assert [p.id for p in problems] == [
        p.id for p in load_jsonl(_data("aime24.jsonl")).problems[:5]
    ]
    assert len(load_dataset(str(_data("math500.jsonl")))) == 400


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mnist", "unknown dataset spec 'mnist'"),
        ("arith:ops=x", "bad option 'ops=x'"),
        ("arith:depth=3", "unknown option 'depth'"),
        ("arith:ops", "bad option 'ops'"),
        ("arith:ops=3-1", "min_ops <= max_ops"),
        ("arith:max=1", "max_value must be >= 2"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        load_dataset(spec, n=3)
    assert "\n" not in str(info.value)


def test_negative_n_is_an_error() -> None:
    with pytest.raises(DatasetError, match="n must be >= 0"):
        load_dataset("arith", n=-1)


# --- arithmetic generator -----------------------------------------------------------------


def _evaluate(expression: str) -> int:
    """A tiny safe evaluator for + - * / on integers; division must be exact."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        assert isinstance(node, ast.BinOp), ast.dump(node)
        left, right = walk(node.left), walk(node.right)
        assert left > 0 and right > 0
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            assert left - right > 0
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        assert isinstance(node.op, ast.Div) and left % right == 0
        return left // right

    return walk(ast.parse(expression, mode="eval").body)


def test_generated_answers_are_correct() -> None:
    problems = arithmetic_problems(300, seed=7, min_ops=1, max_ops=6, max_value=60)
    assert len(problems) == 300
    for p in problems:
        expression = p.meta["expression"]
        assert p.answer == str(_evaluate(expression))
        assert p.meta["ops"] == len(re.findall(r"[-+*/]", expression)) == len(p.meta["steps"])
        assert p.meta["dataset"] == "arith" and p.meta["difficulty"] == p.meta["ops"]
        assert all(int(x) <= 60 for x in re.findall(r"\d+", expression))
        # each step "a op b = c" is true and chains into the next
        values = []
        for step in p.meta["steps"]:
            lhs, rhs = step.split(" = ")
            assert _evaluate(lhs.replace(" ", "")) == int(rhs) > 0
            values.append(int(rhs))
        assert values[-1] == int(p.answer)
        # the story states the operands and asks one question
        assert p.question.endswith("have now?")
        start = re.match(r"\(*(\d+)", expression)
        assert start is not None and start.group(1) in p.question


def test_generator_is_deterministic_and_prefix_stable() -> None:
    a = arithmetic_problems(20, seed=3)
    b = arithmetic_problems(20, seed=3)
    assert [(p.id, p.question, p.answer) for p in a] == [(p.id, p.question, p.answer) for p in b]
    assert [p.question for p in arithmetic_problems(5, seed=3)] == [p.question for p in a[:5]]
    other = arithmetic_problems(20, seed=4)
    assert [p.question for p in other] != [p.question for p in a]
    assert a[0].id == "arith-s3-0" and a[19].id == "arith-s3-19"
    assert arithmetic_problems(0) == []


def test_difficulty_knobs_change_operations_and_numbers() -> None:
    easy = arithmetic_problems(50, seed=1, min_ops=1, max_ops=1, max_value=10)
    hard = arithmetic_problems(50, seed=1, min_ops=5, max_ops=5, max_value=500)
    assert {p.meta["ops"] for p in easy} == {1}
    assert {p.meta["ops"] for p in hard} == {5}
    assert len(hard[0].meta["steps"]) == 5
    easy_numbers = [int(x) for p in easy for x in re.findall(r"\d+", p.meta["expression"])]
    hard_numbers = [int(x) for p in hard for x in re.findall(r"\d+", p.meta["expression"])]
    assert max(easy_numbers) <= 10 < max(hard_numbers)
    spread = arithmetic_problems(100, seed=2, min_ops=1, max_ops=4)
    assert {p.meta["ops"] for p in spread} == {1, 2, 3, 4}
    # different knobs, different problems: their ids must not collide
    assert easy[0].id != hard[0].id != arithmetic_problems(1, seed=1)[0].id


def test_load_dataset_arith_spec() -> None:
    problems = load_dataset("arith:ops=2-3,max=20", n=40, seed=5)
    assert len(problems) == 40
    assert {p.meta["ops"] for p in problems} <= {2, 3}
    assert all(p.meta["max_value"] == 20 for p in problems)
    assert problems == arithmetic_problems(40, seed=5, min_ops=2, max_ops=3, max_value=20)
    assert len(load_dataset("arith")) == 100
    assert load_dataset("arith:ops=4", n=3)[0].meta["ops"] == 4
