"""The chat API's request side: a policy's prompt string as messages, from its spec.

Strategies build prompts as ``policy.prompt(question) + steps``. Over chat that prompt is
the rendered user message followed by ``CHAT_SPLIT``; whatever follows the split (the steps
so far) becomes a trailing assistant message that the server continues, which only a policy
with ``chat_prefill`` may ask for (vLLM and SGLang: ``continue_final_message``; llama.cpp
continues a trailing assistant message by itself; hosted APIs do not).
"""

from __future__ import annotations

from typing import Any

from ratts.errors import InputError
from ratts.settings import PolicySpec

# Ends the user message inside a chat policy's prompt string (ASCII record separator).
CHAT_SPLIT = "\x1e"


def chat_prompt(spec: PolicySpec, question: str) -> str:
    """The prefix-stable prompt string of a question for a chat policy."""
    return spec.user_template.format(question=question.replace(CHAT_SPLIT, " ")) + CHAT_SPLIT


def chat_body(spec: PolicySpec, prompt: str) -> dict[str, Any]:
    """``messages`` (and the continuation flags) for a prompt made by ``chat_prompt``.

    InputError, naming the policy, when the prompt carries steps to continue and the
    policy cannot continue an assistant message.
    """
    user, mark, prefix = prompt.partition(CHAT_SPLIT)
    messages: list[dict[str, str]] = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages += [{"role": role, "content": text} for role, text in spec.chat_history]
    messages.append({"role": "user", "content": user})
    if not (mark and prefix):
        return {"messages": messages}
    if not spec.chat_prefill:
        raise InputError(
            f"policy {spec.name!r} cannot continue a partial solution over chat "
            "(set chat_prefill = true if its server continues an assistant message)"
        )
    messages.append({"role": "assistant", "content": prefix})
    body: dict[str, Any] = {"messages": messages}
    if spec.dialect in ("auto", "vllm", "sglang"):
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body
