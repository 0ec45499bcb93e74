"""Real model, small context: SmolLM2 on vLLM(-CPU) served with ``--max-model-len 320``.

Beam search and DVTS branches outgrow the context; each such branch is told to answer
(issue 11, point 7) and the runs finish with an answer instead of failing on the server's
400 or ending with none. ``max_tokens`` (1024, over the context) is clipped to what the
context leaves, and the prompt tokens vLLM served from its prefix cache are reported and
charged no FLOPs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_real_models import MODEL, _cli, delta, metrics

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy
from ratts.local import prepare
from ratts.local.serve import free_port, read_record
from ratts.settings import PolicySpec, PRMSpec, load_settings
from ratts.strategies import get_strategy
from ratts.types import StrategyParams

pytestmark = pytest.mark.real

CONTEXT = 320  # the prompt is ~180 tokens: a few steps outgrow it
PROBLEMS = arithmetic_problems(3, seed=23, max_ops=3, max_value=50)
PARAMS = StrategyParams(
    n=4,
    beam_width=2,
    temperature=0.8,
    max_tokens=1024,  # over the context: must be clipped
    max_step_tokens=160,
    max_steps=12,
    aggregation="min",
    seed=9,
)


@dataclass(frozen=True)
class Small:
    spec: PolicySpec
    base: Path

    @property
    def root_url(self) -> str:
        return self.spec.base_url.removesuffix("/v1")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Small]:
    prepared = prepare(MODEL, yes=True)
    base = tmp_path_factory.mktemp("ratts-small-context")
    (base / "models").mkdir()
    (base / "models" / MODEL).symlink_to(prepared.path)
    config = base / "ratts.toml"
    env = {"RATTS_DATA_DIR": str(base), "RATTS_CONFIG": str(config)}
    port = str(free_port())
    started = _cli(
        "models", "serve", MODEL, "--port", port, "--max-model-len", str(CONTEXT),
        env=env, timeout=900,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield Small(load_settings(config).policy(), base)
    finally:
        stopped = _cli("models", "stop", MODEL, env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert read_record(MODEL, base) is None


@pytest.mark.parametrize("name", ["beam_search", "dvts"])
async def test_search_outgrowing_a_small_context_finishes_with_an_answer(
    name: str, small: Small
) -> None:
    policy = build_policy(small.spec)
    prm = ArithmeticPRM(PRMSpec(name="arith", kind="arithmetic"))
    strategy = get_strategy(name)
    before = metrics(small)  # type: ignore[arg-type]
    try:
        outcomes = await asyncio.gather(*(strategy.run(p, policy, prm, PARAMS) for p in PROBLEMS))
        assert policy.context_tokens == CONTEXT  # from vLLM's /v1/models
    finally:
        await policy.aclose()
    moved = delta(before, metrics(small))  # type: ignore[arg-type]
    # some branch really reached the context (its text is within a few tokens of it)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small.base / "models" / MODEL)
    sizes = [
        len(tokenizer(policy.prompt(p.question) + policy.separator.join(c.steps))["input_ids"])
        for p, o in zip(PROBLEMS, outcomes, strict=True)
        for c in o.candidates
    ]
    # within 10% of it: the client ends a branch a little early, as it counts a prompt's
    # tokens from its characters with a safety margin before asking the server
    assert max(sizes) >= 0.9 * CONTEXT, sorted(sizes)[-5:]
    # every run finished (no 400 failed it) with an answer: a branch the context is about
    # to end is told to answer instead of stepping on (ratts.strategies.answer_room)
    for o in outcomes:
        if any(c.steps for c in o.candidates):
            assert o.answer is not None, [(c.answer, c.steps[-1:]) for c in o.candidates]
    cue = small.spec.answer_cue
    assert any(c.steps[-1].startswith(cue) for o in outcomes for c in o.candidates if c.steps)
    requests = sum(o.usage.policy_requests for o in outcomes)
    assert moved["vllm:request_params_n_count"] == requests
    assert moved["vllm:generation_tokens_total"] == sum(
        o.usage.policy_completion_tokens for o in outcomes
    )
    cached = sum(o.usage.policy_cached_tokens for o in outcomes)
    assert cached > 0  # step prompts share their beam's prefix: vLLM reuses it
    for o in outcomes:
        u = o.usage
        fresh = u.policy_tokens - u.policy_cached_tokens
        assert u.flops == pytest.approx(2 * small.spec.params * fresh, rel=1e-6)
