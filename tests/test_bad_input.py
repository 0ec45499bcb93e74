"""Bad input everywhere a user can type: CLI arguments, ratts.toml, the environment, dataset
files and server requests. One line and a non-zero exit code (or a 400/413), never a
traceback, never a hang, never lost rows. The server runs on loopback in front of the sim."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sweep_helpers import REPO, count_rows, run_cli, settings_file, sim_dataset

from ratts.server import ServerThread, create_app
from ratts.server.limits import check_request, decode_json, json_depth
from ratts.server.schemas import ApiError, parse_request
from ratts.settings import PolicySpec, PRMSpec, ServerLimits, Settings
from ratts.sim import SimServer
from ratts.text import check_text, find_bad_text, plain, printable

SURROGATE = "What is 2 + 2? \udcff"
QUESTION = "Puzzle 3: follow the hidden chain of operations; give the value."


def _one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _cli(*args: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RATTS_")}
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------- text helpers


def test_text_helpers_refuse_surrogates_and_neutralise_escapes() -> None:
    assert check_text("fine ü ✓") == "fine ü ✓"
    with pytest.raises(Exception, match=r"lone surrogate U\+DCFF at character 15"):
        check_text(SURROGATE)
    assert find_bad_text({"a": [1, {"b": "x\ud800"}]}) == "a[1].b"
    assert find_bad_text({"a": ["ok"], "b": 2}) is None
    shown = printable("\x1b[31mred\x1b]8;;http://x\x07 \x9b \udcff\ttab\nline")
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert shown == "\\x1b[31mred\\x1b]8;;http://x\\x07 \\x9b \\udcff\ttab\nline"
    assert plain("[/bold] add [[policies]]") == "\\[/bold] add [\\[policies]]"


# ---------------------------------------------------------------- CLI and settings


def test_surrogate_question_is_one_line_exit_2_on_every_solve_surface(
    tmp_path: Path, sim: SimServer
) -> None:
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, tmp_path / "runs.db")
    raw = os.fsencode(SURROGATE)  # the bytes a shell would pass: \xff is not UTF-8
    for extra in ([], ["--json"], ["--explain"]):
        started = time.monotonic()
        proc = _cli("solve", raw, "-s", "cot", "--settings", str(toml), *extra)  # type: ignore[arg-type]
        assert proc.returncode == 2, (extra, proc.stderr)
        _one_line_error(proc.stderr, "not valid Unicode text")
        assert proc.stdout == ""
        assert time.monotonic() - started < 30
    assert sim.stats()["requests"] == {}  # refused before any request
    assert count_rows(tmp_path / "runs.db") == 0


def test_sweep_over_a_dataset_with_surrogates_logs_every_other_row(
    tmp_path: Path, sim: SimServer, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sim_dataset(tmp_path / "sim.jsonl", 10)
    lines = data.read_text(encoding="utf-8").splitlines()
    lines.insert(3, json.dumps({"id": "bad-1", "problem": "x \udcff y", "answer": "1"}))
    lines.insert(7, json.dumps({"id": "bad-2", "problem": "ok", "answer": "1", "tag": "\ud800"}))
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, db)
    code, out, err = run_cli(
        capsys, "sweep", str(data), "-s", "cot", "--settings", str(toml), "--no-progress"
    )
    assert code == 2
    err = " ".join(err.split())  # the console wraps long warnings
    assert "line 4: 'problem' is not valid Unicode text" in err
    assert "line 8: 'tag' is not valid Unicode text" in err
    assert "Traceback" not in err and "10 done, 0 failed" in out
    assert count_rows(db) == 10


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("toml", "is not valid TOML"),
        ("toml-bytes", "is not valid UTF-8"),
        ("env-json", "RATTS_* values for lists and tables are JSON"),
        ("missing-config", "config file not found: RATTS_CONFIG="),
        ("port", "a TCP port is 0-65535"),
        ("no-policies", "add [[policies]] to ratts.toml"),
        ("temperature", "temperature must be 0 or more, got -1"),
    ],
)
def test_bad_settings_and_arguments_are_one_line(
    tmp_path: Path, sim: SimServer, case: str, needle: str
) -> None:
    env: dict[str, str] = {}
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, tmp_path / "runs.db")
    data = sim_dataset(tmp_path / "sim.jsonl", 3)
    args: list[str] = ["runs", "--settings", str(toml)]
    if case == "toml":
        toml.write_text('db_url = "x"\n[[policies]\nname = 1\n', encoding="utf-8")
    elif case == "toml-bytes":
        toml.write_bytes(b"\xff\xfe = 1\n")
    elif case == "env-json":
        env["RATTS_POLICIES"] = "this is not JSON"
    elif case == "missing-config":
        env["RATTS_CONFIG"] = str(tmp_path / "nope.toml")
        args = ["runs"]
    elif case == "port":
        args = ["serve", "--port", "70000", "--settings", str(toml)]
    elif case == "no-policies":
        empty = tmp_path / "empty.toml"
        empty.write_text(f'db_url = "sqlite:///{tmp_path / "e.db"}"\n', encoding="utf-8")
        args = ["solve", "hi", "--settings", str(empty)]
    elif case == "temperature":
        args = ["sweep", str(data), "-s", "majority", "--n", "2", "--temperature", "-1"]
        args += ["--settings", str(toml), "--no-progress"]
    proc = _cli(*args, env=env)
    assert proc.returncode == 2, proc.stderr
    _one_line_error(proc.stderr, needle)
    if case == "temperature":
        assert sim.stats()["requests"] == {} and count_rows(tmp_path / "runs.db") == 0


def test_a_sweep_with_failed_runs_exits_1_and_says_how_many(tmp_path: Path, make_sim: Any) -> None:
    broken = make_sim(faults={"error_500": 1.0})
    db = tmp_path / "runs.db"
    toml = settings_file(tmp_path / "ratts.toml", broken.base_url, db, max_retries=0)
    data = sim_dataset(tmp_path / "sim.jsonl", 3)
    proc = _cli("sweep", str(data), "-s", "cot", "--settings", str(toml), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "0 done, 3 failed" in proc.stdout
    assert "error: 3 of 3 runs failed" in proc.stderr and "--retry-failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert count_rows(db) == 3  # the failures are logged, with their errors


# ---------------------------------------------------------------- server


@pytest.fixture(scope="module")
def limited_server(
    _sim_session: SimServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    db = tmp_path_factory.mktemp("srv") / "runs.db"
    settings = Settings(
        db_url=f"sqlite:///{db}",
        policies=[PolicySpec(name="sim-weak", base_url=_sim_session.v1_url, model="sim-weak")],
        prms=[
            PRMSpec(
                name="sim-prm", kind="vllm_pooling", base_url=_sim_session.base_url, model="sim-prm"
            )
        ],
        server_limits=ServerLimits(max_body_bytes=64_000, max_n=64, max_timeout_s=60),
    )
    with ServerThread(create_app(settings, token="")) as running:
        yield running


def _post(server: ServerThread, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.v1_url}/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=60,
    )


def _chat(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "ratts/cot", "messages": [{"role": "user", "content": question}], **extra}


def test_server_answers_400_or_413_for_hostile_bodies(limited_server: ServerThread) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _post(limited_server, deep).status_code == 413  # past 64 kB first
    nested = b'{"model": "ratts/cot", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    resp = _post(limited_server, nested)
    assert resp.status_code == 400 and "nested more than 32 levels" in resp.text
    big = json.dumps(_chat("x" * 70_000)).encode()
    resp = _post(limited_server, big)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    surrogate = json.dumps(_chat(SURROGATE)).encode()  # ensure_ascii: "\udcff" as an escape
    resp = _post(limited_server, surrogate)
    assert resp.status_code == 400, resp.text
    assert "not valid Unicode text" in resp.json()["error"]["message"]
    for extra, needle in (
        ({"budget": 3000}, "over this server's limit of 64"),
        ({"budget": {"n": 100000}}, "over this server's limit of 64"),
        ({"timeout": 3600}, "timeout 3600s is over"),
    ):
        resp = _post(limited_server, json.dumps(_chat(QUESTION, **extra)).encode())
        assert resp.status_code == 400 and needle in resp.text, resp.text
    # and the server still answers a good request
    ok = _post(limited_server, json.dumps(_chat(QUESTION)).encode())
    assert ok.status_code == 200, ok.text


def test_client_hang_up_is_not_an_error_traceback(
    make_sim: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slow = make_sim(capacity={"base_latency_s": 3.0})
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        policies=[PolicySpec(name="sim-weak", base_url=slow.v1_url, model="sim-weak")],
    )
    body = json.dumps(_chat(QUESTION))
    caplog.set_level(logging.INFO)
    uvicorn_logs = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    with ServerThread(create_app(settings, token="")) as server:
        for logger in uvicorn_logs:  # after uvicorn configured them; they skip the root
            logger.addHandler(caplog.handler)
        host, port = server.host, server.port
        for _ in range(3):
            with socket.create_connection((host, port)) as sock:
                request = (
                    f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    f"{body}"
                )
                sock.sendall(request.encode())
                time.sleep(0.3)
        time.sleep(1.5)  # the disconnect poll notices and cancels
        for logger in uvicorn_logs:
            logger.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert "client disconnected" in caplog.text


LIMITS = ServerLimits()
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["ratts/auto", "ratts/cot", "ratts/nope", 3]) | _json,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "bot"]) | _json},
                optional={"content": st.text(max_size=40) | _json},
            ),
            max_size=3,
        )
        | _json,
        "budget": st.integers(-5, 10_000)
        | st.dictionaries(st.sampled_from(["n", "usd", "x"]), _json)
        | _json,
        "timeout": st.floats() | _json,
        "temperature": st.floats() | _json,
        "n": st.integers(-2, 3) | _json,
        "stream": _json,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_fields | _json, text=st.text(alphabet=st.characters(), max_size=30))
def test_request_parsing_only_ever_answers_an_api_error(body: Any, text: str) -> None:
    """Any JSON body (any text, surrogates included) parses or is a 400/413 ApiError."""
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and text:
        body["messages"].append({"role": "user", "content": text})
    raw = json.dumps(body).encode()
    try:
        req = parse_request(decode_json(raw, LIMITS))
        check_request(req, LIMITS)
    except ApiError as exc:
        assert exc.status in (400, 413) and "\n" not in exc.message
    else:
        assert req.question() and find_bad_text(req.question()) is None


def test_json_depth() -> None:
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [[]]}) == 3
    assert json_depth(json.loads("[" * 500 + "]" * 500)) == 500


def test_a_dollar_budget_without_prices_is_refused_before_the_probe(
    tmp_path: Path, sim: SimServer
) -> None:
    toml = tmp_path / "ratts.toml"
    toml.write_text(
        f'db_url = "sqlite:///{tmp_path / "runs.db"}"\n\n[[policies]]\nname = "free"\n'
        f'base_url = "{sim.v1_url}"\nmodel = "sim-weak"\n',
        encoding="utf-8",
    )
    proc = _cli("solve", QUESTION, "--budget-usd", "0.01", "--settings", str(toml))
    assert proc.returncode == 2, proc.stderr
    _one_line_error(proc.stderr, "a budget in dollars needs prices", "policy free has none")
    assert sim.stats()["requests"] == {}  # the probe spent nothing
