"""ArithmeticPRM: a programmatic verifier that checks the arithmetic claims in each step.

No model: each step is scanned for claims ``expr = value`` and every claim is evaluated with
exact ``Fraction`` arithmetic by a small recursive-descent parser (never ``eval``). It gives a
real, free signal on arithmetic word problems (GSM8K-style), and it never sees the gold answer.

What counts as a claim
  * numbers: integers, decimals, thousands separators (``1,250``), ``$`` signs ignored;
  * operators ``+ - * / x × ÷ · \\times \\cdot \\div``, parentheses, unary minus; no powers;
  * ``a = b = c`` chains: every ``=`` must hold between its two neighbours;
  * ``≈`` is a claim within 1% (or one unit of the last digit written);
  * a side written as a decimal literal may be rounded or truncated to its digits
    (``10 / 3 = 3.33`` holds, ``7 / 2 = 3`` does not);
  * at least one side must contain an operator (``10 = 5`` is not a computation);
  * fragments are skipped, not guessed: a left side glued to text (``half of 10 = 5``,
    ``3x + 2 = 5``, ``2^3 + 1 = 9``, ``20% ...``) or a right side glued to more (``= 50%``);
  * GSM8K ``<<48/2=24>>`` annotations are checked on their own and removed from the text,
    so ``48/2 = <<48/2=24>>24`` reads as ``48/2 = 24``;
  * division by zero makes a claim false.

Scores (documented constants): a step with a false claim gets ``FALSE_SCORE``; a step whose
claims all hold gets ``TRUE_SCORE``; a step with nothing checkable gets ``NEUTRAL_SCORE``.
Every step after a wrong step is capped at ``AFTER_ERROR_CAP``: it builds on a wrong value.

Bounds: only the first ``MAX_STEP_CHARS`` characters of a step are read, numbers longer than
``MAX_DIGITS`` digits and expressions longer than ``MAX_SEGMENT_TOKENS`` tokens are skipped,
and at most ``MAX_CLAIMS`` claims are checked per step, so no input can blow up.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.prm import PRMResult, check_question
from ratts.endpoints.usage import Usage
from ratts.settings import PRMSpec

FALSE_SCORE = 0.05
TRUE_SCORE = 0.95
NEUTRAL_SCORE = 0.6
AFTER_ERROR_CAP = 0.5

MAX_STEP_CHARS = 20_000
MAX_DIGITS = 40
MAX_SEGMENT_TOKENS = 64
MAX_CLAIMS = 64

_SCAN = re.compile(
    r"""
    (?P<ws>(?:\s|\$|\\[$()\[\],;!:\ ]|\\left\b|\\right\b)+)
  | (?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)
  | (?P<latex>\\[A-Za-z]+)
  | (?P<word>[^\W\d_]+)
  | (?P<op>[-+*/×÷·⋅−])
  | (?P<lp>\()
  | (?P<rp>\))
  | (?P<eq>=|≈)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ANNOTATION = re.compile(r"<<([^<>]{0,500})>>")
_BOXED = re.compile(r"\\boxed\{([^{}]{0,500})\}")

_OPS = {"×": "*", "·": "*", "⋅": "*", "÷": "/", "−": "-"}
_LATEX_OPS = {"\\times": "*", "\\cdot": "*", "\\div": "/"}
# Punctuation that may touch a number without making it part of something else.
_SAFE_PUNCT = frozenset(".,;:!?\"'")
# Words that make the number after them part of a larger phrase ("half of 10 = 5").
_CONNECTORS = frozenset((
    "of", "times", "by", "per", "plus", "minus", "over", "than", "into", "from", "divided",
    "multiplied",
))  # fmt: skip

_ARITH = frozenset({"num", "op", "lp", "rp", "eq"})


@dataclass(slots=True)
class _Tok:
    kind: str  # num | op | lp | rp | eq | word | other
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Claim:
    """One checked claim: the two sides as written and whether ``left = right`` holds."""

    left: str
    right: str
    holds: bool


class _ParseError(Exception):
    pass


def _scan(text: str) -> list[_Tok]:
    """Raw tokens (whitespace dropped), then context fixes for x, LaTeX and glued numbers."""
    toks: list[_Tok] = []
    for m in _SCAN.finditer(text):
        kind = m.lastgroup or "other"
        if kind == "ws":
            continue
        tok = _Tok(kind, m.group(), m.start(), m.end())
        if kind == "latex":
            op = _LATEX_OPS.get(tok.text)
            tok.kind, tok.text = ("op", op) if op else ("word", tok.text)
        elif kind == "op":
            tok.text = _OPS.get(tok.text, tok.text)
        elif kind == "num" and sum(c.isdigit() for c in tok.text) > MAX_DIGITS:
            tok.kind = "word"
        toks.append(tok)
    for i, tok in enumerate(toks):
        if tok.kind == "word" and tok.text in ("x", "X"):
            prev = toks[i - 1] if i > 0 else None
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if prev and nxt and prev.kind in ("num", "rp") and nxt.kind in ("num", "lp"):
                tok.kind, tok.text = "op", "*"
    glued: list[int] = []
    for i, tok in enumerate(toks):
        if tok.kind != "num":
            continue
        for j in (i - 1, i + 1):
            if not 0 <= j < len(toks):
                continue
            other = toks[j]
            touching = other.end == tok.start if j < i else tok.end == other.start
            if not touching:
                continue
            if other.kind in ("word", "num") or (
                other.kind == "other" and other.text not in _SAFE_PUNCT
            ):
                glued.append(i)
    for i in glued:
        toks[i].kind = "word"
    return toks


def _number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


class _Parser:
    """expr := term (('+'|'-') term)*;  term := unary (('*'|'/') unary)*;
    unary := ('+'|'-') unary | NUM | '(' expr ')'.

    Values are Fractions; None stands for "undefined" (a division by zero) and propagates.
    """

    def __init__(self, toks: Sequence[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.binary_ops = 0

    def parse(self) -> Fraction | None:
        if not self.toks or len(self.toks) > MAX_SEGMENT_TOKENS:
            raise _ParseError
        value = self._expr()
        if self.i != len(self.toks):
            raise _ParseError
        return value

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _expr(self) -> Fraction | None:
        value = self._term()
        while (tok := self._peek()) is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            self.binary_ops += 1
            rhs = self._term()
            if value is None or rhs is None:
                value = None
            else:
                value = value + rhs if tok.text == "+" else value - rhs
        return value

    def _term(self) -> Fraction | None:
        value = self._unary()
        while (tok := self._peek()) is not None and tok.kind == "op" and tok.text in "*/":
            self.i += 1
            self.binary_ops += 1
            rhs = self._unary()
            if value is None or rhs is None:
                value = None
            elif tok.text == "*":
                value = value * rhs
            else:
                value = None if rhs == 0 else value / rhs
        return value

    def _unary(self) -> Fraction | None:
        tok = self._peek()
        if tok is None:
            raise _ParseError
        if tok.kind == "op" and tok.text in "+-":
            self.i += 1
            inner = self._unary()
            return None if inner is None else (-inner if tok.text == "-" else inner)
        if tok.kind == "num":
            self.i += 1
            return _number(tok.text)
        if tok.kind == "lp":
            self.i += 1
            inner = self._expr()
            close = self._peek()
            if close is None or close.kind != "rp":
                raise _ParseError
            self.i += 1
            return inner
        raise _ParseError


@dataclass(frozen=True, slots=True)
class _Side:
    value: Fraction | None  # None: undefined (division by zero)
    has_op: bool
    decimals: int | None  # digits after the point when the side is a bare literal
    text: str


def _side(toks: Sequence[_Tok], source: str) -> _Side:
    parser = _Parser(toks)
    value = parser.parse()
    body = [t for t in toks if not (t.kind == "op" and t.text in "+-")]
    decimals = None
    if len(body) == 1 and body[0].kind == "num" and parser.binary_ops == 0:
        literal = body[0].text
        decimals = len(literal.split(".", 1)[1]) if "." in literal else 0
    text = source[toks[0].start : toks[-1].end]
    return _Side(value, parser.binary_ops > 0, decimals, text)


def _holds(left: _Side, right: _Side, approx: bool) -> bool:
    if left.value is None or right.value is None:
        return False
    diff = abs(left.value - right.value)
    if diff == 0:
        return True
    digits = [s.decimals for s in (left, right) if s.decimals is not None]
    if approx:
        unit = Fraction(1, 10 ** max(digits)) if digits else Fraction(0)
        scale = max(abs(left.value), abs(right.value))
        return diff <= max(unit, scale / 100)
    places = [d for d in digits if d > 0]
    return bool(places) and diff < Fraction(1, 10 ** max(places))


def _start_is_clean(toks: list[_Tok], first: int) -> bool:
    """Is the run starting at ``toks[first]`` a whole expression, not a fragment?"""
    prev = toks[first - 1] if first > 0 else None
    head = toks[first]
    if head.kind == "op" and (head.text != "-" or (prev is not None and prev.kind == "word")):
        return False  # a dangling binary operator: its left operand is text we cannot read
    if prev is None:
        return True
    if prev.kind == "word":
        return prev.end < head.start and prev.text.lower() not in _CONNECTORS
    if prev.kind == "other":
        return prev.text in _SAFE_PUNCT
    return False


def _end_is_clean(toks: list[_Tok], last: int) -> bool:
    nxt = toks[last + 1] if last + 1 < len(toks) else None
    if nxt is None:
        return True
    if nxt.kind == "word":
        return toks[last].end < nxt.start
    if nxt.kind == "other":
        return nxt.text in _SAFE_PUNCT
    return False


def _runs(toks: list[_Tok], text: str) -> list[tuple[int, int, bool, bool]]:
    """Maximal arithmetic runs as (first, last, clean_start, clean_end).

    A number or "(" right after a number or ")" starts a new run (``3 1/2``, ``2(3+4)``);
    that boundary counts as clean only across a line break.
    """
    runs: list[tuple[int, int, bool, bool]] = []
    n = len(toks)
    i = 0
    after_boundary: bool | None = None  # set when the previous run ended at such a boundary
    while i < n:
        if toks[i].kind not in _ARITH:
            i += 1
            after_boundary = None
            continue
        first = i
        clean_start = _start_is_clean(toks, first) if after_boundary is None else after_boundary
        boundary: bool | None = None
        j = i
        while j + 1 < n and toks[j + 1].kind in _ARITH:
            a, b = toks[j], toks[j + 1]
            if a.kind in ("num", "rp") and b.kind in ("num", "lp"):
                boundary = "\n" in text[a.end : b.start]
                break
            j += 1
        clean_end = _end_is_clean(toks, j) if boundary is None else boundary
        runs.append((first, j, clean_start, clean_end))
        after_boundary = boundary
        i = j + 1
    return runs


def _claims_in(text: str, limit: int) -> list[Claim]:
    toks = _scan(text)
    claims: list[Claim] = []
    for first, last, clean_start, clean_end in _runs(toks, text):
        run = toks[first : last + 1]
        segments: list[list[_Tok]] = [[]]
        eqs: list[str] = []
        for tok in run:
            if tok.kind == "eq":
                eqs.append(tok.text)
                segments.append([])
            else:
                segments[-1].append(tok)
        for k, eq in enumerate(eqs):
            left, right = segments[k], segments[k + 1]
            if not left or not right:
                continue
            if (k == 0 and not clean_start) or (k + 1 == len(eqs) and not clean_end):
                continue
            try:
                lhs, rhs = _side(left, text), _side(right, text)
            except _ParseError:
                continue
            if not (lhs.has_op or rhs.has_op):
                continue
            claims.append(Claim(lhs.text, rhs.text, _holds(lhs, rhs, approx=eq == "≈")))
            if len(claims) >= limit:
                return claims
    return claims


def find_claims(step: str) -> list[Claim]:
    """Every checkable arithmetic claim in a step, in order (bounded, never raises)."""
    text = step[:MAX_STEP_CHARS]
    annotations = [m.group(1) for m in _ANNOTATION.finditer(text)]
    text = _ANNOTATION.sub(" ", text)
    text = _BOXED.sub(lambda m: f" {m.group(1)} ", text)
    claims: list[Claim] = []
    for piece in [*annotations, text]:
        claims.extend(_claims_in(piece, MAX_CLAIMS - len(claims)))
        if len(claims) >= MAX_CLAIMS:
            break
    return claims


def evaluate(expression: str) -> Fraction:
    """Exact value of an arithmetic expression; ValueError if it is not one,
    ZeroDivisionError on division by zero."""
    toks = _scan(expression[:MAX_STEP_CHARS])
    if any(t.kind not in ("num", "op", "lp", "rp") for t in toks):
        raise ValueError(f"not an arithmetic expression: {expression[:60]!r}")
    try:
        value = _Parser(toks).parse()
    except _ParseError:
        raise ValueError(f"not an arithmetic expression: {expression[:60]!r}") from None
    if value is None:
        raise ZeroDivisionError(f"division by zero in {expression[:60]!r}")
    return value


#: distinct steps whose verdicts are remembered (a few MB at most: steps are short)
VERDICT_CACHE = 16_384


@functools.lru_cache(maxsize=VERDICT_CACHE)
def step_verdict(step: str) -> bool | None:
    """True if every claim holds, False if any fails, None if there is nothing to check.

    Remembered per step text: a verdict depends on the step alone, and a tree search
    scores every candidate's whole prefix at each depth, so without the cache each step
    would be parsed again at every later depth of its branch (and once per sibling)."""
    claims = find_claims(step)
    if not claims:
        return None
    return all(c.holds for c in claims)


def score_steps(steps: Sequence[str]) -> list[float]:
    """Per-step scores for one candidate (see the module docstring for the constants)."""
    scores: list[float] = []
    wrong_before = False
    for step in steps:
        verdict = step_verdict(step)
        score = NEUTRAL_SCORE if verdict is None else TRUE_SCORE if verdict else FALSE_SCORE
        if wrong_before:
            score = min(score, AFTER_ERROR_CAP)
        wrong_before = wrong_before or verdict is False
        scores.append(score)
    return scores


class ArithmeticPRM(AsyncClosing):
    """The PRM protocol over ``score_steps``: no model, no tokens, no requests."""

    def __init__(self, spec: PRMSpec | None = None) -> None:
        self.spec = spec
        self.name = spec.name if spec is not None else "arithmetic"

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        check_question(question)
        return PRMResult(scores=[score_steps(steps) for steps in candidates], usage=Usage())
