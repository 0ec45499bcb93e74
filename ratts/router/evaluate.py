"""Offline evaluation of the router against baselines at matched mean compute.

Setup. Problems (never rows) are split train/test with a seed. The router is trained on the
train problems' runs. It is evaluated on the test problems for which the log holds every
candidate config and the router's probe, so any choice can be scored from the log: the
realized correctness and compute of the chosen config on that problem.

Methods, each a set of (mean compute, accuracy) points over the test problems:
- router: the served router (``ratts.router.train.fit_router`` and its cross-fitted rules,
  fitted on the train problems as ``ratts router train`` fits them). For a sweep of lambda
  (a mean-compute budget's Lagrange multiplier), each problem gets argmax_c P(correct |
  features, c) - lambda x predicted cost(c), ties to the cheaper, under the rule the router
  serves at that lambda (``ratts.router.modes``). Where the rule probes, its compute
  includes the probe and configs that reuse the probe's samples are charged for the N - k
  samples they still draw (their logged cost x (N - k) / N), in prediction and in realized
  cost alike; where it does not, there is no probe to pay for;
- fixed configs: every candidate config on every problem; "best fixed" is the best of them
  at a compute level (chosen on the test set itself, which favours the baseline);
- majority vote: the fixed majority configs;
- oracle bins (the paper's rule with oracle difficulty): Pass@1 from the log bins each
  problem (easy 50-100%, medium 10-50%, hard 0-10%); for each per-query budget B, each bin
  uses the config with the best accuracy on the *training* problems of that bin among
  those whose mean cost in that bin is <= B (ties to the cheaper);
- oracle bins + lambda: the same bins, choosing argmax accuracy_bin - lambda x cost_bin, so
  compute can move between bins (a stronger baseline than the paper's rule);
- per-problem oracle: every problem runs its cheapest config, and problems are upgraded to
  their cheapest correct config in order of extra cost, for as long as the mean allows.

Matched mean compute. Each method's points define a frontier F(m) = best accuracy among its
points with mean compute <= m. The table takes router points spread over its compute range
and reads every baseline's frontier at the router's *realized* mean compute, so a baseline
is never given less compute than the router used.

Pass@1 is that of one policy, as in the paper (default: the probe's policy, the cheapest
one): from its probe rows with k >= ``pass1_min_k`` whose samples were graded (the
``label_pass_at_1`` feature); without any, from the fraction of candidate configs that
solved the problem (reported as such).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ratts.errors import RouterError
from ratts.router.candidates import pick as choose
from ratts.router.candidates import record_config
from ratts.router.features import PASS_AT_1
from ratts.router.modes import PROBE, Mode
from ratts.router.router import ProbeSpec, price_after_probe
from ratts.router.splits import text_key
from ratts.router.train import (
    COST_FIELD,
    Record,
    default_probe,
    fit_with_rules,
    probe_index,
    probe_spec_of,
    question_texts,
    split_probes,
    split_problems,
    with_features,
)
from ratts.strategies.reuse import remaining_fraction
from ratts.types import Budget, RunConfig, StrategyParams

Unit = Literal["tokens", "flops", "usd"]
BINS = (("easy", 0.5, 1.0), ("medium", 0.1, 0.5), ("hard", 0.0, 0.1))
METHODS = (
    "router",
    "best fixed",
    "majority vote",
    "oracle bins (paper rule)",
    "oracle bins + lambda",
    "per-problem oracle",
)


@dataclass(frozen=True, slots=True)
class EvalConfig:
    seed: int = 0
    test_fraction: float = 0.3
    unit: Unit = "flops"
    probe: ProbeSpec | None = None
    pass1_min_k: int = 16
    pass1_policy: str | None = None  # None: the probe's policy (the paper bins by its policy)
    lambdas: int = 120
    levels: int = 8
    min_coverage: float = 0.5
    model_params: Mapping[str, Any] | None = None
    use_meta: bool = False  # metadata features: off, as the server sees bare questions


@dataclass(frozen=True, slots=True)
class Point:
    compute: float
    accuracy: float
    label: str = ""


@dataclass(slots=True)
class EvalReport:
    config: dict[str, Any]
    counts: dict[str, Any]
    pass1_source: str
    curves: dict[str, list[Point]]
    fixed: list[Point]
    table: list[dict[str, Any]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "simulated_or_real": "see the caller (bench/router_sim.py runs on ratts.sim)",
            "config": self.config,
            "counts": self.counts,
            "pass1_source": self.pass1_source,
            "summary": self.summary,
            "table": self.table,
            "curves": {k: [asdict(p) for p in v] for k, v in self.curves.items()},
            "fixed_configs": [asdict(p) for p in self.fixed],
            "notes": self.notes,
        }


# ---------------------------------------------------------------- frontiers


def pareto(points: Sequence[Point]) -> list[Point]:
    """Points not beaten by a cheaper-or-equal point, by increasing compute."""
    out: list[Point] = []
    for p in sorted(points, key=lambda q: (q.compute, -q.accuracy)):
        if not out or p.accuracy > out[-1].accuracy:
            out.append(p)
    return out


def frontier_at(points: Sequence[Point], compute: float) -> Point | None:
    """The most accurate point using at most ``compute`` (relative tolerance 1e-9)."""
    ok = [p for p in points if p.compute <= compute * (1 + 1e-9)]
    if not ok:
        return None
    return max(ok, key=lambda p: (p.accuracy, -p.compute))


def _argbest(scores: NDArray[np.float64], costs: NDArray[np.float64]) -> NDArray[np.intp]:
    """Row-wise argmax of ``scores`` with ties (1e-12) going to the lower ``costs``."""
    best = scores.max(axis=1, keepdims=True)
    tied = scores >= best - 1e-12
    masked = np.where(tied, np.broadcast_to(costs, scores.shape), np.inf)
    return np.asarray(masked.argmin(axis=1), dtype=np.intp)


# ---------------------------------------------------------------- the evaluation


@dataclass(slots=True)
class _Data:
    configs: list[RunConfig]
    test_ids: list[str]
    train_runs: list[Record]
    y: NDArray[np.float64]  # test problems x configs: realized correctness
    cost: NDArray[np.float64]  # realized cost
    probe_cost: NDArray[np.float64]  # per test problem
    features: list[dict[str, Any]]
    pass1: dict[str, float]
    spec: ProbeSpec
    probe_params: StrategyParams
    counts: dict[str, Any]
    train_probes: list[Record]


def _pass1(
    runs: Sequence[Record],
    probes: Sequence[Record],
    configs: Sequence[RunConfig],
    min_k: int,
    policy: str,
) -> tuple[dict[str, float], str]:
    labelled: dict[str, list[float]] = defaultdict(list)
    for rec in probes:
        spec = probe_spec_of(rec)
        value = (rec.get("features") or {}).get(PASS_AT_1)
        if spec.policy == policy and spec.k >= min_k and isinstance(value, int | float):
            labelled[str(rec["problem_id"])].append(float(value))
    if labelled:
        source = f"Pass@1 of {policy} from its graded probe samples (k >= {min_k})"
        return {pid: fmean(v) for pid, v in labelled.items()}, source
    keys = {c.key() for c in configs}
    solved: dict[str, list[float]] = defaultdict(list)
    for rec in runs:
        if record_config(rec).key() in keys and rec.get("correct") is not None:
            solved[str(rec["problem_id"])].append(float(bool(rec["correct"])))
    return (
        {pid: fmean(v) for pid, v in solved.items()},
        "fraction of candidate configs that solved the problem (no graded probe samples)",
    )


def _bin(rate: float) -> str:
    if rate >= 0.5:
        return "easy"
    if rate >= 0.1:
        return "medium"
    return "hard"


def _prepare(records: Sequence[Record], cfg: EvalConfig) -> _Data:
    field_name = COST_FIELD[cfg.unit]
    runs, probes = split_probes(records)
    spec = cfg.probe or default_probe(probes)
    if spec is None:
        raise RouterError("the log holds no probe rows: run `ratts router probe` first")
    index = probe_index(probes, spec)
    graded = [r for r in runs if r.get("correct") is not None]
    by_config: dict[str, set[str]] = defaultdict(set)
    config_of: dict[str, RunConfig] = {}
    for rec in graded:
        config = record_config(rec)
        config_of[config.key()] = config
        by_config[config.key()].add(str(rec["problem_id"]))
    if not by_config:
        raise RouterError("the log holds no graded runs to evaluate on")
    most = max(len(v) for v in by_config.values())
    keys = sorted(
        (k for k, v in by_config.items() if len(v) >= cfg.min_coverage * most),
        key=lambda k: config_of[k].label(),
    )
    configs = [config_of[k] for k in keys]
    featured = {str(r["problem_id"]) for r in graded} & set(index)
    texts = question_texts(graded)
    train_ids, test_ids = split_problems(featured, cfg.test_fraction, cfg.seed, texts)
    # one test problem per text: a question logged under two ids is counted once
    test_ids = set({text_key(texts.get(pid) or pid): pid for pid in sorted(test_ids)}.values())
    cell: dict[tuple[str, str], Record] = {}
    for rec in graded:
        cell[(str(rec["problem_id"]), record_config(rec).key())] = rec
    complete = sorted(pid for pid in test_ids if all((pid, k) in cell for k in keys))
    if not complete:
        raise RouterError(
            "no held-out problem has every candidate config logged; log all configs on the "
            "same problems (ratts sweep) and retry"
        )
    train_runs = with_features(
        [r for r in graded if str(r["problem_id"]) in train_ids],
        probes,
        spec,
        use_meta=cfg.use_meta,
    )
    y = np.array([[float(bool(cell[(pid, k)]["correct"])) for k in keys] for pid in complete])
    cost = np.array([[float(cell[(pid, k)][field_name] or 0.0) for k in keys] for pid in complete])
    probe_cost = np.array([float(index[pid][field_name] or 0.0) for pid in complete])
    # the test problems' features built as training builds them (text + probe row)
    test_runs = with_features(
        [cell[(pid, keys[0])] for pid in complete], probes, spec, use_meta=cfg.use_meta
    )
    feats = [dict(r["features"]) for r in test_runs]
    pass1, source = _pass1(
        graded, probes, configs, cfg.pass1_min_k, cfg.pass1_policy or spec.policy
    )
    counts = {
        "problems_with_probe": len(featured),
        "train_problems": len(train_ids),
        "test_problems": len(complete),
        "test_problems_incomplete": len(test_ids) - len(complete),
        "train_rows": len(train_runs),
        "candidate_configs": len(configs),
        "probe": spec.as_dict(),
        "pass1_source": source,
    }
    first = next(iter(index.values()))
    params = StrategyParams.model_validate(first.get("params") or {})
    train_probes = [p for p in probes if str(p["problem_id"]) in train_ids]
    return _Data(
        configs,
        complete,
        train_runs,
        y,
        cost,
        probe_cost,
        feats,
        pass1,
        spec,
        params,
        counts,
        train_probes,
    )


def evaluate(records: Sequence[Record], cfg: EvalConfig | None = None) -> EvalReport:
    """Train on the train problems, compare methods on the held-out ones (module docstring)."""
    cfg = cfg or EvalConfig()
    data = _prepare(records, cfg)
    configs = data.configs
    # the served router: its models and its rules (probe / blind / fixed per lam),
    # fitted on the train problems exactly as ``ratts router train`` fits them
    params = {"random_state": cfg.seed, **(cfg.model_params or {})}
    trained, _ = fit_with_rules(data.train_runs, data.train_probes, data.spec, None, params)
    k = data.spec.k
    # priced as the served router prices them: the one pricing rule, probe reuse included
    listed = trained.cost_model().candidates(configs)
    priced = price_after_probe(listed, data.spec.policy, k, data.probe_params)
    predicted = np.array([c.cost.value(cfg.unit) for c in listed])
    effective_pred = np.array([c.cost.value(cfg.unit) for c in priced])
    share = np.array(
        [remaining_fraction(c, data.spec.policy, k, data.probe_params) for c in configs]
    )
    n_test = len(data.test_ids)
    proba: dict[Mode, NDArray[np.float64]] = {}

    def predicted_for(rule: Mode) -> NDArray[np.float64]:
        if rule not in proba:
            proba[rule] = np.array([trained.accuracies(rule, f, configs) for f in data.features])
        return proba[rule]

    after_probe = data.cost * share[None, :] + data.probe_cost[:, None]
    column = {c.key(): j for j, c in enumerate(configs)}

    curves: dict[str, list[Point]] = {}
    # router: a lambda sweep, each lambda decided by the rule the router serves there
    positive = effective_pred[effective_pred > 0]
    lo = 1e-4 / float(predicted.max()) if predicted.max() > 0 else 1e-12
    hi = 10.0 / float(positive.min()) if positive.size else 1.0
    lambdas = [0.0, *np.geomspace(lo, hi, cfg.lambdas).tolist()]
    router_points = []
    rows_idx = np.arange(n_test)
    for lam in lambdas:
        rule = trained.mode_for(lam, cfg.unit)
        cands, realized = (priced, after_probe) if rule == PROBE else (listed, data.cost)
        acc = predicted_for(rule)
        # the router's own decision function (``pick``), with no per-query budget
        pick = np.array(
            [
                column[
                    choose(
                        cands, [float(a) for a in acc[i]], Budget(), lam=lam, unit=cfg.unit
                    ).config.key()
                ]
                for i in range(n_test)
            ]
        )
        router_points.append(
            Point(
                float(realized[rows_idx, pick].mean()),
                float(data.y[rows_idx, pick].mean()),
                f"lambda={lam:.3g} ({rule} rule)",
            )
        )
    curves["router"] = pareto(router_points)

    fixed = [
        Point(float(data.cost[:, j].mean()), float(data.y[:, j].mean()), c.label())
        for j, c in enumerate(configs)
    ]
    curves["best fixed"] = pareto(fixed)
    curves["majority vote"] = pareto(
        [p for p, c in zip(fixed, configs, strict=True) if c.strategy == "majority"]
    )

    # oracle difficulty bins, chosen on the training problems
    test_bins = [_bin(data.pass1.get(pid, 0.0)) for pid in data.test_ids]
    train_acc, train_cost = _bin_tables(data.train_runs, configs, data.pass1, cfg.unit)
    budgets = sorted({float(v) for table in train_cost.values() for v in table})
    paper_points = []
    for budget in budgets:
        choice = {b: _best_within(train_acc[b], train_cost[b], budget) for b in train_acc}
        paper_points.append(_score_bins(choice, test_bins, data, f"B={budget:.3g}"))
    curves["oracle bins (paper rule)"] = pareto(paper_points)
    lam_points = []
    all_costs = np.concatenate([train_cost[b] for b in train_cost])
    lo_b = 1e-4 / float(all_costs.max()) if all_costs.max() > 0 else 1e-12
    hi_b = 10.0 / float(all_costs[all_costs > 0].min()) if (all_costs > 0).any() else 1.0
    for lam in [0.0, *np.geomspace(lo_b, hi_b, cfg.lambdas).tolist()]:
        choice = {
            b: int(_argbest((train_acc[b] - lam * train_cost[b])[None, :], train_cost[b])[0])
            for b in train_acc
        }
        lam_points.append(_score_bins(choice, test_bins, data, f"lambda={lam:.3g}"))
    curves["oracle bins + lambda"] = pareto(lam_points)
    curves["per-problem oracle"] = _oracle_points(data)

    table, summary = _compare(curves, cfg.levels)
    bins_count = {b: test_bins.count(b) for b, _, _ in BINS}
    notes = [
        "compute is the mean per test problem of "
        + {"tokens": "policy + PRM tokens", "flops": "FLOPs (policy + PRM)", "usd": "dollars"}[
            cfg.unit
        ],
        "router compute includes its probe where its rule probes; best fixed is picked on "
        "the test set",
        f"a probe costs {data.probe_cost.mean():.3g} {cfg.unit} per problem on average",
        "frontiers are step functions: a method is read at its best point using at most the "
        "router's realized mean compute",
    ]
    counts = {**data.counts, "test_bins": bins_count}
    return EvalReport(
        config={
            "seed": cfg.seed,
            "test_fraction": cfg.test_fraction,
            "unit": cfg.unit,
            "pass1_min_k": cfg.pass1_min_k,
        },
        counts=counts,
        pass1_source=str(data.counts["pass1_source"]),
        curves=curves,
        fixed=fixed,
        table=table,
        summary=summary,
        notes=notes,
    )


def _bin_tables(
    train_runs: Sequence[Record],
    configs: Sequence[RunConfig],
    pass1: Mapping[str, float],
    unit: Unit,
) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    """Per difficulty bin: training accuracy and mean cost of each config (overall values
    stand in for a bin with no training runs of a config)."""
    field_name = COST_FIELD[unit]
    index = {c.key(): j for j, c in enumerate(configs)}
    acc: dict[str, list[list[float]]] = {b: [[] for _ in configs] for b, _, _ in BINS}
    cost: dict[str, list[list[float]]] = {b: [[] for _ in configs] for b, _, _ in BINS}
    overall_acc: list[list[float]] = [[] for _ in configs]
    overall_cost: list[list[float]] = [[] for _ in configs]
    for rec in train_runs:
        j = index.get(record_config(rec).key())
        pid = str(rec["problem_id"])
        if j is None or pid not in pass1:
            continue
        b = _bin(pass1[pid])
        ok, spent = float(bool(rec["correct"])), float(rec[field_name] or 0.0)
        acc[b][j].append(ok)
        cost[b][j].append(spent)
        overall_acc[j].append(ok)
        overall_cost[j].append(spent)

    def mean(values: list[float], fallback: list[float]) -> float:
        if values:
            return fmean(values)
        return fmean(fallback) if fallback else 0.0

    acc_t = {
        b: np.array([mean(acc[b][j], overall_acc[j]) for j in range(len(configs))]) for b in acc
    }
    cost_t = {
        b: np.array([mean(cost[b][j], overall_cost[j]) for j in range(len(configs))]) for b in cost
    }
    return acc_t, cost_t


def _best_within(acc: NDArray[np.float64], cost: NDArray[np.float64], budget: float) -> int:
    fits = cost <= budget * (1 + 1e-9)
    if not fits.any():
        return int(cost.argmin())
    score = np.where(fits, acc, -np.inf)
    return int(_argbest(score[None, :], cost)[0])


def _score_bins(choice: Mapping[str, int], bins: Sequence[str], data: _Data, label: str) -> Point:
    cols = np.array([choice[b] for b in bins])
    rows = np.arange(len(bins))
    return Point(float(data.cost[rows, cols].mean()), float(data.y[rows, cols].mean()), label)


def _oracle_points(data: _Data) -> list[Point]:
    """Cheapest config everywhere, then upgrades to the cheapest correct config by extra cost."""
    n = len(data.test_ids)
    floor = data.cost.argmin(axis=1)
    rows = np.arange(n)
    base_cost = data.cost[rows, floor]
    base_ok = data.y[rows, floor]
    extras = []
    for i in range(n):
        if base_ok[i]:
            continue
        correct = np.flatnonzero(data.y[i] > 0)
        if correct.size:
            extras.append(float(data.cost[i, correct].min() - base_cost[i]))
    extras.sort()
    total, solved = float(base_cost.sum()), float(base_ok.sum())
    points = [Point(total / n, solved / n, "cheapest everywhere")]
    for extra in extras:
        total += extra
        solved += 1
        points.append(Point(total / n, solved / n, "upgrade"))
    return pareto(points)


def _compare(
    curves: Mapping[str, Sequence[Point]], levels: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table at router points spread over its compute range, and the summary."""
    router = list(curves["router"])
    if not router:
        return [], {}
    if len(router) <= levels:
        chosen = router
    else:
        logs = np.log([max(p.compute, 1e-300) for p in router])
        targets = np.linspace(logs[0], logs[-1], levels)
        picks = sorted({int(np.abs(logs - t).argmin()) for t in targets})
        chosen = [router[i] for i in picks]
    table = []
    for p in chosen:
        row: dict[str, Any] = {"compute": p.compute, "router": p.accuracy}
        for name in METHODS[1:]:
            best = frontier_at(curves[name], p.compute)
            row[name] = best.accuracy if best is not None else None
            if name == "best fixed":
                row["best fixed config"] = best.label if best is not None else None
        table.append(row)

    def gaps(name: str) -> list[float]:
        return [r["router"] - r[name] for r in table if r[name] is not None]

    vs_fixed = gaps("best fixed")
    vs_bins = gaps("oracle bins (paper rule)")
    vs_lam = gaps("oracle bins + lambda")
    summary = {
        "levels": len(table),
        "router_beats_best_fixed_at": sum(g > 0 for g in vs_fixed),
        "router_below_best_fixed_at": sum(g < 0 for g in vs_fixed),
        "mean_gain_vs_best_fixed": fmean(vs_fixed) if vs_fixed else None,
        "max_gain_vs_best_fixed": max(vs_fixed) if vs_fixed else None,
        "worst_gap_to_oracle_bins": -min(vs_bins) if vs_bins else None,
        "mean_gap_to_oracle_bins": -fmean(vs_bins) if vs_bins else None,
        "worst_gap_to_oracle_bins_lambda": -min(vs_lam) if vs_lam else None,
        "within_3_points_of_oracle_bins": bool(vs_bins) and min(vs_bins) >= -0.03,
    }
    return table, summary
