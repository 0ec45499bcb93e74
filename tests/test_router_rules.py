"""Which rule the trained router serves (``ratts.router.modes``): probe first, text alone, or
the best fixed config, chosen by cross-fitted value on the training problems; a rule that
needs no probe runs none on the served path."""

from __future__ import annotations

import random
from pathlib import Path

from test_router_support import WORLD, log_to_store, probe_features, synthetic_log, world_settings

from ratts import Orchestrator
from ratts.router import Router
from ratts.router.allocate import lam_for_mean
from ratts.router.features import ROUTING
from ratts.router.modes import ModeTable
from ratts.router.registry import register
from ratts.router.train import PROBE_STRATEGY, records_from_store, train_router
from ratts.settings import Settings
from ratts.sim import SimServer
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

FAST = {"max_iter": 40, "min_samples_leaf": 5}


def test_a_table_serves_its_best_rule_per_lam_and_ties_go_to_the_simpler() -> None:
    table = ModeTable(
        unit="tokens",
        lams=(0.0, 1e-4, 1e-3),
        values={"fixed": (0.5, 0.2, 0.1), "blind": (0.5, 0.3, 0.0), "probe": (0.4, 0.4, -0.2)},
        problems=30,
    )
    assert table.modes == ("fixed", "probe", "fixed")
    assert table.mode_at(None) == table.mode_at(0.0) == "fixed"  # tie with blind: simpler
    assert table.mode_at(5e-5) == "fixed"  # below the next grid point
    assert table.mode_at(2e-4) == "probe"
    assert table.mode_at(1.0) == "fixed"
    assert ModeTable.from_dict(table.as_dict()) == table


def test_the_probe_rule_serves_where_the_probe_tells_difficulty_and_costs_little() -> None:
    """The synthetic world's probe sees each problem's difficulty and costs 2e9 FLOPs
    against configs of 1e9-4e10: routing on it beats any fixed config in the middle."""
    trained = train_router(synthetic_log(150), model_params=FAST, holdout=0)
    flops = trained.router.mode_tables()["flops"]
    assert "probe" in flops.modes
    assert flops.problems == 150
    i = flops.modes.index("probe")
    assert flops.values["probe"][i] > flops.values["fixed"][i]
    assert trained.metrics["rules"]["flops"]["problems"] == 150


def test_a_probe_that_tells_nothing_is_not_run_once_its_cost_counts() -> None:
    """Probe features that are noise, from a probe dearer than every config: wherever the
    probe's cost weighs more than a few points of accuracy, its rule never serves."""
    rng = random.Random(3)
    log = synthetic_log(150)
    for rec in log:
        if rec["strategy"] == PROBE_STRATEGY:
            rec["features"] = {**rec["features"], **probe_features(rng.random(), rng)}
            rec["flops"] = rec["flops"] * 50  # 1e11: dearer than the strongest config
    trained = train_router(log, model_params=FAST, holdout=0)
    flops = trained.router.mode_tables()["flops"]
    probe_cost = 1e11
    weighty = [m for lam, m in zip(flops.lams, flops.modes, strict=True) if lam * probe_cost > 0.05]
    assert weighty and "probe" not in weighty


def test_mean_budget_calibration_follows_the_served_rule(tmp_path: Path) -> None:
    """Where the table says no probe, a mean budget is not charged the probe's cost."""
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        log_to_store(store, synthetic_log(60))
        trained = train_router(records_from_store(store), model_params=FAST, holdout=0)
        never = ModeTable("tokens", (0.0,), {"fixed": (1.0,), "blind": (0.0,), "probe": (0.0,)}, 9)
        trained.router.modes = {"tokens": never.as_dict()}
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        router = Router(world_settings(tmp_path), store)
        now = router.current()
        assert router.rule(now, 0.0) == router.rule(now, 1.0) == "fixed"
        sample = [probe_features(0.5, random.Random(1))]
        _, mean = lam_for_mean(router, sample, 1e9, probe_cost=1e6, unit="tokens")
        assert mean < 1e6  # the probe's cost is not in it
    finally:
        store.close()


async def test_a_rule_without_probe_runs_no_probe_on_the_served_path(
    sim_settings: Settings, sim: SimServer, tmp_path: Path
) -> None:
    policy, prm = sim_settings.policies[0].name, sim_settings.prms[0].name
    world = [
        (RunConfig(policy=policy, prm=None, strategy="cot", params=StrategyParams(n=1)), *f[1:])
        for f in WORLD[:1]
    ] + [
        (
            RunConfig(policy=policy, prm=prm, strategy="best_of_n", params=StrategyParams(n=4)),
            *WORLD[1][1:],
        )
    ]
    trained = train_router(synthetic_log(60, world=world), model_params=FAST, holdout=0)
    fixed_only = ModeTable("tokens", (0.0,), {"fixed": (1.0,), "blind": (0.0,), "probe": (0.0,)}, 9)
    trained.router.modes = {"tokens": fixed_only.as_dict()}
    best = max(trained.router.accuracy, key=lambda k: trained.router.accuracy[k])
    async with Orchestrator(sim_settings) as orch:
        store = orch.store
        assert store is not None
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        result = await orch.solve("Puzzle 3: follow the chain; give the value. [difficulty=0.2]")
        rows = store.runs()
    stats = sim.stats()
    assert result.reason == "router"
    assert result.config.key() == best  # the best fixed config on the training problems
    assert result.probe_usage.total_tokens == 0
    assert stats["completion_tokens"] == result.usage.policy_completion_tokens > 0
    log = rows[0]["features"][ROUTING]
    assert log["rule"] == "fixed"
    assert log["probe_usage"]["tokens"] == 0


def test_a_lead_within_one_standard_error_goes_to_the_simpler_rule() -> None:
    values = {"fixed": (0.30, 0.30), "blind": (0.10, 0.10), "probe": (0.33, 0.40)}
    margins = {"fixed": (0.05, 0.05), "blind": (0.05, 0.05), "probe": (0.0, 0.0)}
    table = ModeTable("tokens", (0.0, 1e-4), values, 40, margins)
    assert table.modes == ("fixed", "probe")  # 0.03 behind is noise; 0.10 behind is not
    assert ModeTable.from_dict(table.as_dict()) == table
