"""JudgePRM: any OpenAI-compatible completions model as a step verifier.

For each step the judge sees the question, the steps before it and the step under review,
and answers "Yes" (correct) or "No". The score is ``P(yes) / (P(yes) + P(no))`` from the
first token's top logprobs; servers that return no logprobs fall back to the answer text.
The prompt puts the question and earlier steps first so a prefix cache is reused across the
steps of one candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ratts.endpoints.policy import Choice, PolicyClient
from ratts.endpoints.pool import RetryPolicy, gather_all
from ratts.endpoints.prm import PRMResult
from ratts.endpoints.usage import Usage, sum_usage
from ratts.errors import ConfigError, InputError
from ratts.settings import PolicySpec, PRMSpec

TOP_LOGPROBS = 5
NEUTRAL = 0.5

JUDGE_TEMPLATE = (
    "You are checking a step-by-step solution to a math problem, one step at a time.\n\n"
    "Problem: {question}\n\n"
    "Previous steps:\n{previous}\n\n"
    "Step under review:\n{step}\n\n"
    "Is the step under review mathematically correct and a valid continuation of the "
    "previous steps? Answer with a single word, Yes or No.\n"
    "Answer:"
)


def judge_prompt(question: str, previous: Sequence[str], step: str) -> str:
    """The judge's prompt for one step (earlier steps numbered, or "(none)")."""
    listed = "\n".join(f"({i}) {s.strip()}" for i, s in enumerate(previous, start=1))
    return JUDGE_TEMPLATE.format(
        question=question.strip(), previous=listed or "(none)", step=step.strip()
    )


def _verdict(token: str) -> str | None:
    """Map a token or word to "yes" or "no" (ignoring case, spaces, tokenizer space marks
    and punctuation around it); None for anything else."""
    word = token.strip().lstrip("▁Ġ").strip(" .,:;!\"'").lower()
    if word == "yes":
        return "yes"
    if word == "no":
        return "no"
    return None


def score_from_top_logprobs(top: Mapping[str, float]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over one position's top alternatives; None if neither shows.

    Tokens match case- and space-insensitively (" Yes", "yes", "YES" all count as yes).
    """
    p_yes = p_no = 0.0
    for token, logprob in top.items():
        verdict = _verdict(token)
        if verdict is None or not math.isfinite(logprob):
            continue
        p = math.exp(min(logprob, 0.0))
        if verdict == "yes":
            p_yes += p
        else:
            p_no += p
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no)


def judge_score(choice: Choice) -> float:
    """A step's score from the judge's reply: logprobs first, then the text, else 0.5."""
    if choice.logprobs:
        from_logprobs = score_from_top_logprobs(choice.logprobs[0])
        if from_logprobs is not None:
            return from_logprobs
    verdict = _verdict(choice.text.split()[0] if choice.text.split() else "")
    if verdict == "yes":
        return 1.0
    if verdict == "no":
        return 0.0
    return NEUTRAL


class JudgePRM:
    """A PRM that asks a completions model, step by step, whether each step is correct."""

    def __init__(self, spec: PRMSpec, *, retry: RetryPolicy | None = None) -> None:
        if not spec.base_url or not spec.model:
            raise ConfigError(f"PRM {spec.name!r} needs base_url and model")
        self.spec = spec
        self.name = spec.name
        # The judge is a completions endpoint like any policy; prices and FLOPs are the
        # PRM's own, so the PolicySpec's are placeholders and usage is recomputed below.
        self._client = PolicyClient(
            PolicySpec(
                name=spec.name,
                base_url=spec.base_url,
                model=spec.model,
                api_key_env=spec.api_key_env,
                max_concurrency=spec.max_concurrency,
                timeout_s=spec.timeout_s,
                max_retries=spec.max_retries,
                supports_n=False,
            ),
            retry=retry,
            role="PRM",
        )

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """One judge request per step, all concurrent (bounded by ``max_concurrency``)."""
        if not question.strip():
            raise InputError("cannot score steps for an empty question")
        jobs = [
            (i, k, judge_prompt(question, steps[:k], step))
            for i, steps in enumerate(candidates)
            for k, step in enumerate(steps)
        ]
        results = await gather_all(
            [
                self._client.complete(
                    prompt, n=1, max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS
                )
                for _, _, prompt in jobs
            ]
        )
        scores: list[list[float]] = [[0.0] * len(steps) for steps in candidates]
        for (i, k, _), result in zip(jobs, results, strict=True):
            scores[i][k] = judge_score(result.choices[0])
        spent = sum_usage([r.usage for r in results])
        tokens = spent.policy_tokens
        usage = Usage(
            prm_tokens=tokens,
            prm_requests=spent.policy_requests,
            flops=2.0 * self.spec.flops_params * tokens,
            dollars=tokens * self.spec.usd_per_mtok / 1e6,
            request_seconds=spent.request_seconds,
        )
        return PRMResult(scores=scores, usage=usage)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> JudgePRM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
