"""VllmPoolingPRM and JudgePRM over real loopback HTTP; respx only for malformed bodies."""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratts.endpoints import (
    ArithmeticPRM,
    JudgePRM,
    PolicyClient,
    RetryPolicy,
    VllmPoolingPRM,
    build_prm,
)
from ratts.endpoints.policy import parse_completion
from ratts.endpoints.prm import PRM
from ratts.endpoints.prm_formats import qwen_prm_input, shepherd_prm_input
from ratts.endpoints.prm_judge import judge_prompt, judge_score, score_from_top_logprobs
from ratts.endpoints.prm_pooling import server_root
from ratts.errors import (
    BadResponseError,
    ConfigError,
    EndpointUnreachableError,
    InputError,
    ServerError,
)
from ratts.serving import ServerThread
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimConfig, SimServer, world

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
QUESTION = "Tom has 3 boxes of 12 pencils and gives away 7. How many pencils are left?"
MakeSim = Callable[..., SimServer]


def pooling_requests(server: SimServer) -> int:
    return int(server.stats()["requests"].get("pooling", 0))


async def sample_solutions(spec: PolicySpec, n: int) -> list[list[str]]:
    """Whole solutions from the sim policy, cut into steps at the separator."""
    async with PolicyClient(spec) as client:
        result = await client.complete(client.prompt(QUESTION), n=n, max_tokens=2000, seed=5)
    return [[s for s in c.text.split(client.separator) if s.strip()] for c in result.choices]


# ---------------------------------------------------------------- the request format


def test_qwen_prm_input_format() -> None:
    # Qwen2.5-Math-PRM's model card: apply_chat_template(system, user = the bare query,
    # assistant = steps joined and ended by <extra_0>), no generation prompt; the Qwen2.5
    # template ends every turn with "<|im_end|>\n" (no "Problem: ", no <|endoftext|>).
    text = qwen_prm_input("What is 1+1?", ["1+1 = 2.", "The answer is \\boxed{2}."])
    assert text == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
        "<|im_start|>assistant\n1+1 = 2.<extra_0>The answer is \\boxed{2}.<extra_0>"
        "<|im_end|>\n"
    )
    # a step tag inside a step would shift every reward: it is dropped
    sneaky = qwen_prm_input("q", ["a <extra_0> b", "c"])
    assert sneaky.count("<extra_0>") == 2


def test_shepherd_prm_input_format() -> None:
    # Math-Shepherd's model card: f"{question} {output}" with "Step k: ... ки" lines
    text = shepherd_prm_input("What is 1+1?", ["Step 1: 1+1 = 2.", "Step 2: \\boxed{2}"])
    assert text == "What is 1+1? Step 1: 1+1 = 2. ки\nStep 2: \\boxed{2} ки"
    assert shepherd_prm_input("q ки", ["a ки b", "c"]).count("ки") == 2


def test_server_root_accepts_v1() -> None:
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h:8000") == "http://h:8000"


# ---------------------------------------------------------------- VllmPoolingPRM on the sim


async def test_pooling_scores_match_the_sims_rewards(
    sim: SimServer, weak_policy_spec: PolicySpec
) -> None:
    candidates = await sample_solutions(weak_policy_spec, 5)
    assert all(len(steps) >= 2 for steps in candidates)
    sim.reset()
    spec = PRMSpec(
        name="sim-prm",
        kind="vllm_pooling",
        base_url=sim.base_url,
        model="sim-prm",
        batch_size=2,
        params=7e9,
        usd_per_mtok=0.5,
    )
    async with VllmPoolingPRM(spec) as prm:
        result = await prm.score(QUESTION, candidates)
    stats = sim.stats()
    assert pooling_requests(sim) == 3  # ceil(5 / 2)
    assert stats["prm_inputs"] == 5
    # the sim read back the same question and steps, so its own rewards must match ours
    cfg = SimConfig().prms["sim-prm"]
    problem = world.problem_model(QUESTION, 0)
    for steps, scores in zip(candidates, result.scores, strict=True):
        expected = world.prm_rewards(
            problem,
            steps,
            prm_name="sim-prm",
            quality=cfg.quality,
            noise=cfg.noise,
            length_bias=cfg.length_bias,
            seed=0,
        )
        assert scores == pytest.approx(expected)
        assert all(0.0 <= s <= 1.0 for s in scores)
    u = result.usage
    assert u.prm_requests == 3
    assert u.prm_tokens == stats["prm_tokens"] > 0
    assert u.flops == pytest.approx(2 * 7e9 * u.prm_tokens)
    assert u.dollars == pytest.approx(u.prm_tokens * 0.5 / 1e6)
    assert u.policy_tokens == 0 and u.request_seconds > 0


async def test_pooling_accepts_v1_base_url_and_skips_empty_candidates(sim: SimServer) -> None:
    spec = PRMSpec(name="p", kind="vllm_pooling", base_url=sim.v1_url, model="sim-prm")
    async with VllmPoolingPRM(spec) as prm:
        assert prm.url == f"{sim.base_url}/pooling"
        result = await prm.score(QUESTION, [[], ["Step 1: we get x_1 = 3."], []])
        assert [len(s) for s in result.scores] == [0, 1, 0]
        assert pooling_requests(sim) == 1
        assert sim.stats()["prm_inputs"] == 1
        nothing = await prm.score(QUESTION, [[], []])
    assert nothing.scores == [[], []]
    assert nothing.usage.prm_requests == 0
    assert pooling_requests(sim) == 1


async def test_pooling_batches_run_concurrently_up_to_the_limit(make_sim: MakeSim) -> None:
    server = make_sim(capacity={"base_latency_s": 0.05})
    spec = PRMSpec(
        name="p",
        kind="vllm_pooling",
        base_url=server.base_url,
        model="sim-prm",
        batch_size=1,
        max_concurrency=3,
    )
    candidates = [[f"Step 1: we get x_1 = {i}."] for i in range(9)]
    async with VllmPoolingPRM(spec) as prm:
        result = await prm.score(QUESTION, candidates)
    stats = server.stats()
    assert stats["requests"]["pooling"] == 9
    assert stats["max_in_flight"] == 3
    assert result.usage.prm_requests == 9


async def test_pooling_retries_faults_then_gives_up(make_sim: MakeSim) -> None:
    server = make_sim(faults={"sequence": ["500", "malformed"]})
    spec = PRMSpec(
        name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm", max_retries=2
    )
    async with VllmPoolingPRM(spec, retry=FAST) as prm:
        ok = await prm.score(QUESTION, [["Step 1: we get x_1 = 3."]])
    assert len(ok.scores[0]) == 1
    assert pooling_requests(server) == 3
    assert ok.usage.prm_requests == 1

    failing = make_sim(faults={"error_500": 1.0})
    spec = PRMSpec(
        name="p", kind="vllm_pooling", base_url=failing.base_url, model="sim-prm", max_retries=1
    )
    async with VllmPoolingPRM(spec, retry=FAST) as prm:
        with pytest.raises(ServerError, match=r"PRM 'p' at .*/pooling failed with HTTP 500"):
            await prm.score(QUESTION, [["Step 1: a"]])
    assert pooling_requests(failing) == 2


async def test_pooling_rejects_empty_question(prm_spec: PRMSpec) -> None:
    async with VllmPoolingPRM(prm_spec) as prm:
        with pytest.raises(InputError, match="empty question"):
            await prm.score("  ", [["a"]])


# ---------------------------------------------------------------- malformed bodies (respx)

PRM_URL = "http://prm.test"


def _respx_spec(**overrides: Any) -> PRMSpec:
    fields: dict[str, Any] = {
        "name": "mock",
        "kind": "vllm_pooling",
        "base_url": PRM_URL,
        "model": "m",
        "max_retries": 2,
    }
    fields.update(overrides)
    return PRMSpec(**fields)


def _body(rows: list[list[list[float]]]) -> dict[str, Any]:
    return {
        "data": [{"index": i, "data": r} for i, r in enumerate(rows)],
        "usage": {"prompt_tokens": 10},
    }


@respx.mock
async def test_wrong_number_of_rewards_is_bad_response() -> None:
    route = respx.post(f"{PRM_URL}/pooling").mock(
        return_value=httpx.Response(200, json=_body([[[0.1, 0.9]]]))
    )
    async with VllmPoolingPRM(_respx_spec(), retry=FAST) as prm:
        with pytest.raises(BadResponseError, match="candidate 0 has 2 steps but 1 rewards"):
            await prm.score(QUESTION, [["a", "b"]])
    assert route.call_count == 1  # a well-formed but wrong body is not retried


@respx.mock
async def test_unparseable_body_is_retried_then_bad_response() -> None:
    route = respx.post(f"{PRM_URL}/pooling").mock(
        return_value=httpx.Response(200, content=b'{"data": [', headers={"content-type": "json"})
    )
    async with VllmPoolingPRM(_respx_spec(), retry=FAST) as prm:
        with pytest.raises(BadResponseError, match="not valid JSON"):
            await prm.score(QUESTION, [["a"]])
    assert route.call_count == 3


@pytest.mark.parametrize(
    "body",
    [
        {"nodata": []},
        {"data": [{"index": 0, "data": [[0.1, 0.9]]}, {"index": 1, "data": [[0.1, 0.9]]}]},
        {"data": [{"index": 0, "data": [[0.9]]}]},
        {"data": [{"index": 0, "data": [[0.1, "high"]]}]},
        {"data": [{"index": 5, "data": [[0.1, 0.9]]}]},
    ],
)
@respx.mock
async def test_bad_shapes_are_bad_response(body: dict[str, Any]) -> None:
    respx.post(f"{PRM_URL}/pooling").mock(return_value=httpx.Response(200, json=body))
    async with VllmPoolingPRM(_respx_spec(), retry=FAST) as prm:
        with pytest.raises(BadResponseError):
            await prm.score(QUESTION, [["a"]])


@respx.mock
async def test_rewards_are_clamped_and_reordered_by_index() -> None:
    body = {
        "data": [
            {"index": 1, "data": [[0.0, -0.2]]},
            {"index": 0, "data": [[0.0, 1.7], [0.5, 0.5]]},
        ],
    }
    route = respx.post(f"{PRM_URL}/pooling").mock(return_value=httpx.Response(200, json=body))
    async with VllmPoolingPRM(_respx_spec(params=1e9), retry=FAST) as prm:
        result = await prm.score(QUESTION, [["a", "b"], ["c"]])
    assert result.scores == [[1.0, 0.5], [0.0]]
    sent = route.calls.last.request
    assert sent.url.path == "/pooling"
    payload = httpx.Response(200, content=sent.content).json()
    assert payload["model"] == "m" and len(payload["input"]) == 2
    # no usage in the body: tokens estimated from the text, never zero
    assert result.usage.prm_tokens > 0


# ---------------------------------------------------------------- JudgePRM


def test_score_from_top_logprobs() -> None:
    top = {" Yes": math.log(0.6), "yes": math.log(0.1), " No": math.log(0.1), "Maybe": -0.5}
    assert score_from_top_logprobs(top) == pytest.approx(0.7 / 0.8)
    assert score_from_top_logprobs({"NO": math.log(0.5), "Sure": -0.1}) == 0.0
    assert score_from_top_logprobs({"▁yes": math.log(0.2), "ĠNo.": math.log(0.2)}) == 0.5
    assert score_from_top_logprobs({"Sure": -0.1, "Yesterday": -0.2, "Noon": -0.3}) is None
    assert score_from_top_logprobs({}) is None


def test_judge_score_from_a_completion_body() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "text": " No",
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [" No"],
                    "token_logprobs": [math.log(0.3)],
                    "top_logprobs": [{" No": math.log(0.3), " Yes": math.log(0.6)}],
                },
            }
        ]
    }
    choice = parse_completion(body, 1).choices[0]
    assert judge_score(choice) == pytest.approx(0.6 / 0.9)  # logprobs win over the text
    no_logprobs = {"choices": [{"index": 0, "text": " No", "finish_reason": "length"}]}
    assert judge_score(parse_completion(no_logprobs, 1).choices[0]) == 0.0
    yes_text = {"choices": [{"index": 0, "text": "Yes.", "finish_reason": "length"}]}
    assert judge_score(parse_completion(yes_text, 1).choices[0]) == 1.0
    other = {"choices": [{"index": 0, "text": "Step", "finish_reason": "length"}]}
    assert judge_score(parse_completion(other, 1).choices[0]) == 0.5


def test_judge_prompt_shows_previous_steps() -> None:
    prompt = judge_prompt("What is 2+2?", ["2+2 = 4."], "So the answer is 4.")
    assert "Problem: What is 2+2?" in prompt
    assert "(1) 2+2 = 4." in prompt
    assert prompt.index("(1) 2+2 = 4.") < prompt.index("Step under review:\nSo the answer is 4.")
    assert "(none)" in judge_prompt("q", [], "s")


async def test_judge_on_the_sim_falls_back_to_text(sim: SimServer) -> None:
    """The sim returns no logprobs and answers like a policy, not Yes/No: neutral 0.5."""
    spec = PRMSpec(name="judge", kind="judge", base_url=sim.v1_url, model="sim-strong", params=1e9)
    candidates = [["Step 1: a", "Step 2: b", "Step 3: c"], ["Step 1: d"]]
    async with JudgePRM(spec) as prm:
        result = await prm.score(QUESTION, candidates)
    stats = sim.stats()
    assert result.scores == [[0.5, 0.5, 0.5], [0.5]]
    assert stats["requests"]["completions"] == 4  # one request per step
    assert stats["completion_tokens"] == 4  # max_tokens=1
    u = result.usage
    assert u.prm_requests == 4 and u.policy_requests == 0
    assert u.prm_tokens == stats["prompt_tokens"] + stats["completion_tokens"]
    assert u.flops == pytest.approx(2 * 1e9 * u.prm_tokens)


def _judge_app(with_logprobs: bool) -> FastAPI:
    """A judge that believes steps containing "wrong" are wrong (P(yes) 0.1, else 0.8)."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/completions")
    async def complete(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        step = body["prompt"].split("Step under review:\n", 1)[1]
        p_yes = 0.1 if "wrong" in step else 0.8
        text = " Yes" if p_yes > 0.5 else " No"
        logprobs = None
        if with_logprobs and body.get("logprobs"):
            top = {" Yes": math.log(p_yes), " No": math.log(1 - p_yes), " The": -6.0}
            logprobs = {"tokens": [text], "token_logprobs": [top[text]], "top_logprobs": [top]}
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": logprobs}
        usage = {"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101}
        return JSONResponse(
            {"id": "j", "object": "text_completion", "choices": [choice], "usage": usage}
        )

    app.state.seen = seen
    return app


@pytest.mark.parametrize("with_logprobs", [True, False])
async def test_judge_scores_from_a_real_judge_server(with_logprobs: bool) -> None:
    app = _judge_app(with_logprobs)
    candidates = [["3 * 12 = 36.", "36 - 7 = 29."], ["3 * 12 = 30, wrong.", "30 - 7 = 23."]]
    with ServerThread(app) as server:
        url = server.base_url
        spec = PRMSpec(name="j", kind="judge", base_url=f"{url}/v1", model="judge", params=3.0)
        async with JudgePRM(spec) as prm:
            result = await prm.score(QUESTION, candidates)
    if with_logprobs:
        assert result.scores == [
            [pytest.approx(0.8), pytest.approx(0.8)],
            [pytest.approx(0.1), pytest.approx(0.8)],
        ]
    else:
        assert result.scores == [[1.0, 1.0], [0.0, 1.0]]
    seen = app.state.seen
    assert len(seen) == 4
    assert all(b["max_tokens"] == 1 and b["logprobs"] == 5 and b["temperature"] == 0 for b in seen)
    assert result.usage.prm_tokens == 4 * 101
    assert result.usage.flops == pytest.approx(2 * 3.0 * 404)


def _chat_judge_app(with_logprobs: bool) -> FastAPI:
    """A chat judge that believes steps with "wrong" are wrong (P(yes) 0.1, else 0.8).

    Without logprobs it samples: at temperature 1 the i-th of n choices says Yes when
    i < P(yes) * n, so the fraction of yes is exactly P(yes) for n = 10.
    """
    app = FastAPI()
    seen: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        (message,) = body["messages"]
        step = message["content"].split("Step under review:\n", 1)[1]
        p_yes = 0.1 if "wrong" in step else 0.8
        n = body.get("n", 1)
        choices = []
        for i in range(n):
            says_yes = p_yes > 0.5 if body["temperature"] == 0 else i < round(p_yes * n)
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": "Yes" if says_yes else "No."},
                "finish_reason": "length",
            }
            if with_logprobs and body.get("logprobs"):
                top = [
                    {"token": "Yes", "logprob": math.log(p_yes)},
                    {"token": "No", "logprob": math.log(1 - p_yes)},
                ]
                choice["logprobs"] = {"content": [{"token": "Yes", "top_logprobs": top}]}
            choices.append(choice)
        usage = {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}
        return JSONResponse({"id": "c", "object": "chat.completion", "choices": choices,
                             "usage": usage})  # fmt: skip

    app.state.seen = seen
    return app


@pytest.mark.parametrize("with_logprobs", [True, False])
async def test_judge_over_chat_reads_logprobs_or_samples_verdicts(with_logprobs: bool) -> None:
    app = _chat_judge_app(with_logprobs)
    candidates = [["3 * 12 = 36.", "36 - 7 = 29."], ["3 * 12 = 30, wrong."]]
    with ServerThread(app) as server:
        spec = PRMSpec(
            name="cj",
            kind="judge",
            api="chat",
            judge_samples=10,
            base_url=f"{server.base_url}/v1",
            model="judge",
            params=2.0,
        )
        async with JudgePRM(spec) as prm:
            result = await prm.score(QUESTION, candidates)
    assert result.scores == [
        [pytest.approx(0.8), pytest.approx(0.8)],
        [pytest.approx(0.1)],
    ]
    seen = app.state.seen
    greedy = [b for b in seen if b["temperature"] == 0]
    sampled = [b for b in seen if b["temperature"] == 1.0]
    assert len(greedy) == 3  # one per step
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in greedy)
    assert all(b["max_tokens"] == 1 and b["n"] == 1 for b in greedy)
    # sampling only where the server gave no logprobs: n=10 verdicts in one request per step
    assert len(sampled) == (0 if with_logprobs else 3)
    assert all(b["n"] == 10 and "logprobs" not in b for b in sampled)
    per_step = (50 + 1) + (0 if with_logprobs else 50 + 10)
    assert result.usage.prm_tokens == 3 * per_step
    assert result.usage.prm_requests == len(seen)
    assert result.usage.flops == pytest.approx(2 * 2.0 * result.usage.prm_tokens)


async def test_judge_over_completions_samples_when_no_logprobs(make_sim: MakeSim) -> None:
    """The sim gives no logprobs and answers like a policy: sampled, but never yes/no, so 0.5;
    the sampling request asks for n verdicts at temperature 1."""
    spec = PRMSpec(name="judge", kind="judge", base_url=make_sim().v1_url, model="sim-strong",
                   judge_samples=4)  # fmt: skip
    async with JudgePRM(spec) as prm:
        result = await prm.score(QUESTION, [["Step 1: a", "Step 2: b"]])
    assert result.scores == [[0.5, 0.5]]
    assert result.usage.prm_requests == 4  # greedy + sampled, per step


def test_sampled_score_counts_yes_among_verdicts() -> None:
    from ratts.endpoints.policy import Choice
    from ratts.endpoints.prm_judge import sampled_score

    def c(text: str) -> Choice:
        return Choice(text=text, finish_reason="length")

    assert sampled_score([c(" Yes"), c("yes."), c(" No"), c("Maybe")]) == pytest.approx(2 / 3)
    assert sampled_score([c(""), c("Hmm")]) == 0.5


async def test_judge_errors_name_the_prm() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    spec = PRMSpec(name="j", kind="judge", base_url=url, model="m", max_retries=1)
    async with JudgePRM(spec, retry=FAST) as prm:
        with pytest.raises(EndpointUnreachableError, match=f"^cannot reach PRM 'j' at {url}: "):
            await prm.score(QUESTION, [["a", "b"]])


# ---------------------------------------------------------------- factory


def test_build_prm_by_kind(sim: SimServer) -> None:
    pooling = build_prm(PRMSpec(name="a", kind="vllm_pooling", base_url=sim.base_url, model="m"))
    judge = build_prm(PRMSpec(name="b", kind="judge", base_url=sim.v1_url, model="m"))
    arith = build_prm(PRMSpec(name="c", kind="arithmetic"))
    assert isinstance(pooling, VllmPoolingPRM) and isinstance(judge, JudgePRM)
    assert isinstance(arith, ArithmeticPRM) and arith.name == "c"
    assert all(isinstance(p, PRM) for p in (pooling, judge, arith))
    with pytest.raises(ConfigError, match=r"^.*Qwen2.5-Math-PRM-7B is not a model folder"):
        build_prm(PRMSpec(name="t", kind="transformers", model="Qwen/Qwen2.5-Math-PRM-7B"))
