"""Train/test splits keyed by question TEXT, not problem id.

Questions asked through the API get fresh ids, so a split by id can put the same question
on both sides and overstate what a router learned. Everything here groups by a hash of the
normalised text (case and whitespace folded), and ``dedupe`` keeps one problem per text.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

from ratts.types import Problem


def normalise(question: str) -> str:
    """The text a split compares: lower case, runs of whitespace folded to one space."""
    return " ".join(question.split()).lower()


def text_key(question: str) -> str:
    """A stable hash of the normalised question text (the split's group key)."""
    return hashlib.sha256(normalise(question).encode()).hexdigest()[:24]


def dedupe(problems: Iterable[Problem]) -> list[Problem]:
    """The first problem of each distinct normalised text, in order."""
    seen: set[str] = set()
    out: list[Problem] = []
    for p in problems:
        key = text_key(p.question)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def split_keys(keys: Iterable[str], test_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, test) of the distinct ``keys``: a seeded shuffle, ``test_fraction`` tested."""
    ids = sorted(set(keys))
    random.Random(seed).shuffle(ids)
    cut = round(len(ids) * test_fraction)
    return set(ids[cut:]), set(ids[:cut])


def split_by_text(
    problems: Sequence[Problem], test_fraction: float, seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems, deduplicated, with no normalised text on both sides."""
    unique = dedupe(problems)
    _, test = split_keys((text_key(p.question) for p in unique), test_fraction, seed)
    return (
        [p for p in unique if text_key(p.question) not in test],
        [p for p in unique if text_key(p.question) in test],
    )
