"""Difficulty features known before solving: cheap text statistics of the question.

Pure functions with stable keys, so a feature row logged today can be read by a router
trained tomorrow. Missing values are NaN (numeric) or ``"none"`` (categorical); the model
handles both natively. The probe features (k samples scored by the PRM) live in
``ratts.strategies.probe``; ``split_features`` separates any feature dict into model inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ratts.types import Problem

FeatureValue = float | str
Features = dict[str, FeatureValue]

MISSING = "none"
LABEL_PREFIX = "label_"  # keys that need the gold answer: logged for evaluation, never inputs
PASS_AT_1 = f"{LABEL_PREFIX}pass_at_1"  # share of a probe's samples graded correct

TEXT_NUMERIC = (
    "text_chars",
    "text_words",
    "text_numbers",
    "text_distinct_numbers",
    "text_max_digits",
    "text_operators",
    "text_latex_commands",
    "text_fractions",
    "text_dollars",
    "text_sentences",
    "text_level",
)
TEXT_CATEGORICAL = ("text_dataset", "text_subject")

_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?")
_OPERATOR = re.compile(r"[+\-*/^=<>]|\\(?:times|cdot|div|le|ge|neq|pm)\b")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_FRACTION = re.compile(r"\\d?frac\b|(?<=\d)/(?=\d)")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_WORD = re.compile(r"\S+")
_LEVEL = re.compile(r"(\d+(?:\.\d+)?)")


def _category(meta: Mapping[str, Any], key: str) -> str:
    value = meta.get(key)
    if value is None:
        return MISSING
    text = " ".join(str(value).split()).lower()
    return text or MISSING


def _level(meta: Mapping[str, Any]) -> float:
    """MATH-style ``level``: ``3``, ``"Level 3"`` -> 3.0; anything else NaN."""
    value = meta.get("level")
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else math.nan
    found = _LEVEL.search(str(value))
    return float(found.group(1)) if found else math.nan


META_FEATURES = ("text_level", "text_dataset", "text_subject")  # from metadata, not text


def text_features(problem: Problem) -> Features:
    """Statistics of the question text plus dataset/subject/level from ``problem.meta``.

    The dataset falls back to ``meta["dataset"]``; every key in TEXT_NUMERIC and
    TEXT_CATEGORICAL is always present. Callers decide whether metadata is known (see
    ``without_meta``): a question at the server arrives bare.
    """
    text = problem.question
    meta = problem.meta or {}
    numbers = _NUMBER.findall(text)
    digits = [len(n.replace(".", "")) for n in numbers]
    features: Features = {
        "text_chars": float(len(text)),
        "text_words": float(len(_WORD.findall(text))),
        "text_numbers": float(len(numbers)),
        "text_distinct_numbers": float(len(set(numbers))),
        "text_max_digits": float(max(digits)) if digits else 0.0,
        "text_operators": float(len(_OPERATOR.findall(text))),
        "text_latex_commands": float(len(_LATEX_COMMAND.findall(text))),
        "text_fractions": float(len(_FRACTION.findall(text))),
        "text_dollars": float(text.count("$")),
        "text_sentences": float(max(1, len(_SENTENCE_END.findall(text)))) if text.strip() else 0.0,
        "text_level": _level(meta),
        "text_dataset": _category(meta, "dataset"),
        "text_subject": _category(meta, "subject"),
    }
    return features


ROUTING = "routing"  # a routed run's decision log and probe/strategy usage: never an input


def is_input(key: str) -> bool:
    """Whether a logged feature may be a model input (labels need the gold answer; the
    routing log describes the decision, not the question)."""
    return not key.startswith(LABEL_PREFIX) and key != ROUTING


def split_features(
    features: Mapping[str, Any], numeric: tuple[str, ...], categorical: tuple[str, ...]
) -> tuple[list[float], list[str]]:
    """The numeric and categorical values of ``features`` in the given key order.

    Absent, None, non-finite or non-numeric numeric values become NaN; absent categorical
    values become ``"none"``.
    """
    nums: list[float] = []
    for key in numeric:
        value = features.get(key)
        if isinstance(value, int | float) and math.isfinite(value):  # bool is an int
            nums.append(float(value))
        else:
            nums.append(math.nan)
    cats = [MISSING if features.get(key) is None else str(features.get(key)) for key in categorical]
    return nums, cats


def without_meta(features: Mapping[str, Any]) -> dict[str, Any]:
    """``features`` with the metadata features missing, as a bare question has them: the
    router trains and is evaluated this way by default, since the server gets no
    metadata unless the caller sends it (``solve(..., meta=)``, the request's
    ``metadata``); offline scores with it would overstate what users get."""
    out = dict(features)
    for key in META_FEATURES:
        if key in out:
            out[key] = math.nan if key in TEXT_NUMERIC else MISSING
    return out
