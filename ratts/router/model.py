"""P(correct | problem features, config): a calibrated scikit-learn classifier, and the
trained router that uses it to choose a config under a budget.

Why one model over (features, config) rather than one per config: configs share structure
(the same policy at a larger N, the same strategy on another policy), and a single tree
ensemble over one-hot config fields plus N learns those interactions from fewer runs.
Calibration matters because ``choose`` trades predicted accuracy against cost.

The pipeline: ColumnTransformer(one-hot policy/PRM/strategy and categorical text features;
numeric features, N, beam width and log2 N passed through) -> HistGradientBoostingClassifier
(NaN-aware), wrapped in CalibratedClassifierCV whose folds are grouped by problem, so the
calibration never sees a problem the fold's model was trained on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ratts.errors import RouterError
from ratts.router.candidates import (
    CandidateConfig,
    Choice,
    CostModel,
    CostUnit,
    LoggedCost,
    pick,
)
from ratts.router.features import TEXT_CATEGORICAL, TEXT_NUMERIC, split_features
from ratts.router.modes import PROBE, Mode, ModeTable
from ratts.settings import Settings
from ratts.strategies.probe import PROBE_NUMERIC
from ratts.strategies.reuse import is_stepwise, samples_of
from ratts.types import Budget, RunConfig

CONFIG_CATEGORICAL = ("policy", "prm", "strategy")
CONFIG_NUMERIC = ("n", "beam_width", "log2_n")
DEFAULT_NUMERIC = (*TEXT_NUMERIC, *PROBE_NUMERIC, *CONFIG_NUMERIC)
DEFAULT_CATEGORICAL = (*TEXT_CATEGORICAL, *CONFIG_CATEGORICAL)
MIN_ROWS = 50
ISOTONIC_MIN_ROWS = 1000
GROUP_KEY = "problem_id"


def config_inputs(config: RunConfig) -> dict[str, Any]:
    """The model inputs that describe a config (N is the paper's budget)."""
    n = samples_of(config)
    tree = is_stepwise(config)
    return {
        "policy": config.policy,
        "prm": config.prm or "none",
        "strategy": config.strategy,
        "n": float(n),
        "beam_width": float(config.params.beam_width) if tree else 0.0,
        "log2_n": math.log2(max(n, 1)),
    }


def design_row(features: Mapping[str, Any], config: RunConfig) -> dict[str, Any]:
    """One model input row: problem features plus config fields (config wins on clashes)."""
    return {**features, **config_inputs(config)}


def _varies(column: NDArray[Any]) -> bool:
    values = np.asarray(column, dtype=np.float64)
    return len(np.unique(values[~np.isnan(values)])) >= 2


class RouterModel(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Calibrated P(correct) for rows of ``design_row`` dicts; scikit-learn estimator API.

    ``n_threads`` caps OpenMP threads while fitting and predicting (default 1: these logs
    are small, and on a busy machine more threads are often slower; None means no cap).
    ``fit(X, y, groups=None)``: X a sequence of mappings, y booleans; ``groups`` (or each
    row's ``problem_id``) keeps a problem's rows in one calibration fold. Raises RouterError
    for too few rows or a single class.
    """

    def __init__(
        self,
        *,
        numeric: Sequence[str] | None = None,
        categorical: Sequence[str] | None = None,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        calibration: str = "auto",
        cv: int = 3,
        min_rows: int = MIN_ROWS,
        random_state: int = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.calibration = calibration
        self.cv = cv
        self.min_rows = min_rows
        self.random_state = random_state
        self.n_threads = n_threads

    # -- matrix ---------------------------------------------------------------------------

    def _requested(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        numeric = tuple(self.numeric) if self.numeric is not None else DEFAULT_NUMERIC
        categorical = (
            tuple(self.categorical) if self.categorical is not None else DEFAULT_CATEGORICAL
        )
        return numeric, categorical

    def _columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The columns in use: after fit, numeric columns that varied in training only."""
        numeric, categorical = self._requested()
        return tuple(getattr(self, "numeric_used_", numeric)), categorical

    def _matrix(self, rows: Sequence[Mapping[str, Any]]) -> NDArray[Any]:
        """Rows as an object matrix: categorical columns first, then numeric."""
        numeric, categorical = self._columns()
        out = np.empty((len(rows), len(categorical) + len(numeric)), dtype=object)
        for i, row in enumerate(rows):
            nums, cats = split_features(row, numeric, categorical)
            out[i, : len(categorical)] = cats
            out[i, len(categorical) :] = nums
        return out

    def _pipeline(self) -> Pipeline:
        numeric, categorical = self._columns()
        n_cat = len(categorical)
        encode = ColumnTransformer(
            [
                (
                    "categorical",
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                    list(range(n_cat)),
                ),
                ("numeric", "passthrough", list(range(n_cat, n_cat + len(numeric)))),
            ],
            sparse_threshold=0.0,
        )
        boost = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            random_state=self.random_state,
        )
        return Pipeline([("encode", encode), ("boost", boost)])

    # -- estimator API --------------------------------------------------------------------

    def fit(
        self,
        X: Sequence[Mapping[str, Any]],
        y: Sequence[bool | int],
        groups: Sequence[str] | None = None,
    ) -> RouterModel:
        labels = np.asarray([bool(v) for v in y], dtype=bool)
        if len(X) != len(labels):
            raise RouterError(f"{len(X)} rows but {len(labels)} labels")
        if len(labels) < self.min_rows:
            raise RouterError(
                f"need at least {self.min_rows} graded runs to train the router, got "
                f"{len(labels)}; log more runs (ratts sweep) and retry"
            )
        positives = int(labels.sum())
        if positives in (0, len(labels)):
            which = "correct" if positives else "incorrect"
            raise RouterError(
                f"all {len(labels)} graded runs are {which}; the router needs both outcomes "
                "to learn (log harder or easier problems)"
            )
        keys = (
            list(groups)
            if groups is not None
            else [str(r.get(GROUP_KEY, i)) for i, r in enumerate(X)]
        )
        distinct = len(set(keys))
        folds = min(self.cv, distinct)
        minority = min(positives, len(labels) - positives)
        if folds < 2 or minority < folds:
            raise RouterError(
                f"too little variety to calibrate: {distinct} problems, {minority} runs of the "
                f"rarer outcome (need at least {max(self.cv, 2)} of each)"
            )
        self.__dict__.pop("numeric_used_", None)
        full = self._matrix(X)
        n_cat = len(self._requested()[1])
        self.numeric_used_ = tuple(
            name
            for j, name in enumerate(self._requested()[0])
            if _varies(full[:, n_cat + j])  # constant columns carry nothing (and break binning)
        )
        matrix = self._matrix(X)
        splits = list(GroupKFold(n_splits=folds).split(matrix, labels, keys))
        if any(len(np.unique(labels[train])) < 2 for train, _ in splits):
            raise RouterError(
                "a calibration fold holds a single outcome; log more varied runs and retry"
            )
        self.calibration_used_ = self._calibration_method(len(labels))
        calibrated = CalibratedClassifierCV(
            self._pipeline(), method=self.calibration_used_, cv=splits, ensemble=True
        )
        with threadpool_limits(limits=self.n_threads):
            calibrated.fit(matrix, labels)
        calibrated.cv = folds  # the fold indices are not needed after fitting
        self.calibrated_ = calibrated
        self.classes_ = np.array([False, True])
        self.n_rows_ = len(labels)
        return self

    def _calibration_method(self, rows: int) -> str:
        """``auto``: isotonic from ``ISOTONIC_MIN_ROWS`` graded runs, else sigmoid (Platt).

        Isotonic calibration on a few hundred rows is a step function: many configs then
        share one predicted accuracy, the tie goes to the cheapest, and the router keeps
        answering from the probe whatever the features say. Platt scaling is monotone in
        the model's score, so the ranking survives (scikit-learn's calibration guide gives
        the same advice for small calibration sets)."""
        if self.calibration != "auto":
            return self.calibration
        return "isotonic" if rows >= ISOTONIC_MIN_ROWS else "sigmoid"

    def predict_proba(self, X: Sequence[Mapping[str, Any]]) -> NDArray[np.float64]:
        calibrated = getattr(self, "calibrated_", None)
        if calibrated is None:
            raise RouterError("the router model is not trained")
        with threadpool_limits(limits=self.n_threads):
            proba = np.asarray(calibrated.predict_proba(self._matrix(X)), dtype=np.float64)
        positive = list(calibrated.classes_).index(True)
        p = proba[:, positive]
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Sequence[Mapping[str, Any]]) -> NDArray[np.bool_]:
        return np.asarray(self.predict_proba(X)[:, 1] >= 0.5)

    # -- routing --------------------------------------------------------------------------

    def predict_accuracy(
        self, features: Mapping[str, Any], configs: Sequence[RunConfig]
    ) -> NDArray[np.float64]:
        """P(correct) of each config on a problem with ``features``."""
        if not configs:
            return np.zeros(0)
        return self.predict_proba([design_row(features, c) for c in configs])[:, 1]


class TrainedRouter:
    """What a router artifact holds: the calibrated model, the configs it was trained on,
    their logged mean costs and accuracies, the probe whose features it expects, and the
    rules it may serve (``ratts.router.modes``): ``blind`` is the text-only model, ``modes``
    the cross-fitted table per cost unit that says which rule serves at which lam.

    Plain data only (dicts of str/float), so the skops artifact needs few trusted types.
    An artifact from before the rules (no table) always probes.
    """

    def __init__(
        self,
        model: RouterModel,
        *,
        configs: Sequence[Mapping[str, Any]],
        costs: Mapping[str, Mapping[str, float]],
        probe: Mapping[str, Any],
        rows: int,
        blind: RouterModel | None = None,
        accuracy: Mapping[str, float] | None = None,
        modes: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.model = model
        self.configs = [dict(c) for c in configs]
        self.costs = {k: dict(v) for k, v in costs.items()}
        self.probe = dict(probe)
        self.rows = rows
        self.blind = blind
        self.accuracy = dict(accuracy or {})
        self.modes = {u: dict(t) for u, t in (modes or {}).items()}

    @classmethod
    def from_parts(
        cls,
        model: RouterModel,
        configs: Sequence[RunConfig],
        cost_model: CostModel,
        probe: Mapping[str, Any],
        rows: int,
        *,
        blind: RouterModel | None = None,
        accuracy: Mapping[str, float] | None = None,
    ) -> TrainedRouter:
        return cls(
            model,
            configs=[c.model_dump(mode="json") for c in configs],
            costs={k: asdict(v) for k, v in cost_model.logged.items()},
            probe=probe,
            rows=rows,
            blind=blind,
            accuracy=accuracy,
        )

    def mode_tables(self) -> dict[str, ModeTable]:
        return {u: ModeTable.from_dict(t) for u, t in getattr(self, "modes", {}).items()}

    def mode_for(self, lam: float | None, unit: str | None) -> Mode:
        """The rule that serves at ``lam`` (in ``unit``): the cross-fitted table's choice;
        ``probe`` without a table, without a probe to run, or for a unit it lacks."""
        tables = self.mode_tables()
        if not self.probe:  # trained without probe features: probing would buy nothing
            return "blind"
        if not tables:
            return PROBE
        if not lam:  # accuracy alone: the same in every unit
            return next(iter(tables.values())).mode_at(0.0)
        table = tables.get(unit or "")
        return table.mode_at(lam) if table is not None else PROBE

    def accuracies(
        self, mode: Mode, features: Mapping[str, Any], configs: Sequence[RunConfig]
    ) -> list[float]:
        """P(correct) of each config under ``mode``: the probe model, the text-only model,
        or each config's training accuracy whatever the question."""
        if mode == "fixed" and getattr(self, "accuracy", None):
            prior = sum(self.accuracy.values()) / len(self.accuracy)
            return [float(self.accuracy.get(c.key(), prior)) for c in configs]
        model = getattr(self, "blind", None) if mode == "blind" else None
        chosen = model if model is not None else self.model
        return [float(a) for a in chosen.predict_accuracy(features, configs)]

    def run_configs(self) -> list[RunConfig]:
        return [RunConfig.model_validate(c) for c in self.configs]

    def cost_model(self, settings: Settings | None = None) -> CostModel:
        logged = {
            key: LoggedCost(
                runs=int(v["runs"]),
                prompt_tokens=float(v["prompt_tokens"]),
                completion_tokens=float(v["completion_tokens"]),
                prm_tokens=float(v["prm_tokens"]),
                flops=float(v["flops"]),
                usd=float(v["usd"]),
            )
            for key, v in self.costs.items()
        }
        return CostModel(logged=logged).with_settings(settings)

    def candidates(
        self,
        settings: Settings | None = None,
        *,
        policy: str | None = None,
        prm: str | None = None,
    ) -> list[CandidateConfig]:
        """The known configs (restricted to ``policy``/``prm`` when given), costed."""
        configs = [
            c
            for c in self.run_configs()
            if (policy is None or c.policy == policy) and (prm is None or c.prm in (prm, None))
        ]
        if not configs:
            raise RouterError(
                f"the router knows no config for policy={policy or 'any'} prm={prm or 'any'}"
            )
        return self.cost_model(settings).candidates(configs)

    def choose(
        self,
        features: Mapping[str, Any],
        budget: Budget,
        lam: float | None = None,
        *,
        rule: Mode = PROBE,
        candidates: Sequence[CandidateConfig] | None = None,
        settings: Settings | None = None,
        policy: str | None = None,
        prm: str | None = None,
        unit: CostUnit | None = None,
        epsilon: float = 0.0,
        rng: random.Random | None = None,
    ) -> Choice:
        """The candidate (default: this router's own, costed) with the highest accuracy
        under ``rule`` (or accuracy - lam x cost) whose predicted cost fits ``budget``; the
        cheapest, flagged, when none fits. ``Router.choose`` decides through here."""
        cands = (
            list(candidates)
            if candidates is not None
            else self.candidates(settings, policy=policy, prm=prm)
        )
        return pick(
            cands,
            self.accuracies(rule, features, [c.config for c in cands]),
            budget,
            lam=lam,
            unit=unit,
            epsilon=epsilon,
            rng=rng,
            reason=f"highest predicted accuracy within budget ({rule} rule)",
        )
