"""Reports over logged runs: accuracy and mean compute per config, per difficulty bin, and
the paper-style plot of accuracy against compute per strategy.

Input is the plain dicts of ``Store.runs()``. Failed runs are counted, not averaged:
accuracy is over graded successful runs and compute is the mean over successful runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from ratts.text import plain

Row = Mapping[str, Any]
ComputeAxis = Literal["tokens", "flops", "dollars"]


@dataclass(frozen=True, slots=True)
class ConfigSummary:
    config_key: str
    label: str
    strategy: str
    policy: str
    prm: str | None
    n: int
    runs: int
    failed: int
    graded: int
    correct: int
    mean_tokens: float
    mean_prm_tokens: float
    mean_flops: float
    mean_dollars: float
    mean_seconds: float

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    def compute(self, axis: ComputeAxis) -> float:
        return {"tokens": self.mean_tokens, "flops": self.mean_flops, "dollars": self.mean_dollars}[
            axis
        ]


def _tokens(row: Row) -> int:
    return int(row["policy_prompt_tokens"] + row["policy_completion_tokens"] + row["prm_tokens"])


def _mean(values: Iterable[float]) -> float:
    data = list(values)
    return fmean(data) if data else 0.0


def summarize(rows: Iterable[Row]) -> list[ConfigSummary]:
    """One summary per config, sorted by strategy, policy, PRM and N."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row["config_key"]].append(row)
    out = []
    for key, group in groups.items():
        first = group[0]
        ok = [r for r in group if r["error"] is None]
        graded = [r for r in ok if r["correct"] is not None]
        out.append(
            ConfigSummary(
                config_key=key,
                label=first["label"],
                strategy=first["strategy"],
                policy=first["policy"],
                prm=first["prm"],
                n=int(first["params"].get("n", 1)),
                runs=len(group),
                failed=len(group) - len(ok),
                graded=len(graded),
                correct=sum(1 for r in graded if r["correct"]),
                mean_tokens=_mean(_tokens(r) for r in ok),
                mean_prm_tokens=_mean(r["prm_tokens"] for r in ok),
                mean_flops=_mean(r["flops"] for r in ok),
                mean_dollars=_mean(r["dollars"] for r in ok),
                mean_seconds=_mean(r["seconds"] for r in ok),
            )
        )
    return sorted(out, key=lambda s: (s.strategy, s.policy, s.prm or "", s.n, s.label))


def _difficulty(row: Row, by: str) -> float | None:
    for source in (row.get("features") or {}, row.get("problem_meta") or {}):
        value = source.get(by)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass(frozen=True, slots=True)
class BinTable:
    """Accuracy per (config label, difficulty bin); ``cells[label][bin] = (correct, graded)``."""

    by: str
    bins: list[str]
    cells: dict[str, dict[str, tuple[int, int]]]


def difficulty_bins(
    rows: Iterable[Row], by: str = "difficulty", n_bins: int = 5
) -> BinTable | None:
    """Bin graded runs by ``by`` (from features, else problem meta); None if absent.

    With at most ``n_bins`` distinct values each value is a bin; otherwise quantile bins.
    """
    graded = [
        (r, d)
        for r in rows
        if r["error"] is None and r["correct"] is not None and (d := _difficulty(r, by)) is not None
    ]
    if not graded:
        return None
    values = sorted({d for _, d in graded})
    if len(values) <= n_bins:
        edges = None
        names = [f"{by}={v:g}" for v in values]
    else:
        all_values = sorted(d for _, d in graded)
        edges = [all_values[(len(all_values) * i) // n_bins] for i in range(1, n_bins)]
        names = [f"q{i + 1}" for i in range(n_bins)]

    def bin_of(d: float) -> str:
        if edges is None:
            return f"{by}={d:g}"
        return names[sum(1 for e in edges if d >= e)]

    cells: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for row, d in graded:
        name = bin_of(d)
        correct, total = cells[row["label"]].get(name, (0, 0))
        cells[row["label"]][name] = (correct + int(bool(row["correct"])), total + 1)
    used = [b for b in names if any(b in per for per in cells.values())]
    return BinTable(by=by, bins=used, cells=dict(cells))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _si(value: float) -> str:
    if value == 0:
        return "0"
    exp = math.floor(math.log10(abs(value)) / 3)
    exp = max(min(exp, 5), 0)
    scaled = value / 1000**exp
    return f"{scaled:.3g}{['', 'k', 'M', 'G', 'T', 'P'][exp]}"


def config_table(summaries: Sequence[ConfigSummary], title: str = "Runs per config") -> Table:
    table = Table(title=title)
    table.add_column("config", overflow="fold", min_width=24)
    for name in ("runs", "failed", "accuracy", "tokens/run", "FLOPs/run", "$/run", "s/run"):
        table.add_column(name, justify="right", no_wrap=True)
    for s in summaries:
        table.add_row(
            plain(s.label),
            str(s.runs),
            str(s.failed),
            f"{_pct(s.accuracy)} ({s.correct}/{s.graded})",
            f"{s.mean_tokens:,.0f}",
            _si(s.mean_flops),
            f"{s.mean_dollars:.5f}",
            f"{s.mean_seconds:.2f}",
        )
    return table


def bins_table(bins: BinTable, order: Sequence[str] = ()) -> Table:
    """Rows in ``order`` (config labels) first, then any others alphabetically."""
    table = Table(title=f"Accuracy by {bins.by}")
    table.add_column("config", overflow="fold", min_width=24)
    for name in bins.bins:
        table.add_column(name, justify="right", no_wrap=True)
    rank = {label: i for i, label in enumerate(order)}
    for label in sorted(bins.cells, key=lambda k: (rank.get(k, len(rank)), k)):
        row = []
        for name in bins.bins:
            correct, total = bins.cells[label].get(name, (0, 0))
            row.append(_pct(correct / total if total else None) + (f" ({total})" if total else ""))
        table.add_row(plain(label), *row)
    return table


def print_report(
    console: Console, rows: Sequence[Row], *, by: str = "difficulty", n_bins: int = 5
) -> list[ConfigSummary]:
    """Print the per-config table (and the per-bin one when difficulty is known)."""
    summaries = summarize(rows)
    console.print(config_table(summaries))
    bins = difficulty_bins(rows, by, n_bins)
    if bins is not None:
        console.print(bins_table(bins, [s.label for s in summaries]))
    return summaries


def plot_accuracy_vs_compute(
    summaries: Sequence[ConfigSummary],
    path: str | Path,
    *,
    axis: ComputeAxis = "tokens",
    title: str = "Accuracy vs test-time compute",
) -> Path:
    """One line per (strategy, policy, PRM) across its N values; log-scale compute. PNG."""
    from matplotlib.figure import Figure

    series: dict[str, list[ConfigSummary]] = defaultdict(list)
    for s in summaries:
        if s.accuracy is not None:
            name = f"{s.strategy} @ {s.policy}" + (f" + {s.prm}" if s.prm else "")
            series[name].append(s)
    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.subplots()
    for name, points in sorted(series.items()):
        points.sort(key=lambda s: (s.compute(axis), s.n))
        xs = [max(p.compute(axis), 1e-12) for p in points]
        ys = [100 * (p.accuracy or 0.0) for p in points]
        ax.plot(xs, ys, marker="o", label=name)
        for x, y, p in zip(xs, ys, points, strict=True):
            ax.annotate(f"N={p.n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    unit = {
        "tokens": "tokens per problem",
        "flops": "FLOPs per problem",
        "dollars": "$ per problem",
    }
    ax.set_xscale("log")
    ax.set_xlabel(f"mean {unit[axis]} (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no graded runs", ha="center", va="center", transform=ax.transAxes)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight")
    return out
