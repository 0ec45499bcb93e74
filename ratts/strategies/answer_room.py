"""Room for a final answer: a search branch the context is about to end answers instead.

A branch's prompt grows every step; left alone, the branch that outgrows the context ends
with no answer (a step cut by the context holds only what it wrote). So, for each branch:
- when the context leaves less than ``ANSWER_TOKENS`` after the policy's ``answer_cue``, it
  gets one answer-forcing completion instead of another step (the cue appended,
  ``max_tokens`` = what is left, stopping at the separator), as ``max_steps`` ends with a
  final rollout; with less than ``ANSWER_FLOOR`` left (the last step took the room), the
  answer is asked after the step before it;
- otherwise it steps (or rolls out) with ``max_tokens`` clipped to what the context leaves;
  a continuation the context cut is dropped and the branch answers from its last whole
  step instead (never spliced after half a sentence; its tokens are still in the usage).
With the context unknown or roomy nothing changes: one request for all prompts.

Room is the client's estimate (``Policy.room``); whether the context cut a continuation is
judged again after the reply, once the estimate has learnt this server's token counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ratts.endpoints.policy import Choice, Policy
from ratts.endpoints.pool import gather_all
from ratts.strategies.sampling import (
    RunLedger,
    answered_candidate,
    extend_candidate,
    rollout_candidate,
    step_prompt,
)
from ratts.types import Candidate

# Room an answer needs after the cue ("4329}." or "\frac{3}{4}}." and a margin); below
# ``ANSWER_FLOOR`` the answer is asked one step back, where the branch had room to say it.
ANSWER_TOKENS = 16
ANSWER_FLOOR = 8

Key = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Ask:
    prompt: str
    budget: int  # max_tokens
    key: Key  # derives the seed


async def _sample(
    run: RunLedger, policy: Policy, asks: Sequence[_Ask], n: int, step: bool
) -> list[list[Choice]]:
    """Each ask's ``n`` choices; asks with the same budget share one request, and all the
    requests are in flight together."""
    groups: dict[int, list[int]] = {}
    for i, ask in enumerate(asks):
        groups.setdefault(ask.budget, []).append(i)
    results = await gather_all(
        [
            run.sample_many(
                policy,
                [asks[i].prompt for i in members],
                n=n,
                keys=[asks[i].key for i in members],
                step=step,
                max_tokens=size,
            )
            for size, members in groups.items()
        ]
    )
    out: list[list[Choice]] = [[] for _ in asks]
    for members, got in zip(groups.values(), results, strict=True):
        for i, choices in zip(members, got, strict=True):
            out[i] = choices
    return out


@dataclass(frozen=True, slots=True)
class _Answer:
    """An answer-forcing request: after ``base`` steps, the cue appended."""

    base: Sequence[str]
    ask: _Ask
    left: int | None  # what the context leaves after the cue (None: unknown)


async def _answer_at(policy: Policy, question: str, base: Sequence[str], key: Key) -> _Answer:
    cued = step_prompt(policy, question, base) + policy.spec.answer_cue
    left = await policy.room(cued)
    size = max(1, ANSWER_TOKENS if left is None else left)
    return _Answer(base, _Ask(cued, size, (*key, "answer")), left)


async def _answer_for(
    policy: Policy, question: str, steps: Sequence[str], key: Key
) -> _Answer | None:
    """The answer-forcing request for a branch the context leaves too little to step in
    (None: it has room to step). With too little even for an answer, one step back."""
    here = await _answer_at(policy, question, steps, key)
    if here.left is None or here.left >= ANSWER_TOKENS:
        return None
    if here.left >= ANSWER_FLOOR or not steps:
        return here
    return await _answer_at(policy, question, steps[:-1], key)


def _refused(choice: Choice) -> bool:
    """The server refused the prompt (it no longer fits): nothing was written."""
    return choice.finish_reason == "length" and not choice.text


async def grow(
    run: RunLedger,
    policy: Policy,
    question: str,
    parents: Sequence[Sequence[str]],
    *,
    n: int,
    keys: Sequence[Key],
    step: bool = True,
) -> list[list[Candidate]]:
    """``n`` children of each parent: a step (``step=False``: a continuation to the end),
    or, for a branch the context is about to end, a final answer (see the module)."""
    asked = run.params.max_step_tokens if step else run.params.max_tokens
    sep = policy.separator
    cue = policy.spec.answer_cue
    prompts = [step_prompt(policy, question, steps) for steps in parents]
    answering = [
        await _answer_for(policy, question, steps, key)
        for steps, key in zip(parents, keys, strict=True)
    ]
    ending = [(i, a) for i, a in enumerate(answering) if a is not None]
    going = [i for i, a in enumerate(answering) if a is None]
    asks = []
    for i in going:
        left = await policy.room(prompts[i])
        # a prompt the context leaves less room goes alone, so it shortens no other
        size = asked if left is None else max(1, min(asked, left))
        asks.append(_Ask(prompts[i], size, keys[i]))
    grown, answers = await gather_all(
        [
            _sample(run, policy, asks, n, step),
            _sample(run, policy, [a.ask for _, a in ending], n, True),
        ]
    )
    children: list[list[Candidate]] = [[] for _ in parents]
    for (i, a), choices in zip(ending, answers, strict=True):
        children[i] = [answered_candidate(a.base, c, cue, sep) for c in choices]

    cut: list[tuple[int, int]] = []  # (parent, child): a continuation the context cut
    build = extend_candidate if step else rollout_candidate
    for i, ask, choices in zip(going, asks, grown, strict=True):
        children[i] = [build(parents[i], c, sep) for c in choices]
        after = await policy.room(prompts[i])  # with this reply's token counts learnt
        if ask.budget < asked or (after is not None and after < asked):
            cut += [
                (i, j)
                for j, c in enumerate(choices)
                if c.finish_reason == "length" and not _refused(c)  # refused: no room here
            ]
    if ending or cut:
        run.event("answer", now=len(ending) * n, after_cut=len(cut))
    if not cut:
        return children
    closing = [(await _answer_at(policy, question, parents[i], (*keys[i], j))).ask for i, j in cut]
    finals = await _sample(run, policy, closing, 1, True)
    for (i, j), (final,) in zip(cut, finals, strict=True):
        if not _refused(final):
            children[i][j] = answered_candidate(parents[i], final, cue, sep)
    return children
