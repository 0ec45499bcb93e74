"""The simulator's HTTP face: OpenAI ``/v1/completions``, vLLM ``/pooling``, stats and faults.

Numbers it serves are simulated; they exist to test and benchmark ratts, not to measure models.

Behaviour worth knowing when writing clients against it:
- like a real model, a continuation of a prompt whose last step is not followed by the
  ``"\n\n"`` separator starts with that separator, so ``stop=["\n\n"]`` then gives an
  empty text: append the separator after each step;
- stop strings are searched in the generated text only and excluded from it; ``stop_reason``
  is the matched string, None at EOS (after the ``\boxed{}`` step) or on ``length``;
- ``logprobs`` is accepted and answered with null; ``top_p`` is accepted and ignored;
- without a request ``seed`` each repeat of the same (model, prompt) draws fresh samples, in a
  series fixed by the server seed (``POST /sim/reset`` rewinds it).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ratts.sim import world
from ratts.sim.config import FaultKind, SimConfig

MAX_INTERVALS = 10_000
_M = TypeVar("_M", bound=BaseModel)
DEFAULT_MAX_TOKENS = 4096


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status_code=status,
    )


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | list[str]
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    logprobs: int | None = Field(default=None, ge=0)
    stream: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class PoolingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | None = None
    messages: list[ChatMessage] | None = None


@dataclass(slots=True)
class Interval:
    start: float
    end: float
    endpoint: str
    model: str
    n: int
    status: int
    choices: int = 0  # sequences asked for: n x prompts (completions), inputs (pooling)


@dataclass
class SimStats:
    """Counters exposed at ``GET /sim/stats``; ``POST /sim/reset`` zeroes them (and rewinds
    the per-prompt sample counters and the fault RNG)."""

    requests: dict[str, int] = field(default_factory=dict)
    requests_by_model: dict[str, int] = field(default_factory=dict)
    responses_by_status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    choices: int = 0
    prompts: int = 0  # sequence groups: one per prompt of a request (vLLM's unit of work)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    prm_inputs: int = 0
    prm_tokens: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    busy_slot_seconds: float = 0.0
    intervals: deque[Interval] = field(default_factory=lambda: deque(maxlen=MAX_INTERVALS))

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated": True,
            "requests": dict(self.requests),
            "requests_by_model": dict(self.requests_by_model),
            "responses_by_status": dict(self.responses_by_status),
            "faults": dict(self.faults),
            "choices": self.choices,
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "prm_inputs": self.prm_inputs,
            "prm_tokens": self.prm_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "busy_slot_seconds": self.busy_slot_seconds,
            "intervals": [
                {
                    "start": i.start,
                    "end": i.end,
                    "endpoint": i.endpoint,
                    "model": i.model,
                    "n": i.n,
                    "choices": i.choices,
                    "status": i.status,
                }
                for i in self.intervals
            ],
        }


def _bump(counter: dict[str, int], key: str, by: int = 1) -> None:
    counter[key] = counter.get(key, 0) + by


class SimState:
    """Everything mutable in one app: counters, the fault RNG, slot semaphores."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._fault_rng = random.Random(world.stable_hash(config.seed, "faults"))
        self._fault_pos = 0
        self._prompt_counts: dict[int, int] = {}
        self._served: set[int] = set()  # hashes of prompts served (the prefix cache)
        self._policy_slots: asyncio.Semaphore | None = None
        self._prm_slots: asyncio.Semaphore | None = None

    def reset(self) -> None:
        """Zero the counters and rewind the randomness, as if the server had just started."""
        in_flight = self.stats.in_flight
        self.stats = SimStats(in_flight=in_flight, max_in_flight=in_flight)
        self._fault_rng = random.Random(world.stable_hash(self.config.seed, "faults"))
        self._fault_pos = 0
        self._prompt_counts.clear()
        self._served.clear()

    def cached_tokens(self, model: str, prompt: str) -> int:
        """Tokens of the longest earlier-served prompt that starts this one (cut at a step
        boundary), as a prefix cache would reuse them; then remember this prompt."""
        cuts = [len(prompt)]
        cuts += [m.end() for m in re.finditer(re.escape(world.SEPARATOR), prompt)]
        cuts += [m.start() for m in world.STEP_MARK.finditer(prompt)]
        best = max(
            (c for c in cuts if c and world.stable_hash(model, prompt[:c]) in self._served),
            default=0,
        )
        if len(self._served) > 500_000:
            self._served.clear()
        self._served.add(world.stable_hash(model, prompt))
        return world.count_tokens(prompt[:best]) if best else 0

    def next_fault(self) -> FaultKind:
        f = self.config.faults
        if self._fault_pos < len(f.sequence):
            self._fault_pos += 1
            return f.sequence[self._fault_pos - 1]
        u = self._fault_rng.random()
        for kind, rate in (
            ("500", f.error_500),
            ("429", f.error_429),
            ("timeout", f.timeout),
            ("malformed", f.malformed),
        ):
            if u < rate:
                return kind  # type: ignore[return-value]
            u -= rate
        return "ok"

    def sample_key(self, model: str, prompt: str, seed: int | None) -> tuple[object, ...]:
        """Randomness key for a prompt: the request seed, or a per-prompt request counter."""
        if seed is not None:
            return ("seed", seed)
        h = world.stable_hash(model, prompt)
        count = self._prompt_counts.get(h, 0)
        if len(self._prompt_counts) > 500_000:
            self._prompt_counts.clear()
        self._prompt_counts[h] = count + 1
        return ("count", count)

    async def occupy(self, kind: Literal["policy", "prm"], seconds: float) -> None:
        """Hold one batch slot for ``seconds`` (no slot, no sleep when the model is instant)."""
        if seconds <= 0:
            return
        cap = self.config.capacity
        if kind == "policy":
            if self._policy_slots is None:
                self._policy_slots = asyncio.Semaphore(cap.slots)
            sem = self._policy_slots
        else:
            if self._prm_slots is None:
                self._prm_slots = asyncio.Semaphore(cap.prm_slots)
            sem = self._prm_slots
        async with sem:
            await asyncio.sleep(seconds)
            self.stats.busy_slot_seconds += seconds


def _seconds(tokens: int, tps: float) -> float:
    return tokens / tps if tps > 0 else 0.0


def _first_stop(text: str, stops: list[str]) -> tuple[int, str | None]:
    """Position and value of the earliest stop string in ``text`` (-1, None if none)."""
    best, which = -1, None
    for s in stops:
        pos = text.find(s)
        if pos >= 0 and (best < 0 or pos < best):
            best, which = pos, s
    return best, which


def _choice(
    state: SimState,
    model: str,
    prompt: str,
    key: tuple[object, ...],
    j: int,
    req: CompletionRequest,
    room: int | None = None,
) -> tuple[dict[str, Any], int]:
    """One choice: generate to EOS, cut at the first stop string, then at max_tokens (and
    at ``room``, what the context leaves after the prompt)."""
    cfg = state.config
    policy = cfg.policies[model]
    question, prior = world.split_prompt(prompt)
    problem = world.problem_model(question, cfg.seed)
    greedy = req.temperature == 0.0
    draw = world.Draws(world.stable_hash(cfg.seed, model, prompt, *key, j), greedy)
    steps = world.continue_solution(
        problem,
        prior,
        skill=policy.skill,
        rush=policy.rush,
        terse_errors=policy.terse_errors,
        seed=cfg.seed,
        draw=draw,
        temperature=req.temperature,
    )
    sep = world.SEPARATOR
    lead = ""
    if prior and not prompt.endswith(sep):
        lead = "\n" if prompt.endswith("\n") else sep
    raw = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    stops = [s for s in raw if s]
    longest = max((len(s) for s in stops), default=0)
    limit = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    if room is not None:
        limit = min(limit, room)
    # Write lazily; stop once the first stop match (or the length cut) can no longer move.
    text, tokens = "", 0
    for i, step in enumerate(steps):
        piece = (sep if i else lead) + step
        text += piece
        tokens += world.count_tokens(piece)
        best, _ = _first_stop(text, stops)
        if 0 <= best <= len(text) - longest or tokens > limit + longest:
            break
    finish: str = "stop"
    best, stop_reason = _first_stop(text, stops)
    if best >= 0:
        text = text[:best]
    if world.count_tokens(text) > limit:
        text = world.truncate_tokens(text, limit)
        finish, stop_reason = "length", None
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
    }
    return choice, world.count_tokens(text)


async def _faulted(state: SimState, kind: FaultKind) -> Response | None:
    """Apply an injected fault: a response to send instead, or None to go on."""
    if kind == "ok":
        return None
    _bump(state.stats.faults, kind)
    if kind == "500":
        return _error(500, "simulated internal server error", "InternalServerError")
    if kind == "429":
        resp = _error(429, "simulated rate limit", "RateLimitError")
        resp.headers["retry-after"] = "0"
        return resp
    if kind == "malformed":
        return Response(
            b'{"id": "sim-malformed", "choices": [{"text": ', media_type="application/json"
        )
    await asyncio.sleep(state.config.faults.timeout_s)
    return None


def _parse(model: type[_M], body: object) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        raise _BadRequest(
            400, f"invalid request at {where}: {err['msg']}", "BadRequestError"
        ) from None


async def _json_body(request: Request) -> object:
    try:
        return await request.json()
    except ValueError:
        raise _BadRequest(400, "request body is not valid JSON", "BadRequestError") from None


def create_app(config: SimConfig | None = None) -> FastAPI:
    """Build the simulator app; all state lives in the returned app (``app.state.sim``)."""
    cfg = config or SimConfig()
    state = SimState(cfg)
    app = FastAPI(title="ratts simulator (simulated models)", docs_url=None, redoc_url=None)
    app.state.sim = state

    async def tracked(endpoint: str, request: Request, handler: Any) -> Response:
        stats = state.stats
        _bump(stats.requests, endpoint)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        start = time.time()
        model, n, asked = "", 0, 0
        try:
            fault = state.next_fault()
            early = await _faulted(state, fault)
            if early is not None:
                resp = early
            else:
                body = await _json_body(request)
                if isinstance(body, dict):
                    model = str(body.get("model", ""))
                    raw_n = body.get("n", 1)
                    n = raw_n if isinstance(raw_n, int) else 1
                    prompt = body.get("prompt")
                    asked = n * (len(prompt) if isinstance(prompt, list) else 1)
                    if endpoint == "pooling":
                        inputs = body.get("input")
                        n = asked = len(inputs) if isinstance(inputs, list) else 1
                _bump(stats.requests_by_model, model)
                resp = await handler(body)
        except _BadRequest as exc:
            resp = _error(exc.status, str(exc), exc.kind)
        finally:
            state.stats.in_flight -= 1
        _bump(state.stats.responses_by_status, str(resp.status_code))
        state.stats.intervals.append(
            Interval(start, time.time(), endpoint, model, n, resp.status_code, asked)
        )
        return resp

    async def completions(body: object) -> Response:
        req = _parse(CompletionRequest, body)
        if req.model not in cfg.policies:
            raise _BadRequest(404, f"The model `{req.model}` does not exist.", "NotFoundError")
        if req.stream:
            raise _BadRequest(400, "streaming is not supported by the simulator", "BadRequestError")
        if req.n > 1 and not cfg.supports_n:
            raise _BadRequest(400, "n > 1 is not supported by this server", "BadRequestError")
        if req.n > cfg.max_n:
            raise _BadRequest(400, f"n must be at most {cfg.max_n}", "BadRequestError")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise _BadRequest(400, "prompt must not be empty", "BadRequestError")
        cap = cfg.capacity
        choices: list[dict[str, Any]] = []
        holds: list[float] = []
        prompt_tokens = completion_tokens = cached_tokens = 0
        context = cfg.max_model_len
        if context is not None and req.max_tokens is not None and req.max_tokens > context:
            raise _BadRequest(
                400,
                f"max_tokens={req.max_tokens} cannot be greater than max_model_len={context}. "
                "Please request fewer output tokens.",
                "BadRequestError",
            )
        sizes = [world.count_tokens(prompt) for prompt in prompts]
        if context is not None and max(sizes) > context:
            raise _BadRequest(
                400,
                f"This model's maximum context length is {context} tokens. However, your "
                f"prompt contains {max(sizes)} input tokens, which exceeds this limit even "
                "without any output tokens. Please reduce the length of the input prompt.",
                "BadRequestError",
            )
        for pi, prompt in enumerate(prompts):
            p_tokens = sizes[pi]
            prompt_tokens += p_tokens
            if cfg.prefix_cache:
                cached_tokens += state.cached_tokens(req.model, prompt)
            key = state.sample_key(req.model, prompt, req.seed)
            room = None if context is None else context - p_tokens
            for j in range(req.n):
                choice, c_tokens = _choice(state, req.model, prompt, key, j, req, room)
                choice["index"] = pi * req.n + j
                choices.append(choice)
                completion_tokens += c_tokens
                prefill = _seconds(p_tokens, cap.prefill_tps) if j == 0 else 0.0
                holds.append(prefill + _seconds(c_tokens, cap.decode_tps))
        if cap.base_latency_s > 0:
            await asyncio.sleep(cap.base_latency_s)
        await asyncio.gather(*(state.occupy("policy", s) for s in holds))
        stats = state.stats
        stats.choices += len(choices)
        stats.prompts += len(prompts)
        stats.prompt_tokens += prompt_tokens
        stats.completion_tokens += completion_tokens
        stats.cached_tokens += cached_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if cfg.prefix_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
        return JSONResponse(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": req.model,
                "choices": choices,
                "usage": usage,
            }
        )

    async def pooling(body: object) -> Response:
        req = _parse(PoolingRequest, body)
        if req.model not in cfg.prms:
            raise _BadRequest(404, f"The model `{req.model}` does not exist.", "NotFoundError")
        prm = cfg.prms[req.model]
        items: list[tuple[str, list[str], int]] = []
        if req.messages is not None:
            if req.input is not None:
                raise _BadRequest(400, "give either input or messages", "BadRequestError")
            items.append(_from_messages(req.messages))
        elif req.input is None:
            raise _BadRequest(400, "input is required", "BadRequestError")
        else:
            texts = [req.input] if isinstance(req.input, str) else req.input
            for text in texts:
                question, steps = _split_pooling_input(text)
                items.append((question, steps, world.count_tokens(text)))
        data: list[dict[str, Any]] = []
        total = 0
        for i, (question, steps, tokens) in enumerate(items):
            problem = world.problem_model(question, cfg.seed)
            rewards = world.prm_rewards(
                problem,
                steps,
                prm_name=req.model,
                quality=prm.quality,
                noise=prm.noise,
                length_bias=prm.length_bias,
                step_length_bias=prm.step_length_bias,
                seed=cfg.seed,
            )
            data.append({"index": i, "object": "pooling", "data": [[1.0 - r, r] for r in rewards]})
            total += tokens
        cap = cfg.capacity
        if cap.base_latency_s > 0:
            await asyncio.sleep(cap.base_latency_s)
        await asyncio.gather(*(state.occupy("prm", _seconds(t, cap.prm_tps)) for _, _, t in items))
        state.stats.prm_inputs += len(items)
        state.stats.prm_tokens += total
        return JSONResponse(
            {
                "id": f"pool-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": req.model,
                "data": data,
                "usage": {"prompt_tokens": total, "total_tokens": total, "completion_tokens": 0},
            }
        )

    @app.post("/v1/completions")
    async def v1_completions(request: Request) -> Response:
        return await tracked("completions", request, completions)

    @app.post("/pooling")
    async def v1_pooling(request: Request) -> Response:
        return await tracked("pooling", request, pooling)

    @app.get("/v1/models")
    async def v1_models() -> dict[str, Any]:
        created = int(time.time())
        names = list(cfg.policies) + list(cfg.prms)
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "ratts-sim",
                    **({"max_model_len": cfg.max_model_len} if cfg.max_model_len else {}),
                }
                for name in names
            ],
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "simulated": "true"}

    @app.get("/sim/stats")
    async def sim_stats() -> dict[str, Any]:
        return state.stats.to_dict()

    @app.post("/sim/reset")
    async def sim_reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    return app


def _from_messages(messages: list[ChatMessage]) -> tuple[str, list[str], int]:
    """A chat for the PRM: the user turn is the question, the assistant turn the solution."""
    users = [m.content for m in messages if m.role == "user"]
    answers = [m.content for m in messages if m.role == "assistant"]
    if not users or not answers:
        raise _BadRequest(400, "messages need a user and an assistant turn", "BadRequestError")
    question = world.extract_question(users[-1])
    steps = _marked_steps(answers[-1])
    tokens = sum(world.count_tokens(m.content) for m in messages)
    return question, steps, tokens


def _marked_steps(solution: str) -> list[str]:
    """Steps are the chunks before each ``<extra_0>`` marker."""
    return [s.strip() for s in solution.split(STEP_TOKEN)[:-1]]


STEP_TOKEN = "<extra_0>"


def _split_pooling_input(text: str) -> tuple[str, list[str]]:
    """(question, steps) of one Qwen2.5-Math-PRM style input string."""
    chunks = text.split(STEP_TOKEN)
    if len(chunks) < 2:
        return world.extract_question(text), []
    head = chunks[0]
    assistant = head.rfind("<|im_start|>assistant\n")
    if assistant >= 0:
        prefix, first = head[:assistant], head[assistant + len("<|im_start|>assistant\n") :]
    else:
        q_start = max(head.rfind("Problem: "), 0)
        mark = world.STEP_MARK.search(head, q_start)
        answer = head.find("The final answer is", q_start)
        cuts = [c for c in (mark.start() if mark else -1, answer) if c >= 0]
        if cuts:
            prefix, first = head[: min(cuts)], head[min(cuts) :]
        elif "\n\n" in head.rstrip():
            cut = head.rstrip().rfind("\n\n")
            prefix, first = head[:cut], head[cut:]
        else:
            prefix, first = head, ""
    steps = [first.strip(), *(c.strip() for c in chunks[1:-1])]
    return world.extract_question(prefix), steps
