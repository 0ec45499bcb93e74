"""A hostile OpenAI-compatible upstream on loopback (real HTTP): completions whose text holds
rich markup and terminal escape sequences, or a 401 whose body echoes the caller's auth
header, key included. For the untrusted-text and secret-redaction tests."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

#: markup that would end rich's rendering, a hyperlink and a colour change, an OSC 8 link,
#: a bell and a lone C1 control
EVIL = (
    "[/bold][link=https://evil.example]x[/link] \x1b[31mred\x1b[0m "
    "\x1b]8;;https://evil\x07a\x1b]8;;\x07 \x07\x9b"
)
EVIL_ANSWER = f"Step one.\n\nThe answer is \\boxed{{{EVIL}}}"


def hostile_app(
    *, echo_auth: bool = False, echo_in_answer: bool = False, text: str = EVIL_ANSWER
) -> FastAPI:
    """``echo_auth``: a 401 whose body quotes the auth header; ``echo_in_answer``: a 200
    whose completion text quotes it (a model repeating its input), in the answer too."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        auth = request.headers.get("authorization", "")
        if echo_auth:
            return JSONResponse(
                {"error": {"message": f"upstream rejected auth header {auth}", "code": 401}},
                status_code=401,
            )
        body = await request.json()
        reply = text
        if echo_in_answer:
            reply = f"I was called with {auth}.\n\nThe answer is \\boxed{{{auth}}}"
        n = int(body.get("n") or 1)
        prompts = body.get("prompt")
        count = len(prompts) if isinstance(prompts, list) else 1
        choices = [
            {"index": i, "text": reply, "finish_reason": "stop", "logprobs": None}
            for i in range(n * count)
        ]
        usage = {"prompt_tokens": 10, "completion_tokens": 20 * n, "total_tokens": 10 + 20 * n}
        return {"id": "x", "object": "text_completion", "choices": choices, "usage": usage}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"data": [{"id": "hostile", "object": "model"}]}

    return app
