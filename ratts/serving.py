"""Serving an app with uvicorn: in the foreground (``ratts serve``) or in a background thread
(tests, benchmarks, notebooks), always on a socket bound up front so port 0 works."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from ratts.errors import ConfigError, EndpointUnreachableError


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 picks a free port); ConfigError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"cannot listen on {host}:{port}: a TCP port is 0-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError, UnicodeError) as exc:
        sock.close()
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot listen on {host}:{port}: {detail}") from None
    return sock


def make_server(
    app: Any,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_shutdown_s: int = 5,
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=graceful_shutdown_s,
        backlog=2048,
    )
    return uvicorn.Server(config)


class ServerThread:
    """Run an ASGI app under uvicorn in a daemon thread; a context manager.

    ``start`` returns once the app's startup (lifespan) has finished and it accepts
    requests; ``stop`` runs its shutdown and joins the thread.
    """

    #: how the thread and its errors are named
    label = "ratts server"
    graceful_shutdown_s = 5

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def v1_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self, timeout_s: float = 20.0) -> ServerThread:
        if self._server is not None:
            return self
        sock = bind(self.host, self._port)
        self._port = sock.getsockname()[1]
        server = make_server(self.app, graceful_shutdown_s=self.graceful_shutdown_s)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self.label, daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise EndpointUnreachableError(f"{self.label} did not start on port {self._port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
