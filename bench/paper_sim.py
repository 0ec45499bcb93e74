"""The paper's four qualitative findings, reproduced in the SIMULATOR (not with real models).

Liu et al. (2025), "Can 1B LLM Surpass 405B LLM? Rethinking Compute-Optimal Test-Time
Scaling", report: (1) for weak policies, search (beam, DVTS) beats Best-of-N on hard
problems at equal compute, while for strong policies Best-of-N is best; (2) a PRM biased
towards short answers misleads search; (3) compute-optimal TTS beats majority voting at
equal compute; (4) a small policy with compute-optimal TTS beats a much stronger policy's
chain of thought. This script builds a simulated world (``ratts sim serve`` in a child
process: three policy "sizes", three PRMs), runs every config with the real ratts sweep
(strategies, endpoint clients, grading, store), and checks each finding with an explicit
rule, printing the evidence and saying plainly when a finding does not appear.

Compute is FLOPs per problem as ratts accounts it: 2 x parameters x tokens, for the policy
(prompt + completion) and the PRM (its input tokens), from the server-reported usage. The
simulator has no prefix cache, so search, which re-sends and re-scores its prefixes each
step, pays more per N than it would on vLLM; every comparison below is at equal FLOPs
(the best accuracy a strategy reaches within a budget), which is stricter on search than
the paper's equal-N axis.

Usage: ``.venv/bin/python bench/paper_sim.py`` (about 3.5-5 minutes on 2 cores; writes
bench/results/paper_sim.json, paper_sim_all.png and paper_sim_hard.png).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from simproc import SimProcess, simulator

from ratts.cli.sweep_cmd import sweep_progress
from ratts.orchestrator.sweep import run_sweep
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, SimPolicy, SimPRM, gold_answer
from ratts.store import open_store
from ratts.types import Problem, RunConfig, StrategyParams

OUT = Path(__file__).resolve().parent / "results"
DATASET = "sim-paper"

# ---------------------------------------------------------------- the simulated world

# Policies of three "sizes": skill sets how often a step is right (see ratts.sim.world).
# terse_errors: the step where a chain goes wrong is written with less reasoning (a model
# that skips reasoning slips); it changes nothing unless a PRM rewards terseness.
POLICIES: dict[str, SimPolicy] = {
    "sim-1.5b": SimPolicy(skill=0.35, params=1.5e9, terse_errors=0.75),
    "sim-7b": SimPolicy(skill=0.55, params=7e9, terse_errors=0.75),
    "sim-72b": SimPolicy(skill=0.80, params=7.2e10, terse_errors=0.75),
}
SMALL, MID, LARGE = "sim-1.5b", "sim-7b", "sim-72b"
PRM_PARAMS = 7e9
# prm-good: separates right from wrong steps well; prm-weak: a noisy PRM; prm-terse: as good
# as prm-good but prefers terse steps (+1 logit per token a step is shorter than typical).
PRMS: dict[str, SimPRM] = {
    "prm-good": SimPRM(quality=2.0, noise=0.8),
    "prm-weak": SimPRM(quality=1.0, noise=1.0),
    "prm-terse": SimPRM(quality=2.0, noise=0.8, step_length_bias=1.0),
}
GOOD, WEAK_PRM, TERSE = "prm-good", "prm-weak", "prm-terse"

SEARCH = ("beam_search", "dvts")
PRM_STRATEGIES = ("best_of_n", *SEARCH)
BEAM_WIDTH = 4
# N per strategy. With M=4, DVTS at N=4 is one subtree of one beam: exactly beam search at
# N=4, so it is not run twice. Search at N=64 runs only for the small policy with prm-good
# (beam search): DVTS sends one request per subtree per step (16 at N=64), and N=64 search
# everywhere would not fit the 10-minute budget on 2 cores.
BUDGETS: dict[str, tuple[int, ...]] = {
    "majority": (4, 16, 64),
    "best_of_n": (4, 16, 64),
    "beam_search": (4, 16),
    "dvts": (16,),
}
EXTRA: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {
    (SMALL, GOOD): {"beam_search": (4, 16, 64)},
}
COMMON = {"best_of_n": (4, 16), "beam_search": (4, 16), "dvts": (16,)}  # every (policy, PRM)
# Max selection over PRM-last scores for every PRM strategy: wrong answers in the sim
# concentrate on three distractors, so a PRM-weighted vote lets many low-scored wrong
# samples outvote one high-scored right one (it would handicap Best-of-N most).
SELECTION = "max"
BINS = (("easy", 0.25, 0.48), ("medium", 0.48, 0.72), ("hard", 0.72, 0.951))
SEED = 1


def sim_config(seed: int) -> SimConfig:
    return SimConfig(seed=seed, policies=POLICIES, prms=PRMS)


def problems(count: int, seed: int) -> list[Problem]:
    """Problems with difficulties spread evenly over 0.25..0.95 (the sim reads the tag)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        d = round(0.25 + 0.70 * (i + rng.random()) / count, 3)
        q = f"Sim problem {seed}-{i} [difficulty={d}]: follow the recurrence to its last value."
        out.append(
            Problem(
                id=f"paper-{seed}-{i}",
                question=q,
                answer=gold_answer(q, seed),
                meta={"difficulty": d, "dataset": DATASET},
            )
        )
    return out


def configs() -> list[RunConfig]:
    """Every config. One-request strategies (CoT, majority, Best-of-N) are seeded, so they
    repeat exactly and share samples (majority@N and Best-of-N@N vote over the same N
    solutions; Best-of-N@4 sees the first 4 of Best-of-N@16's). Search is left unseeded: a
    seeded search sends one request per beam instead of one per step (see
    PolicyClient.complete_many), too slow here, so its numbers vary a little between runs."""
    out = []
    for policy in POLICIES:
        seeded = StrategyParams(n=1, seed=SEED)
        out.append(RunConfig(policy=policy, prm=None, strategy="cot", params=seeded))
        for n in BUDGETS["majority"]:
            params = StrategyParams(n=n, seed=SEED)
            out.append(RunConfig(policy=policy, prm=None, strategy="majority", params=params))
        for prm in PRMS:
            for strategy in PRM_STRATEGIES:
                budgets = EXTRA.get((policy, prm), {}).get(strategy, BUDGETS[strategy])
                for n in budgets:
                    params = StrategyParams(
                        n=n,
                        beam_width=BEAM_WIDTH,
                        selection=SELECTION,
                        seed=SEED if strategy == "best_of_n" else None,
                    )
                    out.append(RunConfig(policy=policy, prm=prm, strategy=strategy, params=params))
    return out


def settings_for(sim: SimProcess, db: str, data_dir: Path) -> Settings:
    return Settings(
        db_url=db,
        data_dir=data_dir,
        policies=[
            PolicySpec(
                name=name,
                base_url=sim.v1_url,
                model=name,
                params=policy.params or 1e9,
                max_concurrency=64,
            )
            for name, policy in POLICIES.items()
        ],
        prms=[
            PRMSpec(
                name=name,
                kind="vllm_pooling",
                base_url=sim.url,
                model=name,
                params=PRM_PARAMS,
                max_concurrency=64,
            )
            for name in PRMS
        ],
    )


# ---------------------------------------------------------------- results as points


@dataclass
class Cell:
    """Runs of one config on one bin of problems."""

    correct: int = 0
    graded: int = 0
    flops: float = 0.0
    tokens: float = 0.0
    completion: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.graded if self.graded else 0.0

    @property
    def mean_flops(self) -> float:
        return self.flops / self.graded if self.graded else 0.0


@dataclass(frozen=True)
class Point:
    strategy: str
    n: int
    prm: str | None
    accuracy: float
    flops: float
    graded: int

    @property
    def se(self) -> float:
        p = self.accuracy
        return math.sqrt(max(p * (1 - p), 0.25 / max(self.graded, 1)) / max(self.graded, 1))

    def label(self) -> str:
        return f"{self.strategy}@{self.n}"


@dataclass
class Results:
    cells: dict[tuple[str, str | None, str, int], dict[str, Cell]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        if row["error"] is not None or row["correct"] is None:
            return
        key = (row["policy"], row["prm"], row["strategy"], int(row["params"]["n"]))
        d = float(row["problem_meta"]["difficulty"])
        fold = int(str(row["problem_id"]).rsplit("-", 1)[1]) % 2
        by_bin = self.cells.setdefault(key, defaultdict(Cell))
        for name in ("all", bin_of(d), f"{bin_of(d)}#{fold}"):
            cell = by_bin[name]
            cell.correct += int(bool(row["correct"]))
            cell.graded += 1
            cell.flops += float(row["flops"])
            cell.tokens += row["policy_prompt_tokens"] + row["policy_completion_tokens"]
            cell.tokens += row["prm_tokens"]
            cell.completion += row["policy_completion_tokens"]

    def points(
        self, policy: str, prm: str | None, strategies: Iterable[str], where: str = "all"
    ) -> list[Point]:
        """Points of the given strategies (majority and CoT have no PRM)."""
        wanted = set(strategies)
        out = []
        for (pol, p, strategy, n), by_bin in self.cells.items():
            if pol != policy or strategy not in wanted:
                continue
            if strategy in ("majority", "cot") or p == prm:
                cell = by_bin.get(where)
                if cell is not None and cell.graded:
                    out.append(Point(strategy, n, p, cell.accuracy, cell.mean_flops, cell.graded))
        return sorted(out, key=lambda q: (q.flops, q.strategy, q.n))

    def cell(self, policy: str, prm: str | None, strategy: str, n: int, where: str) -> Cell:
        return self.cells.get((policy, prm, strategy, n), {}).get(where, Cell())


def bin_of(d: float) -> str:
    for name, lo, hi in BINS:
        if lo <= d < hi:
            return name
    return BINS[-1][0]


def within(points: Sequence[Point], budget: float) -> Point | None:
    """The most accurate point that fits the budget (a frontier read-off)."""
    fit = [p for p in points if p.flops <= budget * (1 + 1e-9)]
    return max(fit, key=lambda p: (p.accuracy, -p.flops)) if fit else None


def margin(a: Point, b: Point) -> tuple[float, float]:
    """Accuracy difference a - b and twice its standard error (independent binomials)."""
    return a.accuracy - b.accuracy, 2 * math.sqrt(a.se**2 + b.se**2)


def compare(a_points: Sequence[Point], b_points: Sequence[Point]) -> list[dict[str, Any]]:
    """A vs B at every budget where both have a point within it (budgets: all points)."""
    rows = []
    for budget in sorted({p.flops for p in (*a_points, *b_points)}):
        a, b = within(a_points, budget), within(b_points, budget)
        if a is None or b is None:
            continue
        diff, two_se = margin(a, b)
        rows.append(
            {
                "budget_flops": budget,
                "a": a.label(),
                "a_acc": a.accuracy,
                "b": b.label(),
                "b_acc": b.accuracy,
                "diff": diff,
                "two_se": two_se,
            }
        )
    return rows


def dominance(rows: Sequence[dict[str, Any]]) -> tuple[bool, bool]:
    """(A significantly better somewhere, A significantly worse somewhere)."""
    better = any(r["diff"] > r["two_se"] for r in rows)
    worse = any(r["diff"] < -r["two_se"] for r in rows)
    return better, worse


def fmt_compare(rows: Sequence[dict[str, Any]], a: str, b: str) -> list[str]:
    out = [f"    {'budget FLOPs':>12}  {a:<24} {b:<24} {'diff':>7}"]
    for r in rows:
        left = f"{r['a']} {r['a_acc']:.1%}"
        right = f"{r['b']} {r['b_acc']:.1%}"
        out.append(
            f"    {r['budget_flops']:>12.3g}  {left:<24} {right:<24} "
            f"{100 * r['diff']:>+6.1f} (+-{100 * r['two_se']:.1f})"
        )
    return out


# ---------------------------------------------------------------- compute-optimal


def compute_optimal(
    res: Results, policy: str, prm: str, budget: float
) -> tuple[float, int, dict[str, str]]:
    """Accuracy on all problems of compute-optimal TTS: per difficulty bin, the Best-of-N,
    beam search or DVTS config that fits the budget and scored best (the paper's choice
    with difficulty known). Cross-fitted, so no problem scores the choice it helped make:
    the choice for the odd-numbered problems of a bin is made on its even-numbered ones and
    the other way round. Also returns the problems counted and the choices made."""
    correct = 0.0
    graded = 0
    chosen: dict[str, set[str]] = defaultdict(set)
    affordable = [
        (p.strategy, p.n)
        for p in res.points(policy, prm, PRM_STRATEGIES, "all")
        if p.flops <= budget * 1.000001
    ]
    for name, *_ in BINS:
        for fold in (0, 1):
            pick = f"{name}#{1 - fold}"
            cells = {k: res.cell(policy, prm, *k, pick) for k in affordable}
            cells = {k: c for k, c in cells.items() if c.graded}
            if not cells:
                continue
            (strategy, n), _ = max(cells.items(), key=lambda kv: kv[1].accuracy)
            scored = res.cell(policy, prm, strategy, n, f"{name}#{fold}")
            chosen[name].add(f"{strategy}@{n}")
            correct += scored.correct
            graded += scored.graded
    picks = {name: "/".join(sorted(v)) for name, v in chosen.items()}
    return (correct / graded if graded else 0.0), graded, picks


# ---------------------------------------------------------------- the findings


@dataclass
class Finding:
    number: int
    claim: str
    status: str  # "shown", "partly shown" or "not shown"
    verdict: str
    evidence: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "finding": self.number,
            "claim": self.claim,
            "status": self.status,
            "verdict": self.verdict,
            "evidence": self.evidence,
        }


def status(shown: bool, partly: bool = False) -> str:
    return "shown" if shown else "partly shown" if partly else "not shown"


def finding_1(res: Results) -> Finding:
    ev: list[str] = []
    weak_ok = True
    for prm in PRMS:
        rows = compare(
            res.points(SMALL, prm, SEARCH, "hard"), res.points(SMALL, prm, ["best_of_n"], "hard")
        )
        better, worse = dominance(rows)
        ev.append(f"  {SMALL} + {prm}, hard problems: search (best of beam/DVTS) vs Best-of-N")
        ev.extend(fmt_compare(rows, "search", "best_of_n"))
        if prm == GOOD:
            weak_ok = better and not worse
    strong: dict[str, tuple[bool, bool]] = {}
    for prm in PRMS:
        bon = res.points(LARGE, prm, ["best_of_n"], "all")
        search = res.points(LARGE, prm, SEARCH, "all")
        rows = compare(bon, search)
        strong[prm] = dominance(rows)
        cheapest = min((p.flops for p in search), default=math.inf)
        below = [p for p in bon if p.flops < cheapest]
        ev.append(f"  {LARGE} + {prm}, all problems: Best-of-N vs search")
        ev.extend(fmt_compare(rows, "best_of_n", "search"))
        if below:
            best = max(below, key=lambda p: p.accuracy)
            ev.append(
                f"    below search's cheapest point ({cheapest:.3g} FLOPs) Best-of-N already "
                f"reaches {best.accuracy:.1%} ({best.label()}, {best.flops:.3g} FLOPs)"
            )
    bon_never_worse = all(not worse for _, worse in strong.values())
    bon_wins = [prm for prm, (better, _) in strong.items() if better]
    unbiased_wins = [prm for prm in bon_wins if prm != TERSE]
    verdict = (
        f"weak policy: search beats Best-of-N on hard problems at equal FLOPs with {GOOD}: "
        f"{'yes' if weak_ok else 'NO'}. Strong policy: Best-of-N never significantly worse "
        f"than search at equal FLOPs with any PRM: {'yes' if bon_never_worse else 'NO'}; "
        f"significantly better with: {', '.join(bon_wins) or 'none'}"
    )
    if weak_ok and bon_never_worse and not unbiased_wins:
        verdict += (
            ". With the unbiased PRMs search ties Best-of-N at the accuracy ceiling; "
            "Best-of-N gets there for a fraction of the compute (so it is the compute-"
            "optimal choice) but search does not lose outright at equal compute"
        )
    return Finding(
        1,
        "weak policies: search beats Best-of-N on hard problems at equal compute; strong "
        "policies: Best-of-N is best",
        status(weak_ok and bon_never_worse and bool(unbiased_wins), weak_ok and bon_never_worse),
        verdict,
        ev,
    )


@dataclass(frozen=True)
class Pooled:
    """Runs of several configs counted together."""

    correct: int
    graded: int
    completion_tokens: float

    @property
    def point(self) -> Point:
        acc = self.correct / self.graded if self.graded else 0.0
        return Point("pooled", 0, None, acc, 0.0, self.graded)


def _pooled(res: Results, policy: str, prm: str, strategies: Iterable[str]) -> Pooled:
    correct = graded = 0
    completion = 0.0
    for strategy in strategies:
        for n in COMMON[strategy]:  # like with like: the budgets every (policy, PRM) got
            cell = res.cell(policy, prm, strategy, n, "all")
            correct += cell.correct
            graded += cell.graded
            completion += cell.completion
    return Pooled(correct, graded, completion / max(graded, 1))


def finding_2(res: Results) -> Finding:
    ev = [
        f"  accuracy with {GOOD} -> {TERSE} (same quality and noise, plus a preference for "
        "terse steps), pooled over the N every PRM got, all problems; and mean policy "
        "completion tokens per run"
    ]
    drops: dict[str, list[tuple[float, float]]] = {"search": [], "best_of_n": []}
    for policy in POLICIES:
        for label, strategies in (("search", SEARCH), ("best_of_n", ("best_of_n",))):
            good = _pooled(res, policy, GOOD, strategies)
            terse = _pooled(res, policy, TERSE, strategies)
            diff, two_se = margin(good.point, terse.point)
            drops[label].append((diff, two_se))
            ev.append(
                f"    {policy:<9} {label:<10} {good.point.accuracy:6.1%} -> "
                f"{terse.point.accuracy:6.1%} (drop {100 * diff:+.1f} +-{100 * two_se:.1f}); "
                f"completion tokens/run {good.completion_tokens:,.0f} -> "
                f"{terse.completion_tokens:,.0f}"
            )
    search_hit = [d > s for d, s in drops["search"]]
    bon_hit = [d > s for d, s in drops["best_of_n"]]
    more = [
        sd - bd > math.sqrt(ss**2 + bs**2)
        for (sd, ss), (bd, bs) in zip(drops["search"], drops["best_of_n"], strict=True)
    ]
    verdict = (
        f"search loses significant accuracy with the terse-biased PRM for "
        f"{sum(search_hit)}/{len(search_hit)} policies, Best-of-N for {sum(bon_hit)}/"
        f"{len(bon_hit)}; search's loss is significantly larger than Best-of-N's for "
        f"{sum(more)}/{len(more)} policies"
    )
    return Finding(
        2,
        "a PRM biased towards short answers misleads search",
        status(any(search_hit) and any(more), any(search_hit)),
        verdict,
        ev,
    )


def finding_3(res: Results) -> Finding:
    ev = [
        "  compute-optimal TTS (per-difficulty choice among Best-of-N, beam search, DVTS "
        "that fits the budget, cross-fitted) vs majority voting, all problems, budget = "
        "majority's FLOPs"
    ]
    wins = losses = ties = 0
    for policy in POLICIES:
        for prm in PRMS:
            for maj in res.points(policy, None, ["majority"], "all"):
                acc, graded, chosen = compute_optimal(res, policy, prm, maj.flops)
                if not graded:
                    ev.append(
                        f"    {policy:<9} {prm:<10} majority@{maj.n} {maj.accuracy:6.1%} "
                        f"({maj.flops:.3g} FLOPs): no PRM config fits this budget"
                    )
                    continue
                co = Point("compute-optimal", maj.n, prm, acc, maj.flops, graded)
                diff, two_se = margin(co, maj)
                if diff > two_se:
                    wins += 1
                elif diff < -two_se:
                    losses += 1
                else:
                    ties += 1
                picks = ", ".join(f"{k}:{v}" for k, v in chosen.items())
                ev.append(
                    f"    {policy:<9} {prm:<10} majority@{maj.n} {maj.accuracy:6.1%} vs "
                    f"compute-optimal {acc:6.1%} ({100 * diff:+.1f} +-{100 * two_se:.1f}) "
                    f"[{picks}]"
                )
    verdict = (
        f"compute-optimal TTS beats majority voting at equal FLOPs in {wins} comparisons, "
        f"ties in {ties}, loses in {losses}"
    )
    return Finding(
        3,
        "compute-optimal TTS beats majority voting at equal compute",
        status(wins > 0 and losses == 0, wins > losses),
        verdict,
        ev,
    )


def finding_4(res: Results) -> Finding:
    ev = []
    cot = res.points(LARGE, None, ["cot"], "all")
    if not cot:
        return Finding(4, "", "not shown", "no CoT runs for the large policy", [])
    big = cot[0]
    ev.append(f"  {LARGE} CoT: {big.accuracy:.1%} at {big.flops:.3g} FLOPs per problem")
    shown = False
    for policy in (SMALL, MID):
        best: tuple[float, int, dict[str, str], str, float] | None = None
        for prm in PRMS:
            points = res.points(policy, prm, PRM_STRATEGIES, "all")
            if not points:
                continue
            budget = max(p.flops for p in points)
            acc, graded, chosen = compute_optimal(res, policy, prm, budget)
            if best is None or acc > best[0]:
                best = (acc, graded, chosen, prm, budget)
        if best is None:
            continue
        acc, graded, chosen, prm, budget = best
        co = Point("compute-optimal", 0, prm, acc, budget, graded)
        diff, two_se = margin(co, big)
        beats = diff > two_se
        if policy == SMALL:
            shown = beats
        cheaper = min(
            (
                p
                for p in res.points(policy, prm, PRM_STRATEGIES, "all")
                if compute_optimal(res, policy, prm, p.flops)[0] > big.accuracy
            ),
            key=lambda p: p.flops,
            default=None,
        )
        ev.append(
            f"  {policy} + {prm}, compute-optimal TTS: {acc:.1%} "
            f"({100 * diff:+.1f} +-{100 * two_se:.1f} vs {LARGE} CoT) "
            f"[{', '.join(f'{k}:{v}' for k, v in chosen.items())}]"
        )
        if cheaper is not None:
            ev.append(
                f"    first beats {LARGE} CoT at a budget of {cheaper.flops:.3g} FLOPs per "
                f"problem ({cheaper.flops / big.flops:.2g}x the large model's CoT FLOPs)"
            )
    verdict = (
        f"{SMALL} with compute-optimal TTS {'beats' if shown else 'does NOT beat'} "
        f"{LARGE} CoT ({POLICIES[LARGE].params / (POLICIES[SMALL].params or 1):.0f}x the "
        "parameters) on all problems"
    )
    return Finding(
        4,
        "a small policy with compute-optimal TTS beats a much stronger policy's CoT",
        status(shown),
        verdict,
        ev,
    )


# ---------------------------------------------------------------- tables and plots

STYLE = {
    "majority": ("tab:gray", "s", "--"),
    "best_of_n": ("tab:blue", "o", "-"),
    "beam_search": ("tab:orange", "^", "-"),
    "dvts": ("tab:green", "D", "-"),
}


def accuracy_table(res: Results) -> str:
    head = f"{'policy':<9} {'PRM':<10} {'config':<15}"
    for name, *_ in (("all",), *BINS):
        head += f" {name:>8}"
    head += f" {'FLOPs/problem':>14}"
    lines = [head, "-" * len(head)]
    order = {"cot": 0, "majority": 1, "best_of_n": 2, "beam_search": 3, "dvts": 4}
    keys = sorted(
        res.cells,
        key=lambda k: (list(POLICIES).index(k[0]), k[1] or "", order[k[2]], k[3]),
    )
    for key in keys:
        policy, prm, strategy, n = key
        by_bin = res.cells[key]
        row = f"{policy:<9} {prm or '-':<10} {f'{strategy}@{n}':<15}"
        for name in ("all", *(b[0] for b in BINS)):
            cell = by_bin.get(name)
            row += f" {cell.accuracy:>8.1%}" if cell and cell.graded else f" {'-':>8}"
        row += f" {by_bin['all'].mean_flops:>14.3g}"
        lines.append(row)
    return "\n".join(lines)


def plot(res: Results, where: str, path: Path, problems_in_bin: int) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 12), dpi=110)
    axes = fig.subplots(len(POLICIES), len(PRMS), squeeze=False, sharex="row")
    for r, policy in enumerate(POLICIES):
        for c, prm in enumerate(PRMS):
            ax = axes[r][c]
            for strategy, (color, marker, line) in STYLE.items():
                pts = [p for p in res.points(policy, prm, [strategy], where)]
                if not pts:
                    continue
                pts.sort(key=lambda p: p.n)
                xs = [p.flops for p in pts]
                ys = [100 * p.accuracy for p in pts]
                ax.plot(xs, ys, marker=marker, linestyle=line, color=color, label=strategy)
                for p in pts:
                    ax.annotate(
                        f"N={p.n}",
                        (p.flops, 100 * p.accuracy),
                        textcoords="offset points",
                        xytext=(3, -9),
                        fontsize=6,
                        color=color,
                    )
            for p in res.points(policy, None, ["cot"], where):
                ax.plot(
                    [p.flops],
                    [100 * p.accuracy],
                    marker="*",
                    markersize=11,
                    color="black",
                    linestyle="none",
                    label="CoT",
                )
            big = res.points(LARGE, None, ["cot"], where)
            if big and policy != LARGE:
                ax.axhline(
                    100 * big[0].accuracy,
                    color="black",
                    linestyle=":",
                    linewidth=1,
                    label=f"{LARGE} CoT",
                )
            ax.set_xscale("log")
            ax.set_ylim(-3, 103)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{policy} + {prm}", fontsize=9)
            if r == len(POLICIES) - 1:
                ax.set_xlabel("FLOPs per problem (policy + PRM), log scale", fontsize=8)
            if c == 0:
                ax.set_ylabel("accuracy (%)", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 0.95))
    fig.suptitle(
        f"SIMULATION (ratts.sim, not real models): accuracy vs compute, {where} problems "
        f"(n={problems_in_bin}); one line per strategy, N = 4, 16, 64",
        fontsize=11,
    )
    fig.savefig(path, format="png", bbox_inches="tight")


# ---------------------------------------------------------------- main


async def sweep(items: list[Problem], db: str, data_dir: Path, seed: int, concurrency: int) -> None:
    with simulator(sim_config(seed)) as sim, open_store(db) as store:
        settings = settings_for(sim, db, data_dir)
        with sweep_progress(sys.stderr.isatty(), Console(stderr=True)) as on_progress:
            stats = await run_sweep(
                items,
                configs(),
                store,
                settings,
                dataset=DATASET,
                concurrency=concurrency,
                on_progress=on_progress,
            )
        print(f"sweep: {stats.summary()}", flush=True)
        if stats.failed:
            for line in stats.errors[:5]:
                print(f"  failed: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32, help="runs in flight")
    parser.add_argument("--db", help="keep the run log here (SQLite file) to resume or re-plot")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    items = problems(args.problems, args.seed)
    print("SIMULATION: simulated policies and PRMs (ratts.sim); real ratts strategies.")
    print(f"{len(items)} problems x {len(configs())} configs", flush=True)
    with tempfile.TemporaryDirectory(prefix="ratts-paper-") as tmp:
        db = f"sqlite:///{Path(args.db).resolve()}" if args.db else f"sqlite:///{tmp}/runs.db"
        asyncio.run(sweep(items, db, Path(tmp), args.seed, args.concurrency))
        with open_store(db) as store:
            rows = store.runs(dataset=DATASET)
    wanted = {p.id for p in items}
    res = Results()
    for row in rows:
        if row["problem_id"] in wanted:
            res.add(row)
    print()
    print("SIMULATION: accuracy per config and difficulty bin")
    print(accuracy_table(res))
    findings = [finding_1(res), finding_2(res), finding_3(res), finding_4(res)]
    for f in findings:
        print(f"\nFinding {f.number}: {f.claim}")
        print(f"  -> {f.status.upper()}: {f.verdict}")
        for line in f.evidence:
            print(line)
    per_bin = {
        name: sum(1 for p in items if bin_of(p.meta["difficulty"]) == name) for name, *_ in BINS
    }
    plot(res, "all", args.out / "paper_sim_all.png", len(items))
    plot(res, "hard", args.out / "paper_sim_hard.png", per_bin["hard"])
    result = {
        "simulation": True,
        "command": "python bench/paper_sim.py " + " ".join(sys.argv[1:]),
        "problems": len(items),
        "problems_per_bin": per_bin,
        "bins": {name: [lo, hi] for name, lo, hi in BINS},
        "seed": args.seed,
        "policies": {k: v.model_dump() for k, v in POLICIES.items()},
        "prms": {k: v.model_dump() | {"params": PRM_PARAMS} for k, v in PRMS.items()},
        "selection": SELECTION,
        "beam_width": BEAM_WIDTH,
        "budgets": BUDGETS,
        "extra_budgets": {f"{p}+{q}": v for (p, q), v in EXTRA.items()},
        "results": [
            {
                "policy": policy,
                "prm": prm,
                "strategy": strategy,
                "n": n,
                **{
                    name: {
                        "accuracy": cell.accuracy,
                        "graded": cell.graded,
                        "mean_flops": cell.mean_flops,
                        "mean_tokens": cell.tokens / max(cell.graded, 1),
                    }
                    for name, cell in by_bin.items()
                },
            }
            for (policy, prm, strategy, n), by_bin in sorted(
                res.cells.items(), key=lambda kv: tuple(str(x) for x in kv[0])
            )
        ],
        "findings": [f.to_dict() for f in findings],
        "total_seconds": time.perf_counter() - started,
    }
    (args.out / "paper_sim.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out / 'paper_sim.json'}, paper_sim_all.png, paper_sim_hard.png")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
