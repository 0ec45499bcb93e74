"""The simulator in its own process, for benchmarks (shared by efficiency.py and paper_sim.py).

A separate process keeps the orchestrator's CPU time clean (``resource.getrusage`` in the
client then counts the client only) and lets server and client use different cores. Every
number the server produces is a SIMULATION.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ratts.sim import SimConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(config: SimConfig) -> str:
    """A sim.toml for ``ratts sim serve --config`` (what a user would write by hand)."""
    data = config.model_dump(mode="json", exclude_none=True)
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if not isinstance(value, dict):
            continue
        nested = all(isinstance(v, dict) for v in value.values()) and value
        if nested:  # [policies.<name>] / [prms.<name>]
            for name, fields in value.items():
                lines.append(f"\n[{key}.{json.dumps(name)}]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in fields.items())
        else:
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
    return "\n".join(lines) + "\n"


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process from /proc (None where /proc is absent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class SimProcess:
    """A running ``ratts sim serve`` child: its URLs, counters and CPU time."""

    proc: subprocess.Popen[bytes]
    url: str

    @property
    def v1_url(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/sim/stats", timeout=30)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.url}/sim/reset", timeout=30).raise_for_status()

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.proc.pid)


def wait_healthy(proc: subprocess.Popen[Any], url: str, *, timeout_s: float, what: str) -> None:
    """Poll ``url``/health until it answers; RuntimeError if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen[Any], *, timeout_s: float) -> None:
    """Terminate ``proc``, killing it if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def simulator(config: SimConfig) -> Iterator[SimProcess]:
    """``python -m ratts.cli sim serve --config <tmp sim.toml>`` in a child; stopped on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ratts-bench-") as tmp:
        path = Path(tmp) / "sim.toml"
        path.write_text(to_toml(config))
        cmd = [sys.executable, "-m", "ratts.cli", "sim", "serve", "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--config", str(path)], stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(proc, url, timeout_s=60, what="the simulator")
            yield SimProcess(proc, url)
        finally:
            stop_process(proc, timeout_s=10)
