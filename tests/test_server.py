"""``ratts serve`` on a loopback port, backed by the simulated server, driven by the official
``openai`` client: completions (plain and streamed), usage, models, auth, bad input, load,
and a client hanging up mid-solve."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sweep_helpers import REPO, count_rows, settings_file

from ratts.server import ServerThread, create_app
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, SimServer
from ratts.store import open_store

TOKEN = "s3cret-token"
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def sim_settings(sim: SimServer, db: Path) -> Settings:
    return Settings(
        db_url=f"sqlite:///{db}",
        policies=[
            PolicySpec(
                name="sim-weak",
                base_url=sim.v1_url,
                model="sim-weak",
                params=1e9,
                usd_per_mtok_prompt=0.1,
                usd_per_mtok_completion=0.4,
            )
        ],
        prms=[
            PRMSpec(name="sim-prm", kind="vllm_pooling", base_url=sim.base_url, model="sim-prm"),
            PRMSpec(
                name="sim-prm-weak",
                kind="vllm_pooling",
                base_url=sim.base_url,
                model="sim-prm-weak",
            ),
        ],
    )


@pytest.fixture(scope="module")
def backend() -> Iterator[SimServer]:
    with SimServer(SimConfig()) as server:
        yield server


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "runs.db"


@pytest.fixture(scope="module")
def server(backend: SimServer, db_path: Path) -> Iterator[ServerThread]:
    app = create_app(sim_settings(backend, db_path), token="")
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def client(server: ServerThread, backend: SimServer) -> Iterator[openai.OpenAI]:
    backend.reset()
    with openai.OpenAI(base_url=server.v1_url, api_key="unused", max_retries=0) as c:
        yield c


def sim_tokens(sim: SimServer) -> int:
    stats = sim.stats()
    return int(stats["prompt_tokens"] + stats["completion_tokens"] + stats["prm_tokens"])


QUESTION = "Puzzle 7: follow the hidden chain of operations; give the value."


# ---------------------------------------------------------------- completions


def test_non_streamed_completion_reports_real_usage_and_the_answer(
    client: openai.OpenAI, backend: SimServer
) -> None:
    resp = client.chat.completions.create(
        model="ratts/best_of_n",
        messages=[
            {"role": "system", "content": "You are careful."},
            {"role": "user", "content": QUESTION},
        ],
        extra_body={"budget": 8, "prm": "sim-prm"},
    )
    assert resp.object == "chat.completion"
    content = resp.choices[0].message.content
    assert content is not None and resp.choices[0].finish_reason == "stop"
    extra = resp.model_extra or {}
    ratts = extra["ratts"]
    assert ratts["config"]["strategy"] == "best_of_n"
    assert ratts["config"]["params"]["n"] == 8 and ratts["config"]["prm"] == "sim-prm"
    boxed = BOXED.findall(content)
    assert boxed and boxed[-1] == ratts["answer"]
    assert len(ratts["scores"]) == 8 and sum(s["selected"] for s in ratts["scores"]) == 1
    # usage is the real total the sim counted: policy prompt + completion + PRM tokens
    assert resp.usage is not None
    assert resp.usage.total_tokens == sim_tokens(backend)
    assert resp.usage.completion_tokens == backend.stats()["completion_tokens"]
    assert resp.usage.total_tokens == ratts["usage"]["total_tokens"]
    assert ratts["usage"]["prm_tokens"] == backend.stats()["prm_tokens"] > 0


def test_streamed_completion_sends_progress_then_the_answer(
    client: openai.OpenAI, backend: SimServer
) -> None:
    stream = client.chat.completions.create(
        model="ratts/beam_search",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"budget": 8},
    )
    chunks = list(stream)
    events = [
        (c.model_extra or {})["ratts"]["event"]
        for c in chunks
        if "event" in ((c.model_extra or {}).get("ratts") or {})
    ]
    assert events[0] == "start" and "routed" in events
    steps = [
        (c.model_extra or {})["ratts"]["k"]
        for c in chunks
        if ((c.model_extra or {}).get("ratts") or {}).get("event") == "step"
    ]
    assert steps == sorted(steps) and steps[0] == 1 and len(steps) >= 2  # step k of the search
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    summary = (finals[0].model_extra or {})["ratts"]
    assert summary["config"]["strategy"] == "beam_search"
    assert BOXED.findall(text)[-1] == summary["answer"]
    # the progress comes before any content
    first_content = next(
        i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content
    )
    last_event = max(
        i for i, c in enumerate(chunks) if "event" in ((c.model_extra or {}).get("ratts") or {})
    )
    assert last_event < first_content
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.total_tokens == sim_tokens(backend) == summary["usage"]["total_tokens"]


def test_models_lists_auto_and_every_strategy(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {
        "ratts/auto",
        "ratts/cot",
        "ratts/majority",
        "ratts/best_of_n",
        "ratts/beam_search",
        "ratts/dvts",
        "ratts/adaptive",
    }


def test_each_served_run_is_logged(client: openai.OpenAI, db_path: Path) -> None:
    resp = client.chat.completions.create(
        model="ratts/majority",
        messages=[{"role": "user", "content": QUESTION + " (logged)"}],
        extra_body={"budget": 4},
    )
    run = (resp.model_extra or {})["ratts"]["run"]
    assert run["logged"] is True
    with open_store(f"sqlite:///{db_path}") as store:
        rows = [r for r in store.runs() if r["problem_key"] == run["problem_key"]]
    assert len(rows) == 1
    assert rows[0]["strategy"] == "majority"
    assert rows[0]["answer"] == (resp.model_extra or {})["ratts"]["answer"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "ratts/cot", "messages": []}, "at least one message"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "1+1?"}]}, "unknown model"),
        (
            {"model": "ratts/cot", "messages": [{"role": "user", "content": "1+1?"}], "budget": -4},
            "budget",
        ),
        (
            {
                "model": "ratts/auto",
                "messages": [{"role": "user", "content": "1+1?"}],
                "budget": {"usd": -0.5},
            },
            "budget",
        ),
        ({"model": "ratts/cot", "messages": [{"role": "user", "content": "   "}]}, "no user"),
        (
            {
                "model": "ratts/best_of_n",
                "messages": [{"role": "user", "content": "1+1?"}],
                "prm": "nope",
            },
            "unknown PRM",
        ),
        (
            {
                "model": "ratts/beam_search",
                "messages": [{"role": "user", "content": "1+1?"}],
                "budget": 6,
            },
            "multiple of M",
        ),
        (
            {"model": "ratts/cot", "messages": [{"role": "user", "content": "1+1?"}], "n": 3},
            "invalid n",
        ),
    ],
)
def test_bad_requests_get_400_in_openai_shape(
    client: openai.OpenAI, body: dict[str, object], needle: str
) -> None:
    standard = {k: v for k, v in body.items() if k in ("model", "messages", "n")}
    extra = {k: v for k, v in body.items() if k not in standard}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**standard, extra_body=extra)  # type: ignore[call-overload]
    assert info.value.status_code == 400
    error = info.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    assert needle in error["message"]
    assert "\n" not in error["message"]


def test_bad_streamed_request_gets_400_before_any_event(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="multiple of M"):
        client.chat.completions.create(
            model="ratts/dvts",
            messages=[{"role": "user", "content": "1+1?"}],
            stream=True,
            extra_body={"budget": 5},
        )


def test_malformed_json_gets_400(server: ServerThread) -> None:
    resp = httpx.post(
        f"{server.v1_url}/chat/completions",
        content=b'{"model": "ratts/cot", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "the request body is not valid JSON"
    assert resp.json()["error"]["type"] == "invalid_request_error"
    resp = httpx.post(f"{server.v1_url}/chat/completions", json=["a", "list"])
    assert resp.status_code == 400 and "JSON object" in resp.json()["error"]["message"]


def test_unknown_path_is_404_in_openai_shape(server: ServerThread) -> None:
    resp = httpx.get(f"{server.v1_url}/nothing-here")
    assert resp.status_code == 404 and "message" in resp.json()["error"]


# ---------------------------------------------------------------- auth


def test_bearer_token_auth(backend: SimServer, tmp_path: Path) -> None:
    app = create_app(sim_settings(backend, tmp_path / "auth.db"), token=TOKEN)
    with ServerThread(app) as running:
        resp = httpx.get(f"{running.v1_url}/models")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=running.v1_url, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(
                    model="ratts/cot", messages=[{"role": "user", "content": QUESTION}]
                )
        with openai.OpenAI(base_url=running.v1_url, api_key=TOKEN, max_retries=0) as good:
            resp2 = good.chat.completions.create(
                model="ratts/cot", messages=[{"role": "user", "content": QUESTION}]
            )
            assert resp2.choices[0].message.content
        assert httpx.get(f"{running.base_url}/health").status_code == 200  # no token needed


def test_token_from_environment(
    backend: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RATTS_SERVER_TOKEN", TOKEN)
    app = create_app(sim_settings(backend, tmp_path / "env.db"))
    with ServerThread(app) as running:
        assert httpx.get(f"{running.v1_url}/models").status_code == 401
        ok = httpx.get(f"{running.v1_url}/models", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


# ---------------------------------------------------------------- load and hang-ups


def test_200_concurrent_requests_complete_without_error(
    server: ServerThread, backend: SimServer, db_path: Path
) -> None:
    async def main() -> list[openai.types.chat.ChatCompletion]:
        async with openai.AsyncOpenAI(
            base_url=server.v1_url, api_key="unused", max_retries=0, timeout=120
        ) as aclient:
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model="ratts/best_of_n",
                        messages=[{"role": "user", "content": f"Load {i}: chain; give the value."}],
                        extra_body={"budget": 4},
                    )
                    for i in range(200)
                )
            )

    backend.reset()
    with open_store(f"sqlite:///{db_path}") as store:
        before = store.count_runs()
    replies = asyncio.run(main())
    assert len(replies) == 200
    for reply in replies:
        ratts = (reply.model_extra or {})["ratts"]
        assert "error" not in ratts and ratts["partial"] is False
        assert ratts["answer"] is not None and ratts["run"]["logged"] is True
    assert backend.stats()["responses_by_status"] == {"200": 400}  # 200 policy + 200 PRM calls
    with open_store(f"sqlite:///{db_path}") as store:
        assert store.count_runs() == before + 200


def test_client_hanging_up_cancels_the_solve(tmp_path: Path) -> None:
    slow = SimConfig(capacity={"decode_tps": 60.0})
    with SimServer(slow) as sim:
        app = create_app(sim_settings(sim, tmp_path / "hangup.db"), token="")
        with ServerThread(app) as running:
            body = {
                "model": "ratts/beam_search",
                "messages": [{"role": "user", "content": QUESTION}],
                "budget": 16,
                "stream": True,
            }
            with httpx.stream("POST", f"{running.v1_url}/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if line.startswith("data:") and '"step"' in line:
                        break  # the search is under way: hang up now
            deadline = time.monotonic() + 5
            while sim.stats()["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sim.stats()["in_flight"] == 0
            settled = sim.stats()["requests"]
            time.sleep(1.0)
            assert sim.stats()["requests"] == settled  # nothing new was sent after the hang-up


def test_request_timeout_returns_a_partial_answer(tmp_path: Path) -> None:
    slow = SimConfig(capacity={"base_latency_s": 0.15, "decode_tps": 400.0})
    with SimServer(slow) as sim:
        app = create_app(sim_settings(sim, tmp_path / "partial.db"), token="")
        with (
            ServerThread(app) as running,
            openai.OpenAI(base_url=running.v1_url, api_key="unused", max_retries=0) as c,
        ):
            start = time.perf_counter()
            resp = c.chat.completions.create(
                model="ratts/auto",
                messages=[{"role": "user", "content": QUESTION}],
                extra_body={"budget": 64, "timeout": 1.5},
            )
            assert time.perf_counter() - start < 2.5
    ratts = (resp.model_extra or {})["ratts"]
    assert ratts["partial"] is True and ratts["error"].startswith("partial: deadline")
    assert ratts["answer"] is not None and ratts["answer_source"] == "scored"
    assert resp.choices[0].message.content and ratts["answer"] in resp.choices[0].message.content


def test_error_body_is_json(server: ServerThread) -> None:
    resp = httpx.post(
        f"{server.v1_url}/chat/completions",
        json={"model": "ratts/cot", "messages": [{"role": "robot", "content": "hi"}]},
    )
    assert resp.status_code == 400
    assert json.loads(resp.text)["error"]["param"] == "messages"


def test_auto_model_routes_and_explains(client: openai.OpenAI, backend: SimServer) -> None:
    resp = client.chat.completions.create(
        model="ratts/auto",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"budget": {"n": 16}},
    )
    ratts = (resp.model_extra or {})["ratts"]
    assert ratts["reason"] == "cold_start" and ratts["config"]["params"]["n"] <= 16
    assert ratts["candidates"] and sum(c["chosen"] for c in ratts["candidates"]) == 1
    assert ratts["features"]["probe_k"] == 4
    assert ratts["probe_usage"]["policy_requests"] == 1
    assert resp.usage is not None and resp.usage.total_tokens == sim_tokens(backend)


# ---------------------------------------------------------------- the real command


def test_ratts_serve_command(backend: SimServer, tmp_path: Path) -> None:
    toml = settings_file(tmp_path / "ratts.toml", backend.base_url, tmp_path / "cli.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATTS_")}
    env["RATTS_SERVER_TOKEN"] = TOKEN
    proc = subprocess.Popen(
        [sys.executable, "-m", "ratts.cli", "serve", "--port", "0", "--config", str(toml),
         "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+/v1) \(bearer token required", first)
        assert match, first + (proc.stderr.read() if proc.stderr and proc.poll() else "")
        url = match.group(1)
        deadline = time.monotonic() + 30
        while True:  # the line is printed just before uvicorn starts accepting
            try:
                if httpx.get(url.removesuffix("/v1") + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ratts serve did not come up"
            time.sleep(0.05)
        assert httpx.get(f"{url}/models").status_code == 401
        with openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0) as authed:
            resp = authed.chat.completions.create(
                model="ratts/cot", messages=[{"role": "user", "content": QUESTION}]
            )
        assert resp.choices[0].message.content and resp.usage is not None
        assert resp.usage.total_tokens > 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    # uvicorn shuts down gracefully, then re-raises SIGINT: the conventional 128 + 2
    assert proc.returncode in (0, 130, -signal.SIGINT)
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    assert count_rows(tmp_path / "cli.db") == 1


def test_ratts_serve_bad_database_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ratts.cli", "serve", "--port", "0", "--db", "nosuchdriver://x"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
