"""Problem sources: JSONL files (MATH-500, GSM8K, AIME) and a seeded arithmetic generator.

The generator gives word problems with known integer answers and tunable difficulty, so the
whole engine can be exercised (and ``ArithmeticPRM`` can check every step) with no dataset
and no model at all.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratts.errors import DatasetError
from ratts.text import find_bad_text
from ratts.types import Problem

log = logging.getLogger(__name__)

KNOWN_STEMS = {"math500": "math500", "gsm8k_test": "gsm8k", "gsm8k": "gsm8k", "aime24": "aime24"}
ARITH_DEFAULT_COUNT = 100
_CORE_FIELDS = ("id", "problem", "question", "answer")


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that could not be loaded: its 1-based number and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class LoadResult:
    """The problems that loaded, and the lines that did not."""

    problems: list[Problem] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)


def dataset_name(path: Path) -> str:
    """The dataset a file holds, from its name (``gsm8k_test.jsonl`` -> ``gsm8k``)."""
    return KNOWN_STEMS.get(path.stem, path.stem)


def _problem_from(record: Any, index: int, stem: str, dataset: str) -> Problem:
    """One record as a Problem; raises ValueError with a one-line reason."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    bad = find_bad_text(record)
    if bad is not None:  # e.g. "\udcff": cannot be sent, hashed or stored as UTF-8
        raise ValueError(f"'{bad}' is not valid Unicode text (a lone surrogate)")
    question = record.get("problem", record.get("question"))
    if not isinstance(question, str) or not question.strip():
        raise ValueError("no 'problem' (or 'question') text")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str | int | float):
        raise ValueError(f"'answer' must be a string or a number, got {type(answer).__name__}")
    raw_id = record.get("id")
    if raw_id is not None and not isinstance(raw_id, str | int):
        raise ValueError(f"'id' must be a string or an integer, got {type(raw_id).__name__}")
    meta = {k: v for k, v in record.items() if k not in _CORE_FIELDS}
    meta.setdefault("dataset", dataset)
    return Problem(
        id=str(raw_id) if raw_id is not None else f"{stem}-{index}",
        question=question,
        answer=None if answer is None else str(answer),
        meta=meta,
    )


def load_jsonl(path: str | Path, *, dataset: str | None = None) -> LoadResult:
    """Every good line of a JSONL file as a Problem; bad lines are reported, not fatal.

    Blank lines are skipped. ``meta`` holds every field other than id/problem/answer, plus
    ``dataset`` (from the file name unless given). Raises DatasetError when the file is
    missing or unreadable or holds no problem at all.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset file not found: {file}")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {file}: {exc.strerror or exc}") from exc
    name = dataset or dataset_name(file)
    result = LoadResult()
    first_line: dict[str, int] = {}
    for index, line_bytes in enumerate(raw.splitlines()):
        number = index + 1
        if not line_bytes.strip():
            continue
        try:
            record = json.loads(line_bytes.decode("utf-8"))
            problem = _problem_from(record, index, file.stem, name)
        except UnicodeDecodeError:
            result.errors.append(LineError(number, "not valid UTF-8"))
            continue
        except json.JSONDecodeError as exc:
            result.errors.append(
                LineError(number, f"invalid JSON: {exc.msg} at column {exc.colno}")
            )
            continue
        except (ValueError, RecursionError) as exc:
            result.errors.append(LineError(number, " ".join(str(exc).split())))
            continue
        if problem.id in first_line:
            result.errors.append(
                LineError(
                    number, f"duplicate id {problem.id!r} (first on line {first_line[problem.id]})"
                )
            )
            continue
        first_line[problem.id] = number
        result.problems.append(problem)
    if not result.problems:
        detail = f"; {result.errors[0]}" if result.errors else " (the file is empty)"
        raise DatasetError(f"no valid problems in {file}{detail}")
    return result


# --- arithmetic word problems ------------------------------------------------------------

_NAMES = ("Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom")
_ITEMS = ("marbles", "stickers", "apples", "coins", "cards", "pencils", "shells", "stamps")
# ``{count}`` is "1 apple" or "5 apples".
_ADD = (
    "{name} buys another {count}.",
    "A friend gives {name} {count}.",
    "{name} collects {count} at the park.",
    "{name} finds another {count} in a drawer.",
)
_SUB = (
    "{name} gives {count} to a neighbour.",
    "{name} loses {count}.",
    "{name} sells {count} at the market.",
)
_MUL = (
    "Then {name} ends up with {x} times as many {items} as before.",
    "A prize multiplies the pile: {name} now has {x} times as many {items}.",
)
_DIV = (
    "{name} shares the {items} equally among {x} friends, including {name}, and keeps one share.",
    "{name} splits the {items} into {x} equal boxes and keeps just one box.",
)
_SYMBOL = {"+": "+", "-": "-", "*": "*", "/": "/"}


def _validate_arith(n: int, min_ops: int, max_ops: int, max_value: int) -> None:
    if n < 0:
        raise DatasetError(f"arith: n must be >= 0, got {n}")
    if min_ops < 1 or max_ops < min_ops:
        raise DatasetError(f"arith: need 1 <= min_ops <= max_ops, got {min_ops}-{max_ops}")
    if max_value < 2:
        raise DatasetError(f"arith: max_value must be >= 2, got {max_value}")


def _feasible_ops(value: int, max_value: int, cap: int) -> list[str]:
    ops = ["+"]
    if value >= 2:
        ops.append("-")
    if value * 2 <= cap:
        ops.append("*")
    if any(value % d == 0 for d in range(2, min(max_value, value) + 1)):
        ops.append("/")
    return ops


def _operand(rng: random.Random, op: str, value: int, max_value: int, cap: int) -> int:
    if op == "+":
        return rng.randint(1, max_value)
    if op == "-":
        return rng.randint(1, min(value - 1, max_value))
    if op == "*":
        return rng.randint(2, max(2, min(max_value, 9, cap // value)))
    return rng.choice([d for d in range(2, min(max_value, value) + 1) if value % d == 0])


def _arith_problem(
    i: int, seed: int, min_ops: int, max_ops: int, max_value: int, pid: str
) -> Problem:
    rng = random.Random(f"arith:{seed}:{i}:{min_ops}:{max_ops}:{max_value}")
    name, items = rng.choice(_NAMES), rng.choice(_ITEMS)
    cap = max(100, max_value * max_value)  # keeps products readable
    n_ops = rng.randint(min_ops, max_ops)
    value = rng.randint(2, max_value)
    expression = str(value)
    sentences = [f"{name} has {value} {items}."]
    steps: list[str] = []
    for _ in range(n_ops):
        op = rng.choice(_feasible_ops(value, max_value, cap))
        x = _operand(rng, op, value, max_value, cap)
        new = {"+": value + x, "-": value - x, "*": value * x, "/": value // x}[op]
        template = rng.choice({"+": _ADD, "-": _SUB, "*": _MUL, "/": _DIV}[op])
        count = f"{x} {items if x != 1 else items[:-1]}"
        sentences.append(template.format(name=name, items=items, x=x, count=count))
        steps.append(f"{value} {_SYMBOL[op]} {x} = {new}")
        expression = f"({expression}{_SYMBOL[op]}{x})"
        value = new
    sentences.append(f"How many {items} does {name} have now?")
    return Problem(
        id=pid,
        question=" ".join(sentences),
        answer=str(value),
        meta={
            "dataset": "arith",
            "ops": n_ops,
            "max_value": max_value,
            "difficulty": n_ops,
            "expression": expression,
            "steps": steps,
            "seed": seed,
        },
    )


def arithmetic_problems(
    n: int, *, seed: int = 0, min_ops: int = 1, max_ops: int = 3, max_value: int = 50
) -> list[Problem]:
    """``n`` seeded word problems chaining +, -, x and exact division; answers are integers.

    Difficulty knobs: the number of operations (``min_ops``..``max_ops``, drawn per problem)
    and the size of the numbers (``max_value`` bounds the start value and every operand).
    Every intermediate value is a positive integer. ``meta`` records ``expression`` (e.g.
    ``((12+5)*3)``), the ``steps`` (``12 + 5 = 17``), ``ops`` and ``difficulty`` (= ops).
    The same arguments give the same problems, and a longer list extends a shorter one.
    Ids are ``arith-s{seed}-{i}`` with the default knobs, and name the knobs otherwise so
    that different problems never share an id.
    """
    _validate_arith(n, min_ops, max_ops, max_value)
    defaults = (min_ops, max_ops, max_value) == (1, 3, 50)
    prefix = "arith" if defaults else f"arith-o{min_ops}-{max_ops}-m{max_value}"
    return [
        _arith_problem(i, seed, min_ops, max_ops, max_value, f"{prefix}-s{seed}-{i}")
        for i in range(n)
    ]


def _parse_arith_spec(spec: str) -> dict[str, int]:
    """``arith:ops=1-3,max=50`` -> keyword arguments for ``arithmetic_problems``."""
    _, _, options = spec.partition(":")
    kwargs: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            if key == "ops":
                low, _, high = value.partition("-")
                kwargs["min_ops"] = int(low)
                kwargs["max_ops"] = int(high or low)
            elif key == "max":
                kwargs["max_value"] = int(value)
            else:
                raise DatasetError(f"unknown option {key!r} in dataset spec {spec!r}; use ops, max")
        except ValueError as exc:
            raise DatasetError(
                f"bad option {part!r} in dataset spec {spec!r}; e.g. arith:ops=1-3,max=50"
            ) from exc
    return kwargs


def load_dataset(spec: str, *, n: int | None = None, seed: int = 0) -> list[Problem]:
    """Problems from a spec: a ``.jsonl`` path, or ``arith[:ops=A-B,max=M]`` (generated).

    ``n`` keeps the first n problems (the generator makes n, default 100); ``seed`` only
    affects the generator. Bad lines of a file are logged as warnings and skipped.
    """
    if n is not None and n < 0:
        raise DatasetError(f"n must be >= 0, got {n}")
    text = spec.strip()
    if text == "arith" or text.startswith("arith:"):
        kwargs = _parse_arith_spec(text)
        return arithmetic_problems(ARITH_DEFAULT_COUNT if n is None else n, seed=seed, **kwargs)
    path = Path(text).expanduser()
    if path.suffix == ".jsonl" or path.is_file():
        result = load_jsonl(path)
        for error in result.errors:
            log.warning("%s: %s", path, error)
        return result.problems if n is None else result.problems[:n]
    raise DatasetError(
        f"unknown dataset spec {spec!r}: give a .jsonl file or arith[:ops=A-B,max=M]"
    )
