"""Synthetic run logs for the router tests (imported by the test_router_* modules).

A log is plain records, as ``records_from_store`` returns them. Each problem has a hidden
difficulty d; the probe sees it through noisy agreement / PRM features; each config solves
a problem with a probability that depends on d, so the best config depends on difficulty.
Also holds one real check of the generator itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ratts.endpoints.usage import Usage
from ratts.router.features import PASS_AT_1
from ratts.router.train import PROBE_STRATEGY
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.store import Store
from ratts.types import Problem, RunConfig, StrategyParams

WEAK, STRONG, PRM = "weak", "strong", "prm"

# (config, cost in FLOPs, P(correct | d))
WORLD: list[tuple[RunConfig, float, Callable[[float], float]]] = [
    (
        RunConfig(policy=WEAK, prm=None, strategy="cot", params=StrategyParams(n=1)),
        1e9,
        lambda d: 0.97 if d < 0.3 else 0.05,
    ),
    (
        RunConfig(policy=WEAK, prm=PRM, strategy="best_of_n", params=StrategyParams(n=16)),
        1e10,
        lambda d: 0.97 if d < 0.6 else 0.05,
    ),
    (
        RunConfig(policy=STRONG, prm=None, strategy="cot", params=StrategyParams(n=1)),
        4e10,
        lambda d: 0.97 if d < 0.9 else 0.2,
    ),
]


def world_settings(tmp_path: Path) -> Settings:
    """A deployment that configures the synthetic world's policies and PRM (unreachable
    URLs: for deciding, not running)."""
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'runs.db'}",
        data_dir=tmp_path / "data",
        policies=[
            PolicySpec(name=WEAK, base_url="http://127.0.0.1:9/v1", model="w", params=1e9),
            PolicySpec(name=STRONG, base_url="http://127.0.0.1:9/v1", model="s", params=7e10),
        ],
        prms=[PRMSpec(name=PRM, kind="arithmetic")],
    )


def config_record(
    pid: str, d: float, config: RunConfig, cost: float, correct: bool, features: dict[str, Any]
) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "dataset": "synthetic",
        "question": f"Synthetic problem {pid}: what is the value?",
        "meta": {"dataset": "synthetic"},
        "features": features,
        "policy": config.policy,
        "prm": config.prm,
        "strategy": config.strategy,
        "params": config.params.model_dump(mode="json"),
        "budget": f"n={config.params.n}",
        "correct": correct,
        "policy_prompt_tokens": 50,
        "policy_completion_tokens": int(cost / 2e9),
        "prm_tokens": 0,
        "tokens": 50 + int(cost / 2e9),
        "flops": cost,
        "dollars": cost * 1e-15,
    }


def probe_features(d: float, rng: random.Random) -> dict[str, Any]:
    clip = lambda x: min(1.0, max(0.0, x))  # noqa: E731
    return {
        "probe_k": 4.0,
        "probe_agreement": clip(1.0 - d + rng.gauss(0, 0.05)),
        "probe_prm_mean": clip(1.0 - d + rng.gauss(0, 0.05)),
        "text_dataset": "synthetic",
    }


def synthetic_log(
    n_problems: int = 150,
    seed: int = 0,
    *,
    world: Sequence[tuple[RunConfig, float, Callable[[float], float]]] = WORLD,
    with_probes: bool = True,
) -> list[dict[str, Any]]:
    """Runs of every config on every problem, plus a k=4 probe row (features) and a k=32
    probe row (Pass@1 label of the weak policy) per problem."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n_problems):
        pid = f"p{i}"
        d = rng.random()
        features = probe_features(d, rng)
        for config, cost, p in world:
            out.append(config_record(pid, d, config, cost, rng.random() < p(d), {}))
        if with_probes:
            for k, extra in ((4, {}), (32, {PASS_AT_1: world[0][2](d)})):
                probe = RunConfig(
                    policy=WEAK, prm=PRM, strategy=PROBE_STRATEGY, params=StrategyParams(n=k)
                )
                rec = config_record(pid, d, probe, 2e9 * k / 4, True, {**features, **extra})
                out.append(rec)
    return out


def log_to_store(store: Store, records: Sequence[dict[str, Any]]) -> int:
    """Write synthetic records as real run rows; returns how many were written."""
    written = 0
    for rec in records:
        problem = Problem(id=rec["problem_id"], question=rec["question"], meta=rec["meta"])
        config = RunConfig(
            policy=rec["policy"],
            prm=rec["prm"],
            strategy=rec["strategy"],
            params=StrategyParams.model_validate(rec["params"]),
        )
        usage = Usage(
            policy_prompt_tokens=rec["policy_prompt_tokens"],
            policy_completion_tokens=rec["policy_completion_tokens"],
            flops=rec["flops"],
            dollars=rec["dollars"],
        )
        written += store.record_run(
            problem,
            config,
            rec["budget"],
            dataset=rec["dataset"],
            correct=rec["correct"],
            usage=usage,
            features=rec["features"] or None,
        )
    return written


def test_synthetic_log_has_every_config_per_problem_and_both_outcomes() -> None:
    log = synthetic_log(20)
    runs = [r for r in log if r["strategy"] != PROBE_STRATEGY]
    assert len(runs) == 20 * len(WORLD)
    assert {r["correct"] for r in runs} == {True, False}
    assert sum(r["strategy"] == PROBE_STRATEGY for r in log) == 40
