"""Training the router from the run log.

The modelling works on plain records (one dict per run: problem_id, dataset, question,
features, policy, prm, strategy, params, budget, correct, token/FLOP/dollar columns), so it
is tested on synthetic logs; the store is reached only through the thin adapters here.

Where features come from: a run logged by ``solve`` carries its own probe features; runs
logged by ``ratts sweep`` do not, so the probe is logged once per problem as a run of the
``probe`` strategy (``ratts.orchestrator.sweep.collect_probes``: k samples of the probe
policy, PRM-scored, with the fraction graded correct kept as ``label_pass_at_1``, which is
never a model input). Training joins each run to its problem's probe row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from ratts.errors import RouterError
from ratts.router import ProbeSpec
from ratts.router.candidates import CandidateConfig, CostModel, CostUnit, pick, record_config
from ratts.router.features import ROUTING, text_features, without_meta
from ratts.router.model import DEFAULT_NUMERIC, MIN_ROWS, RouterModel, TrainedRouter, design_row
from ratts.router.modes import MODES, PROBE, ModeTable, paired_margins
from ratts.router.modes import grid as modes_grid
from ratts.router.modes import summary as modes_summary
from ratts.router.registry import register
from ratts.router.router import price_after_probe
from ratts.router.splits import split_keys, text_key
from ratts.settings import Settings
from ratts.store import Store
from ratts.strategies.probe import PROBE as PROBE_NAME
from ratts.strategies.probe import PROBE_NUMERIC
from ratts.strategies.reuse import remaining_fraction
from ratts.types import Budget, Problem, StrategyParams

PROBE_STRATEGY = PROBE_NAME  # the strategy name of probe rows
Record = dict[str, Any]


# ---------------------------------------------------------------- reading the log


SWEEP, ROUTED, ROUTED_PROBE = "sweep", "routed", "routed_probe"
MAX_WEIGHT = 20  # inverse-propensity weights are capped (variance) at this many copies


def run_source(features: Mapping[str, Any]) -> tuple[str, float]:
    """(where a logged run came from, its propensity). ``routed_probe``: a routed run whose
    answer is the probe's (the strategy drew nothing, or the deadline left the probe's)."""
    log = features.get(ROUTING)
    if not isinstance(log, Mapping):
        return SWEEP, 1.0
    strategy = log.get("strategy_usage") or {}
    probe_only = log.get("answer_source") == "probe" or not strategy.get("tokens")
    propensity = float(log.get("propensity") or 1.0)
    return (ROUTED_PROBE if probe_only else ROUTED), min(1.0, max(propensity, 1e-6))


def _strategy_share(row: Mapping[str, Any], features: Mapping[str, Any]) -> dict[str, float]:
    """The usage columns of what the strategy itself spent: a routed run's row holds the
    probe too, and the probe is priced apart (``Router``), so it is taken out here."""
    log = features.get(ROUTING)
    probe = (log.get("probe_usage") or {}) if isinstance(log, Mapping) else {}
    prompt = row["policy_prompt_tokens"] - int(probe.get("prompt_tokens", 0))
    completion = row["policy_completion_tokens"] - int(probe.get("completion_tokens", 0))
    prm = row["prm_tokens"] - int(probe.get("prm_tokens", 0))
    return {
        "policy_prompt_tokens": prompt,
        "policy_completion_tokens": completion,
        "prm_tokens": prm,
        "tokens": prompt + completion + prm,
        "flops": row["flops"] - float(probe.get("flops", 0.0)),
        "dollars": row["dollars"] - float(probe.get("dollars", 0.0)),
    }


def records_from_store(store: Store, *, dataset: str | None = None) -> list[Record]:
    """Every successful run as a plain record (the adapter between store and modelling).

    A routed run's cost columns are its strategy's share (the probe taken out), and
    ``source``/``propensity`` say where it came from (``run_source``)."""
    out: list[Record] = []
    for row in store.runs(dataset=dataset, include_failed=False):
        features = row["features"] or {}
        source, propensity = run_source(features)
        out.append(
            {
                "problem_id": row["problem_key"],
                "dataset": row["dataset"],
                "question": row["question"],
                "meta": row["problem_meta"] or {},
                "features": features,
                "policy": row["policy"],
                "prm": row["prm"],
                "strategy": row["strategy"],
                "params": row["params"] or {},
                "budget": row["budget"],
                "correct": row["correct"],
                "source": source,
                "propensity": propensity,
                **_strategy_share(row, features),
            }
        )
    return out


def split_probes(records: Iterable[Record]) -> tuple[list[Record], list[Record]]:
    """(strategy runs, probe rows)."""
    runs: list[Record] = []
    probes: list[Record] = []
    for rec in records:
        (probes if rec["strategy"] == PROBE_STRATEGY else runs).append(rec)
    return runs, probes


def probe_spec_of(rec: Record) -> ProbeSpec:
    """The probe a probe row ran, with its sampling params (so solve probes alike)."""
    raw = dict(rec.get("params") or {})
    params = StrategyParams.model_validate(raw) if raw else None
    return ProbeSpec(str(rec["policy"]), rec.get("prm"), int(raw.get("n", 0)), params)


def default_probe(probes: Sequence[Record]) -> ProbeSpec | None:
    """The probe covering the most problems (ties: the smallest k, then by name)."""
    cover: dict[ProbeSpec, set[str]] = defaultdict(set)
    for rec in probes:
        cover[probe_spec_of(rec)].add(str(rec["problem_id"]))
    if not cover:
        return None
    return min(cover, key=lambda s: (-len(cover[s]), s.k, s.policy, s.prm or ""))


def probe_index(probes: Iterable[Record], spec: ProbeSpec) -> dict[str, Record]:
    """problem_id -> its probe row of ``spec``."""

    def same(row: ProbeSpec) -> bool:  # a spec without params matches any sampling
        if spec.params is None:
            return (row.policy, row.prm, row.k) == (spec.policy, spec.prm, spec.k)
        return row == spec

    return {str(r["problem_id"]): r for r in probes if same(probe_spec_of(r))}


def with_features(
    runs: Iterable[Record],
    probes: Sequence[Record],
    spec: ProbeSpec | None,
    *,
    use_meta: bool = False,
) -> list[Record]:
    """Runs whose ``features`` are complete: their own (when they carry probe features, as
    ``solve`` logs them), else their problem's probe row, else text features alone.
    Metadata features (level, dataset, subject) only with ``use_meta``: the server sees
    a bare question, so by default the router learns and is scored without them."""
    index = probe_index(probes, spec) if spec is not None else {}
    out: list[Record] = []
    for rec in runs:
        own = rec.get("features") or {}
        if any(k.startswith("probe_") for k in own):
            features = dict(own)
        else:
            problem = Problem(
                id=str(rec["problem_id"]),
                question=str(rec.get("question") or ""),
                meta=rec.get("meta") or {},
            )
            features = {**text_features(problem), **own}
            row = index.get(str(rec["problem_id"]))
            if row is not None:
                features.update(row.get("features") or {})
        out.append({**rec, "features": features if use_meta else without_meta(features)})
    return out


# ---------------------------------------------------------------- training


@dataclass(slots=True)
class TrainResult:
    router: TrainedRouter
    metrics: dict[str, Any]


def weight_of(rec: Record) -> int:
    """Copies of a record in the fit: 1 for sweep rows (every config ran: no selection
    bias), round(1/propensity) for routed rows, capped at MAX_WEIGHT. Replication rather
    than sample weights, because the calibrated pipeline does not pass weights through."""
    if rec.get("source") != ROUTED:
        return 1
    return max(1, min(MAX_WEIGHT, round(1.0 / float(rec.get("propensity") or 1.0))))


def weighted(records: Sequence[Record]) -> list[Record]:
    """``records`` with each routed row repeated ``weight_of`` times (same problem group)."""
    return [r for r in records for _ in range(weight_of(r))]


def design(records: Sequence[Record]) -> tuple[list[dict[str, Any]], list[bool], list[str]]:
    """Model rows, labels and problem groups of graded records."""
    rows = [design_row(r["features"], record_config(r)) for r in records]
    return rows, [bool(r["correct"]) for r in records], [str(r["problem_id"]) for r in records]


def question_texts(records: Iterable[Record]) -> dict[str, str]:
    """problem_id -> its question text (the split's grouping)."""
    return {str(r["problem_id"]): str(r.get("question") or "") for r in records}


def split_problems(
    problem_ids: Iterable[str],
    test_fraction: float,
    seed: int,
    texts: Mapping[str, str] | None = None,
) -> tuple[set[str], set[str]]:
    """(train, test) problem ids, grouped by a hash of the normalised question text (ids
    without a text in ``texts`` group alone): a question asked twice under two ids, as
    the API does, never sits on both sides."""
    ids = sorted(set(problem_ids))
    known = texts or {}
    group = {pid: text_key(known[pid]) if known.get(pid) else f"id:{pid}" for pid in ids}
    train_groups, _ = split_keys(group.values(), test_fraction, seed)
    train = {pid for pid in ids if group[pid] in train_groups}
    return train, set(ids) - train


def holdout_metrics(
    graded: Sequence[Record], model_params: Mapping[str, Any], seed: int, fraction: float
) -> dict[str, Any]:
    """Brier score, log loss and AUC on held-out problems (skipped when too small)."""
    train_ids, test_ids = split_problems(
        (r["problem_id"] for r in graded), fraction, seed, question_texts(graded)
    )
    train = [r for r in graded if r["problem_id"] in train_ids]
    test = [r for r in graded if r["problem_id"] in test_ids]
    if not test:
        return {"holdout": "skipped: too few problems"}
    try:
        rows, labels, groups = design(train)
        model = RouterModel(**model_params).fit(rows, labels, groups)
    except RouterError as exc:
        return {"holdout": f"skipped: {exc}"}
    trows, tlabels, _ = design(test)
    p = model.predict_proba(trows)[:, 1]
    y = np.asarray(tlabels, dtype=float)
    eps = 1e-6
    clipped = np.clip(p, eps, 1 - eps)
    out: dict[str, Any] = {
        "holdout_problems": len(test_ids),
        "holdout_rows": len(test),
        "holdout_brier": float(np.mean((p - y) ** 2)),
        "holdout_log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
    }
    if 0 < y.sum() < len(y):
        out["holdout_auc"] = _auc(p, y)
    return out


def _auc(p: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def blind_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for the text-only model: the same, without the probe's columns."""
    numeric = params.get("numeric") or DEFAULT_NUMERIC
    return {**params, "numeric": tuple(c for c in numeric if c not in PROBE_NUMERIC)}


def fit_router(
    graded: Sequence[Record],
    spec: ProbeSpec | None,
    settings: Settings | None,
    params: Mapping[str, Any],
) -> TrainedRouter:
    """The models of one router on ``graded`` (routed rows reweighted by 1/propensity):
    the probe model, the text-only model when there is a probe, and each config's
    training accuracy and mean cost."""
    rows, labels, groups = design(weighted(graded))
    model = RouterModel(**params).fit(rows, labels, groups)
    blind = RouterModel(**blind_params(params)).fit(rows, labels, groups) if spec else None
    by_config: dict[str, list[bool]] = defaultdict(list)
    for rec in graded:
        by_config[record_config(rec).key()].append(bool(rec["correct"]))
    accuracy = {key: sum(v) / len(v) for key, v in by_config.items()}
    configs = list({c.key(): c for c in (record_config(r) for r in graded)}.values())
    costs = CostModel.from_records(graded, settings)
    return TrainedRouter.from_parts(
        model,
        configs,
        costs,
        spec.as_dict() if spec else {},
        rows=len(graded),
        blind=blind,
        accuracy=accuracy,
    )


MIN_MODE_PROBLEMS = 12  # complete problems (probe + every config) to cross-fit the rules
MODE_FOLDS = 3
COST_FIELD = {"tokens": "tokens", "flops": "flops", "usd": "dollars"}  # unit -> record column


def cross_fit_modes(
    graded: Sequence[Record],
    probes: Sequence[Record],
    spec: ProbeSpec | None,
    settings: Settings | None,
    params: Mapping[str, Any],
    *,
    folds: int = MODE_FOLDS,
) -> dict[str, ModeTable]:
    """Per cost unit, each rule's realized value on problems its fold never trained on.

    Scored on sweep rows of "complete" problems (a probe row and a graded run of every
    config), so every rule's pick has a realized outcome: correct - lam x cost, with the
    probe's logged cost added to the probe rule and its reused configs charged their
    remaining share. (A reused config's outcome is read from its own sweep run: the same
    sampling, another draw.) Empty when too few problems are complete or a fold cannot be
    fitted; the router then always probes."""
    if spec is None:
        return {}
    index = probe_index(probes, spec)
    keys = sorted({record_config(r).key() for r in graded})
    cell = {
        (str(r["problem_id"]), record_config(r).key()): r
        for r in graded
        if r.get("source", SWEEP) == SWEEP
    }
    complete = sorted(
        pid
        for pid in {str(r["problem_id"]) for r in graded} & set(index)
        if all((pid, k) in cell for k in keys)
    )
    if len(complete) < max(MIN_MODE_PROBLEMS, folds):
        return {}
    texts = question_texts(graded)
    groups = [text_key(texts.get(pid) or pid) for pid in complete]
    units: tuple[CostUnit, ...] = ("tokens", "flops", "usd")
    costs_all = CostModel.from_records(graded, settings).candidates(
        [record_config(cell[(complete[0], k)]) for k in keys]
    )
    grids = {unit: modes_grid([c.cost.value(unit) for c in costs_all]) for unit in units}
    # realized value per unit, rule, scored problem and grid lam
    per: dict[str, dict[str, list[list[float]]]] = {u: {m: [] for m in MODES} for u in units}
    for _, test_idx in GroupKFold(n_splits=folds).split(complete, groups=groups):
        held = {complete[i] for i in test_idx}
        try:
            fold = fit_router(
                [r for r in graded if str(r["problem_id"]) not in held], spec, settings, params
            )
        except RouterError:
            return {}
        fresh = fold.candidates(settings)
        after = price_after_probe(fresh, spec.policy, spec.k, spec.params)
        share = {
            c.config.key(): remaining_fraction(c.config, spec.policy, spec.k, spec.params)
            for c in fresh
        }
        configs = [c.config for c in fresh]
        for i in test_idx:
            pid = complete[i]
            runs = {k: cell[(pid, k)] for k in keys}
            features = runs[keys[0]]["features"]
            for mode in MODES:
                acc = fold.accuracies(mode, features, configs)
                probed = mode == PROBE
                for unit in units:
                    per[unit][mode].append(
                        _realized_values(
                            after if probed else fresh,
                            acc,
                            runs,
                            unit,
                            grids[unit],
                            probe=index[pid] if probed else None,
                            share=share if probed else None,
                        )
                    )
    return {
        unit: ModeTable(
            unit=unit,
            lams=tuple(grids[unit]),
            values={m: tuple(np.mean(per[unit][m], axis=0).tolist()) for m in MODES},
            problems=len(per[unit][MODES[0]]),
            margins=paired_margins(per[unit]),
        )
        for unit in units
    }


def _realized_values(
    cands: Sequence[CandidateConfig],
    accuracy: Sequence[float],
    runs: Mapping[str, Record],
    unit: CostUnit,
    lams: Sequence[float],
    *,
    probe: Record | None,
    share: Mapping[str, float] | None,
) -> list[float]:
    """For each lam, correct - lam x cost of the config ``pick`` chooses, read from the
    problem's logged ``runs`` (config key -> run); with a ``probe``, its cost is added and
    a reused config is charged its remaining ``share``."""
    field = COST_FIELD[unit]
    probe_cost = float(probe.get(field) or 0.0) if probe is not None else 0.0
    out = []
    for lam in lams:
        key = pick(cands, accuracy, Budget(), lam=lam, unit=unit).config.key()
        run = runs[key]
        part = share[key] if share is not None else 1.0
        cost = probe_cost + float(run.get(field) or 0.0) * part
        out.append(float(bool(run["correct"])) - lam * cost)
    return out


def fit_with_rules(
    graded: Sequence[Record],
    probes: Sequence[Record],
    spec: ProbeSpec | None,
    settings: Settings | None,
    params: Mapping[str, Any],
    *,
    select_modes: bool = True,
) -> tuple[TrainedRouter, dict[str, ModeTable]]:
    """``fit_router`` plus, with ``select_modes``, its cross-fitted rules in the artifact:
    what ``ratts router train`` and ``ratts router eval`` both fit."""
    router = fit_router(graded, spec, settings, params)
    tables = cross_fit_modes(graded, probes, spec, settings, params) if select_modes else {}
    router.modes = {unit: table.as_dict() for unit, table in tables.items()}
    return router, tables


def _rules_note(tables: Mapping[str, ModeTable], spec: ProbeSpec | None, select_modes: bool) -> Any:
    if spec is None:
        return "blind: no probe rows, so it never probes"
    if tables:
        return modes_summary(tables)
    if not select_modes:
        return "always probe (rules not cross-fitted)"
    return (
        f"always probe: fewer than {MIN_MODE_PROBLEMS} problems hold a probe and every "
        "config, too few to cross-fit the rules"
    )


def train_router(
    records: Sequence[Record],
    *,
    probe: ProbeSpec | None = None,
    settings: Settings | None = None,
    seed: int = 0,
    holdout: float = 0.2,
    model_params: Mapping[str, Any] | None = None,
    use_meta: bool = False,
    select_modes: bool = True,
) -> TrainResult:
    """Fit the router on every graded run of ``records`` (probe rows supply features;
    metadata features only with ``use_meta``, see ``with_features``).

    With ``select_modes`` (and a probe), the probe / blind / fixed rules are cross-fitted on
    the training problems and the artifact keeps which serves at which lam
    (``ratts.router.modes``). Metrics come from a separate fit on (1 - holdout) of the
    problems, scored on the rest. Raises RouterError for a log with too few graded runs or
    a single outcome.
    """
    runs, probes = split_probes(records)
    spec = probe or default_probe(probes)
    featured = [
        r
        for r in with_features(runs, probes, spec, use_meta=use_meta)
        if r.get("correct") is not None
    ]
    # A routed run answered by the probe says how the probe did, not the chosen config:
    # kept apart (counted, not fitted). Routed runs are reweighted by 1/propensity.
    apart = [r for r in featured if r.get("source") == ROUTED_PROBE]
    graded = [r for r in featured if r.get("source") != ROUTED_PROBE]
    params = {"random_state": seed, **(model_params or {})}
    min_rows = int(params.get("min_rows", MIN_ROWS))
    if len(graded) < min_rows:
        raise RouterError(
            f"need at least {min_rows} graded runs to train the router, got {len(graded)}; "
            "log more runs (ratts sweep) and retry"
        )
    router, tables = fit_with_rules(
        graded, probes, spec, settings, params, select_modes=select_modes
    )
    configs = router.run_configs()
    labels = [bool(r["correct"]) for r in graded]
    problems = {r["problem_id"] for r in graded}
    metrics: dict[str, Any] = {
        "rows": len(graded),
        "problems": len(problems),
        "configs": len(configs),
        "positive_rate": sum(labels) / len(labels),
        "probe": spec.as_dict() if spec else None,
        "seed": seed,
        "routed_rows": sum(r.get("source") == ROUTED for r in graded),
        "routed_probe_rows_apart": len(apart),
        "per_config_rows": dict(Counter(record_config(r).label() for r in graded).most_common()),
        "rules": _rules_note(tables, spec, select_modes),
    }
    if holdout > 0:
        metrics.update(holdout_metrics(graded, params, seed, holdout))
    return TrainResult(router, metrics)


def train_and_register(
    store: Store,
    settings: Settings,
    *,
    directory: Path | None = None,
    dataset: str | None = None,
    probe: ProbeSpec | None = None,
    seed: int = 0,
    model_params: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train on the store's log, save the artifact, register version n+1 as current."""
    result = train_router(
        records_from_store(store, dataset=dataset),
        probe=probe,
        settings=settings,
        seed=seed,
        model_params=model_params,
    )
    folder = directory or settings.data_dir / "routers"
    version = register(store, result.router, folder, result.metrics)
    return version, result.metrics
