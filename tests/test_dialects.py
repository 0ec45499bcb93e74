"""Step ends on every server dialect: parsing each one's stop signal, and beam search / DVTS
going step by step against the simulator shaped like vLLM, SGLang, llama.cpp and OpenAI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.responses import StopReading, parse_completion
from ratts.grading import grade
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimServer, gold_answer, num_steps
from ratts.strategies import get_strategy
from ratts.types import Problem, StrategyParams

MakeSim = Callable[..., SimServer]
SEP = "\n\n"
STEP = StopReading(stops=(SEP,))
DIALECTS = ("vllm", "sglang", "llamacpp", "openai")
# Questions the strong simulated policy solves almost surely, each with several steps.
EASY = [f"[difficulty=0.05] Evaluate easy recurrence chain number {i}." for i in range(3)]


def body(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"choices": list(choices), **extra}


def one(choice: dict[str, Any], reading: StopReading = STEP, **extra: Any) -> Any:
    return parse_completion(body({"index": 0, **choice}, **extra), 1, reading).choices[0]


# ---------------------------------------------------------------- reading each dialect


def test_vllm_stop_reason_string_token_id_and_null() -> None:
    assert one({"text": "Step 1", "finish_reason": "stop", "stop_reason": SEP}).stop_reason == SEP
    at_token = one({"text": "Step 1", "finish_reason": "stop", "stop_reason": 151645})
    assert at_token.hit_eos
    # vLLM says null at EOS: believed even though the text has no answer
    assert one({"text": "Step 1", "finish_reason": "stop", "stop_reason": None}).hit_eos


def test_sglang_matched_stop() -> None:
    step = one({"text": "Step 1", "finish_reason": "stop", "matched_stop": SEP})
    assert step.stop_reason == SEP and not step.hit_eos
    assert one({"text": "Step 1", "finish_reason": "stop", "matched_stop": 2}).hit_eos
    cut = one({"text": "Step 1", "finish_reason": "length", "matched_stop": None})
    assert cut.finish_reason == "length" and not cut.hit_eos and cut.stop_reason is None


def test_llamacpp_verbose_stop_type_and_word() -> None:
    def verbose(stop_type: str, word: str = "") -> dict[str, Any]:
        return {"__verbose": {"stop_type": stop_type, "stopping_word": word}}

    plain = {"text": "Step 1", "finish_reason": "stop"}
    assert one(plain, **verbose("word", SEP)).stop_reason == SEP
    assert one(plain, **verbose("eos")).hit_eos  # EOS said outright, no answer needed


def test_no_signal_stop_without_a_final_answer_is_the_separator() -> None:
    """Hosted OpenAI-like: finish_reason "stop" only. The bug of issue 11: this was EOS."""
    step = one({"text": "Step 1: x_1 = 4.", "finish_reason": "stop"})
    assert step.stop_reason == SEP and not step.hit_eos
    for done in ("The final answer is \\boxed{12}.", "So the answer is 12.", "#### 12"):
        assert one({"text": done, "finish_reason": "stop"}).hit_eos, done
    # a whole-solution request (no stop strings): stop is the end of the solution
    assert one({"text": "x = 4", "finish_reason": "stop"}, StopReading()).hit_eos
    # llama.cpp without --verbose looks the same
    assert (
        one(
            {"text": "Step 1", "finish_reason": "stop"}, StopReading("llamacpp", (SEP,))
        ).stop_reason
        == SEP
    )


def test_dialect_hint_openai_ignores_a_proxys_null_stop_reason() -> None:
    raw = {"text": "Step 1: x_1 = 4.", "finish_reason": "stop", "stop_reason": None}
    assert one(raw).hit_eos  # auto: a stop_reason key is vLLM's word
    assert one(raw, StopReading("openai", (SEP,))).stop_reason == SEP


def test_tgi_style_finish_reasons() -> None:
    assert one({"text": "Step 1", "finish_reason": "eos_token"}).hit_eos
    assert one({"text": "Step 1", "finish_reason": "stop_sequence"}).stop_reason == SEP


def test_chat_choices_and_llamacpp_arrays() -> None:
    chat = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Step 1"},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "length",
            },
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    reply = parse_completion(chat, 2, STEP, chat=True)
    assert [c.text for c in reply.choices] == ["Step 1", ""]
    assert reply.choices[0].stop_reason == SEP and reply.choices[1].finish_reason == "length"
    # llama.cpp answers a list of prompts with one body per prompt
    array = [
        body(
            {"index": i, "text": f"p{i}", "finish_reason": "stop"},
            usage={"prompt_tokens": 3, "completion_tokens": 1},
        )
        for i in range(3)
    ]
    listed = parse_completion(array, 3, STEP)
    assert [c.text for c in listed.choices] == ["p0", "p1", "p2"] and listed.indices == [0, 1, 2]
    assert (listed.prompt_tokens, listed.completion_tokens) == (9, 3)


# ---------------------------------------------------------------- the simulator's shapes


def test_sim_dialect_shapes(make_sim: MakeSim) -> None:
    req = {
        "model": "sim-strong",
        "prompt": "Problem: Q 1\n\nSolution:\n",
        "stop": [SEP],
        "max_tokens": 200,
    }
    seen = {}
    for dialect in DIALECTS:
        server = make_sim(dialect=dialect)
        choice = httpx.post(f"{server.v1_url}/completions", json=req).json()["choices"][0]
        seen[dialect] = set(choice) - {"index", "text", "logprobs", "finish_reason"}
    assert seen == {
        "vllm": {"stop_reason"},
        "sglang": {"matched_stop"},
        "llamacpp": set(),
        "openai": set(),
    }
    llama = make_sim(dialect="llamacpp")
    refused = httpx.post(f"{llama.v1_url}/completions", json={**req, "n": 2})
    assert refused.status_code == 400 and "Only one completion choice" in refused.text
    listed = httpx.post(f"{llama.v1_url}/completions", json={**req, "prompt": [req["prompt"]] * 2})
    assert isinstance(listed.json(), list) and len(listed.json()) == 2
    hosted = make_sim(dialect="openai", chat_only=True)
    assert httpx.post(f"{hosted.v1_url}/completions", json=req).status_code == 404


# ---------------------------------------------------------------- search on every dialect


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("strategy", ["beam_search", "dvts"])
async def test_search_goes_step_by_step_on_every_dialect(
    make_sim: MakeSim, dialect: str, strategy: str
) -> None:
    server = make_sim(dialect=dialect)
    spec = PolicySpec(
        name="sim-strong",
        base_url=server.v1_url,
        model="sim-strong",
        max_n=1 if dialect == "llamacpp" else None,
    )
    prm = build_prm(
        PRMSpec(name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
    )
    params = StrategyParams(n=4, beam_width=2, max_steps=12, seed=3)
    async with build_policy(spec) as policy:
        for question in EASY:
            server.reset()
            outcome = await get_strategy(strategy).run(Problem("e", question), policy, prm, params)
            rounds = [e for e in outcome.trace if e["event"] == "step"]
            assert len({e["k"] for e in rounds}) >= num_steps(question), (dialect, rounds)
            assert grade(outcome.answer, gold_answer(question)) is True, (dialect, outcome.answer)
            chosen = outcome.candidates[outcome.selected_index or 0]
            assert chosen.finished and len(chosen.steps) == num_steps(question) + 1
            assert server.stats()["requests"]["completions"] > num_steps(question)
    await prm.aclose()


def test_chat_logprobs_are_read_as_top_alternatives() -> None:
    item = {
        "index": 0,
        "message": {"role": "assistant", "content": "Yes"},
        "finish_reason": "stop",
        "logprobs": {
            "content": [
                {
                    "token": "Yes",
                    "logprob": -0.1,
                    "top_logprobs": [
                        {"token": "Yes", "logprob": -0.1},
                        {"token": "No", "logprob": -2.4},
                    ],
                }
            ]
        },
    }
    choice = parse_completion(body(item), 1, chat=True).choices[0]
    assert choice.logprobs == ({"Yes": -0.1, "No": -2.4},)
