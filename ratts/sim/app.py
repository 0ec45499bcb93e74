"""The simulator's HTTP face: OpenAI ``/v1/completions`` and ``/v1/chat/completions`` in the
configured server dialect (``ratts.sim.dialects``), vLLM ``/pooling``, stats and faults.

Numbers it serves are simulated; they exist to test and benchmark ratts, not to measure models.

Behaviour worth knowing when writing clients against it:
- like a real model, a continuation of a prompt whose last step is not followed by the
  ``"\n\n"`` separator starts with that separator, so ``stop=["\n\n"]`` then gives an
  empty text: append the separator after each step;
- stop strings are searched in the generated text only and excluded from it; ``stop_reason``
  is the matched string, None at EOS (after the ``\boxed{}`` step) or on ``length``;
- a chat request is read as the question of its last user turn plus, where the dialect
  continues it, the trailing assistant message as the solution so far;
- ``logprobs`` is accepted and answered with null; ``top_p`` is accepted and ignored;
- without a request ``seed`` each repeat of the same (model, prompt) draws fresh samples, in a
  series fixed by the server seed (``POST /sim/reset`` rewinds it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from ratts.sim import dialects, prm_input, world
from ratts.sim.config import FaultKind, SimConfig
from ratts.sim.state import Interval, SimState, bump
from ratts.sim.wire import (
    SAMPLING_FIELDS,
    ChatRequest,
    CompletionRequest,
    PoolingRequest,
)

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
    rest = world.answer_rest(problem, prior, draw)
    if rest is not None:  # the prompt began the final answer (an answer cue): finish it
        steps = iter([rest])
    elif prior and not prompt.endswith(sep):
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
    bump(state.stats.faults, kind)
    if kind == "500":
        return _error(500, "simulated internal server error", "InternalServerError")
    if kind == "429":
        resp = _error(429, "simulated rate limit", "RateLimitError")
        resp.headers["retry-after"] = f"{state.config.faults.retry_after_s:g}"
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
    except ClientDisconnect:  # e.g. it gave up during an injected 'timeout': nobody to answer
        raise _BadRequest(499, "client closed the request", "ClientDisconnect") from None
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
        bump(stats.requests, endpoint)
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
                bump(stats.requests_by_model, model)
                resp = await handler(body)
        except _BadRequest as exc:
            resp = _error(exc.status, str(exc), exc.kind)
        finally:
            state.stats.in_flight -= 1
        bump(state.stats.responses_by_status, str(resp.status_code))
        state.stats.intervals.append(
            Interval(start, time.time(), endpoint, model, n, resp.status_code, asked)
        )
        return resp

    def check(req: CompletionRequest) -> None:
        if req.model not in cfg.policies:
            raise _BadRequest(404, f"The model `{req.model}` does not exist.", "NotFoundError")
        if req.stream:
            raise _BadRequest(400, "streaming is not supported by the simulator", "BadRequestError")
        refused = dialects.refusal(cfg.dialect, n=req.n)
        if refused:
            raise _BadRequest(400, refused, "BadRequestError")
        if req.n > 1 and not cfg.supports_n:
            raise _BadRequest(400, "n > 1 is not supported by this server", "BadRequestError")
        if req.n > cfg.max_n:
            raise _BadRequest(400, f"n must be at most {cfg.max_n}", "BadRequestError")

    async def generate(
        req: CompletionRequest, prompts: list[str]
    ) -> tuple[list[list[tuple[dict[str, Any], int]]], list[int], list[int]]:
        """``n`` samples per prompt (less ``faults.drop_choices`` off the end of a reply with
        several), batch slots held, counters updated; (samples per prompt, prompt tokens,
        prefix-cached prompt tokens). Past ``max_model_len`` it is vLLM's 400."""
        cap = cfg.capacity
        context = cfg.max_model_len
        if context is not None and req.max_tokens is not None and req.max_tokens > context:
            raise _BadRequest(
                400,
                f"max_tokens={req.max_tokens} cannot be greater than max_model_len={context}. "
                "Please request fewer output tokens.",
                "BadRequestError",
            )
        prompt_tokens = [world.count_tokens(prompt) for prompt in prompts]
        if context is not None and max(prompt_tokens) > context:
            raise _BadRequest(
                400,
                f"This model's maximum context length is {context} tokens. However, your "
                f"prompt contains {max(prompt_tokens)} input tokens, which exceeds this limit "
                "even without any output tokens. Please reduce the length of the input prompt.",
                "BadRequestError",
            )
        groups: list[list[tuple[dict[str, Any], int]]] = []
        holds: list[float] = []
        cached: list[int] = []
        for prompt, p_tokens in zip(prompts, prompt_tokens, strict=True):
            cached.append(state.cached_tokens(req.model, prompt) if cfg.prefix_cache else 0)
            key = state.sample_key(req.model, prompt, req.seed)
            room = None if context is None else context - p_tokens
            group = []
            for j in range(req.n):
                choice, c_tokens = _choice(state, req.model, prompt, key, j, req, room)
                group.append((choice, c_tokens))
                prefill = _seconds(p_tokens, cap.prefill_tps) if j == 0 else 0.0
                holds.append(prefill + _seconds(c_tokens, cap.decode_tps))
            groups.append(group)
        total = len(prompts) * req.n
        for _ in range(min(cfg.faults.drop_choices, total - 1)):
            last = max(i for i, g in enumerate(groups) if g)
            groups[last].pop()
        if cap.base_latency_s > 0:
            await asyncio.sleep(cap.base_latency_s)
        await asyncio.gather(*(state.occupy("policy", s) for s in holds))
        stats = state.stats
        stats.choices += sum(len(g) for g in groups)
        stats.prompts += len(prompts)
        stats.prompt_tokens += sum(prompt_tokens)
        stats.completion_tokens += sum(t for g in groups for _, t in g)
        stats.cached_tokens += sum(cached)
        return groups, prompt_tokens, cached

    def reply(
        kind: str,
        model: str,
        choices: list[dict[str, Any]],
        prompt_tokens: int,
        tokens: int,
        cached: int,
    ) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        }
        if cfg.prefix_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return {
            "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": usage,
        }

    async def completions(body: object) -> Response:
        req = _parse(CompletionRequest, body)
        if cfg.chat_only:
            raise _BadRequest(404, dialects.CHAT_ONLY_MESSAGE, "NotFoundError")
        check(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise _BadRequest(400, "prompt must not be empty", "BadRequestError")
        groups, prompt_tokens, cached = await generate(req, prompts)
        d = cfg.dialect

        def shaped(pi: int, j: int, choice: dict[str, Any]) -> dict[str, Any]:
            text, finish, stop = choice["text"], choice["finish_reason"], choice["stop_reason"]
            return dialects.completion_choice(d, j, text, finish, stop)

        if dialects.per_prompt_bodies(d, len(prompts)):
            return JSONResponse(
                [
                    reply(
                        "text_completion",
                        req.model,
                        [shaped(pi, pi, c) for c, _ in group],
                        prompt_tokens[pi],
                        sum(t for _, t in group),
                        cached[pi],
                    )
                    for pi, group in enumerate(groups)
                ]
            )
        choices = [
            shaped(pi, pi * req.n + j, c)
            for pi, group in enumerate(groups)
            for j, (c, _) in enumerate(group)
        ]
        tokens = sum(t for g in groups for _, t in g)
        return JSONResponse(
            reply("text_completion", req.model, choices, sum(prompt_tokens), tokens, sum(cached))
        )

    async def chat(body: object) -> Response:
        req = _parse(ChatRequest, body)
        d = cfg.dialect
        if d in ("vllm", "sglang") and req.continue_final_message and req.add_generation_prompt:
            raise _BadRequest(
                400,
                "Cannot set both `add_generation_prompt` and `continue_final_message` to True.",
                "BadRequestError",
            )
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise _BadRequest(400, "messages need a user turn", "BadRequestError")
        last = req.messages[-1]
        prior = ""
        if last.role == "assistant" and dialects.continues(d, req.continue_final_message):
            prior = last.content
        # the world reads a completions-style prompt: question, then the solution so far
        question = world.extract_question(users[-1].content)
        prompt = f"Problem: {question}\n\nSolution:\n{prior}"
        sampling = req.model_dump(include=set(SAMPLING_FIELDS))
        creq = CompletionRequest(prompt=prompt, **sampling)
        check(creq)
        groups, prompt_tokens, cached = await generate(creq, [prompt])
        choices = [
            dialects.chat_choice(d, j, c["text"], c["finish_reason"], c["stop_reason"])
            for j, (c, _) in enumerate(groups[0])
        ]
        tokens = sum(t for _, t in groups[0])
        return JSONResponse(
            reply("chat.completion", req.model, choices, prompt_tokens[0], tokens, cached[0])
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
            try:
                items.append(prm_input.from_messages(req.messages))
            except prm_input.BadInput as exc:
                raise _BadRequest(400, str(exc), "BadRequestError") from None
        elif req.input is None:
            raise _BadRequest(400, "input is required", "BadRequestError")
        else:
            texts = [req.input] if isinstance(req.input, str) else req.input
            for text in texts:
                question, steps = prm_input.split_pooling_input(text)
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

    @app.post("/v1/chat/completions")
    async def v1_chat(request: Request) -> Response:
        return await tracked("chat", request, chat)

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
