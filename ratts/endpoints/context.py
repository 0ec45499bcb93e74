"""What a policy's context window leaves for generation, and the servers' ways of saying a
prompt no longer fits.

A search branch grows its prompt every step; once the prompt outgrows the context the
branch must end where it stands, not fail the run. The context length comes from settings
(``PolicySpec.context_tokens``), from ``/v1/models`` (vLLM reports ``max_model_len``) or
from a 400 that states it. Prompt tokens are estimated from the fewest characters per
token the server's own counts have shown, so the estimate errs high.
"""

from __future__ import annotations

import math
import re

# vLLM: "This model's maximum context length is 2048 tokens. However, your prompt contains
# ..."; "max_tokens=1024 cannot be greater than max_model_len=512"; OpenAI says the first
# too (code "context_length_exceeded").
_CONTEXT_ERROR = re.compile(
    r"maximum context length|context_length_exceeded|cannot be greater than max_model_len|"
    r"exceeds model's maximum context length",
    re.I,
)
# Characters per token before any server count has been seen (English BPE text averages a
# little over 4); also the estimate for servers that omit ``usage``.
PRIOR_CHARS_PER_TOKEN = 4

_CONTEXT_SIZE = re.compile(r"maximum context length (?:is|of) (\d+)|max_model_len=(\d+)", re.I)


def is_context_error(message: str) -> bool:
    """Whether a 400's message says the prompt (or prompt + max_tokens) exceeds the context."""
    return _CONTEXT_ERROR.search(message) is not None


def context_from_error(message: str) -> int | None:
    """The context length a context-limit error states, if it states one."""
    found = _CONTEXT_SIZE.search(message)
    if found is None:
        return None
    return int(found.group(1) or found.group(2))


def context_from_models(body: object, model: str) -> int | None:
    """``max_model_len`` of ``model`` in a ``/v1/models`` body, if the server reports it."""
    entries = body.get("data") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("id") != model:
            continue
        size = entry.get("max_model_len")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


class ContextWindow:
    """One policy's context length (once known) and its characters-per-token estimate."""

    def __init__(self, tokens: int | None = None) -> None:
        self.tokens = tokens
        self._chars_per_token: float | None = None  # the fewest seen

    def learn(self, tokens: int | None) -> None:
        """Take a stated context length (the smallest stated wins)."""
        if tokens is not None and (self.tokens is None or tokens < self.tokens):
            self.tokens = tokens

    def observe(self, chars: int, tokens: int) -> None:
        """A server counted ``tokens`` prompt tokens for ``chars`` characters."""
        if tokens > 0 and chars > 0:
            ratio = chars / tokens
            if self._chars_per_token is None or ratio < self._chars_per_token:
                self._chars_per_token = ratio

    def room(self, prompt: str) -> int | None:
        """Tokens the context leaves after ``prompt`` (None: context unknown), for planning
        what to ask next. Before any server count it assumes ``PRIOR_CHARS_PER_TOKEN``, since
        a plan that assumed an empty prompt would plan steps the context cannot hold."""
        if self.tokens is None:
            return None
        per = self._chars_per_token or PRIOR_CHARS_PER_TOKEN
        return self.tokens - math.ceil(len(prompt) / per)

    def clip(self, prompt: str, max_tokens: int) -> int:
        """``max_tokens`` cut to what the context leaves after ``prompt`` (at least 1: the
        server decides whether the prompt itself still fits)."""
        if self.tokens is None:
            return max_tokens
        per = self._chars_per_token
        used = math.ceil(len(prompt) / per) if per else 0
        return max(1, min(max_tokens, self.tokens - used))
