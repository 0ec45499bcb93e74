"""Off-policy estimates from logged routed runs: how would a router have done on the
questions users actually sent, without running it again?

Each routed run logs the candidates it weighed (with predicted costs and whether they fit
what was left of the budget), the config it chose and that choice's propensity (``pick``).
For a deterministic target router pi, with logged choice a_i, reward r_i (graded correct)
and propensity p_i:

- IPS = (1/n) sum 1[pi(x_i) = a_i] r_i / p_i  (unbiased when every p_i > 0 is right);
- SNIPS = sum w_i r_i / sum w_i, w_i = 1[pi(x_i) = a_i] / p_i  (biased, far less variance).

Only rows whose answer came from the chosen strategy count (rows answered by the probe
say nothing about the config); rows without a decision log (sweeps) are not routed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ratts.router.features import ROUTING, without_meta

Record = dict[str, Any]
# features, candidate entries that fit the logged budget -> the label the target would run
Target = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], str | None]


@dataclass(frozen=True, slots=True)
class OffPolicy:
    routed_rows: int
    matched: int  # rows where the target would have chosen the logged config
    ips: float | None
    snips: float | None
    logged_accuracy: float | None  # the logging policy's own accuracy on those rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def routed_rows(records: Sequence[Record]) -> list[Record]:
    """Graded routed runs whose answer is the chosen strategy's."""
    out = []
    for rec in records:
        log = (rec.get("features") or {}).get(ROUTING)
        if not isinstance(log, Mapping) or rec.get("correct") is None:
            continue
        if rec.get("source") == "routed_probe":
            continue
        out.append(rec)
    return out


def estimate(records: Sequence[Record], target: Target) -> OffPolicy:
    """IPS and SNIPS of ``target`` on the routed rows of ``records``."""
    rows = routed_rows(records)
    weights: list[float] = []
    rewards: list[float] = []
    matched = 0
    for rec in rows:
        features = rec.get("features") or {}
        log = features[ROUTING]
        fitting = [c for c in log.get("candidates") or [] if c.get("fits_budget")]
        choice = target(without_meta(features), fitting)
        p = float(log.get("propensity") or 1.0)
        hit = choice is not None and choice == log.get("chosen")
        matched += int(hit)
        weights.append(1.0 / p if hit else 0.0)
        rewards.append(float(bool(rec["correct"])))
    n = len(rows)
    if n == 0:
        return OffPolicy(0, 0, None, None, None)
    total_w = sum(weights)
    ips = sum(w * r for w, r in zip(weights, rewards, strict=True)) / n
    snips = sum(w * r for w, r in zip(weights, rewards, strict=True)) / total_w if total_w else None
    return OffPolicy(n, matched, ips, snips, sum(rewards) / n)


def trained_target(trained: Any) -> Target:
    """The target policy of a TrainedRouter: the highest predicted accuracy among the
    logged candidates it knows (ties to the cheaper), within the logged budget."""
    by_label = {c.label(): c for c in trained.run_configs()}

    def choose(features: Mapping[str, Any], fitting: Sequence[Mapping[str, Any]]) -> str | None:
        known = [c for c in fitting if c.get("config") in by_label]
        if not known:
            return None
        configs = [by_label[str(c["config"])] for c in known]
        acc = trained.model.predict_accuracy(features, configs)
        costs = [float((c.get("predicted_cost") or {}).get("tokens") or 0.0) for c in known]
        best = max(
            range(len(known)),
            key=lambda i: (round(float(acc[i]), 9), -costs[i] if math.isfinite(costs[i]) else 0),
        )
        return str(known[best]["config"])

    return choose
