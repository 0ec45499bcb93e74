"""SimServer: the simulator on a loopback port in a background thread (for tests, benchmarks)."""

from __future__ import annotations

from typing import Any

import httpx

from ratts.errors import EndpointUnreachableError
from ratts.serving import ServerThread
from ratts.sim.app import create_app
from ratts.sim.config import SimConfig


class SimServer(ServerThread):
    """Run ``create_app(config)`` under uvicorn in a thread; usable as a context manager."""

    label = "sim server"
    graceful_shutdown_s = 1

    def __init__(
        self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimConfig()
        super().__init__(create_app(self.config), host=host, port=port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise EndpointUnreachableError("sim server is not running")
        return self._port

    def stats(self) -> dict[str, Any]:
        """The server's counters (``GET /sim/stats``)."""
        resp = httpx.get(f"{self.base_url}/sim/stats", timeout=10)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def reset(self) -> None:
        """Zero the counters (``POST /sim/reset``)."""
        httpx.post(f"{self.base_url}/sim/reset", timeout=10).raise_for_status()
