"""A mean budget instead of a per-query one: the router's Lagrange multiplier.

A per-query budget makes the router spend up to the limit on every question, even on one it
predicts no config can solve. The compute-optimal allocation (the paper's point) is to cap
the *mean*: maximise mean accuracy subject to mean cost <= B. Its solution is a per-query
rule, argmax_c P(correct | q, c) - lam x cost(c), with the smallest lam whose mean cost fits
B. ``lam_for_mean`` finds that lam on a sample of questions like the ones to come (e.g. the
router's training problems, with their probe features), using the router's own decision
function and pricing, so what it calibrates is exactly what ``Orchestrator(lam=...)`` serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ratts.errors import RouterError
from ratts.router.candidates import CostUnit, pick
from ratts.router.modes import PROBE, Mode
from ratts.router.router import Current, Router, price_after_probe
from ratts.types import Budget

GRID = 80


def lam_for_mean(
    router: Router,
    features: Sequence[Mapping[str, Any]],
    mean_limit: float,
    *,
    probe_cost: float,
    unit: CostUnit = "tokens",
    current: Current | None = None,
    policy: str | None = None,
    prm: str | None = None,
) -> tuple[float, float]:
    """(lam, the mean cost it predicts): the smallest lam on a geometric grid whose picks
    over ``features`` cost at most ``mean_limit`` per question on average, the probe's
    ``probe_cost`` included where the served rule at that lam probes (``Router.rule``; the
    largest lam on the grid when none fits: the cheapest picks).

    RouterError without a trained router (the cold-start rule predicts no accuracy to trade)
    or without questions to calibrate on.
    """
    now = current if current is not None else router.current()
    if now.trained is None:
        raise RouterError("a mean budget needs a trained router (the cold start has no lam)")
    if not features:
        raise RouterError("no questions to calibrate the mean budget on")
    spec = router.probe_spec(now, policy, prm)
    fresh = router.candidates(now, policy=policy, prm=prm)
    after = price_after_probe(fresh, spec.policy, spec.k, spec.params)
    configs = [c.config for c in fresh]
    trained = now.trained
    accuracy: dict[Mode, list[list[float]]] = {}

    def predicted(rule: Mode) -> list[list[float]]:
        if rule not in accuracy:
            accuracy[rule] = [trained.accuracies(rule, f, configs) for f in features]
        return accuracy[rule]

    costs = np.array([c.cost.value(unit) for c in (*fresh, *after)])
    positive = costs[costs > 0]
    if positive.size == 0:  # everything is free: nothing to trade
        return 0.0, probe_cost
    grid = [0.0, *np.geomspace(1e-4 / costs.max(), 10.0 / positive.min(), GRID).tolist()]
    mean = probe_cost
    for lam in grid:
        rule = router.rule(now, lam, unit)  # the served rule at this lam: probe or not
        cands = after if rule == PROBE else fresh
        picks = [pick(cands, row, Budget(), lam=lam, unit=unit) for row in predicted(rule)]
        spent = probe_cost if rule == PROBE else 0.0
        mean = spent + float(np.mean([p.predicted_cost.value(unit) for p in picks]))
        if mean <= mean_limit:
            return lam, mean
    return grid[-1], mean
