"""Reading policy responses (completions and chat) into Choices, whatever server sent them.

Servers say differently why a text stopped, and a step-wise search depends on telling "hit
the step separator" from "the solution ended":

- vLLM: ``stop_reason`` is the matched stop string, or null / a token id at EOS;
- SGLang: ``matched_stop`` is the matched stop string, or the EOS token id (an int);
- llama.cpp: its OpenAI-compatible endpoints give ``finish_reason`` only; a verbose server
  adds ``__verbose.stop_type`` ("eos", "word", "limit") and ``__verbose.stopping_word``;
- hosted OpenAI-like APIs: ``finish_reason: "stop"`` for both, and nothing else.

Every dialect is normalised here to vLLM's meaning of ``Choice.stop_reason``. Where the server
gives no signal, a ``"stop"`` whose text states no final answer (``\\boxed{}``, "The answer
is") is read as the separator (the step-wise request's first stop string), and one that
states an answer as the end of the solution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ratts.endpoints.pool import MalformedResponse
from ratts.grading.extract import states_final_answer
from ratts.redact import redact
from ratts.settings import Dialect

# finish_reason values of other servers, mapped to (finish_reason, says EOS)
_FINISH_ALIASES = {
    "eos_token": ("stop", True),
    "stop_sequence": ("stop", False),
    "eos": ("stop", True),
}


@dataclass(frozen=True, slots=True)
class Choice:
    """One sampled continuation.

    ``stop_reason`` follows vLLM: the stop string that ended the text, or None when the
    solution ended (EOS) or on ``length``. For servers that do not say, it is inferred (see
    the module doc). ``finish_reason`` is "stop" or "length" ("length": cut by
    ``max_tokens``, never a step end). ``logprobs`` holds, per generated token, the server's
    top alternatives (token -> log probability) when logprobs were requested.
    """

    text: str
    finish_reason: str
    stop_reason: str | None = None
    logprobs: tuple[Mapping[str, float], ...] | None = field(default=None, compare=False)

    @property
    def hit_eos(self) -> bool:
        """The model ended its solution (not a stop string, not the token limit)."""
        return self.finish_reason == "stop" and self.stop_reason is None


@dataclass(slots=True)  # not frozen: one per request, and frozen init costs twice as much
class ParsedCompletion:
    """One HTTP response, parsed: its choices and the server's token counts (if given).

    ``indices`` are the choices' positions in the request (``prompt * n + j`` for a list of
    prompts), so a caller can tell which prompt a server left short.
    """

    choices: list[Choice]
    prompt_tokens: int | None
    completion_tokens: int | None
    indices: list[int] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens served from the server's prefix cache


@dataclass(frozen=True, slots=True)
class StopReading:
    """What a parser needs to read step ends: the dialect and the request's stop strings."""

    dialect: Dialect = "auto"
    stops: tuple[str, ...] = ()


def _parse_logprobs(raw: object) -> tuple[Mapping[str, float], ...] | None:
    """Completions' ``top_logprobs`` list, or chat's ``content[].top_logprobs`` entries."""
    if not isinstance(raw, dict):
        return None
    top = raw.get("top_logprobs")
    if isinstance(top, list):
        return tuple(_logprob_map(entry) for entry in top)
    content = raw.get("content")
    if isinstance(content, list):
        out: list[Mapping[str, float]] = []
        for entry in content:
            alts = entry.get("top_logprobs") if isinstance(entry, dict) else None
            pairs = {}
            for alt in alts if isinstance(alts, list) else ():
                if isinstance(alt, dict) and isinstance(alt.get("token"), str):
                    pairs[alt["token"]] = alt.get("logprob")
            out.append(_logprob_map(pairs))
        return tuple(out)
    return None


def _logprob_map(entry: object) -> Mapping[str, float]:
    if not isinstance(entry, dict):
        return {}
    return {
        str(tok): float(lp)
        for tok, lp in entry.items()
        if isinstance(lp, int | float) and not isinstance(lp, bool)
    }


def _count(usage: object, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _inferred(text: str, stops: Sequence[str]) -> str | None:
    """No server signal: a stop with no final answer in the text ended at the first stop."""
    if not stops or states_final_answer(text):
        return None
    return stops[0]


def _stop_reason(
    item: Mapping[str, object], verbose: object, text: str, reading: StopReading
) -> str | None:
    """The matched stop string of a ``"stop"`` finish, None at EOS, by the server's own
    field where it has one."""
    dialect = reading.dialect
    if dialect in ("auto", "vllm") and "stop_reason" in item:
        value = item["stop_reason"]
        return value if isinstance(value, str) else None  # an int is a stop token: EOS
    if dialect in ("auto", "sglang") and "matched_stop" in item:
        value = item["matched_stop"]
        return value if isinstance(value, str) else None  # an int is the EOS token id
    if dialect in ("auto", "llamacpp") and isinstance(verbose, dict) and "stop_type" in verbose:
        if verbose["stop_type"] != "word":
            return None
        word = verbose.get("stopping_word")
        return word if isinstance(word, str) and word else _inferred(text, reading.stops)
    return _inferred(text, reading.stops)


def _finish(raw: object) -> tuple[str, bool]:
    """(finish_reason, the server said EOS outright)."""
    if not isinstance(raw, str):
        return "stop", False
    return _FINISH_ALIASES.get(raw, (raw, False))


def _bodies(body: object) -> list[dict[str, object]]:
    """A response object, or llama.cpp's array of them (one per prompt of a list)."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list) and body and all(isinstance(b, dict) for b in body):
        return list(body)
    raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")


def parse_completion(
    body: object,
    n: int,
    reading: StopReading | None = None,
    *,
    chat: bool = False,
    short_ok: bool = False,
) -> ParsedCompletion:
    """Parse a ``/v1/completions`` (or, ``chat``, ``/v1/chat/completions``) body that should
    hold ``n`` choices. Fewer is allowed with ``short_ok`` (the caller tops up); more, fewer
    otherwise, or a wrong shape raises MalformedResponse (not retryable).

    It runs once per policy request, so it is written for the common body (a text, an int
    index, a finish reason, no logprobs) without helpers per choice.
    """
    reading = reading or StopReading()
    bodies = _bodies(body)
    many = len(bodies)
    choices: list[Choice] = []
    indices: list[int] = []
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    cached_tokens = 0
    in_order = True  # every choice's index is its position (the usual reply)
    for part in bodies:
        raw_choices = part.get("choices")
        if not isinstance(raw_choices, list):
            raise MalformedResponse("no 'choices' list in the completion response")
        verbose = part.get("__verbose")
        for item in raw_choices:
            position = len(choices)
            if not isinstance(item, dict):
                raise MalformedResponse(f"choice {position} is not an object")
            text = _message_text(item, position) if chat else item.get("text")
            if not isinstance(text, str):
                raise MalformedResponse(f"choice {position} has no text")
            # a model may repeat what it was sent, its caller's key included: no secret
            # gets further
            text = redact(text)
            # llama.cpp's array (one body per prompt) numbers each body's choice by its prompt
            index = position if many > 1 else item.get("index", position)
            if type(index) is not int or index != position:
                if not isinstance(index, int):
                    raise MalformedResponse(f"choice {position} has a non-integer index")
                in_order = False
            finish, said_eos = _finish(item.get("finish_reason"))
            stopped = finish == "stop" and not said_eos  # by a stop string, or EOS unsaid
            stop_reason = _stop_reason(item, verbose, text, reading) if stopped else None
            raw_logprobs = item.get("logprobs")
            logprobs = None if raw_logprobs is None else _parse_logprobs(raw_logprobs)
            choices.append(Choice(text, finish, stop_reason, logprobs))
            indices.append(index)
        usage = part.get("usage")
        p, c = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        prompt_tokens = None if p is None or prompt_tokens is None else prompt_tokens + p
        completion_tokens = (
            None if c is None or completion_tokens is None else completion_tokens + c
        )
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        if details is not None:
            cached_tokens += min(_count(details, "cached_tokens") or 0, p or 0)
    if len(choices) > n or (len(choices) < n and not short_ok):
        raise MalformedResponse(f"asked for {n} choices, got {len(choices)}")
    if not in_order:  # choices come back in index order
        order = sorted(range(len(indices)), key=indices.__getitem__)
        choices = [choices[i] for i in order]
        indices = [indices[i] for i in order]
    return ParsedCompletion(
        choices=choices,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        indices=indices,
        cached_tokens=cached_tokens,
    )


def _message_text(item: dict[str, object], position: int) -> str:
    """A chat choice's ``message.content`` ("" for a null content)."""
    message = item.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(content, str | None):
        raise MalformedResponse(f"choice {position} has no message")
    return content or ""
