"""How each simulated server dialect shapes its replies and which requests it refuses.

Shapes follow what the real servers send (simulated content, real wire format):

- ``vllm``: ``stop_reason`` = matched stop string, null at EOS or on ``length``; takes
  ``n``, lists of prompts and ``continue_final_message`` on chat;
- ``sglang``: ``matched_stop`` = matched stop string, the EOS token id (int) at EOS, null on
  ``length``; takes ``n``, lists and ``continue_final_message``;
- ``llamacpp``: ``finish_reason`` only; ``n`` must be 1 ("Only one completion choice is
  allowed", HTTP 400); a list of prompts answers with a JSON array of completion objects,
  one per prompt; a trailing assistant message is continued (assistant prefill);
- ``openai`` (hosted): ``finish_reason`` only, ``"stop"`` for stop strings and EOS alike;
  a trailing assistant message is history, never continued.
"""

from __future__ import annotations

from typing import Any, Literal

SimDialect = Literal["vllm", "sglang", "llamacpp", "openai"]
EOS_TOKEN_ID = 2  # what SGLang reports in ``matched_stop`` when the model emitted EOS
CHAT_ONLY_MESSAGE = (
    "This is a chat model and not supported in the v1/completions endpoint. "
    "Did you mean to use v1/chat/completions?"
)


def refusal(dialect: SimDialect, *, n: int) -> str | None:
    """The 400 message a dialect answers a request with, or None to serve it."""
    if dialect == "llamacpp" and n != 1:
        return "Only one completion choice is allowed"
    return None


def continues(dialect: SimDialect, continue_final_message: bool) -> bool:
    """Whether a chat request's trailing assistant message is continued, not answered."""
    if dialect == "llamacpp":
        return True
    if dialect == "openai":
        return False
    return continue_final_message


def stop_fields(dialect: SimDialect, finish: str, stop: str | None) -> dict[str, Any]:
    """The dialect's own fields saying why a text stopped (``stop`` None: EOS or length)."""
    if dialect == "vllm":
        return {"stop_reason": stop}
    if dialect == "sglang":
        if finish == "length":
            return {"matched_stop": None}
        return {"matched_stop": stop if stop is not None else EOS_TOKEN_ID}
    return {}


def completion_choice(
    dialect: SimDialect, index: int, text: str, finish: str, stop: str | None
) -> dict[str, Any]:
    return {
        "index": index,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        **stop_fields(dialect, finish, stop),
    }


def chat_choice(
    dialect: SimDialect, index: int, text: str, finish: str, stop: str | None
) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "logprobs": None,
        "finish_reason": finish,
        **stop_fields(dialect, finish, stop),
    }


def per_prompt_bodies(dialect: SimDialect, prompts: int) -> bool:
    """Whether a list of prompts is answered as an array of bodies (llama.cpp)."""
    return dialect == "llamacpp" and prompts > 1
