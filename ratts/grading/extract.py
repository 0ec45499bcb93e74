"""Final-answer extraction from a solution text.

Priority: the last complete ``\\boxed{...}`` / ``\\fbox{...}``, then "The (final) answer is X",
then a GSM8K ``#### X`` line, then the last number in the text. Boxed contents are found by
a brace-matching scan, because a regex cannot balance nested braces like
``\\boxed{\\frac{1}{2}}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.S)
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# ``\boxed 5``: the brace-less form TeX also accepts (one token, up to a space or ``$``).
_BOX_BARE = re.compile(r"\\boxed[ \t]+([^\s{}$]+)")
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is\b|:)\s*:?", re.I)
_GSM8K = re.compile(r"####[ \t]*([^\n]+)")
_NUMBER = re.compile(
    r"(?<![\w.)\]}])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?"
    r"|(?<![\w.])\.\d+"
)
_LEADING_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?(?![\w^])")
_MATH_SPAN = re.compile(r"^\$+([^$]+)\$+")
# A sentence end: a period not inside a number (followed by a space or the end).
_SENTENCE_END = re.compile(r"\.(?=\s|$)")


@dataclass(frozen=True, slots=True)
class _Span:
    start: int  # index of the backslash that starts the command
    end: int  # index just past the closing brace (or the bare token)
    inner: slice  # where the content lies


def _boxed_spans(text: str) -> list[_Span]:
    """Every complete boxed answer in ``text``, in order of where it ends.

    One left-to-right pass over the braces with a stack of open ones; a backslash escapes
    the next character, so ``\\{`` and ``\\}`` are literal braces, as in TeX.
    """
    openers = {m.end() - 1: m.start() for m in _BOX_OPEN.finditer(text)}
    spans: list[_Span] = []
    stack: list[int] = []  # positions of unmatched '{'
    for token in _BRACE_TOKENS.finditer(text):
        ch = token.group()
        if ch == "{":
            stack.append(token.start())
        elif ch == "}" and stack:
            pos = stack.pop()
            start = openers.get(pos)
            if start is not None:
                spans.append(_Span(start, token.end(), slice(pos + 1, token.start())))
    for m in _BOX_BARE.finditer(text):
        spans.append(_Span(m.start(), m.end(), slice(m.start(1), m.end(1))))
    spans.sort(key=lambda s: s.end)
    return spans


def _last_boxed(text: str) -> str | None:
    """The content of the last non-empty boxed answer, unwrapping ``\\boxed{\\boxed{x}}``."""
    for span in reversed(_boxed_spans(text)):
        content = text[span.inner].strip()
        if not content:
            continue
        for _ in range(8):  # a box wrapping nothing but another box: take the inner one
            inner = _boxed_spans(content)
            if not inner or inner[-1].start != 0 or inner[-1].end != len(content):
                break
            unwrapped = content[inner[-1].inner].strip()
            if not unwrapped:
                break
            content = unwrapped
        return content
    return None


def has_boxed(text: str) -> bool:
    """True when the text holds a complete, non-empty boxed answer (the solution is done)."""
    return _last_boxed(text) is not None


def states_final_answer(text: str) -> bool:
    """True when the text says its final answer outright (boxed, "The answer is", ``####``).

    Unlike ``extract_answer`` it ignores a bare last number: an intermediate step has those.
    """
    return stated_answer(text) is not None


def _clean_phrase(raw: str) -> str | None:
    """The answer part of the rest of an "answer is ..." line."""
    text = raw.strip()
    math = _MATH_SPAN.match(text)
    if math:
        text = math.group(1)
    else:
        end = _SENTENCE_END.search(text)
        if end:
            text = text[: end.start()]
    text = text.strip().strip("$").strip()
    if text.startswith("\\(") and text.endswith("\\)"):
        text = text[2:-2].strip()
    text = text.rstrip(".").strip()
    return text or None


def _answer_phrase(text: str) -> str | None:
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        rest = text[m.end() :].lstrip()  # the answer may sit on the next line
        found = _clean_phrase(rest.split("\n", 1)[0])
        if found is not None:
            return found
    return None


def _gsm8k(text: str) -> str | None:
    for m in reversed(list(_GSM8K.finditer(text))):
        found = m.group(1).strip().lstrip("$").rstrip(".").strip()
        number = _LEADING_NUMBER.match(found)
        if number:  # "#### 12 apples" -> "12"
            return number.group(0)
        if found:
            return found
    return None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last.group(0) if last else None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution text, or None when it states none."""
    found = stated_answer(text)
    return found if found is not None else _last_number(text)


def stated_answer(text: str, *, cut: bool = False) -> str | None:
    """An answer the text states explicitly (``\\boxed{}``, "The answer is", ``####``).

    For texts that stopped mid-way, whose last number is no answer, only an intermediate
    value. ``cut``: the text was cut by a token limit, so its last line may hold half an
    answer ("The answer is 43" of 4329): only a complete ``\\boxed{}`` or an answer on an
    earlier line counts.
    """
    if cut:
        if has_boxed(text):
            return _last_boxed(text)
        text = text[: text.rfind("\n")] if "\n" in text else ""
    for finder in (_last_boxed, _answer_phrase, _gsm8k):
        found = finder(text)
        if found is not None:
            return found
    return None
