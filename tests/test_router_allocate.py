"""A mean budget served as the router's Lagrange multiplier (``ratts.router.allocate``):
calibrated on a sample of questions, it spends within the mean, a larger mean never gets a
larger lam, and an impossible mean falls back to the cheapest picks (and says what they
cost)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_router_support import log_to_store, probe_features, synthetic_log, world_settings

from ratts.errors import RouterError
from ratts.router import Router
from ratts.router.allocate import lam_for_mean
from ratts.router.candidates import pick
from ratts.router.registry import register
from ratts.router.train import records_from_store, train_router
from ratts.store import open_store
from ratts.types import Budget

FAST = {"max_iter": 40, "min_samples_leaf": 5}
PROBE_FLOPS = 2e9


def test_mean_budget_lam_fits_the_mean_and_shrinks_as_the_mean_grows(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        log_to_store(store, synthetic_log(80))
        trained = train_router(records_from_store(store), model_params=FAST, holdout=0)
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        router = Router(world_settings(tmp_path), store)
        rng = random.Random(5)
        sample = [probe_features(rng.random(), rng) for _ in range(60)]

        def calibrate(limit: float) -> tuple[float, float]:
            return lam_for_mean(router, sample, limit, probe_cost=PROBE_FLOPS, unit="flops")

        free_lam, free_mean = calibrate(1e15)  # no real limit: the most accurate picks
        assert free_lam == 0.0
        tight = PROBE_FLOPS + (free_mean - PROBE_FLOPS) / 3
        lam, mean = calibrate(tight)
        assert lam > 0.0
        assert mean <= tight
        mid_lam, mid_mean = calibrate((tight + free_mean) / 2)
        assert 0.0 <= mid_lam <= lam
        assert mean <= mid_mean <= free_mean
        # below the probe's own cost nothing fits: the cheapest picks, and what they cost
        cheap_lam, cheap_mean = calibrate(PROBE_FLOPS / 2)
        assert cheap_lam >= lam
        assert PROBE_FLOPS / 2 < cheap_mean <= mean
    finally:
        store.close()


def test_mean_budget_needs_a_trained_router_and_questions(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        router = Router(world_settings(tmp_path), store)
        with pytest.raises(RouterError, match="trained router"):
            lam_for_mean(router, [{"probe_agreement": 1.0}], 1e10, probe_cost=PROBE_FLOPS)
        log_to_store(store, synthetic_log(80))
        trained = train_router(records_from_store(store), model_params=FAST, holdout=0)
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        with pytest.raises(RouterError, match="no questions"):
            lam_for_mean(router, [], 1e10, probe_cost=PROBE_FLOPS)
    finally:
        store.close()


def test_a_served_lam_is_priced_in_its_own_unit_not_the_budgets(tmp_path: Path) -> None:
    """A lam calibrated per token is served per token: with no budget (a mean budget has
    no per-question cap) the router's picks are the token-priced ones, not FLOP-priced."""
    store = open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        log_to_store(store, synthetic_log(80))
        trained = train_router(  # always probes: this test is about the unit alone
            records_from_store(store), model_params=FAST, holdout=0, select_modes=False
        )
        register(store, trained.router, tmp_path / "routers", trained.metrics)
        rng = random.Random(7)
        sample = [probe_features(rng.random(), rng) for _ in range(40)]
        calibrating = Router(world_settings(tmp_path), store)
        free = lam_for_mean(calibrating, sample, 1e15, probe_cost=0.0, unit="tokens")[1]
        lam, _ = lam_for_mean(calibrating, sample, free / 2, probe_cost=0.0, unit="tokens")
        assert lam > 0.0
        served = Router(world_settings(tmp_path), store, lam=lam)
        assert served.lam_unit == "tokens"
        now = served.current()
        assert now.trained is not None
        cands = served.candidates(now)
        configs = [c.config for c in cands]
        per_token, per_flop = [], []
        for features in sample:
            acc = [float(a) for a in now.trained.model.predict_accuracy(features, configs)]
            per_token.append(pick(cands, acc, Budget(), lam=lam, unit="tokens").config.key())
            per_flop.append(pick(cands, acc, Budget(), lam=lam, unit="flops").config.key())
        got = [served.choose(f, Budget(), current=now).config.key() for f in sample]
        assert got == per_token
        assert got != per_flop  # the two units disagree here, so the check can fail
    finally:
        store.close()
