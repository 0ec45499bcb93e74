"""Watching one solve from outside the strategy: real usage, best answer so far, progress.

Strategies know nothing of deadlines or streaming, and should not have to. The orchestrator
hands a strategy thin wrappers around its endpoint clients instead; the wrappers see every
policy and PRM call complete, so the orchestrator always knows

- the usage of every finished call (a run cut short by a deadline still reports what it
  really spent),
- the best answer seen so far: the highest-scored PRM-scored candidate that carries an
  answer, else the most common answer among finished samples (the deadline fallback),
- progress worth streaming (samples drawn, candidates scored, search depth reached).

The wrappers implement the ``Policy`` and ``PRM`` protocols by delegating every call, so
they observe requests without changing them; they hold no HTTP resources of their own and
closing them is a no-op.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from ratts.endpoints.policy import CompletionResult, Policy, SamplingOptions
from ratts.endpoints.prm import PRM, PRMResult
from ratts.endpoints.usage import Usage
from ratts.grading import extract_answer, has_boxed
from ratts.settings import PolicySpec
from ratts.strategies.scoring import aggregate, normalize_answer
from ratts.types import Aggregation, Candidate


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One thing worth telling a waiting user: ``kind`` plus plain JSON-able data.

    Kinds: ``start`` (input accepted, work begins), ``probe`` (probe finished), ``routed``
    (config chosen), ``sampled`` (a policy call returned), ``scored`` (a PRM call returned),
    ``step`` (a step-wise search reached a new depth), ``deadline`` (time ran out; the best
    answer so far is used).
    """

    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **self.data}


EventSink = Callable[[ProgressEvent], None]


@dataclass(slots=True)
class BestSoFar:
    """The fallback answer of a cut-short run and where it came from."""

    answer: str | None
    candidate: Candidate | None
    source: str  # "scored", "vote" or "none"


class Watch:
    """The running record of one solve; fed by WatchedPolicy and WatchedPRM."""

    def __init__(
        self,
        *,
        sink: EventSink | None = None,
        aggregation: Aggregation = "last",
        separator: str = "\n\n",
    ) -> None:
        self.usage = Usage()
        self.phase = "probe"
        self.aggregation: Aggregation = aggregation
        self.separator = separator
        self._sink = sink
        self._best: tuple[float, Candidate] | None = None
        self._votes: Counter[str] = Counter()
        self._vote_text: dict[str, str] = {}
        self._depth = 0
        self._samples = 0
        self._scored = 0

    def emit(self, kind: str, **data: Any) -> None:
        if self._sink is not None:
            self._sink(ProgressEvent(kind, data))

    def enter(self, phase: str) -> None:
        """Start a new phase (``probe``, ``strategy``); search depth restarts at 0."""
        self.phase = phase
        self._depth = 0

    # -- fed by the wrappers -------------------------------------------------------------

    def completed(self, result: CompletionResult, *, whole: bool) -> None:
        """A policy call returned. ``whole``: its choices are complete solutions."""
        self.usage += result.usage
        self._samples += len(result.choices)
        for choice in result.choices:
            if whole or has_boxed(choice.text):
                answer = extract_answer(choice.text)
                if answer is not None:
                    key = normalize_answer(answer)
                    self._votes[key] += 1
                    self._vote_text.setdefault(key, answer)
        self.emit("sampled", phase=self.phase, choices=len(result.choices), total=self._samples)

    def scored(self, candidates: Sequence[Sequence[str]], result: PRMResult) -> None:
        """A PRM call returned scores for ``candidates`` (each a list of steps)."""
        self.usage += result.usage
        self._scored += len(candidates)
        depth = 0
        for steps, scores in zip(candidates, result.scores, strict=False):
            depth = max(depth, len(steps))
            text = self.separator.join(steps)
            answer = extract_answer(text) if has_boxed(text) else None
            if answer is None:
                continue
            value = aggregate(scores, self.aggregation)
            if self._best is None or value > self._best[0]:
                candidate = Candidate(
                    steps=list(steps),
                    answer=answer,
                    step_scores=[float(s) for s in scores],
                    finished=True,
                )
                self._best = (value, candidate)
        self.emit(
            "scored",
            phase=self.phase,
            candidates=len(candidates),
            best_score=None if self._best is None else round(self._best[0], 4),
        )
        if depth > self._depth:
            self._depth = depth
            self.emit("step", phase=self.phase, k=depth)

    # -- read by the orchestrator --------------------------------------------------------

    def best(self) -> BestSoFar:
        """The best answer seen so far (scored beats voted; None when nothing answered)."""
        if self._best is not None:
            candidate = self._best[1]
            return BestSoFar(candidate.answer, candidate, "scored")
        if self._votes:
            key, _ = self._votes.most_common(1)[0]
            return BestSoFar(self._vote_text[key], None, "vote")
        return BestSoFar(None, None, "none")


class WatchedPolicy:
    """A Policy that reports every completed call to a Watch.

    Every method delegates to the wrapped policy explicitly, so a watched strategy sends
    exactly the requests an unwatched one sends (one list-prompt request per search step);
    the wrapper only looks at results. It shares the wrapped client's HTTP pool and never
    closes it.
    """

    def __init__(self, inner: Policy, watch: Watch) -> None:
        self._inner = inner
        self._watch = watch

    @property
    def inner(self) -> Policy:
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def spec(self) -> PolicySpec:
        return self._inner.spec

    @property
    def separator(self) -> str:
        return self._inner.separator

    @property
    def n_supported(self) -> bool:
        return self._inner.n_supported

    def prompt(self, question: str) -> str:
        return self._inner.prompt(question)

    async def room(self, prompt: str) -> int | None:
        return await self._inner.room(prompt)

    async def complete(
        self, prompt: str, *, seed: int | None = None, **options: Unpack[SamplingOptions]
    ) -> CompletionResult:
        result = await self._inner.complete(prompt, seed=seed, **options)
        self._observe(result, options.get("stop"))
        return result

    async def complete_many(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int | None] | None = None,
        **options: Unpack[SamplingOptions],
    ) -> CompletionResult:
        result = await self._inner.complete_many(prompts, seeds=seeds, **options)
        self._observe(result, options.get("stop"))
        return result

    def _observe(self, result: CompletionResult, stop: list[str] | None) -> None:
        """Without the step separator among the stops, the choices are whole solutions."""
        self._watch.completed(result, whole=self.separator not in (stop or ()))

    async def aclose(self) -> None:
        """The wrapped client belongs to the orchestrator; nothing to close here."""


class WatchedPRM:
    """A PRM that reports every completed scoring call to a Watch."""

    def __init__(self, inner: PRM, watch: Watch) -> None:
        self.name = inner.name
        self._inner = inner
        self._watch = watch

    @property
    def inner(self) -> PRM:
        return self._inner

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        result = await self._inner.score(question, candidates)
        self._watch.scored(candidates, result)
        return result

    async def aclose(self) -> None:
        """The wrapped PRM belongs to the orchestrator; nothing to close here."""
