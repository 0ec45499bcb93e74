"""Reading a request body within limits: size (413), JSON nesting, text that is not Unicode.

The body is read in chunks and abandoned as soon as it passes ``max_body_bytes``, so a huge
upload costs at most that much memory. ``json.loads`` recurses per nesting level; a body
nested 100,000 levels deep fails there with RecursionError, and anything deeper than
``max_json_depth`` is refused after decoding, both as a 400. A lone surrogate escape
(``"\\udcff"``) decodes to a string that cannot be sent upstream or stored: also a 400,
naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ratts.server.schemas import ApiError, ChatCompletionRequest
from ratts.settings import ServerLimits
from ratts.text import find_bad_text


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def _too_large(limits: ServerLimits) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than {limits.max_body_bytes} bytes",
        code="request_too_large",
    )


async def read_body(request: Request, limits: ServerLimits) -> bytes:
    """The raw body, or a 413 as soon as it passes the limit (Content-Length or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    chunks: list[bytes] = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(piece)
    return b"".join(chunks)


def decode_json(raw: bytes, limits: ServerLimits) -> Any:
    """The decoded body; 400 for bad JSON, too deep a nesting or non-Unicode text."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(
            400, f"the request body is nested more than {limits.max_json_depth} levels deep"
        ) from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, "the request body is not valid JSON") from None
    if json_depth(body) > limits.max_json_depth:
        raise ApiError(
            400, f"the request body is nested more than {limits.max_json_depth} levels deep"
        )
    bad = find_bad_text(body)
    if bad is not None:
        param = bad.split(".", 1)[0].split("[", 1)[0]
        raise ApiError(
            400, f"invalid {bad}: not valid Unicode text (a lone surrogate)", param=param
        )
    return body


async def read_json(request: Request, limits: ServerLimits) -> Any:
    return decode_json(await read_body(request, limits), limits)


def check_request(req: ChatCompletionRequest, limits: ServerLimits) -> None:
    """Refuse budgets, deadlines and questions past the configured limits (400)."""
    budget = req.to_budget()
    if budget is not None and budget.n is not None and budget.n > limits.max_n:
        raise ApiError(
            400,
            f"budget N={budget.n} is over this server's limit of {limits.max_n}",
            param="budget",
        )
    if budget is not None and budget.tokens is not None and budget.tokens > limits.max_tokens:
        raise ApiError(
            400,
            f"budget tokens={budget.tokens} is over this server's limit of {limits.max_tokens}",
            param="budget",
        )
    if req.timeout is not None and req.timeout > limits.max_timeout_s:
        raise ApiError(
            400,
            f"timeout {req.timeout:g}s is over this server's limit of {limits.max_timeout_s:g}s",
            param="timeout",
        )
    if len(req.question()) > limits.max_question_chars:
        raise ApiError(
            400,
            f"the question is longer than {limits.max_question_chars} characters",
            param="messages",
        )
