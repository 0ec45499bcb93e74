"""Text from models and upstreams is printed as text, and secrets never leave ratts.

A hostile upstream on loopback (tests/hostile.py) answers with rich markup and terminal
escape sequences, or rejects the call with a 401 whose body echoes the caller's auth header,
key included. We plant a key in the variable a policy names and grep everything ratts shows
or stores for it: stdout, stderr, the run log's files, the server's response and its logs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hostile import EVIL, hostile_app
from sweep_helpers import REPO

from ratts import redact
from ratts.local.serve import log_tail
from ratts.serving import ServerThread
from ratts.settings import PolicySpec, Settings

KEY = "sk-planted-Zq8R2vLm4TnW9xPy"
ENV = "RATTS_TEST_PLANTED_KEY"


def _toml(path: Path, base_url: str, db: Path) -> Path:
    path.write_text(
        f"""
db_url = "sqlite:///{db}"

[[policies]]
name = "hostile"
base_url = "{base_url}"
model = "hostile"
api_key_env = "{ENV}"
max_retries = 0
""",
        encoding="utf-8",
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATTS_")}
    env[ENV] = KEY
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.fixture(scope="module")
def evil_upstream() -> Iterator[ServerThread]:
    with ServerThread(hostile_app()) as server:
        yield server


@pytest.fixture(scope="module")
def echoing_upstream() -> Iterator[ServerThread]:
    with ServerThread(hostile_app(echo_auth=True)) as server:
        yield server


def _assert_literal(output: str) -> None:
    assert "Traceback" not in output and "MarkupError" not in output
    for raw in ("\x1b", "\x07", "\x9b"):
        assert raw not in output  # no escape sequence reaches the terminal
    assert "\\x1b[31mred" in output and "\\x1b]8;;https://evil\\x07" in output


def test_a_model_answer_with_markup_and_escapes_is_printed_literally(
    evil_upstream: ServerThread, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    toml = _toml(tmp_path / "ratts.toml", evil_upstream.v1_url, db)
    proc = _cli("solve", "What is it?", "-s", "cot", "--settings", str(toml))
    assert proc.returncode == 0, proc.stderr
    assert "[/bold][link=https://evil.example]x[/link]" in proc.stdout
    _assert_literal(proc.stdout)

    proc = _cli("solve", "What is it?", "-s", "majority", "-n", "2", "--settings", str(toml))
    assert proc.returncode == 0, proc.stderr
    listing = _cli("runs", "--settings", str(toml))  # the logged answers, shown literally
    assert listing.returncode == 0, listing.stderr
    assert "[/bold]" in listing.stdout and "Traceback" not in listing.stderr
    assert "\x1b" not in listing.stdout


def test_ratts_own_messages_with_brackets_print_correctly(tmp_path: Path) -> None:
    empty = tmp_path / "ratts.toml"
    empty.write_text(f'db_url = "sqlite:///{tmp_path / "x.db"}"\n', encoding="utf-8")
    proc = _cli("solve", "hi", "--settings", str(empty))
    assert proc.returncode == 2
    assert "add [[policies]] to ratts.toml" in proc.stderr


def test_a_planted_key_echoed_by_the_upstream_is_redacted_everywhere(
    echoing_upstream: ServerThread, tmp_path: Path
) -> None:
    db = tmp_path / "runs.db"
    toml = _toml(tmp_path / "ratts.toml", echoing_upstream.v1_url, db)
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": i, "problem": f"q {i} [/bold]", "answer": "1"}) + "\n"
            for i in range(3)
        ),
        encoding="utf-8",
    )
    outputs: list[str] = []
    for args in (
        ["solve", "What is it?", "-s", "cot", "--settings", str(toml)],
        ["solve", "What is it?", "-s", "cot", "--settings", str(toml), "--json"],
        ["solve", "What is it?", "--explain", "--settings", str(toml)],
        ["sweep", str(data), "-s", "cot", "--settings", str(toml), "--no-progress"],
        ["runs", "--failed", "--settings", str(toml)],
    ):
        proc = _cli(*args)
        outputs += [proc.stdout, proc.stderr]
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 1, 2), (args, proc.stderr)
    text = "\n".join(outputs)
    assert "upstream rejected auth header Bearer <redacted>" in text  # the error is kept
    assert KEY not in text
    assert KEY.encode() not in _db_bytes(db)
    assert b"<redacted>" in _db_bytes(db)  # the failed rows hold the redacted error


def test_the_server_redacts_an_echoed_key_in_its_502_and_its_logs(
    echoing_upstream: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ratts.server import create_app

    monkeypatch.setenv(ENV, KEY)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        policies=[
            PolicySpec(
                name="hostile",
                base_url=echoing_upstream.v1_url,
                model="hostile",
                api_key_env=ENV,
                max_retries=0,
            )
        ],
    )
    caplog.set_level(logging.DEBUG)
    with ServerThread(create_app(settings, token="")) as server:
        resp = httpx.post(
            f"{server.v1_url}/chat/completions",
            json={"model": "ratts/cot", "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        logging.getLogger("ratts.test").warning("upstream said Bearer %s", KEY)
    assert resp.status_code == 502, resp.text
    assert "Bearer <redacted>" in resp.json()["error"]["message"]
    assert KEY not in resp.text
    assert KEY not in caplog.text and "upstream said Bearer <redacted>" in caplog.text
    assert KEY.encode() not in _db_bytes(tmp_path / "runs.db")


@pytest.fixture(scope="module")
def parroting_upstream() -> Iterator[ServerThread]:
    with ServerThread(hostile_app(echo_in_answer=True)) as server:
        yield server


def test_a_planted_key_echoed_in_a_model_answer_is_redacted_everywhere(
    parroting_upstream: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 200 answer that repeats the caller's auth header: the answer, the candidates of
    --explain, the sweep's rows, ``ratts runs`` and the server's reply all hold <redacted>."""
    db = tmp_path / "runs.db"
    toml = _toml(tmp_path / "ratts.toml", parroting_upstream.v1_url, db)
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"id": i, "problem": f"q {i}", "answer": "1"}) + "\n" for i in range(3)),
        encoding="utf-8",
    )
    outputs: list[str] = []
    for args in (
        ["solve", "What is it?", "-s", "cot", "--settings", str(toml)],
        ["solve", "What is it?", "-s", "majority", "-n", "2", "--settings", str(toml), "--json"],
        ["solve", "What is it?", "--explain", "--settings", str(toml)],
        ["sweep", str(data), "-s", "cot", "--settings", str(toml), "--no-progress"],
        ["runs", "--settings", str(toml)],
    ):
        proc = _cli(*args)
        outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == 0, (args, proc.stderr)
    text = "\n".join(outputs)
    assert "Bearer <redacted>" in text  # the answer is shown, the key is not
    assert KEY not in text
    stored = _db_bytes(db)
    assert KEY.encode() not in stored and b"Bearer <redacted>" in stored

    from ratts.server import create_app

    monkeypatch.setenv(ENV, KEY)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'served.db'}",
        policies=[
            PolicySpec(
                name="hostile",
                base_url=parroting_upstream.v1_url,
                model="hostile",
                api_key_env=ENV,
                max_retries=0,
            )
        ],
    )
    caplog.set_level(logging.DEBUG)
    with ServerThread(create_app(settings, token="")) as server:
        replies = [
            httpx.post(
                f"{server.v1_url}/chat/completions",
                json={
                    "model": "ratts/cot",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": stream,
                },
                timeout=60,
            )
            for stream in (False, True)
        ]
    for resp in replies:
        assert resp.status_code == 200, resp.text
        assert KEY not in resp.text and "Bearer <redacted>" in resp.text
    assert KEY not in caplog.text
    assert KEY.encode() not in _db_bytes(tmp_path / "served.db")


def test_the_vllm_log_tail_and_any_error_are_redacted(tmp_path: Path) -> None:
    redact.register(KEY)
    log = tmp_path / "vllm.log"
    log.write_text(f"starting\nargs: --api-key {KEY}\n", encoding="utf-8")
    assert log_tail(log) == "starting\nargs: --api-key <redacted>"
    from ratts.errors import EndpointError

    assert str(EndpointError(f"401: {KEY}")) == "401: <redacted>"
    redact.register("short")  # too short to be a secret: text stays readable
    assert redact.redact("a short note") == "a short note"
    assert redact.redact(EVIL) == EVIL  # redaction never touches other text
