"""The simulated world: a step-wise MDP per question, a policy that walks it, a PRM that judges it.

Everything derives from hashes of (seed, question, ...), so the server holds no per-problem
state: it reads the question and the steps so far back out of each prompt.

A problem has ``L`` value steps ``x_1..x_L`` with ``x_k = (a_k * x_{k-1} + b_k) mod 10007`` and
gold answer ``x_L``. A step is right when its value equals the true ``x_k`` and every earlier
step was right. After the first error the policy keeps applying the right operation to the
wrong value (so the chain stays wrong), may rush to an answer early, and answers one of three
distractors per problem, weighted 0.5/0.3/0.2 so that majority voting can be fooled.

Text protocol (one step per chunk, chunks separated by ``"\\n\\n"``)::

    Step k: <filler words> from x_{k-1} = <prev> we get x_k = <value>.
    The final answer is \\boxed{<answer>}.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

MOD = 10007
REF_STEPS = 6
REF_STEP_TOKENS = 18  # a typical value step: 13 tokens of frame + 2..9 filler words
SEPARATOR = "\n\n"
DISTRACTOR_WEIGHTS = (0.5, 0.3, 0.2)
GREEDY_DRAW = 0.4999

_DIFFICULTY_TAG = re.compile(r"\[difficulty=([0-9]*\.?[0-9]+)\]")
STEP_MARK = re.compile(r"Step \d+:")
ANSWER_LEAD = "The final answer is"
_STEP_SPLIT = re.compile(rf"(?=Step \d+:)|(?={ANSWER_LEAD})")
_VALUE = re.compile(r"x_\d+ = (-?\d+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_FILLER = (
    "we", "note", "that", "the", "term", "simplifies", "using", "substitution", "then",
    "combine", "like", "terms", "apply", "identity", "expand", "factor", "carefully",
    "rewrite", "expression", "so", "next", "check", "sign", "carry", "result",
)  # fmt: skip


def stable_hash(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by ``parts``."""
    return stable_hash(*parts) / 2.0**64


def _normal(*parts: object) -> float:
    u = min(max(_unit(*parts), 1e-12), 1.0 - 1e-12)
    return NormalDist().inv_cdf(u)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def count_tokens(text: str) -> int:
    """The sim's tokenizer: words and single punctuation marks."""
    return sum(1 for _ in _TOKEN.finditer(text))


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The prefix of ``text`` holding its first ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    for i, m in enumerate(_TOKEN.finditer(text), start=1):
        if i == max_tokens:
            return text[: m.end()]
    return text


@dataclass(frozen=True, slots=True)
class ProblemModel:
    """The hidden truth of one question under one seed."""

    question: str
    difficulty: float
    values: tuple[int, ...]  # x_0 .. x_L
    step_difficulty: tuple[float, ...]  # for steps 1 .. L (index 0 unused)
    gold: str
    distractors: tuple[str, ...]

    @property
    def num_steps(self) -> int:
        return len(self.values) - 1

    def advance(self, value: int, k: int, seed: int) -> int:
        """The right operation of step k applied to ``value``."""
        a = 2 + stable_hash(seed, self.question, "a", k) % 97
        b = stable_hash(seed, self.question, "b", k) % MOD
        return (value * a + b) % MOD


def _difficulty(question: str, seed: int) -> float:
    tag = _DIFFICULTY_TAG.search(question)
    if tag:
        return min(max(float(tag.group(1)), 0.0), 1.0)
    return 0.05 + 0.9 * _unit(seed, question, "difficulty")


@lru_cache(maxsize=8192)
def problem_model(question: str, seed: int) -> ProblemModel:
    """Build (and cache) the hidden MDP of a question."""
    q = question.strip()
    d = _difficulty(q, seed)
    length = 3 + round(d * 4) + stable_hash(seed, q, "len") % 2
    values = [stable_hash(seed, q, "x0") % MOD]
    step_d = [d]
    shell = ProblemModel(q, d, (), (), "", ())
    for k in range(1, length + 1):
        values.append(shell.advance(values[-1], k, seed))
        step_d.append(min(max(d + 0.15 * (_unit(seed, q, "dk", k) - 0.5), 0.0), 1.0))
    gold = values[-1]
    distractors: list[str] = []
    i = 0
    while len(distractors) < len(DISTRACTOR_WEIGHTS):
        off = 1 + stable_hash(seed, q, "distractor", i) % 60
        sign = 1 if stable_hash(seed, q, "sign", i) % 2 else -1
        cand = str((gold + sign * off) % MOD)
        if cand != str(gold) and cand not in distractors:
            distractors.append(cand)
        i += 1
    return ProblemModel(q, d, tuple(values), tuple(step_d), str(gold), tuple(distractors))


def difficulty(question: str, seed: int = 0) -> float:
    """Difficulty in [0, 1] (a ``[difficulty=x]`` tag in the question forces it)."""
    return problem_model(question, seed).difficulty


def gold_answer(question: str, seed: int = 0) -> str:
    """The answer a fully right solution ends with."""
    return problem_model(question, seed).gold


def num_steps(question: str, seed: int = 0) -> int:
    """How many value steps a right solution has (3..8)."""
    return problem_model(question, seed).num_steps


# ---------------------------------------------------------------- reading text back


def extract_question(prefix: str) -> str:
    """The question inside a prompt prefix.

    After the last ``"Problem: "`` up to ``"\\n\\nSolution:"`` (else the next blank line); else
    the user turn of a Qwen chat template; else the whole prefix.
    """
    start = prefix.rfind("Problem: ")
    if start >= 0:
        start += len("Problem: ")
        ends = [prefix.find(m, start) for m in ("\n\nSolution:", "<|im_end|>")]
        found = [e for e in ends if e >= 0]
        if not found:
            blank = prefix.find("\n\n", start)
            found = [blank] if blank >= 0 else [len(prefix)]
        return prefix[start : min(found)].strip()
    user = prefix.rfind("<|im_start|>user\n")
    if user >= 0:
        start = user + len("<|im_start|>user\n")
        end = prefix.find("<|im_end|>", start)
        return prefix[start : end if end >= 0 else len(prefix)].strip()
    return prefix.strip()


def split_steps(region: str) -> list[str]:
    """Cut solution text into steps at each step marker or the final-answer sentence."""
    return [s.strip() for s in _STEP_SPLIT.split(region) if s.strip()]


def split_prompt(prompt: str) -> tuple[str, list[str]]:
    """(question, steps so far) of a policy prompt."""
    q_start = prompt.rfind("Problem: ")
    mark = STEP_MARK.search(prompt, max(q_start, 0))
    if mark is None:
        answer = prompt.find(ANSWER_LEAD, max(q_start, 0))
        cut = answer if answer >= 0 else len(prompt)
    else:
        cut = mark.start()
    return extract_question(prompt[:cut]), split_steps(prompt[cut:])


def step_answer(step: str) -> str | None:
    """The boxed answer of a step, if it gives one."""
    m = _BOXED.search(step)
    return m.group(1).strip() if m else None


def step_value(step: str) -> int | None:
    found = _VALUE.findall(step)
    return int(found[-1]) if found else None


def correctness(problem: ProblemModel, steps: Sequence[str]) -> list[bool]:
    """Prefix correctness: step i is right iff it and every step before it is right."""
    out: list[bool] = []
    ok = True
    value_index = 0
    for step in steps:
        answer = step_answer(step)
        if answer is not None:
            this = answer == problem.gold
        else:
            value_index += 1
            value = step_value(step)
            this = value_index <= problem.num_steps and value == problem.values[value_index]
        ok = ok and this
        out.append(ok)
    return out


# ---------------------------------------------------------------- the policy


class Draws:
    """Uniform draws for one sampled choice; greedy decoding always draws just below 0.5."""

    def __init__(self, key: int, greedy: bool) -> None:
        self._key = key
        self._greedy = greedy
        self._i = 0

    def __call__(self) -> float:
        if self._greedy:
            return GREEDY_DRAW
        self._i += 1
        return _unit(self._key, self._i)


def step_probability(skill: float, step_difficulty: float, temperature: float) -> float:
    """P(step right | chain right so far); temperature sharpens (<1) or flattens (>1) it."""
    logit = 6.0 * (skill - step_difficulty) + 2.5
    return _sigmoid(logit / max(temperature, 0.05))


def _filler(draw: Draws, shrink: float = 0.0) -> str:
    """2..9 words of "reasoning"; ``shrink`` in [0, 1] keeps only the shortest part of that
    range. The draws are the same either way, so the rest of the sample is unchanged."""
    u = draw()
    words = [_FILLER[int(draw() * len(_FILLER))] for _ in range(2 + int(u * 8))]
    return " ".join(words[: 2 + int(u * 8 * (1.0 - shrink))])


def _distractor(problem: ProblemModel, draw: Draws) -> str:
    """A wrong final answer: one of the problem's distractors, by their weights."""
    u, acc = draw(), 0.0
    for w, cand in zip(DISTRACTOR_WEIGHTS, problem.distractors, strict=True):
        acc += w
        if u < acc:
            return cand
    return problem.distractors[-1]


def _answer_sentence(answer: str) -> str:
    return f"{ANSWER_LEAD} \\boxed{{{answer}}}."


def answer_rest(problem: ProblemModel, prior: Sequence[str], draw: Draws) -> str | None:
    """The rest of a final-answer sentence the prompt has begun (an answer cue such as
    "The final answer is \\boxed{"), or None when the prompt ends in no such beginning.

    Told to answer now, the policy states the gold answer when its chain is right and
    complete, and otherwise rushes to a distractor (as after an error).
    """
    if not prior or not prior[-1].startswith(ANSWER_LEAD) or step_answer(prior[-1]) is not None:
        return None
    before = prior[:-1]
    values = sum(1 for s in before if step_answer(s) is None)
    right = all(correctness(problem, before)) and values >= problem.num_steps
    sentence = _answer_sentence(problem.gold if right else _distractor(problem, draw))
    return sentence[len(prior[-1]) :] if sentence.startswith(prior[-1]) else None


def continue_solution(
    problem: ProblemModel,
    prior: Sequence[str],
    *,
    skill: float,
    rush: float,
    seed: int,
    draw: Draws,
    temperature: float,
    terse_errors: float = 0.0,
) -> Iterator[str]:
    """The steps the policy writes after ``prior``, ending with the final-answer step.

    Lazy, so a server can stop at the first stop string without writing the rest.
    ``terse_errors`` in [0, 1]: the step where the chain goes wrong is written with less
    reasoning (its filler is drawn from the shortest ``1 - terse_errors`` of the range), as
    when a model skips reasoning and slips; 0 leaves every sample as it was.
    """
    if any(step_answer(s) is not None for s in prior):
        return
    flags = correctness(problem, prior)
    ok = all(flags)
    prev = problem.values[0]
    for s in reversed(prior):
        v = step_value(s)
        if v is not None:
            prev = v
            break
    k = len(prior) + 1
    while True:
        if k > problem.num_steps or (not ok and draw() < rush):
            yield _answer_sentence(problem.gold if ok else _distractor(problem, draw))
            return
        shrink = 0.0
        if ok:
            p = step_probability(skill, problem.step_difficulty[k], temperature)
            if draw() < p:
                value = problem.values[k]
            else:
                value = (problem.values[k] + 1 + int(draw() * (MOD - 1))) % MOD
                if value == problem.values[k]:
                    value = (value + 1) % MOD
                ok = False
                shrink = terse_errors
        else:
            value = problem.advance(prev, k, seed)
        filler = _filler(draw, shrink)
        yield f"Step {k}: {filler} from x_{k - 1} = {prev} we get x_{k} = {value}."
        prev = value
        k += 1


# ---------------------------------------------------------------- the PRM


def prm_rewards(
    problem: ProblemModel,
    steps: Sequence[str],
    *,
    prm_name: str,
    quality: float,
    noise: float,
    length_bias: float,
    seed: int,
    step_length_bias: float = 0.0,
) -> list[float]:
    """Per-step rewards in [0, 1]: a noisy, causal signal of prefix correctness.

    The noise of step i depends only on the text up to step i; ``length_bias`` adds a logit
    bonus on an answer step for each step the solution is shorter than ``REF_STEPS``;
    ``step_length_bias`` adds a logit bonus on every other step for each token it is
    shorter than ``REF_STEP_TOKENS`` (a malus when longer): a PRM that prefers terse steps.
    """
    flags = correctness(problem, steps)
    rewards: list[float] = []
    for i, ok in enumerate(flags):
        prefix = SEPARATOR.join(s.strip() for s in steps[: i + 1])
        logit = (quality if ok else -quality) + noise * _normal(
            seed, prm_name, problem.question, prefix
        )
        is_answer = step_answer(steps[i]) is not None
        if length_bias and is_answer:
            logit += length_bias * (REF_STEPS - (i + 1))
        if step_length_bias and not is_answer:
            logit += step_length_bias * (REF_STEP_TOKENS - count_tokens(steps[i]))
        rewards.append(_sigmoid(logit))
    return rewards
