"""The chat API: whole-solution strategies over /v1/chat/completions, step-wise search with
assistant prefill, n limits, fan-out and top-ups, against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from ratts.endpoints.chat import CHAT_SPLIT, chat_body
from ratts.endpoints.factory import build_policy, build_prm
from ratts.errors import BadResponseError, ConfigError, InputError, InvalidParamsError
from ratts.grading import grade
from ratts.serving import ServerThread
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.sim import SimServer, gold_answer, num_steps
from ratts.strategies import get_strategy
from ratts.types import Problem, StrategyParams

MakeSim = Callable[..., SimServer]
EASY = "[difficulty=0.05] Evaluate the easy chat chain."
PARAMS = StrategyParams(n=4, beam_width=2, max_steps=12, seed=3)


def chat_spec(server: SimServer, **extra: Any) -> PolicySpec:
    return PolicySpec(
        name="hosted-strong",
        base_url=server.v1_url,
        model="sim-strong",
        api="chat",
        system_prompt="You are a careful mathematician.",
        **extra,
    )


def prm_for(server: SimServer) -> Any:
    return build_prm(
        PRMSpec(name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
    )


def chats(server: SimServer) -> list[dict[str, Any]]:
    return [i for i in server.stats()["intervals"] if i["endpoint"] == "chat"]


def test_messages_from_templates_and_prefill_flags() -> None:
    spec = PolicySpec(
        name="c",
        base_url="http://x/v1",
        model="m",
        api="chat",
        system_prompt="sys",
        chat_history=(("user", "1+1?"), ("assistant", "\\boxed{2}")),
        user_template="Q: {question}",
        chat_prefill=True,
    )
    prompt = "Q: 2+2?" + CHAT_SPLIT
    assert chat_body(spec, prompt) == {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "\\boxed{2}"},
            {"role": "user", "content": "Q: 2+2?"},
        ]
    }
    cont = chat_body(spec, prompt + "Step 1\n\n")
    assert cont["messages"][-1] == {"role": "assistant", "content": "Step 1\n\n"}
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    llama = chat_body(spec.model_copy(update={"dialect": "llamacpp"}), prompt + "Step 1\n\n")
    assert "continue_final_message" not in llama  # llama.cpp continues by itself
    no_prefill = spec.model_copy(update={"chat_prefill": False})
    with pytest.raises(InputError, match="policy 'c' cannot continue"):
        chat_body(no_prefill, prompt + "Step 1\n\n")


def test_chat_prefill_needs_the_chat_api(tmp_path: Any) -> None:
    config = tmp_path / "ratts.toml"
    config.write_text(
        '[[policies]]\nname = "p"\nbase_url = "http://x/v1"\nmodel = "m"\nchat_prefill = true\n'
    )
    with pytest.raises(ConfigError, match="chat_prefill needs api = 'chat'"):
        load_settings(config)
    assert PolicySpec(name="p", base_url="u", model="m").can_continue
    assert not PolicySpec(name="p", base_url="u", model="m", api="chat").can_continue
    assert PolicySpec(name="p", base_url="u", model="m", api="chat", chat_prefill=True).can_continue


@pytest.mark.parametrize("dialect", ["openai", "vllm", "llamacpp"])
async def test_whole_solution_strategies_over_chat(make_sim: MakeSim, dialect: str) -> None:
    """CoT, majority and Best-of-N on a chat-only server: chat requests only."""
    server = make_sim(dialect=dialect, chat_only=True)
    prm = prm_for(server)
    spec = chat_spec(server, max_n=1 if dialect == "llamacpp" else None)
    async with build_policy(spec) as policy:
        for name in ("cot", "majority", "best_of_n"):
            server.reset()
            strategy = get_strategy(name)
            params = PARAMS.model_copy(update={"n": 1}) if name == "cot" else PARAMS
            outcome = await strategy.run(
                Problem("e", EASY), policy, prm if strategy.needs_prm else None, params
            )
            assert grade(outcome.answer, gold_answer(EASY)) is True, (name, outcome.answer)
            assert all(c.finished for c in outcome.candidates)
            stats = server.stats()
            assert "completions" not in stats["requests"]
            want = 1 if name == "cot" else 4
            assert len(outcome.candidates) == want
            # n in one request where the server takes it; llama.cpp: one request per choice
            sent = chats(server)
            assert len(sent) == (want if dialect == "llamacpp" else 1), (name, sent)
            assert outcome.usage.policy_requests == len(sent)
    await prm.aclose()


@pytest.mark.parametrize("dialect", ["vllm", "sglang", "llamacpp"])
@pytest.mark.parametrize("strategy", ["beam_search", "dvts"])
async def test_stepwise_search_over_chat_with_prefill(
    make_sim: MakeSim, dialect: str, strategy: str
) -> None:
    server = make_sim(dialect=dialect, chat_only=True)
    prm = prm_for(server)
    spec = chat_spec(server, chat_prefill=True, dialect=dialect)
    async with build_policy(spec) as policy:
        outcome = await get_strategy(strategy).run(Problem("e", EASY), policy, prm, PARAMS)
    await prm.aclose()
    assert grade(outcome.answer, gold_answer(EASY)) is True
    chosen = outcome.candidates[outcome.selected_index or 0]
    assert len(chosen.steps) == num_steps(EASY) + 1  # every step continued, none restarted
    assert len(chats(server)) > num_steps(EASY)


async def test_stepwise_strategy_on_a_chat_policy_without_prefill_is_refused(
    make_sim: MakeSim,
) -> None:
    server = make_sim(dialect="openai", chat_only=True)
    prm = prm_for(server)
    async with build_policy(chat_spec(server)) as policy:
        assert not policy.can_continue
        for name in ("beam_search", "dvts"):
            with pytest.raises(InvalidParamsError) as info:
                await get_strategy(name).run(Problem("e", EASY), policy, prm, PARAMS)
            message = str(info.value)
            assert "'hosted-strong'" in message and "\n" not in message
    await prm.aclose()
    assert server.stats()["requests"] == {}  # refused before any request


async def test_max_n_splits_requests(make_sim: MakeSim) -> None:
    server = make_sim(dialect="openai", chat_only=True, max_n=3)
    async with build_policy(chat_spec(server, max_n=3)) as policy:
        result = await policy.complete(policy.prompt(EASY), n=8, seed=1)
    assert len(result.choices) == 8 and result.usage.policy_requests == 3
    assert sorted(i["n"] for i in chats(server)) == [2, 3, 3]


async def test_fewer_choices_than_asked_are_topped_up(make_sim: MakeSim) -> None:
    """A server that drops choices: the client asks again for the missing ones."""
    server = make_sim(faults={"drop_choices": 2})
    spec = PolicySpec(name="s", base_url=server.v1_url, model="sim-strong")
    async with build_policy(spec) as policy:
        result = await policy.complete(policy.prompt(EASY), n=8)
        assert len(result.choices) == 8
        assert [i["n"] for i in server.stats()["intervals"]] == [8, 2, 1]
        assert result.usage.policy_requests == 3
        # a list of prompts left short is topped up per prompt, order kept
        server.reset()
        prompts = [policy.prompt(EASY), policy.prompt("Other question 5.")]
        many = await policy.complete_many(prompts, n=3, stop=["\n\n"])
        assert len(many.choices) == 6 and many.usage.policy_requests == 3
        sent = server.stats()["intervals"]
        assert [(i["n"], i["choices"]) for i in sent] == [(3, 6), (2, 2), (1, 1)]
    # and Best-of-N over it returns all N candidates
    prm = prm_for(server)
    async with build_policy(spec) as policy:
        outcome = await get_strategy("best_of_n").run(
            Problem("e", EASY), policy, prm, PARAMS.model_copy(update={"n": 8})
        )
    await prm.aclose()
    assert len(outcome.candidates) == 8


async def test_a_server_that_keeps_returning_too_few_is_a_clear_error() -> None:
    """Top-ups are bounded: a server that never returns a choice fails in one line."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/completions")
    async def empty() -> dict[str, Any]:
        app.state.calls += 1
        return {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}}

    with ServerThread(app) as server:
        spec = PolicySpec(name="empty", base_url=f"{server.base_url}/v1", model="m")
        async with build_policy(spec) as policy:
            with pytest.raises(BadResponseError) as info:
                await policy.complete("p", n=2)
    assert str(info.value) == "policy 'empty' returned 0 of 2 choices after 3 top-up requests"
    assert app.state.calls == 4


def test_router_candidates_leave_stepwise_out_for_a_policy_that_cannot_continue() -> None:
    from ratts.router.candidates import candidate_configs
    from ratts.settings import Settings

    settings = Settings(
        policies=[
            PolicySpec(name="local", base_url="http://l/v1", model="l"),
            PolicySpec(name="hosted", base_url="http://h/v1", model="h", api="chat"),
            PolicySpec(
                name="prefill", base_url="http://p/v1", model="p", api="chat", chat_prefill=True
            ),
        ],
        prms=[PRMSpec(name="prm", kind="arithmetic")],
    )
    configs = candidate_configs(settings, ns=(4,))
    by_policy = {
        name: {c.strategy for c in configs if c.policy == name}
        for name in ("local", "hosted", "prefill")
    }
    assert by_policy["hosted"] == {"cot", "majority", "adaptive", "best_of_n"}
    assert "beam_search" in by_policy["local"] and "beam_search" in by_policy["prefill"]


async def test_routed_solve_on_a_chat_only_policy_picks_whole_solution_and_says_why(
    tmp_path: Any, make_sim: MakeSim
) -> None:
    from ratts.orchestrator import Orchestrator
    from ratts.settings import Settings

    server = make_sim(dialect="openai", chat_only=True)
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[chat_spec(server)],
        prms=[
            PRMSpec(name="sim-prm", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
        ],
    )
    async with Orchestrator(settings) as orch:
        for i in range(3):
            result = await orch.solve(f"[difficulty=0.{i + 6}] Hard chat chain {i}.", budget=16)
            assert result.config.strategy in ("cot", "majority", "best_of_n")
            assert all(c.config.strategy not in ("beam_search", "dvts") for c in result.why)
            assert "no beam search or DVTS for 'hosted-strong'" in result.explanation
    assert "completions" not in server.stats()["requests"]


async def test_stream_is_for_completions_only(make_sim: MakeSim) -> None:
    """A chat policy with ``stream = true`` sends plain requests (the simulator refuses a
    streamed one with 400, which would turn n=4 into four single requests)."""
    server = make_sim(dialect="openai", chat_only=True)
    async with build_policy(chat_spec(server, stream=True)) as policy:
        result = await policy.complete(policy.prompt(EASY), n=4)
    assert len(result.choices) == 4 and result.usage.policy_requests == 1
    assert [i["n"] for i in chats(server)] == [4]
    assert server.stats()["responses_by_status"] == {"200": 1}


async def test_chat_requests_spread_over_replicas(make_sim: MakeSim) -> None:
    """Chat bodies go through each replica's own session, like completions."""
    servers = [
        make_sim(dialect="openai", chat_only=True, capacity={"base_latency_s": 0.3})
        for _ in range(2)
    ]
    spec = PolicySpec(
        name="hosted-strong",
        base_urls=tuple(s.v1_url for s in servers),
        model="sim-strong",
        api="chat",
        max_concurrency=1,
    )
    async with build_policy(spec) as policy:
        prompt = policy.prompt(EASY)
        results = await asyncio.gather(*(policy.complete(prompt, n=1) for _ in range(4)))
    assert all(len(r.choices) == 1 for r in results)
    served = [len(chats(s)) for s in servers]
    assert sum(served) == 4 and min(served) >= 1  # one slot each: both replicas answer
