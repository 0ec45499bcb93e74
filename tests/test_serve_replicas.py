"""``ratts models serve --replicas N``: N servers on consecutive free ports, their base_urls
in the settings, one PID record each, and ``ratts models stop`` stopping all of them.

vLLM itself is too heavy to start three times on a test machine, so the served module is a
stand-in: a real process, found through PYTHONPATH under vLLM's module name, that answers
``/v1/models`` over real HTTP. What is tested is ratts' process and settings handling.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_local import _fake_prepared

from ratts.local.serve import (
    _group_alive,
    free_port,
    pid_file,
    process_alive,
    read_records,
    stop_replicas,
)
from ratts.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"

STAND_IN = """
import argparse, json, http.server
parser = argparse.ArgumentParser()
parser.add_argument("--host"); parser.add_argument("--port", type=int)
parser.add_argument("--served-model-name")
args, _ = parser.parse_known_args()
body = json.dumps({"data": [{"id": args.served_model_name}]}).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((args.host, args.port), Handler).serve_forever()
"""


def _stand_in_vllm(root: Path) -> Path:
    package = root / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (root / "vllm", root / "vllm" / "entrypoints", package):
        (folder / "__init__.py").write_text("", encoding="utf-8")
    (package / "api_server.py").write_text(STAND_IN, encoding="utf-8")
    return root


@pytest.fixture
def taken_next_port() -> Iterator[tuple[int, int]]:
    """A free port whose successor is held by a listener (the scan must skip it)."""
    for _ in range(50):
        first = free_port()
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", first + 1))
        except OSError:
            sock.close()
            continue
        sock.listen(1)
        try:
            yield first, first + 1
        finally:
            sock.close()
        return
    pytest.fail("no pair of adjacent ports found")


def test_serve_replicas_writes_base_urls_and_stop_stops_all(
    tmp_path: Path, taken_next_port: tuple[int, int]
) -> None:
    first, taken = taken_next_port
    _fake_prepared(tmp_path, MODEL)
    fake = _stand_in_vllm(tmp_path / "stand-in")
    toml = tmp_path / "ratts.toml"
    env = {
        **os.environ,
        "RATTS_DATA_DIR": str(tmp_path),
        "RATTS_CONFIG": str(toml),
        "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)]),
        "COLUMNS": "400",  # the list table folds long cells otherwise
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ratts.cli", "models", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    served = cli("serve", MODEL, "--replicas", "3", "--port", str(first), "--timeout", "60")
    try:
        assert served.returncode == 0, served.stderr
        infos = read_records(MODEL, tmp_path)
        ports = [info.port for info in infos]
        assert [info.replica for info in infos] == [0, 1, 2]
        assert ports[0] == first and taken not in ports and ports == sorted(set(ports))
        assert all(pid_file(MODEL, tmp_path, i).is_file() for i in range(3))
        urls = tuple(f"http://127.0.0.1:{p}/v1" for p in ports)
        spec = load_settings(toml).policy(MODEL)
        assert spec.urls == urls and spec.base_url == urls[0]
        listed = cli("list")
        assert listed.returncode == 0 and all(u in listed.stdout for u in urls)
        again = cli("serve", MODEL, "--replicas", "2", "--port", str(first))
        assert again.returncode != 0 and "already served on port(s)" in again.stderr
    finally:
        stopped = cli("stop", MODEL)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("stopped (pid") == 3
    assert not any(process_alive(i.pid) or _group_alive(i.pid) for i in infos)
    assert read_records(MODEL, tmp_path) == [] and not list((tmp_path / "run").glob("*.json"))
    assert stop_replicas(MODEL, base=tmp_path) == []
    written = json.dumps(load_settings(toml).policy(MODEL).model_dump())
    assert "base_urls" in written


def test_zero_replicas_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "RATTS_DATA_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "ratts.cli", "models", "serve", MODEL, "--replicas", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--replicas" in done.stderr
