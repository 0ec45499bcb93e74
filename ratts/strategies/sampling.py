"""Shared helpers for every strategy: prompts, turning Choices into candidates, validation
and the per-run ledger (usage, trace, wall clock).

Prompts are prefix-stable: a step-wise continuation is always
``prompt + sep.join(steps) + sep``, so the server's prefix cache is reused across steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ratts.endpoints.policy import Choice, CompletionResult, Policy
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage, attach_spent
from ratts.errors import (
    BadResponseError,
    EndpointError,
    EndpointTimeoutError,
    EndpointUnreachableError,
    InputError,
    InvalidParamsError,
)
from ratts.grading import extract_answer, has_boxed, stated_answer
from ratts.types import Candidate, Outcome, Problem, StrategyParams

# ---------------------------------------------------------------- validation


def check_positive(label: str, value: int, param: str) -> None:
    """One-line InvalidParamsError unless ``value`` is a positive integer; ``param`` is its
    StrategyParams field."""
    if value < 1:
        raise InvalidParamsError(f"{label} must be a positive integer, got {value}", param=param)


def check_common(params: StrategyParams) -> None:
    """Checks every strategy shares: a positive budget and token limits, sane sampling."""
    check_positive("N", params.n, "n")
    check_positive("max_tokens", params.max_tokens, "max_tokens")
    # refused here, up front, not by the server on every run of a sweep
    if not math.isfinite(params.temperature) or params.temperature < 0:
        raise InvalidParamsError(
            f"temperature must be 0 or more, got {params.temperature:g}", param="temperature"
        )
    if not math.isfinite(params.top_p) or not 0 < params.top_p <= 1:
        raise InvalidParamsError(f"top_p must be in (0, 1], got {params.top_p:g}", param="top_p")


def check_tree(label: str, params: StrategyParams) -> None:
    """Beam search and DVTS: N a positive multiple of M, positive step limits."""
    check_common(params)
    check_positive("M", params.beam_width, "beam_width")
    check_positive("max_steps", params.max_steps, "max_steps")
    check_positive("max_step_tokens", params.max_step_tokens, "max_step_tokens")
    if params.n % params.beam_width != 0:
        raise InvalidParamsError(
            f"{label} needs N to be a multiple of M (N={params.n}, M={params.beam_width})",
            param="n",
        )


def check_problem(problem: Problem) -> None:
    if not problem.question.strip():
        raise InputError("the question is empty", param="question")


#: what a PRM endpoint raises when it is down after its retries (or its outage grace): no
#: connection or no answer. A PRM that answers with an error (5xx, 429, 4xx, a malformed
#: body) is up but failing: that is shown as the run's error, not voted past
PRM_DOWN = (EndpointUnreachableError, EndpointTimeoutError)


def prm_down(exc: BaseException) -> bool:
    """Whether ``exc`` says a PRM that was up has gone down (strategies then vote instead).

    A PRM that never answered in this process is more likely a wrong URL or port than an
    outage: that fails the run with its one-line error, as any misconfiguration does."""
    return isinstance(exc, PRM_DOWN) and exc.role == "PRM" and exc.answered_before


def require_prm(strategy: str, prm: PRM | None) -> PRM:
    if prm is None:
        raise InvalidParamsError(f"{strategy} needs a PRM", param="prm")
    return prm


# ---------------------------------------------------------------- prompts and steps


def step_prompt(policy: Policy, question: str, steps: Sequence[str]) -> str:
    """The continuation prompt after ``steps``: prompt alone, or prompt + steps + separator."""
    prompt = policy.prompt(question)
    if not steps:
        return prompt
    sep = policy.separator
    return prompt + sep.join(steps) + sep


def split_steps(text: str, separator: str) -> list[str]:
    """A whole solution as steps: split on the separator, dropping blank pieces."""
    return [part for part in text.split(separator) if part.strip()]


def _answer(text: str, choice: Choice, separator: str) -> str | None:
    """A terminal text's answer. Where the model ended the text itself (EOS or a stop
    string other than the separator) its final number counts; a text cut by the token
    limit, or an empty step at the separator, holds an answer only if it wrote one (its
    last number is an intermediate value)."""
    if choice.finish_reason == "length":
        return stated_answer(text, cut=True)
    ended = choice.finish_reason == "stop" and choice.stop_reason != separator
    return extract_answer(text) if ended else stated_answer(text)


def solution_candidate(choice: Choice, separator: str) -> Candidate:
    """A candidate from one whole-solution sample.

    Finished at EOS or a stop string, at the token limit (the model had its whole budget;
    it holds an answer only if it wrote one) or once a complete ``\\boxed{}`` answer is
    present.
    """
    finished = choice.finish_reason in ("stop", "length") or has_boxed(choice.text)
    return Candidate(
        steps=split_steps(choice.text, separator),
        answer=_answer(choice.text, choice, separator),
        finished=finished,
    )


def rollout_candidate(parent: Sequence[str], choice: Choice, separator: str) -> Candidate:
    """``parent`` continued to the end by one whole-solution sample (the final rollout of a
    search that reached ``max_steps``): finished, with the answer it reached."""
    steps = [*parent, *split_steps(choice.text, separator)]
    return Candidate(
        steps=steps, answer=_answer(separator.join(steps), choice, separator), finished=True
    )


def extend_candidate(parent: Sequence[str], choice: Choice, separator: str) -> Candidate:
    """A child candidate: ``parent`` steps plus one sampled step.

    In step mode only the separator means "more to come". Terminal: EOS, another stop
    string, a boxed answer, a step cut by the token limit (the paper's rule: a cut step is
    not a step to splice a separator into) and an empty step (nothing new to score or
    grow). Only terminal candidates get an answer; a cut one only if it wrote one.
    """
    steps = list(parent)
    empty = not choice.text.strip()
    if not empty:
        steps.append(choice.text)
    stopped_elsewhere = choice.finish_reason == "stop" and choice.stop_reason not in (
        None,
        separator,
    )
    finished = (
        empty
        or choice.hit_eos
        or stopped_elsewhere
        or choice.finish_reason == "length"
        or has_boxed(choice.text)
    )
    # a partial solution has no answer yet (its last number is an intermediate value)
    answer = _answer(separator.join(steps), choice, separator) if finished else None
    return Candidate(steps=steps, answer=answer, finished=finished)


def answered_candidate(base: Sequence[str], choice: Choice, cue: str, separator: str) -> Candidate:
    """``base`` steps closed by an answer-forcing completion (``cue`` + what the model wrote
    after it, one last step): finished, with the answer it states (None if it wrote none)."""
    steps = [*base, cue + choice.text]
    return Candidate(
        steps=steps, answer=_answer(separator.join(steps), choice, separator), finished=True
    )


def derive_seed(seed: int | None, *keys: object) -> int | None:
    """A per-request seed that is reproducible yet differs between requests of one run."""
    if seed is None:
        return None
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ---------------------------------------------------------------- the per-run ledger


@dataclass(slots=True)
class RunLedger:
    """Everything one strategy run accumulates: usage of every call, trace, wall clock."""

    strategy: str
    params: StrategyParams
    usage: Usage = field(default_factory=Usage)
    trace: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    prm_fallback: str | None = None  # the PRM's error, once it was down and the run voted
    unscored: list[Candidate] = field(default_factory=list)  # what a down PRM did not score

    def event(self, name: str, **data: Any) -> None:
        self.trace.append({"event": name, **data})

    @contextlib.contextmanager
    def spending(self) -> Iterator[None]:
        """Any error out of a call carries this run's usage so far (``usage.spent``), so a
        run that fails mid-search still logs what the servers served it."""
        try:
            yield
        except BaseException as exc:
            self.usage.wall_seconds = time.perf_counter() - self.started
            attach_spent(exc, self.usage)
            raise

    async def sample(
        self,
        policy: Policy,
        prompt: str,
        *,
        n: int,
        step: bool,
        key: tuple[object, ...] = (),
    ) -> list[Choice]:
        """One policy request: a step (stop at the separator) or whole solutions."""
        with self.spending():
            return await self._sample(policy, prompt, n=n, step=step, key=key)

    async def _sample(
        self,
        policy: Policy,
        prompt: str,
        *,
        n: int,
        step: bool,
        key: tuple[object, ...],
    ) -> list[Choice]:
        p = self.params
        result: CompletionResult = await policy.complete(
            prompt,
            n=n,
            stop=[policy.separator] if step else None,
            max_tokens=p.max_step_tokens if step else p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=derive_seed(p.seed, *key),
        )
        self.usage += result.usage
        if len(result.choices) != n:
            raise BadResponseError(
                f"policy {policy.name!r} returned {len(result.choices)} choices for n={n}",
                endpoint=policy.name,
                role="policy",
            )
        return result.choices

    async def sample_many(
        self,
        policy: Policy,
        prompts: Sequence[str],
        *,
        n: int,
        keys: Sequence[tuple[object, ...]],
        step: bool = True,
        max_tokens: int | None = None,
    ) -> list[list[Choice]]:
        """``n`` next steps (or, ``step=False``, whole continuations) for each prompt, in one
        request where the client can (see ``Policy.complete_many``); ``keys[i]``
        derives prompt i's seed. ``max_tokens`` overrides the params' limit (a branch near
        the end of the context asks less)."""
        with self.spending():
            return await self._sample_many(
                policy, prompts, n=n, keys=keys, step=step, max_tokens=max_tokens
            )

    async def _sample_many(
        self,
        policy: Policy,
        prompts: Sequence[str],
        *,
        n: int,
        keys: Sequence[tuple[object, ...]],
        step: bool,
        max_tokens: int | None,
    ) -> list[list[Choice]]:
        p = self.params
        if max_tokens is None:
            max_tokens = p.max_step_tokens if step else p.max_tokens
        result = await policy.complete_many(
            prompts,
            n=n,
            stop=[policy.separator] if step else None,
            max_tokens=max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seeds=[derive_seed(p.seed, *key) for key in keys],
        )
        self.usage += result.usage
        if len(result.choices) != n * len(prompts):
            raise BadResponseError(
                f"policy {policy.name!r} returned {len(result.choices)} choices for "
                f"{len(prompts)} prompts x n={n}",
                endpoint=policy.name,
                role="policy",
            )
        return [result.choices[i * n : (i + 1) * n] for i in range(len(prompts))]

    async def score(self, prm: PRM, question: str, candidates: Sequence[Candidate]) -> None:
        """Score every candidate with steps in ONE PRM call; fills ``step_scores`` in place."""
        with self.spending():
            try:
                await self._score(prm, question, candidates)
            except EndpointError as exc:
                if prm_down(exc):
                    self.unscored = list(candidates)
                raise

    async def _score(self, prm: PRM, question: str, candidates: Sequence[Candidate]) -> None:
        todo = [c for c in candidates if c.steps]
        for c in candidates:
            if not c.steps:
                c.step_scores = []
        if not todo:
            return
        result = await prm.score(question, [c.steps for c in todo])
        self.usage += result.usage
        if len(result.scores) != len(todo):
            raise BadResponseError(
                f"PRM {prm.name!r} returned {len(result.scores)} score lists "
                f"for {len(todo)} candidates",
                endpoint=prm.name,
                role="PRM",
            )
        for c, scores in zip(todo, result.scores, strict=True):
            c.step_scores = [float(s) for s in scores]

    def prm_is_down(self, exc: EndpointError) -> None:
        """Note that the PRM was down (``exc``): the run goes on without its scores."""
        self.prm_fallback = f"{type(exc).__name__}: {exc}"
        self.event("prm_down", error=self.prm_fallback, fallback="majority")

    def outcome(self, candidates: list[Candidate], selected: int | None) -> Outcome:
        """The final Outcome, with wall time set to this run's elapsed time."""
        self.usage.wall_seconds = time.perf_counter() - self.started
        answer = candidates[selected].answer if selected is not None else None
        return Outcome(
            strategy=self.strategy,
            params=self.params,
            answer=answer,
            candidates=candidates,
            selected_index=selected,
            usage=self.usage,
            trace=self.trace,
            prm_fallback=self.prm_fallback,
        )
