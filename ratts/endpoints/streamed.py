"""A streamed completion, reassembled: SSE chunks -> the body a non-streamed request returns.

Why stream at all: a request's slots are otherwise held until its slowest choice ends, so
under a cap on sequences every straggler's tail idles the other slots. Streamed, each
choice's ``finish_reason`` arrives as that sequence ends and its slot is given back at once
(``on_finish``), while the caller still gets one body to parse, through the same parser.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ratts.endpoints.pool import MalformedResponse


class StreamedCompletion:
    """Feed it each ``data:`` payload of a ``/completions`` stream; ``body()`` at the end."""

    def __init__(self, on_finish: Callable[[], None]) -> None:
        self._on_finish = on_finish
        self._texts: dict[int, list[str]] = {}
        self._finish: dict[int, object] = {}
        self._stop: dict[int, object] = {}
        self._top: dict[int, list[object]] = {}
        self._usage: object = None

    def feed(self, data: bytes) -> None:
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise MalformedResponse("stream chunk is not valid JSON", retryable=True) from exc
        if not isinstance(chunk, dict):
            raise MalformedResponse("stream chunk is not a JSON object", retryable=True)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for item in chunk.get("choices") or ():
            if not isinstance(item, dict) or not isinstance(item.get("index"), int):
                raise MalformedResponse("stream choice has no index")
            i = item["index"]
            text = item.get("text")
            if isinstance(text, str):
                self._texts.setdefault(i, []).append(text)
            logprobs = item.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("top_logprobs"), list):
                self._top.setdefault(i, []).extend(logprobs["top_logprobs"])
            finish = item.get("finish_reason")
            if finish is not None and i not in self._finish:
                self._finish[i] = finish
                self._stop[i] = item.get("stop_reason")
                self._on_finish()

    def body(self) -> dict[str, Any]:
        """The whole response as one completions body (choices by index, usage if sent)."""
        choices = []
        for i in sorted(self._texts.keys() | self._finish.keys()):
            choice: dict[str, Any] = {
                "index": i,
                "text": "".join(self._texts.get(i, ())),
                "finish_reason": self._finish.get(i),
                "stop_reason": self._stop.get(i),
            }
            if i in self._top:
                choice["logprobs"] = {"top_logprobs": self._top[i]}
            choices.append(choice)
        return {"choices": choices, "usage": self._usage}
