"""``ratts serve``: an OpenAI-compatible chat server in front of one Orchestrator.

- ``POST /v1/chat/completions``: ``model`` is ``ratts/auto`` (the router picks) or
  ``ratts/<strategy>`` (forced); extra body fields ``budget``, ``prm``, ``policy``,
  ``timeout``. The reply is a standard chat completion whose ``usage`` holds the real totals
  (policy + PRM tokens) and whose extra ``ratts`` field holds the config, the candidates the
  router weighed and the scores. ``stream: true`` sends progress chunks, then the answer.
- ``GET /v1/models``: ``ratts/auto`` and one model per strategy.
- Optional bearer-token auth (``RATTS_SERVER_TOKEN``): a missing or wrong token is a 401.
- Every error is answered in OpenAI's shape ``{"error": {message, type, param, code}}``;
  bad requests are 400s, endpoint failures behind ratts are 502s.

One Orchestrator serves every request, so endpoint connection pools, concurrency limits and
the run log are shared; it is built at startup and closed at shutdown. A client that hangs
up cancels its solve (and with it the solve's in-flight model requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ratts.errors import ConfigError, EndpointError, InputError, RattsError
from ratts.orchestrator.orchestrator import Orchestrator
from ratts.orchestrator.result import SolveResult
from ratts.orchestrator.watch import ProgressEvent
from ratts.redact import register as register_secret
from ratts.server.limits import check_request, read_json
from ratts.server.schemas import AUTO_MODEL, MODEL_PREFIX, ApiError, parse_request
from ratts.server.streaming import (
    answer_text,
    chunk,
    completion_body,
    completion_id,
    content_pieces,
    sse,
    usage_body,
)
from ratts.settings import Settings
from ratts.strategies import STRATEGIES

log = logging.getLogger(__name__)

TOKEN_ENV = "RATTS_SERVER_TOKEN"
DISCONNECT_POLL_S = 0.5


# The chat request field that sets each ratts field an error can be about (N comes from
# ``budget``, the question from ``messages``, a forced strategy from ``model``); a field
# the request cannot set maps to no ``param``.
REQUEST_PARAM = {
    "n": "budget",
    "budget": "budget",
    "question": "messages",
    "strategy": "model",
    "policy": "policy",
    "prm": "prm",
    "max_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
}
# The request field that picks the endpoint of each role.
ROLE_PARAM = {"policy": "policy", "PRM": "prm"}


def api_error(exc: RattsError) -> ApiError:
    """The HTTP face of a ratts error, from its fields (never its message text): bad
    input 400, failing endpoints 502, else 500; ``code`` is the error's own code and
    ``param`` the request field it is about."""
    if exc.param is not None:
        param = REQUEST_PARAM.get(exc.param)
    else:
        param = ROLE_PARAM.get(exc.role or "")
    if isinstance(exc, InputError | ConfigError):
        return ApiError(400, str(exc), param=param, code=exc.code)
    if isinstance(exc, EndpointError):
        return ApiError(502, str(exc), kind="upstream_error", param=param, code=exc.code)
    return ApiError(500, str(exc), kind="server_error", code=exc.code)


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def create_app(
    settings: Settings | None = None,
    *,
    orchestrator: Orchestrator | None = None,
    token: str | None = None,
    default_timeout: float | None = None,
    orchestrator_options: Mapping[str, Any] | None = None,
) -> FastAPI:
    """The server app. Give ``orchestrator`` to share one you own (it is not closed), else
    one is built from ``settings`` (and ``orchestrator_options``) at startup and closed at
    shutdown. ``token`` defaults to ``$RATTS_SERVER_TOKEN``; empty means no auth.
    ``default_timeout`` applies to requests that set none.
    """
    secret = token if token is not None else os.environ.get(TOKEN_ENV, "")
    register_secret(secret)
    strategies = tuple(STRATEGIES)
    owned = orchestrator is None
    orch = orchestrator or Orchestrator(settings, **dict(orchestrator_options or {}))
    limits = orch.settings.server_limits

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await orch.start()
        try:
            yield
        finally:
            if owned:
                await orch.aclose()

    app = FastAPI(title="ratts", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.orchestrator = orch

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error_response(ApiError(400, f"invalid {where}: {first.get('msg')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error_response(ApiError(exc.status_code, str(exc.detail), kind=kind))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return _error_response(ApiError(500, "internal server error", kind="server_error"))

    def authorize(request: Request) -> None:
        if not secret:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401,
                "missing bearer token: send 'Authorization: Bearer <token>'",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(given.strip().encode(), secret.encode()):
            raise ApiError(401, "invalid bearer token", code="invalid_api_key")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        created = int(time.time())
        names = [AUTO_MODEL, *(MODEL_PREFIX + s for s in strategies)]
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "ratts"}
                for name in names
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        authorize(request)
        req = parse_request(await read_json(request, limits))
        check_request(req, limits)
        strategy = req.strategy(strategies)
        options: dict[str, Any] = {
            "budget": req.to_budget(),
            "policy": req.policy,
            "prm": req.prm,
            "strategy": strategy,
            "params": req.to_params(strategy),
            "timeout": req.timeout or default_timeout,
            "meta": req.metadata,
        }
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return await _stream(request, orch, req.question(), req.model, options, include_usage)
        result = await _solve_watching_disconnect(request, orch, req.question(), options)
        return JSONResponse(completion_body(result, req.model, completion_id()))

    return app


async def _solve_watching_disconnect(
    request: Request, orch: Orchestrator, question: str, options: dict[str, Any]
) -> SolveResult:
    """Solve, cancelling the solve if the client hangs up first; errors become ApiErrors."""
    task = asyncio.create_task(orch.solve(question, **options))

    async def watch() -> None:
        while not task.done():
            if await request.is_disconnected():
                task.cancel()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except RattsError as exc:
        raise api_error(exc) from None
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the server itself is cancelling this request
        # we cancelled the solve because the client hung up: nobody reads this answer,
        # and it is no error of ours (no traceback in the log)
        log.info("client disconnected; solve cancelled")
        raise ApiError(499, "client closed the request", code="client_closed") from None
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


_END = object()


async def _stream(
    request: Request,
    orch: Orchestrator,
    question: str,
    model: str,
    options: dict[str, Any],
    include_usage: bool,
) -> Response:
    """Start the solve; answer a 400 if it fails validation, else stream its progress."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(orch.solve(question, on_event=queue.put_nowait, **options))
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    first = await queue.get()
    if first is _END and task.exception() is not None:
        exc = task.exception()
        if isinstance(exc, RattsError):
            return _error_response(api_error(exc))
        raise exc  # type: ignore[misc]
    cid, created = completion_id(), int(time.time())

    async def events() -> AsyncIterator[bytes]:
        item: Any = first
        try:
            yield sse(chunk(cid, model, created, delta={"role": "assistant", "content": ""}))
            while item is not _END:
                if isinstance(item, ProgressEvent):
                    yield sse(chunk(cid, model, created, ratts=item.to_dict()))
                item = await queue.get()
            try:
                result = task.result()
            except RattsError as exc:
                yield sse(api_error(exc).body())  # the OpenAI client raises APIError on it
                yield sse("[DONE]")
                return
            except Exception:
                log.exception("solve failed while streaming")
                yield sse(ApiError(500, "internal server error", kind="server_error").body())
                yield sse("[DONE]")
                return
            for piece in content_pieces(answer_text(result)):
                yield sse(chunk(cid, model, created, delta={"content": piece}))
            summary = result.to_dict(explain=True)
            yield sse(chunk(cid, model, created, finish_reason="stop", ratts=summary))
            if include_usage:
                yield sse(chunk(cid, model, created, usage=usage_body(result), no_choices=True))
            yield sse("[DONE]")
        finally:
            if not task.done():  # the client went away: stop the solve and its requests
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
