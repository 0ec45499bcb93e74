"""Is a predicted answer equivalent to the gold one?

Three tests, any of which may say yes: math-verify (symbolic, run time-limited in a child
process, see ``ratts.grading.sandbox``), an exact numeric comparison after stripping
formatting (``2,125`` = ``2125``, ``025`` = ``25``, ``\\frac{1}{2}`` = ``0.5`` = ``1/2``,
units and ``\\%`` dropped) and a normalised string comparison (``\\text{(C)}`` = ``(C)`` =
``C``). The cheap two run first; when both answers are exact rationals (integers,
decimals, fractions) their exact comparison is final and math-verify is skipped (it would
only add cost). Nothing here raises and
nothing waits without a bound.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from fractions import Fraction

from ratts.grading.extract import _last_boxed
from ratts.grading.sandbox import sandbox

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0
# Longer answers are not worth a symbolic parse; they are compared as strings only.
MAX_SYMBOLIC_CHARS = 2000
_CACHE_SIZE = 65536

_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)
_NOISE = re.compile(
    r"\\left|\\right|\\displaystyle|\\[!,;: ]|~|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\%|%|\\\$"
)
_DELIMS = re.compile(r"^(?:\$+|\\\(|\\\[)|(?:\$+|\\\)|\\\])$")
_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")
_PAREN_NUMBER = re.compile(r"^\((-?[\d.,/]+)\)$")
_ASSIGN = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?:\.\d+)?"
_PLAIN_NUMBER = re.compile(rf"^\s*({_NUM})\s*(?:/\s*({_NUM}))?\s*([A-Za-z]{{2,}}[A-Za-z .]*)?$")
_BARE_NUMBER = re.compile(r"^\s*\$?\s*-?[\d.,]+(?:/\d+)?\s*\$?\s*$")
_NUMERAL = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_FRAC = re.compile(
    r"^\s*(-?)\s*\\frac\s*(?:\{\s*([^{}]+?)\s*\}|(\d))\s*(?:\{\s*([^{}]+?)\s*\}|(\d))\s*$"
)

_cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
_cache_lock = threading.Lock()


def _strip_latex(answer: str) -> str:
    """Formatting removed, spaces kept: the common first step of both fallbacks."""
    text = answer.strip()
    if "\\boxed" in text or "\\fbox" in text:
        text = _last_boxed(text) or text
    for _ in range(3):
        text = _DELIMS.sub("", text.strip())
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for _ in range(5):
        unwrapped = _WRAPPERS.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    text = _NOISE.sub(" ", text)
    return text.strip().rstrip(".").strip()


def normalize(answer: str) -> str:
    """A canonical string: no LaTeX formatting, no spaces; choices as a capital letter."""
    text = "".join(_strip_latex(answer).split())
    text = text.rstrip(".")
    choice = _CHOICE.match(text)
    if choice:
        return choice.group(1).upper()
    paren = _PAREN_NUMBER.match(text)
    if paren:
        return paren.group(1)
    return text


def _to_fraction(text: str) -> Fraction | None:
    cleaned = text.replace(",", "")
    if cleaned in ("", "-", ".", "-."):
        return None
    return Fraction(cleaned)


def as_number(answer: str) -> Fraction | None:
    """The exact value of a plain numeric answer (integer, decimal, a/b, \\frac{a}{b})."""
    text = _ASSIGN.sub("", _strip_latex(answer))
    paren = _PAREN_NUMBER.match("".join(text.split()))
    if paren:
        text = paren.group(1)
    try:
        frac = _FRAC.match(text)
        if frac:
            num = _to_fraction(frac.group(2) or frac.group(3))
            den = _to_fraction(frac.group(4) or frac.group(5))
            if num is None or den is None or den == 0:
                return None
            return -(num / den) if frac.group(1) else num / den
        plain = _PLAIN_NUMBER.match(text)
        if not plain:
            return None
        whole = _to_fraction(plain.group(1))
        if whole is None or plain.group(2) is None:
            return whole
        den = _to_fraction(plain.group(2))
        if den is None or den == 0:
            return None
        return whole / den
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def is_rational_literal(answer: str) -> bool:
    """Whether ``answer`` is written as an exact rational (an integer, a decimal, ``a/b`` or
    ``\\frac{a}{b}`` of such), so its value alone decides equality."""
    if _BARE_NUMBER.match(answer):
        return True
    frac = _FRAC.match(_strip_latex(answer))
    if frac is None:
        return False
    parts = (frac.group(2) or frac.group(3), frac.group(4) or frac.group(5))
    return all(_NUMERAL.match(part) for part in parts)


def _symbolic(pred: str, gold: str, timeout_s: float) -> bool:
    key = (gold, pred)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    verdict = sandbox().verify(gold, pred, timeout_s)
    if verdict is None:  # timed out or no worker: not cached, the next try may succeed
        return False
    with _cache_lock:
        _cache[key] = verdict
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return verdict


def _equivalent(pred: str, gold: str, timeout_s: float) -> bool:
    if not pred.strip() or not gold.strip():
        return False
    norm_pred, norm_gold = normalize(pred), normalize(gold)
    if norm_pred and norm_pred == norm_gold:
        return True
    if norm_pred.isalpha() and norm_gold.isalpha() and norm_pred.lower() == norm_gold.lower():
        return True
    num_pred, num_gold = as_number(pred), as_number(gold)
    if num_pred is not None and num_gold is not None:
        if num_pred == num_gold:
            return True
        if is_rational_literal(pred) and is_rational_literal(gold):
            return False  # two exact rationals that differ: nothing symbolic to find
    if len(pred) + len(gold) > MAX_SYMBOLIC_CHARS or timeout_s <= 0:
        return False
    return _symbolic(pred, gold, timeout_s)


def is_equivalent(pred: str | None, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when ``pred`` denotes the same answer as ``gold``; False on any doubt.

    Never raises, and returns within about ``timeout_s`` (plus, once, a child's start-up).
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    try:
        return _equivalent(pred, gold, timeout_s)
    except Exception:  # a grader must not take a run down; "not equivalent" is safe
        log.debug("equivalence check failed", exc_info=True)
        return False


def grade(pred_answer: str | None, gold: str | None) -> bool | None:
    """Correctness of a predicted answer; None when there is no gold answer to grade by."""
    if gold is None:
        return None
    return is_equivalent(pred_answer, gold)
