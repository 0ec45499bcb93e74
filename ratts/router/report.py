"""Rendering a router evaluation: the Markdown table and the accuracy-vs-compute plot.

The maths lives in ``ratts.router.evaluate``; this module only turns its EvalReport into
text and pictures, so the CLI and the benches print the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ratts.router.evaluate import METHODS, EvalReport, Point


def _fmt_compute(value: float) -> str:
    return f"{value:.3g}"


def format_table(report: EvalReport) -> str:
    """The comparison as a Markdown table plus the summary lines."""
    unit = report.config["unit"]
    head = [f"mean compute ({unit})", *METHODS, "best fixed config"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.table:
        cells = [_fmt_compute(row["compute"])]
        for name in METHODS:
            v = row.get(name)
            cells.append("-" if v is None else f"{100 * v:.1f}%")
        cells.append(str(row.get("best fixed config") or "-"))
        lines.append("| " + " | ".join(cells) + " |")
    s = report.summary
    c = report.counts
    lines.append("")
    lines.append(
        f"test problems: {c['test_problems']} (bins: {c['test_bins']}); train problems: "
        f"{c['train_problems']}; candidate configs: {c['candidate_configs']}; probe: {c['probe']}"
    )
    lines.append(f"difficulty bins from: {report.pass1_source}")
    lines.extend(f"note: {n}" for n in report.notes)
    if s:
        gain = 100 * (s["mean_gain_vs_best_fixed"] or 0)
        lines.append(
            f"router vs best fixed config at matched compute: better at "
            f"{s['router_beats_best_fixed_at']}/{s['levels']} levels, worse at "
            f"{s['router_below_best_fixed_at']}; mean gain {gain:.1f} points "
            f"(max {100 * (s['max_gain_vs_best_fixed'] or 0):.1f})"
        )
        lines.append(
            f"router vs oracle bins (paper rule): worst gap "
            f"{100 * (s['worst_gap_to_oracle_bins'] or 0):.1f} points, mean gap "
            f"{100 * (s['mean_gap_to_oracle_bins'] or 0):.1f} (negative = router ahead); "
            f"within 3 points: {s['within_3_points_of_oracle_bins']}"
        )
    return "\n".join(lines)


def plot_curves(report: EvalReport, path: Path) -> Path:
    """Accuracy vs mean compute for every method (log x), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    ax.scatter(
        [p.compute for p in report.fixed],
        [100 * p.accuracy for p in report.fixed],
        s=14,
        color="0.7",
        label="fixed configs",
        zorder=1,
    )
    styles = {
        "router": ("-o", "C0"),
        "best fixed": ("--", "0.4"),
        "majority vote": (":", "C2"),
        "oracle bins (paper rule)": ("-s", "C1"),
        "oracle bins + lambda": ("-.", "C4"),
        "per-problem oracle": ("-", "C3"),
    }
    for name in METHODS:
        points = report.curves.get(name) or []
        if not points:
            continue
        style, color = styles[name]
        xs, ys = _steps(points)  # a frontier is a step: no mixing between its points
        line = style.rstrip("os")
        ax.plot(xs, ys, line, color=color, label=name, linewidth=1.5, zorder=2)
        if style != line:
            ax.plot(
                [p.compute for p in points],
                [100 * p.accuracy for p in points],
                style[-1],
                color=color,
                markersize=3,
                zorder=3,
            )
    ax.set_xscale("log")
    ax.set_xlabel(f"mean compute per problem ({report.config['unit']})")
    ax.set_ylabel("accuracy on held-out problems (%)")
    ax.set_title("Router vs baselines at matched mean compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _steps(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for i, p in enumerate(points):
        if i:
            xs.append(p.compute)
            ys.append(100 * points[i - 1].accuracy)
        xs.append(p.compute)
        ys.append(100 * p.accuracy)
    if points:
        xs.append(points[-1].compute * 3)
        ys.append(100 * points[-1].accuracy)
    return xs, ys
