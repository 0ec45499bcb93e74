"""JudgePRM: any OpenAI-compatible model (completions or chat API) as a step verifier.

For each step the judge sees the question, the steps before it and the step under review,
and answers "Yes" (correct) or "No". The score is ``P(yes) / (P(yes) + P(no))`` from the
first token's top logprobs. A server that returns no logprobs (many hosted chat APIs) gets
``spec.judge_samples`` verdicts sampled at temperature 1 and scores the fraction of yes
among them; with ``judge_samples = 0`` the greedy answer's text decides (1, 0, or 0.5 for
neither). The prompt puts the question and earlier steps first so a prefix cache is reused
across the steps of one candidate.

The judge is a PolicyClient like any policy (``spec.api`` picks completions or chat; over
chat the prompt is one user message and logprobs come from ``logprobs.content``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ratts.endpoints.closing import AsyncClosing
from ratts.endpoints.policy import Choice, PolicyClient
from ratts.endpoints.pool import RetryPolicy, gather_all
from ratts.endpoints.prm import PRMResult, check_question, served_at
from ratts.endpoints.usage import Usage, sum_usage
from ratts.settings import PolicySpec, PRMSpec

TOP_LOGPROBS = 5
NEUTRAL = 0.5
SAMPLE_TOKENS = 3  # room for " Yes." in a sampled verdict

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


def sampled_score(choices: Sequence[Choice]) -> float:
    """The fraction of yes among the yes/no verdicts of sampled answers (0.5 for none)."""
    verdicts = [_verdict(c.text.split()[0]) if c.text.split() else None for c in choices]
    yes, no = verdicts.count("yes"), verdicts.count("no")
    return yes / (yes + no) if yes + no else NEUTRAL


class JudgePRM(AsyncClosing):
    """A PRM that asks a completions or chat model, step by step, whether each step is right."""

    def __init__(self, spec: PRMSpec, *, retry: RetryPolicy | None = None) -> None:
        base_url, model = served_at(spec)
        self.spec = spec
        self.name = spec.name
        self._chat = spec.api == "chat"
        # The judge is an endpoint like any policy; prices and FLOPs are the PRM's own, so
        # the PolicySpec's are placeholders and usage is recomputed below. Over chat the
        # whole judge prompt is the user message. A PRM's max_concurrency counts judge
        # requests (as it counts /pooling requests); the policy client counts sequences, so
        # each request gets room for its judge_samples sampled verdicts (one request a step).
        self._client = PolicyClient(
            PolicySpec(
                name=spec.name,
                base_url=base_url,
                base_urls=spec.base_urls,
                model=model,
                api=spec.api,
                user_template="{question}",
                api_key_env=spec.api_key_env,
                max_concurrency=spec.max_concurrency * max(1, spec.judge_samples),
                timeout_s=spec.timeout_s,
                max_retries=spec.max_retries,
                outage_grace_s=spec.outage_grace_s,
                breaker_threshold=spec.breaker_threshold,
                breaker_cooldown_s=spec.breaker_cooldown_s,
            ),
            retry=retry,
            role="PRM",
        )

    async def _ask(
        self, prompt: str, *, n: int, temperature: float, max_tokens: int, logprobs: bool
    ) -> tuple[list[Choice], Usage]:
        result = await self._client.complete(
            self._client.prompt(prompt) if self._chat else prompt,
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=TOP_LOGPROBS if logprobs else None,
        )
        return result.choices, result.usage

    async def _judge(self, prompt: str) -> tuple[float, Usage]:
        """One step: logprobs of the greedy verdict, else sampled verdicts, else its text."""
        choices, usage = await self._ask(prompt, n=1, temperature=0.0, max_tokens=1, logprobs=True)
        first = choices[0]
        if first.logprobs:
            from_logprobs = score_from_top_logprobs(first.logprobs[0])
            if from_logprobs is not None:
                return from_logprobs, usage
        if self.spec.judge_samples > 0:
            sampled, more = await self._ask(
                prompt,
                n=self.spec.judge_samples,
                temperature=1.0,
                max_tokens=SAMPLE_TOKENS,
                logprobs=False,
            )
            return sampled_score(sampled), usage + more
        return judge_score(first), usage

    async def score(self, question: str, candidates: Sequence[Sequence[str]]) -> PRMResult:
        """One judge request per step (plus one sampling request per step when the server
        gives no logprobs and ``judge_samples`` > 0), all concurrent up to
        ``max_concurrency``."""
        check_question(question)
        jobs = [
            (i, k, judge_prompt(question, steps[:k], step))
            for i, steps in enumerate(candidates)
            for k, step in enumerate(steps)
        ]
        results = await gather_all([self._judge(prompt) for _, _, prompt in jobs])
        scores: list[list[float]] = [[0.0] * len(steps) for steps in candidates]
        for (i, k, _), (value, _) in zip(jobs, results, strict=True):
            scores[i][k] = value
        spent = sum_usage([u for _, u in results])
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
