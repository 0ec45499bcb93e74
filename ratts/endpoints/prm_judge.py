"""JudgePRM: any OpenAI-compatible model (completions or chat API) as a step verifier.

For each step the judge sees the question, the steps before it and the step under review,
and answers "Yes" (correct) or "No". The score is ``P(yes) / (P(yes) + P(no))`` from the
first token's top logprobs. A server that returns no logprobs (many hosted chat APIs) gets
``spec.judge_samples`` verdicts sampled at temperature 1 and scores the fraction of yes
among them; with ``judge_samples = 0`` the greedy answer's text decides (1, 0, or 0.5 for
neither). The prompt puts the question and earlier steps first so a prefix cache is reused
across the steps of one candidate.

``spec.api = "completions"`` goes through PolicyClient; ``"chat"`` posts the prompt as one
user message to ``/chat/completions`` and reads ``logprobs.content[0].top_logprobs``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ratts.endpoints.policy import Choice, PolicyClient
from ratts.endpoints.pool import EndpointPool, MalformedResponse, RetryPolicy, gather_all
from ratts.endpoints.prm import PRMResult
from ratts.endpoints.usage import Usage, sum_usage
from ratts.errors import ConfigError, InputError
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


def parse_chat(body: object, n: int) -> tuple[list[Choice], int | None, int | None]:
    """Choices (message text, first-token top logprobs) and token counts of a chat body."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise MalformedResponse("no 'choices' list in the chat response")
    raw = body["choices"]
    if len(raw) != n:
        raise MalformedResponse(f"asked for {n} choices, got {len(raw)}")
    choices: list[Choice] = []
    for position, item in enumerate(raw):
        message = item.get("message") if isinstance(item, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise MalformedResponse(f"choice {position} has no message content")
        finish = item.get("finish_reason")
        choices.append(
            Choice(
                text=content,
                finish_reason=finish if isinstance(finish, str) else "stop",
                logprobs=_chat_logprobs(item.get("logprobs")),
            )
        )
    usage = body.get("usage")
    return choices, _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")


def _tokens(usage: object, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _chat_logprobs(raw: object) -> tuple[Mapping[str, float], ...] | None:
    """``{"content": [{"top_logprobs": [{"token", "logprob"}, ...]}, ...]}`` -> per-token maps."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if not isinstance(content, list) or not content:
        return None
    out: list[Mapping[str, float]] = []
    for entry in content:
        top = entry.get("top_logprobs") if isinstance(entry, dict) else None
        out.append(
            {
                str(alt["token"]): float(alt["logprob"])
                for alt in (top if isinstance(top, list) else [])
                if isinstance(alt, dict)
                and "token" in alt
                and isinstance(alt.get("logprob"), int | float)
                and not isinstance(alt.get("logprob"), bool)
            }
        )
    return tuple(out)


class _ChatJudge:
    """The judge's calls over ``/chat/completions`` (one user message per step)."""

    def __init__(self, spec: PRMSpec, retry: RetryPolicy | None) -> None:
        assert spec.base_url is not None
        self.spec = spec
        self.url = f"{spec.base_url.rstrip('/')}/chat/completions"
        headers = {}
        key = spec.api_key()
        if key != "EMPTY":
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(timeout=spec.timeout_s, headers=headers)
        self._pool = EndpointPool(
            who=f"PRM {spec.name!r}",
            url=self.url,
            max_concurrency=spec.max_concurrency,
            max_retries=spec.max_retries,
            timeout_s=spec.timeout_s,
            retry=retry,
        )

    async def ask(
        self, prompt: str, *, n: int, temperature: float, max_tokens: int, logprobs: bool
    ) -> tuple[list[Choice], Usage]:
        payload: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "n": n,
        }
        if logprobs:
            payload |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}

        async def attempt() -> tuple[list[Choice], int | None, int | None]:
            response = await self._http.post(self.url, json=payload)
            response.raise_for_status()
            try:
                body = response.json()
            except ValueError as exc:
                raise MalformedResponse("body is not valid JSON", retryable=True) from exc
            return parse_chat(body, n)

        timed = await self._pool.call(attempt)
        choices, prompt_tokens, completion_tokens = timed.value
        usage = Usage(
            policy_prompt_tokens=prompt_tokens if prompt_tokens is not None else len(prompt) // 4,
            policy_completion_tokens=(
                completion_tokens
                if completion_tokens is not None
                else sum(len(c.text) // 4 + 1 for c in choices)
            ),
            policy_requests=1,
            request_seconds=timed.seconds,
        )
        return choices, usage

    async def aclose(self) -> None:
        await self._http.aclose()


class JudgePRM:
    """A PRM that asks a completions or chat model, step by step, whether each step is right."""

    def __init__(self, spec: PRMSpec, *, retry: RetryPolicy | None = None) -> None:
        if not spec.base_url or not spec.model:
            raise ConfigError(f"PRM {spec.name!r} needs base_url and model")
        self.spec = spec
        self.name = spec.name
        self._chat = _ChatJudge(spec, retry) if spec.api == "chat" else None
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
            ),
            retry=retry,
            role="PRM",
        )

    async def _ask(
        self, prompt: str, *, n: int, temperature: float, max_tokens: int, logprobs: bool
    ) -> tuple[list[Choice], Usage]:
        if self._chat is not None:
            return await self._chat.ask(
                prompt, n=n, temperature=temperature, max_tokens=max_tokens, logprobs=logprobs
            )
        result = await self._client.complete(
            prompt,
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
        if not question.strip():
            raise InputError("cannot score steps for an empty question")
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
            flops=2.0 * self.spec.params * tokens,
            dollars=tokens * self.spec.usd_per_mtok / 1e6,
            request_seconds=spent.request_seconds,
        )
        return PRMResult(scores=scores, usage=usage)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._chat is not None:
            await self._chat.aclose()

    async def __aenter__(self) -> JudgePRM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
