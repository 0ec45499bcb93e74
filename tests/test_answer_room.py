"""Room for a final answer (issue 11, point 7 and its small-context acceptance item), on the
simulator: search branches that outgrow a small context end with an answer-forcing
completion instead of no answer, on every dialect, and the rows' usage is still what the
server counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import settings_file

from ratts.endpoints.factory import build_policy, build_prm
from ratts.orchestrator.sweep import run_sweep
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.sim import count_tokens, gold_answer, num_steps
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.types import Problem, RunConfig, StrategyParams

DIALECTS = ("vllm", "sglang", "llamacpp", "openai")
# 6- and 7-step problems: a whole solution is ~39 + 7 x 18 + 9 sim tokens, over the context
QUESTIONS = [f"Sim problem {i}: evaluate the recurrence chain." for i in (1, 7, 9)]
CONTEXT = 110
PARAMS = StrategyParams(n=8, beam_width=2, seed=3)


def by_status(stats: dict[str, Any], endpoint: str, status: int) -> int:
    return sum(1 for i in stats["intervals"] if i["endpoint"] == endpoint and i["status"] == status)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("name", ["beam_search", "dvts"])
async def test_branches_outgrowing_the_context_answer_on_every_dialect(
    name: str, dialect: str, make_sim: Any
) -> None:
    assert all(num_steps(q) >= 6 for q in QUESTIONS)
    server = make_sim(max_model_len=CONTEXT, dialect=dialect)
    # llama.cpp takes n = 1 only: configured so, its 400s are not mistaken for the context's
    spec = PolicySpec(
        name="sim-strong",
        base_url=server.v1_url,
        model="sim-strong",
        supports_n=dialect != "llamacpp",
    )
    policy = build_policy(spec)
    prm = build_prm(
        PRMSpec(name="p", kind="vllm_pooling", base_url=server.base_url, model="sim-prm")
    )
    strategy = get_strategy(name)
    try:
        outcomes = [
            await strategy.run(Problem(id=str(i), question=q), policy, prm, PARAMS)
            for i, q in enumerate(QUESTIONS)
        ]
    finally:
        await policy.aclose()
        await prm.aclose()
    for question, outcome in zip(QUESTIONS, outcomes, strict=True):
        assert outcome.answer is not None, outcome.trace
        assert all(c.finished for c in outcome.candidates)
        # the branches reached the context's end and were told to answer
        assert any(e["event"] == "answer" for e in outcome.trace)
        forced = [c for c in outcome.candidates if c.steps[-1].startswith(spec.answer_cue)]
        assert forced and all(c.answer is not None for c in forced)
        for c in outcome.candidates:  # no prompt the server was sent outgrew the context
            assert count_tokens(policy.prompt(question) + "\n\n".join(c.steps)) <= CONTEXT
    stats = server.stats()
    assert by_status(stats, "completions", 400) == 0  # no branch was left to outgrow it
    assert sum(o.usage.policy_prompt_tokens for o in outcomes) == stats["prompt_tokens"]
    assert sum(o.usage.policy_completion_tokens for o in outcomes) == stats["completion_tokens"]


async def test_a_forced_answer_is_the_gold_when_the_chain_is_right_and_complete(
    make_sim: Any,
) -> None:
    """The answer-forcing completion continues the cue: the sim states its answer (gold
    after a right, complete chain) and the candidate's answer is read from the box."""
    question = QUESTIONS[0]
    server = make_sim()
    spec = PolicySpec(name="sim-strong", base_url=server.v1_url, model="sim-strong")
    policy = build_policy(spec)
    try:
        whole = await policy.complete(policy.prompt(question), max_tokens=1024, temperature=0)
        steps = whole.choices[0].text.split("\n\n")
        assert steps[-1].startswith("The final answer is")  # a right greedy solution
        cued = policy.prompt(question) + "\n\n".join(steps[:-1]) + "\n\n" + spec.answer_cue
        told = await policy.complete(cued, max_tokens=16, temperature=0, stop=["\n\n"])
    finally:
        await policy.aclose()
    assert spec.answer_cue + told.choices[0].text == steps[-1]
    assert gold_answer(question) in steps[-1]


@pytest.mark.parametrize("name", ["beam_search", "dvts"])
async def test_small_context_rows_answer_and_record_what_the_server_counted(
    name: str, make_sim: Any, tmp_path: Path
) -> None:
    """Through the sweep (the run-and-log service): every row has an answer and the rows'
    usage sums to the server's own counters, forced answers included."""
    server = make_sim(max_model_len=CONTEXT)
    db = tmp_path / "runs.db"
    settings = load_settings(settings_file(tmp_path / "ratts.toml", server.base_url, db))
    problems = [
        Problem(id=str(i), question=q, answer=gold_answer(q)) for i, q in enumerate(QUESTIONS)
    ]
    config = RunConfig(policy="sim-strong", prm="sim-prm", strategy=name, params=PARAMS)
    with open_store(settings.db_url) as store:
        stats = await run_sweep(problems, [config], store, settings)
        rows = store.runs(include_failed=True)
    counters = server.stats()
    assert stats.failed == 0 and len(rows) == len(problems)
    assert all(row["answer"] is not None and not row["error"] for row in rows)
    assert sum(r["policy_prompt_tokens"] for r in rows) == counters["prompt_tokens"] > 0
    assert sum(r["policy_completion_tokens"] for r in rows) == counters["completion_tokens"]
    assert sum(r["policy_requests"] for r in rows) == by_status(counters, "completions", 200)
    assert sum(r["prm_tokens"] for r in rows) == counters["prm_tokens"] > 0
    assert sum(r["prm_requests"] for r in rows) == by_status(counters, "pooling", 200)
