"""Chat-completion bodies and server-sent-event chunks, in OpenAI's shapes.

Progress travels inside standard ``chat.completion.chunk`` objects: an empty delta plus an
extra ``ratts`` field holding the event. Any OpenAI client parses them (extra fields are
kept, an empty delta prints nothing); ratts-aware clients read the field. The answer then
follows as ordinary content chunks, the last one with ``finish_reason`` and the full
``ratts`` summary, then (with ``stream_options.include_usage``) the usage chunk.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ratts.orchestrator.result import SolveResult, json_safe


def completion_id() -> str:
    return f"chatcmpl-ratts-{uuid.uuid4().hex}"


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying ``payload`` (a dict as JSON, or a literal)."""
    data = payload if isinstance(payload, str) else json.dumps(json_safe(payload))
    return f"data: {data}\n\n".encode()


def answer_text(result: SolveResult) -> str:
    """The assistant message: the selected solution, else the bare boxed answer."""
    if result.text:
        return result.text
    if result.answer is not None:
        return f"\\boxed{{{result.answer}}}"
    return ""


def usage_body(result: SolveResult) -> dict[str, int]:
    """OpenAI usage from the real totals: PRM tokens count as prompt (input) tokens."""
    u = result.usage
    prompt = u.policy_prompt_tokens + u.prm_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.policy_completion_tokens,
        "total_tokens": prompt + u.policy_completion_tokens,
    }


def completion_body(result: SolveResult, model: str, cid: str) -> dict[str, Any]:
    """A whole ``chat.completion`` response."""
    body = {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(result)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_body(result),
        "ratts": result.to_dict(explain=True),
    }
    cleaned: dict[str, Any] = json_safe(body)
    return cleaned


def chunk(
    cid: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    ratts: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
    no_choices: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if no_choices
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    if ratts is not None:
        body["ratts"] = ratts
    return body


def content_pieces(text: str, separator: str = "\n\n") -> list[str]:
    """The answer text in step-sized pieces (joined they give ``text`` back exactly)."""
    if not text:
        return []
    parts = text.split(separator)
    return [p + separator for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
