"""JsonHttp: the one HTTP stack under every model call (policy, judge PRM, pooling PRM).

Why aiohttp and not the openai SDK or httpx: ``bench/client_cpu.py`` measured the client CPU
per small completion request at about a tenth of httpx's, and the SDK (over httpx) in
between; a test-time-scaling client sends thousands of such requests per problem set. The
connection pool is sized to the endpoint's limit, so every request in flight keeps its
keep-alive connection. Bodies are serialised once per attempt and returned raw, so callers
parse them once. Transport failures become the three exceptions below, which
``pool.classify`` maps to ``ratts.errors`` types; nothing above this module sees aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp


class HttpStatusError(Exception):
    """The server answered with status >= 400; ``body`` is its raw bytes."""

    def __init__(self, status: int, reason: str, body: bytes, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after

    def parsed_body(self) -> object:
        """The body as JSON if it is JSON, else as text."""
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", "replace")


class HttpTimeout(Exception):
    """No complete answer within the timeout."""


class HttpUnreachable(Exception):
    """Could not connect, or the connection dropped before a whole response came back."""


def env_proxy(url: str) -> str | None:
    """The proxy that ``HTTP(S)_PROXY`` / ``NO_PROXY`` name for ``url``, if any.

    Looked up once per client: aiohttp's ``trust_env`` would look it up (and read ~/.netrc)
    in a worker thread on every request, two thread hops that cost more CPU than the
    request itself.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _transport_error(exc: Exception) -> Exception | None:
    """This module's exception for a failure of aiohttp's (None: not one of them). aiohttp
    is imported here, on a failure, not on every request."""
    import aiohttp

    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it
        return HttpTimeout("request timed out")
    if isinstance(exc, aiohttp.ClientError):
        return HttpUnreachable(str(exc) or type(exc).__name__)
    return None


def encode(payload: dict[str, Any]) -> bytes:
    """A JSON request body (compact; non-ASCII text kept as UTF-8, not escaped). One
    encoder for all: ``json.dumps`` with options builds a new one per call."""
    return _ENCODER.encode(payload).encode()


class JsonHttp:
    """POST JSON to one server over a pooled aiohttp session.

    The session is opened on first use inside the running event loop (clients are built
    before ``asyncio.run``) and reopened if a later call runs in another loop.
    """

    def __init__(
        self, base_url: str, *, api_key: str | None, timeout_s: float, max_connections: int
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._max_connections = max_connections
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._proxy = env_proxy(self.base_url)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                proxy=self._proxy,  # HTTP(S)_PROXY / NO_PROXY, as the SDK honoured them
            )
            self._loop = loop
        return self._session

    async def request(self, path: str, payload: dict[str, Any] | None = None) -> bytes:
        """POST ``payload`` as JSON to ``path`` under the base URL (GET it when ``payload``
        is None); the raw body of a 2xx answer. One method, not a post and a get over a
        shared helper: every model call passes through it, one coroutine deep."""
        session = self._open()
        method, data = ("GET", None) if payload is None else ("POST", encode(payload))
        try:
            async with session.request(method, self.base_url + path, data=data) as response:
                body = await response.read()
                if response.status >= 400:
                    raise HttpStatusError(
                        response.status,
                        response.reason or "",
                        body,
                        response.headers.get("Retry-After"),
                    )
                return body
        except Exception as exc:
            mapped = _transport_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def post_stream(
        self, path: str, payload: dict[str, Any], on_data: Callable[[bytes], None]
    ) -> None:
        """POST ``payload`` and call ``on_data`` with each server-sent ``data:`` payload
        (up to ``[DONE]``) as it arrives; errors as in ``request``."""
        session = self._open()
        try:
            async with session.post(self.base_url + path, data=encode(payload)) as response:
                if response.status >= 400:
                    raise HttpStatusError(
                        response.status,
                        response.reason or "",
                        await response.read(),
                        response.headers.get("Retry-After"),
                    )
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    if data:
                        on_data(data)
        except Exception as exc:
            mapped = _transport_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._loop is not asyncio.get_running_loop():
            return  # its loop is gone, and its connections with it
        await session.close()
