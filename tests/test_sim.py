"""The simulator over real loopback HTTP: protocol shapes, world behaviour, stats and faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratts.errors import ConfigError
from ratts.settings import DEFAULT_PROMPT_TEMPLATE
from ratts.sim import (
    SimConfig,
    SimServer,
    count_tokens,
    difficulty,
    gold_answer,
    load_sim_config,
    num_steps,
)
from ratts.sim.app import CompletionRequest, SimState, _choice
from ratts.sim.world import (
    Draws,
    continue_solution,
    correctness,
    problem_model,
    split_steps,
    stable_hash,
    truncate_tokens,
)

MakeSim = Callable[..., SimServer]
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def prompt_for(question: str) -> str:
    return DEFAULT_PROMPT_TEMPLATE.format(question=question)


HTTP = httpx.Client(timeout=30)


def complete(server: SimServer, **body: Any) -> dict[str, Any]:
    resp = HTTP.post(f"{server.v1_url}/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def pool(server: SimServer, **body: Any) -> dict[str, Any]:
    resp = HTTP.post(f"{server.base_url}/pooling", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def boxed(text: str) -> str | None:
    m = BOXED.search(text)
    return m.group(1) if m else None


def prm_input(question: str, steps: list[str]) -> str:
    return prompt_for(question) + "".join(s + "<extra_0>" for s in steps)


def test_world_is_a_function_of_question_and_seed() -> None:
    q = "How many apples are left?"
    assert gold_answer(q, 0) == gold_answer(q, 0)
    assert gold_answer(q, 0) != gold_answer(q, 1) or difficulty(q, 0) != difficulty(q, 1)
    assert difficulty("Hard one [difficulty=0.9]") == pytest.approx(0.9)
    assert difficulty("Easy one [difficulty=0.1]") == pytest.approx(0.1)
    lengths = {num_steps(f"q{i}") for i in range(200)}
    assert min(lengths) >= 3 and max(lengths) <= 8 and len(lengths) >= 4
    model = problem_model(q, 0)
    assert model.gold not in model.distractors and len(set(model.distractors)) == 3


def test_health_and_models(sim: SimServer) -> None:
    assert httpx.get(f"{sim.base_url}/health").json()["status"] == "ok"
    ids = [m["id"] for m in httpx.get(f"{sim.v1_url}/models").json()["data"]]
    assert ids == ["sim-weak", "sim-strong", "sim-prm", "sim-prm-weak", "sim-prm-short"]


def test_full_solution_ends_with_boxed_answer_and_eos(sim: SimServer) -> None:
    q = "Solve for the number of marbles."
    data = complete(sim, model="sim-strong", prompt=prompt_for(q), temperature=0.0)
    assert data["object"] == "text_completion" and data["model"] == "sim-strong"
    (choice,) = data["choices"]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None
    assert choice["logprobs"] is None
    assert choice["text"].rstrip().endswith("}.")
    assert boxed(choice["text"]) == gold_answer(q)  # strong + greedy + default difficulty range
    steps = choice["text"].split("\n\n")
    assert steps[0].startswith("Step 1:") and len(steps) == num_steps(q) + 1


def test_same_seed_same_text_and_fresh_requests_differ(sim: SimServer, make_sim: MakeSim) -> None:
    body = {"model": "sim-weak", "prompt": prompt_for("Twins?"), "n": 4, "temperature": 1.0}
    a = complete(sim, **body, seed=7)
    b = complete(sim, **body, seed=7)
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    c = complete(sim, **body, seed=8)
    assert [x["text"] for x in c["choices"]] != [x["text"] for x in a["choices"]]
    # without a seed, repeated identical requests differ, but a fresh server repeats the series
    first = [x["text"] for x in complete(sim, **body)["choices"]]
    second = [x["text"] for x in complete(sim, **body)["choices"]]
    assert first != second
    other = make_sim()
    assert [x["text"] for x in complete(other, **body)["choices"]] == first
    assert [x["text"] for x in complete(other, **body)["choices"]] == second
    sim.reset()  # rewinds the per-prompt counters too
    assert [x["text"] for x in complete(sim, **body)["choices"]] == first
    shifted = make_sim(seed=1)
    assert [x["text"] for x in complete(shifted, **body)["choices"]] != first


def test_n_choices_and_prompt_lists_are_indexed(sim: SimServer) -> None:
    data = complete(sim, model="sim-weak", prompt=prompt_for("Indices?"), n=5, max_tokens=8)
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3, 4]
    prompts = [prompt_for(f"List question {i}") for i in range(3)]
    data = complete(sim, model="sim-weak", prompt=prompts, n=2, stop=["\n\n"], seed=3)
    assert [c["index"] for c in data["choices"]] == list(range(6))
    single = complete(sim, model="sim-weak", prompt=prompts[1], n=2, stop=["\n\n"], seed=3)
    assert [c["text"] for c in data["choices"][2:4]] == [c["text"] for c in single["choices"]]
    assert data["usage"]["prompt_tokens"] == sum(count_tokens(p) for p in prompts)


def test_greedy_is_deterministic(sim: SimServer) -> None:
    body = {"model": "sim-weak", "prompt": prompt_for("Greedy?"), "n": 3, "temperature": 0.0}
    texts = [c["text"] for c in complete(sim, **body)["choices"]]
    again = [c["text"] for c in complete(sim, **body)["choices"]]
    assert len(set(texts)) == 1 and texts == again


def test_stop_strings_cut_steps_and_report_stop_reason(sim: SimServer) -> None:
    q = "Step by step please."
    prompt = prompt_for(q)
    data = complete(sim, model="sim-strong", prompt=prompt, stop=["\n\n"], n=3, temperature=0.0)
    for choice in data["choices"]:
        assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "\n\n"
        assert choice["text"].startswith("Step 1:") and "\n" not in choice["text"]
    step1 = data["choices"][0]["text"]
    # continuing after the separator yields step 2
    nxt = complete(sim, model="sim-strong", prompt=prompt + step1 + "\n\n", stop=["\n\n"])
    assert nxt["choices"][0]["text"].startswith("Step 2:")
    # a prompt that does not end with the separator gets it generated first: empty step
    raw = complete(sim, model="sim-strong", prompt=prompt + step1, stop=["\n\n"])
    assert raw["choices"][0]["text"] == "" and raw["choices"][0]["stop_reason"] == "\n\n"
    # the earliest of several stop strings wins
    multi = complete(sim, model="sim-strong", prompt=prompt, stop=["\n\n", " we get"], seed=1)
    assert multi["choices"][0]["stop_reason"] == " we get"
    assert " we get" not in multi["choices"][0]["text"]


def test_finished_prompt_gives_immediate_eos(sim: SimServer) -> None:
    q = "Already done."
    full = complete(sim, model="sim-strong", prompt=prompt_for(q), temperature=0.0)
    text = full["choices"][0]["text"]
    again = complete(sim, model="sim-strong", prompt=prompt_for(q) + text)
    assert again["choices"][0] == {
        "index": 0,
        "text": "",
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
    }


def test_max_tokens_truncates_with_length(sim: SimServer) -> None:
    data = complete(sim, model="sim-weak", prompt=prompt_for("Long?"), max_tokens=7, n=2)
    for choice in data["choices"]:
        assert choice["finish_reason"] == "length" and choice["stop_reason"] is None
        assert count_tokens(choice["text"]) == 7
    assert data["usage"]["completion_tokens"] == 14


def test_usage_matches_stats(sim: SimServer) -> None:
    totals = {"prompt_tokens": 0, "completion_tokens": 0}
    n_choices = 0
    for i in range(4):
        data = complete(sim, model="sim-weak", prompt=prompt_for(f"Usage {i}"), n=i + 1)
        n_choices += len(data["choices"])
        usage = data["usage"]
        assert usage["completion_tokens"] == sum(count_tokens(c["text"]) for c in data["choices"])
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        for key in totals:
            totals[key] += usage[key]
    pooled = pool(sim, model="sim-prm", input=[prm_input("Usage 0", ["Step 1: x_1 = 3."])] * 2)
    stats = sim.stats()
    assert stats["prompt_tokens"] == totals["prompt_tokens"]
    assert stats["completion_tokens"] == totals["completion_tokens"]
    assert stats["choices"] == n_choices == 10
    assert stats["requests"] == {"completions": 4, "pooling": 1}
    assert stats["requests_by_model"] == {"sim-weak": 4, "sim-prm": 1}
    assert stats["prm_tokens"] == pooled["usage"]["prompt_tokens"] and stats["prm_inputs"] == 2
    assert len(stats["intervals"]) == 5 and stats["in_flight"] == 0
    sim.reset()
    assert sim.stats()["choices"] == 0


def test_strong_policy_beats_weak_policy(sim: SimServer) -> None:
    questions = [f"Problem instance {i}: find the value." for i in range(100)]
    prompts = [prompt_for(q) for q in questions]
    right: dict[str, int] = {}
    for model in ("sim-weak", "sim-strong"):
        data = complete(sim, model=model, prompt=prompts, temperature=0.8, seed=0)
        right[model] = sum(
            boxed(c["text"]) == gold_answer(q)
            for c, q in zip(data["choices"], questions, strict=True)
        )
    assert right["sim-strong"] > right["sim-weak"] + 15
    assert 5 < right["sim-weak"] < 95 and right["sim-strong"] > 60


def test_hard_questions_are_harder(sim: SimServer) -> None:
    def accuracy(tag: str) -> float:
        qs = [f"Tagged {i} {tag}" for i in range(60)]
        data = complete(sim, model="sim-weak", prompt=[prompt_for(q) for q in qs], seed=5)
        return statistics.mean(
            boxed(c["text"]) == gold_answer(q) for c, q in zip(data["choices"], qs, strict=True)
        )

    assert accuracy("[difficulty=0.1]") > accuracy("[difficulty=0.9]") + 0.3


def test_wrong_prefix_stays_wrong_and_wrong_answers_cluster(sim: SimServer) -> None:
    q = "A question with a bad first step."
    model = problem_model(q, 0)
    bad = f"Step 1: we from x_0 = {model.values[0]} we get x_1 = {(model.values[1] + 5) % 10007}."
    data = complete(sim, model="sim-strong", prompt=prompt_for(q) + bad + "\n\n", n=40)
    answers = [boxed(c["text"]) for c in data["choices"]]
    assert all(a in model.distractors for a in answers)
    assert len(set(answers)) <= 3 and max(answers.count(a) for a in set(answers)) >= 10


def test_pooling_shape_and_chat_forms_agree(sim: SimServer) -> None:
    q = "Score these steps."
    text = complete(sim, model="sim-weak", prompt=prompt_for(q), seed=2)["choices"][0]["text"]
    steps = text.split("\n\n")
    data = pool(sim, model="sim-prm", input=[prm_input(q, steps), prm_input(q, steps[:2])])
    assert data["object"] == "list" and data["model"] == "sim-prm"
    assert [d["index"] for d in data["data"]] == [0, 1]
    rows = data["data"][0]["data"]
    assert len(rows) == len(steps) and len(data["data"][1]["data"]) == 2
    for p0, p1 in rows:
        assert 0.0 <= p1 <= 1.0 and p0 == pytest.approx(1.0 - p1)
    # causal: a prefix scores its steps exactly as the full solution does
    assert data["data"][1]["data"] == rows[:2]
    assert data["usage"]["prompt_tokens"] == data["usage"]["total_tokens"] > 0
    # the Qwen chat template and the messages form read the same question and steps
    chat = (
        "<|im_start|>system\nPlease reason step by step.<|im_end|>\n"
        f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        + "".join(s + "<extra_0>" for s in steps)
        + "<|im_end|><|endoftext|>"
    )
    assert pool(sim, model="sim-prm", input=chat)["data"][0]["data"] == rows
    labelled = chat.replace(f"user\n{q}", f"user\nProblem: {q}")
    assert labelled != chat
    assert pool(sim, model="sim-prm", input=labelled)["data"][0]["data"] == rows
    messages = [
        {"role": "system", "content": "Please reason step by step."},
        {"role": "user", "content": q},
        {"role": "assistant", "content": "".join(s + "<extra_0>" for s in steps)},
    ]
    assert pool(sim, model="sim-prm", messages=messages)["data"][0]["data"] == rows


def _separation(sim: SimServer, prm: str, count: int = 60) -> float:
    """Mean reward of right steps minus mean reward of wrong steps over sampled solutions."""
    questions = [f"Separation {i}" for i in range(count)]
    data = complete(sim, model="sim-weak", prompt=[prompt_for(q) for q in questions], seed=9)
    inputs: list[str] = []
    flags: list[list[bool]] = []
    for c, q in zip(data["choices"], questions, strict=True):
        steps = split_steps(c["text"])
        inputs.append(prm_input(q, steps))
        flags.append(correctness(problem_model(q, 0), steps))
    scores = pool(sim, model=prm, input=inputs)["data"]
    right: list[float] = []
    wrong: list[float] = []
    for item, fl in zip(scores, flags, strict=True):
        for (_, p1), ok in zip(item["data"], fl, strict=True):
            (right if ok else wrong).append(p1)
    assert right and wrong
    return statistics.mean(right) - statistics.mean(wrong)


def test_good_prm_separates_right_from_wrong_steps(sim: SimServer) -> None:
    good = _separation(sim, "sim-prm")
    weak = _separation(sim, "sim-prm-weak")
    assert good > 0.5 and 0.0 < weak < good - 0.3


def test_length_bias_favours_short_solutions(sim: SimServer) -> None:
    inputs = []
    for i in range(40):
        q = f"Length bias {i}"
        model = problem_model(q, 0)
        full = [
            f"Step {k}: from x_{k - 1} = {model.values[k - 1]} we get x_{k} = {model.values[k]}."
            for k in range(1, model.num_steps + 1)
        ] + [f"The final answer is \\boxed{{{model.gold}}}."]
        short = [*full[:1], f"The final answer is \\boxed{{{model.distractors[0]}}}."]
        inputs += [prm_input(q, full), prm_input(q, short)]
    short_gain = {}
    for prm in ("sim-prm", "sim-prm-short"):
        finals = [item["data"][-1][1] for item in pool(sim, model=prm, input=inputs)["data"]]
        short_gain[prm] = statistics.mean(finals[1::2]) - statistics.mean(finals[0::2])
    assert short_gain["sim-prm"] < -0.3  # an unbiased PRM prefers the right, long solution
    assert short_gain["sim-prm-short"] > short_gain["sim-prm"] + 0.3


def test_errors_have_openai_shape(sim: SimServer) -> None:
    resp = httpx.post(f"{sim.v1_url}/completions", json={"model": "nope", "prompt": "x"})
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert err["code"] == 404 and "nope" in err["message"] and err["type"] == "NotFoundError"
    resp = httpx.post(f"{sim.base_url}/pooling", json={"model": "sim-weak", "input": "x"})
    assert resp.status_code == 404
    for body in (
        {"model": "sim-weak"},
        {"model": "sim-weak", "prompt": "x", "n": 0},
        {"model": "sim-weak", "prompt": "x", "temperature": -1},
        {"model": "sim-weak", "prompt": []},
    ):
        resp = httpx.post(f"{sim.v1_url}/completions", json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]["type"] == "BadRequestError"
    resp = httpx.post(f"{sim.v1_url}/completions", content=b"{not json")
    assert resp.status_code == 400
    resp = httpx.post(f"{sim.base_url}/pooling", json={"model": "sim-prm"})
    assert resp.status_code == 400


def test_supports_n_false_rejects_n(make_sim: MakeSim) -> None:
    server = make_sim(supports_n=False)
    body = {"model": "sim-weak", "prompt": prompt_for("n?")}
    resp = httpx.post(f"{server.v1_url}/completions", json={**body, "n": 2})
    assert resp.status_code == 400 and "n > 1" in resp.json()["error"]["message"]
    assert len(complete(server, **body, n=1)["choices"]) == 1


def test_fault_sequence_then_rates(make_sim: MakeSim) -> None:
    server = make_sim(faults={"sequence": ["500", "429", "malformed", "ok"], "error_429": 1.0})
    body = {"model": "sim-weak", "prompt": prompt_for("faults"), "max_tokens": 4}
    url = f"{server.v1_url}/completions"
    r1, r2, r3, r4, r5 = (HTTP.post(url, json=body) for _ in range(5))
    assert r1.status_code == 500 and r1.json()["error"]["code"] == 500
    assert r2.status_code == 429 and r2.headers["retry-after"] == "0"
    assert r3.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r3.text)
    assert r4.status_code == 200 and r4.json()["choices"]
    assert r5.status_code == 429
    stats = server.stats()
    assert stats["faults"] == {"500": 1, "429": 2, "malformed": 1}
    assert stats["responses_by_status"] == {"500": 1, "429": 2, "200": 2}


def test_fault_rates_are_seeded(make_sim: MakeSim) -> None:
    def statuses(server: SimServer) -> list[int]:
        url = f"{server.base_url}/pooling"
        body = {"model": "sim-prm", "input": "Problem: q\n\nStep 1: x_1 = 2.<extra_0>"}
        return [HTTP.post(url, json=body).status_code for _ in range(30)]

    a = statuses(make_sim(seed=4, faults={"error_500": 0.5}))
    b = statuses(make_sim(seed=4, faults={"error_500": 0.5}))
    assert a == b and set(a) == {200, 500}


def test_timeout_fault_delays_the_answer(make_sim: MakeSim) -> None:
    server = make_sim(faults={"timeout": 1.0, "timeout_s": 0.3})
    body = {"model": "sim-weak", "prompt": prompt_for("slow"), "max_tokens": 4}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.v1_url}/completions", json=body, timeout=0.1)
    start = time.perf_counter()
    resp = httpx.post(f"{server.v1_url}/completions", json=body, timeout=5)
    assert resp.status_code == 200 and time.perf_counter() - start >= 0.3


async def test_concurrency_counters_record_overlap(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"slots": 8, "decode_tps": 200.0, "base_latency_s": 0.05})
    body = {"model": "sim-weak", "prompt": prompt_for("overlap"), "max_tokens": 20}
    async with httpx.AsyncClient(timeout=10) as client:
        results = await asyncio.gather(
            *(client.post(f"{server.v1_url}/completions", json=body) for _ in range(4))
        )
    assert all(r.status_code == 200 for r in results)
    stats = server.stats()
    assert stats["max_in_flight"] >= 2 and stats["in_flight"] == 0
    spans = sorted((i["start"], i["end"]) for i in stats["intervals"])
    assert len(spans) == 4 and any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    expected = sum(r.json()["usage"]["completion_tokens"] for r in results) / 200.0
    assert stats["busy_slot_seconds"] == pytest.approx(expected)


async def test_slots_bound_throughput(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"slots": 1, "decode_tps": 100.0})
    body = {"model": "sim-weak", "prompt": prompt_for("one slot"), "max_tokens": 10, "n": 3}
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(f"{server.v1_url}/completions", json=body)
    # three choices of 10 tokens at 100 tok/s through one slot take at least 0.3 s
    assert resp.status_code == 200 and time.perf_counter() - start >= 0.3


def test_load_sim_config(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(
        "seed = 3\nsupports_n = false\n[policies.tiny]\nskill = 0.2\n"
        "[prms.judge]\nquality = 1.0\n[capacity]\nslots = 4\n"
    )
    cfg = load_sim_config(path)
    assert cfg.seed == 3 and not cfg.supports_n and cfg.policies["tiny"].skill == 0.2
    assert cfg.capacity.slots == 4 and list(cfg.prms) == ["judge"]
    path.write_text("[capacity]\nslotz = 4\n")
    with pytest.raises(ConfigError, match=r"capacity\.slotz"):
        load_sim_config(path)
    path.write_text("seed = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sim_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_sim_config(tmp_path / "missing.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_cli_sim_serve_answers_health(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("seed = 5\n[policies.cli-policy]\nskill = 0.5\n")
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("ratts")), "sim", "serve"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "sim serve did not come up"
                time.sleep(0.1)
        assert resp.json()["status"] == "ok"
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert "cli-policy" in [m["id"] for m in models]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_sim_serve_rejects_a_bad_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ratts.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[faults]\nerror_500 = 2.0\n")
    monkeypatch.setattr(sys, "argv", ["ratts", "sim", "serve", "--config", str(bad)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "faults.error_500" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=80, deadline=None)
@given(
    stops=st.lists(
        st.sampled_from(["\n\n", "\n", " we get", "x_3", "Step 2", "}.", "boxed", "zzz", "."]),
        max_size=3,
    ),
    max_tokens=st.integers(min_value=0, max_value=200),
    question=st.integers(min_value=0, max_value=50),
    prior_steps=st.integers(min_value=0, max_value=3),
)
def test_lazy_generation_matches_cutting_the_full_text(
    stops: list[str], max_tokens: int, question: int, prior_steps: int
) -> None:
    """The server stops writing early; the result must equal cutting the whole solution."""
    state = SimState(SimConfig())
    q = f"Lazy {question}"
    base = prompt_for(q)
    full = _choice(state, "sim-weak", base, ("seed", 1), 0, CompletionRequest(model="x", prompt=""))
    prior = full[0]["text"].split("\n\n")[:prior_steps]
    prompt = base + "\n\n".join(prior)
    req = CompletionRequest(model="sim-weak", prompt=prompt, stop=stops, max_tokens=max_tokens)
    choice, tokens = _choice(state, "sim-weak", prompt, ("seed", 2), 0, req)
    # reference: write everything, cut at the earliest stop, then at max_tokens
    model = problem_model(q, 0)
    draw = Draws(stable_hash(0, "sim-weak", prompt, "seed", 2, 0), False)
    steps = list(
        continue_solution(model, prior, skill=0.35, rush=0.35, seed=0, draw=draw, temperature=1.0)
    )
    text = ("\n\n" if prior and steps else "") + "\n\n".join(steps)
    hits = [(text.find(s), i) for i, s in enumerate(stops) if s in text]
    reason = None
    if hits:
        pos, i = min(hits)
        text, reason = text[:pos], stops[i]
    finish = "stop"
    if count_tokens(text) > max_tokens:
        text, finish, reason = truncate_tokens(text, max_tokens), "length", None
    assert (choice["text"], choice["finish_reason"], choice["stop_reason"]) == (
        text,
        finish,
        reason,
    )
    assert tokens == count_tokens(text)
