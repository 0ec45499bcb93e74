"""Features before solving: text statistics, and the probe against the simulated server,
whose samples the chosen strategy reuses (the sim's own counters prove the saving)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sweep_helpers import run_cli, settings_file, sim_dataset

from ratts.endpoints.factory import build_policy, build_prm
from ratts.errors import InputError
from ratts.router.features import TEXT_CATEGORICAL, TEXT_NUMERIC, split_features, text_features
from ratts.router.train import records_from_store
from ratts.settings import PolicySpec, PRMSpec
from ratts.sim import SimServer, world
from ratts.store import open_store
from ratts.strategies import get_strategy
from ratts.strategies.probe import PROBE_NUMERIC, probe
from ratts.strategies.reuse import can_reuse, remaining_fraction, run_with_probe
from ratts.types import Problem, RunConfig, StrategyParams


def test_text_features_have_stable_keys_and_count_what_they_say() -> None:
    problem = Problem(
        id="1",
        question=r"Compute $\frac{3}{4} + 2 \times 5 = ?$ Then add 12. What is 3/4 of 12?",
        meta={"dataset": "MATH500", "subject": "Prealgebra", "level": "Level 3"},
    )
    f = text_features(problem)
    assert set(f) == set(TEXT_NUMERIC) | set(TEXT_CATEGORICAL)
    assert f["text_numbers"] == 8.0  # 3 4 2 5 12 3 4 12
    assert f["text_distinct_numbers"] == 5.0 and f["text_max_digits"] == 2.0
    assert f["text_operators"] == 4.0  # + \times = /
    assert f["text_latex_commands"] == 2.0  # \frac, \times
    assert f["text_fractions"] == 2.0  # \frac and 3/4
    assert f["text_dollars"] == 2.0
    assert f["text_level"] == 3.0
    assert f["text_dataset"] == "math500" and f["text_subject"] == "prealgebra"
    bare = text_features(Problem(id="2", question="How many?"))
    assert math.isnan(float(bare["text_level"])) and bare["text_subject"] == "none"
    assert bare["text_numbers"] == 0.0 and bare["text_max_digits"] == 0.0


def test_split_features_fills_missing_values() -> None:
    nums, cats = split_features(
        {"a": 1, "b": None, "c": "x", "d": float("inf"), "e": True, "k": "cat"},
        ("a", "b", "c", "d", "e", "missing"),
        ("k", "nothing"),
    )
    assert nums[0] == 1.0 and nums[4] == 1.0
    assert all(math.isnan(v) for v in (nums[1], nums[2], nums[3], nums[5]))
    assert cats == ["cat", "none"]


def easy_and_hard() -> tuple[Problem, Problem]:
    easy_q = "Chain alpha: follow the operations. [difficulty=0.05]"
    hard_q = "Chain omega: follow the operations. [difficulty=0.95]"
    return (
        Problem(id="easy", question=easy_q, answer=world.gold_answer(easy_q)),
        Problem(id="hard", question=hard_q, answer=world.gold_answer(hard_q)),
    )


async def test_probe_is_one_request_and_one_prm_call_and_tells_easy_from_hard(
    sim: SimServer, weak_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    policy, prm = build_policy(weak_policy_spec), build_prm(prm_spec)
    easy, hard = easy_and_hard()
    result = await probe(easy, policy, prm, k=4)
    stats = sim.stats()
    assert stats["requests"] == {"completions": 1, "pooling": 1}
    assert stats["choices"] == 4 and stats["prm_inputs"] == 4
    assert result.k == 4 and all(c.step_scores for c in result.candidates)
    assert set(PROBE_NUMERIC) <= set(result.features)
    f = result.features
    assert f["probe_prm_min"] <= f["probe_prm_mean"] <= f["probe_prm_max"]
    assert 0.25 <= f["probe_agreement"] <= 1.0 and 1 <= f["probe_distinct"] <= 4
    assert result.usage.policy_completion_tokens == stats["completion_tokens"]
    assert result.usage.prm_tokens == stats["prm_tokens"]
    hard_f = (await probe(hard, policy, prm, k=8)).features
    assert f["probe_agreement"] == 1.0 and f["probe_prm_mean"] > 0.6
    assert hard_f["probe_prm_mean"] < f["probe_prm_mean"] - 0.3
    without_prm = await probe(easy, policy, None, k=2)
    assert math.isnan(without_prm.features["probe_prm_mean"])
    with pytest.raises(InputError, match="k >= 1"):
        await probe(easy, policy, prm, k=0)
    await policy.aclose()
    await prm.aclose()


async def test_best_of_16_after_a_probe_of_4_draws_only_12_more(
    sim: SimServer, weak_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    policy, prm = build_policy(weak_policy_spec), build_prm(prm_spec)
    easy, _ = easy_and_hard()
    bon16 = RunConfig(
        policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=16)
    )
    result = await probe(easy, policy, prm, k=4)
    outcome = await run_with_probe(easy, policy, prm, bon16, result)
    reused = sim.stats()
    assert reused["choices"] == 16  # 4 probe + 12 new, not 4 + 16
    assert reused["requests"]["completions"] == 2
    assert reused["prm_inputs"] == 16  # the probe's 4 are not scored twice
    assert len(outcome.candidates) == 16 and outcome.answer == easy.answer
    assert outcome.usage.policy_requests == 2
    assert outcome.usage.policy_completion_tokens == reused["completion_tokens"]
    assert outcome.usage.prm_tokens == reused["prm_tokens"]
    assert any(e.get("event") == "reuse_probe" and e["extra"] == 12 for e in outcome.trace)

    sim.reset()  # the same work without reuse
    result = await probe(easy, policy, prm, k=4)
    await get_strategy("best_of_n").run(easy, policy, prm, bon16.params)
    assert sim.stats()["choices"] == 20
    await policy.aclose()
    await prm.aclose()


async def test_cot_and_majority_reuse_and_beam_search_pays_the_probe(
    sim: SimServer, weak_policy_spec: PolicySpec, prm_spec: PRMSpec
) -> None:
    policy, prm = build_policy(weak_policy_spec), build_prm(prm_spec)
    easy, _ = easy_and_hard()
    result = await probe(easy, policy, prm, k=4)
    cot = RunConfig(policy="sim-weak", prm=None, strategy="cot", params=StrategyParams(n=1))
    out = await run_with_probe(easy, policy, None, cot, result)
    assert sim.stats()["choices"] == 4 and len(out.candidates) == 1  # nothing new drawn
    majority = cot.model_copy(update={"strategy": "majority", "params": StrategyParams(n=6)})
    out = await run_with_probe(easy, policy, None, majority, result)
    assert sim.stats()["choices"] == 6 and len(out.candidates) == 6
    beam = RunConfig(
        policy="sim-weak", prm="sim-prm", strategy="beam_search", params=StrategyParams(n=4)
    )
    assert not can_reuse(result, beam) and remaining_fraction(beam, "sim-weak", 4) == 1.0
    before = sim.stats()["choices"]
    out = await run_with_probe(easy, policy, prm, beam, result)
    assert sim.stats()["choices"] > before
    assert out.usage.policy_requests > result.usage.policy_requests  # probe usage included
    assert out.usage.prm_tokens > result.usage.prm_tokens
    hotter = majority.model_copy(update={"params": StrategyParams(n=6, temperature=1.2)})
    assert not can_reuse(result, hotter)
    other = majority.model_copy(update={"policy": "sim-strong"})
    assert not can_reuse(result, other)
    assert remaining_fraction(majority, "sim-weak", 4) == pytest.approx(2 / 6)
    await policy.aclose()
    await prm.aclose()


def test_cli_probe_logs_features_once_per_problem(
    capsys: pytest.CaptureFixture[str], sim: SimServer, tmp_path: Path
) -> None:
    data = sim_dataset(tmp_path / "probe.jsonl", 5)
    toml = settings_file(tmp_path / "ratts.toml", sim.base_url, tmp_path / "runs.db")
    args = ("router", "probe", str(data), "-k", "3", "--settings", str(toml))
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "probed 5 problems (0 already probed) with sim-weak k=3" in out
    assert sim.stats()["choices"] == 15
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "probed 0 problems (5 already probed)" in out
    with open_store(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        rows = records_from_store(store)
    assert len(rows) == 5 and {r["strategy"] for r in rows} == {"probe"}
    features = rows[0]["features"]
    assert features["probe_k"] == 3 and "text_chars" in features
    assert 0.0 <= features["label_pass_at_1"] <= 1.0
