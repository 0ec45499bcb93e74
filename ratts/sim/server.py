"""SimServer: the simulator on a loopback port in a background thread (for tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from ratts.errors import EndpointUnreachableError
from ratts.sim.app import create_app
from ratts.sim.config import SimConfig


class SimServer:
    """Run ``create_app(config)`` under uvicorn in a thread; usable as a context manager."""

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise EndpointUnreachableError("sim server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def v1_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self, timeout_s: float = 10.0) -> SimServer:
        """Bind the port, start serving, and return once the server accepts requests."""
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.config),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="ratts-sim", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise EndpointUnreachableError(f"sim server did not start on port {self._port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        server, thread = self._server, self._thread
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        self._server = self._thread = None

    def stats(self) -> dict[str, Any]:
        """The server's counters (``GET /sim/stats``)."""
        resp = httpx.get(f"{self.base_url}/sim/stats", timeout=10)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def reset(self) -> None:
        """Zero the counters (``POST /sim/reset``)."""
        httpx.post(f"{self.base_url}/sim/reset", timeout=10).raise_for_status()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
