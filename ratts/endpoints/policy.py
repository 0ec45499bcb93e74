"""PolicyClient: step-wise and whole-solution sampling over OpenAI-compatible completions.

INTERFACE (implemented by the endpoints work; strategies depend only on what is here).
"""

from __future__ import annotations

from dataclasses import dataclass

from ratts.endpoints.usage import Usage
from ratts.settings import PolicySpec


@dataclass(frozen=True, slots=True)
class Choice:
    """One sampled continuation.

    ``stop_reason`` follows vLLM: the stop string that ended the text, or None when the
    model emitted EOS (or the server does not say). ``finish_reason`` is "stop" or "length".
    """

    text: str
    finish_reason: str
    stop_reason: str | None = None

    @property
    def hit_eos(self) -> bool:
        return self.finish_reason == "stop" and self.stop_reason is None


@dataclass(slots=True)
class CompletionResult:
    choices: list[Choice]
    usage: Usage


class PolicyClient:
    """Talks to one policy endpoint described by a PolicySpec.

    - ``complete`` sends ONE request with ``n`` choices where ``spec.supports_n`` (falls back
      to n concurrent requests if the server rejects ``n`` > 1 or the spec says so);
    - bounded concurrency per endpoint (``spec.max_concurrency``);
    - bounded retries with exponential backoff on 429, 5xx, timeouts and connection errors;
    - typed errors from ratts.errors with one-line messages;
    - Usage from the server's ``usage`` field (+ FLOPs = 2 x params x tokens, dollars from
      the spec's prices, request_seconds = call latency, policy_requests = HTTP requests).
    """

    spec: PolicySpec

    def __init__(self, spec: PolicySpec) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def separator(self) -> str:
        return self.spec.step_separator

    def prompt(self, question: str) -> str:
        """The prefix-stable prompt for a question (steps are appended after it)."""
        return self.spec.prompt_template.format(question=question)

    async def complete(
        self,
        prompt: str,
        *,
        n: int = 1,
        stop: list[str] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_p: float = 1.0,
        seed: int | None = None,
        logprobs: int | None = None,
    ) -> CompletionResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> PolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
