"""The router's closed loop on a REAL model: sweep, train, then route held-out problems.

Policy: SmolLM2 135M Instruct served by vLLM(-CPU) through ``ratts.local`` (Gemma 3 270M as
a second policy with ``--models smollm2-135m,gemma3-270m``). Verifier: ``ArithmeticPRM``.
Problems: generated arithmetic word problems of mixed difficulty (1-3 operations),
deduplicated and split into train and held-out by a hash of the normalised question text
(``ratts.router.splits``), so no text sits on both sides.

1. Sweep every candidate config (CoT, majority, Best-of-N, beam search, DVTS at each N of
   ``--ns``) and the probe on the TRAIN problems through the sweep: the run log
   (``bench/results/real_router.db``) makes it resumable; a re-run skips what is logged.
2. Train the router on the train rows and register it in that log (``ratts router show
   --db ...`` shows it); the artifact is copied to ``bench/results/real_router.skops``.
3. Sweep the same fixed configs (and the probe) on the HELD-OUT problems: the baselines.
4. Solve every held-out problem through ``Orchestrator.solve`` (the served path: probe,
   route, run) at each MEAN token budget of ``--budgets`` (default: levels read off the
   train costs). A mean budget is served as ``Orchestrator(lam=...)``, the router's
   Lagrange multiplier calibrated on the train problems' features so that its picks
   average the budget (``ratts.router.allocate``); levels whose lam repeats a smaller
   level's (same picks) are skipped. Each solve is saved as it finishes (resumable).
5. Compare at matched mean tokens (and FLOPs): the router vs the best fixed config, the best
   majority config and the oracle-by-difficulty rule (the best config per number of
   operations chosen on the held-out labels themselves: a ceiling, not a baseline), with
   binomial standard errors.

Writes ``bench/results/real_router.json`` in the issue's schema, the details with standard
errors and FLOPs in ``real_router_detail.json``, a plot and a markdown table.

Usage: ``python bench/real_router.py [--train 100] [--held-out 150] [--ns 4,8,16]``;
defaults are the issue's sizes (hours on 2 CPU cores). Hold ``flock /tmp/ratts-vllm.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy
from ratts.errors import RattsError, RouterError
from ratts.local import policy_spec, prepare, start_server, stop_server
from ratts.local.serve import free_port, read_record
from ratts.orchestrator.orchestrator import Orchestrator
from ratts.orchestrator.sweep import SweepStats, collect_probes, run_sweep
from ratts.router.allocate import lam_for_mean
from ratts.router.features import ROUTING
from ratts.router.registry import RouterRegistry
from ratts.router.router import Router
from ratts.router.splits import dedupe, split_by_text
from ratts.router.train import (
    default_probe,
    records_from_store,
    split_probes,
    train_and_register,
    with_features,
)
from ratts.settings import PRMSpec, Settings, load_settings
from ratts.store import Store, open_store
from ratts.strategies.probe import DEFAULT_K
from ratts.types import Aggregation, Budget, Problem, RunConfig, StrategyParams

OUT = Path(__file__).resolve().parent / "results"
TRAIN_DS = "arith-router-train"
HELD_DS = "arith-router-heldout"
SOLVE_DS = "arith-router-solve"
TEMPERATURE = 0.7
AGGREGATION: Aggregation = "min"  # one false step sinks a solution (see bench/real_arith.py)
PRM_NAME = "arith"


def base_params(max_tokens: int) -> StrategyParams:
    """Every sampled config and the probe sample alike, so configs can reuse the probe."""
    return StrategyParams(
        temperature=TEMPERATURE,
        aggregation=AGGREGATION,
        max_tokens=max_tokens,
        max_step_tokens=min(128, max_tokens),
        max_steps=8,
        seed=0,
    )


def configs(
    policy: str, ns: Sequence[int], tree_ns: Sequence[int], max_tokens: int
) -> list[RunConfig]:
    """The candidate configs of one policy, cheapest first."""
    base = base_params(max_tokens)
    out = [
        RunConfig(
            policy=policy,
            prm=None,
            strategy="cot",
            params=base.model_copy(update={"n": 1, "temperature": 0.0}),
        )
    ]
    for n in ns:
        p = base.model_copy(update={"n": n})
        out.append(RunConfig(policy=policy, prm=None, strategy="majority", params=p))
        out.append(RunConfig(policy=policy, prm=PRM_NAME, strategy="best_of_n", params=p))
        if "adaptive" in _registered():
            out.append(RunConfig(policy=policy, prm=None, strategy="adaptive", params=p))
    for n in tree_ns:
        p = base.model_copy(update={"n": n, "beam_width": 2 if n < 8 else 4})
        out.append(RunConfig(policy=policy, prm=PRM_NAME, strategy="beam_search", params=p))
        out.append(RunConfig(policy=policy, prm=PRM_NAME, strategy="dvts", params=p))
    return out


def _registered() -> set[str]:
    from ratts.strategies import STRATEGIES

    return set(STRATEGIES)


def progress(label: str) -> Any:
    last = [0.0]

    def tick(s: SweepStats) -> None:
        now = time.perf_counter()
        if s.processed == s.todo or now - last[0] > 10:
            last[0] = now
            print(
                f"  {label}: {s.processed}/{s.todo} runs ({s.skipped} already logged), "
                f"{s.failed} failed, {s.tokens_per_second:.0f} tok/s, {s.elapsed:.0f}s",
                flush=True,
            )

    return tick


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def load_json(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    return {}


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------- phases


async def sweep_side(
    name: str,
    problems: Sequence[Problem],
    cfgs: Sequence[RunConfig],
    store: Store,
    settings: Settings,
    dataset: str,
    k: int,
    max_tokens: int,
    concurrency: int,
) -> None:
    print(f"sweep {dataset}: {len(problems)} problems x {len(cfgs)} configs + probe", flush=True)
    endpoints_policy = build_policy(settings.policy())
    prm = ArithmeticPRM(PRMSpec(name=PRM_NAME, kind="arithmetic"))
    try:
        await collect_probes(
            store,
            problems,
            endpoints_policy,
            prm,
            k=k,
            params=base_params(max_tokens),
            dataset=dataset,
            concurrency=concurrency,
            on_progress=progress(f"{name} probe"),
        )
    finally:
        await endpoints_policy.aclose()
    stats = await run_sweep(
        problems,
        cfgs,
        store,
        settings,
        dataset=dataset,
        concurrency=concurrency,
        on_progress=progress(f"{name} sweep"),
    )
    print(f"  {stats.summary()}", flush=True)


def fixed_table(store: Store, dataset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """config label -> problem_id -> {correct, tokens, flops, ops} of the held-out sweep."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for rec in records_from_store(store, dataset=dataset):
        if rec["strategy"] == "probe":
            continue
        label = rec_label(rec)
        out[label][str(rec["question"])] = {
            "correct": bool(rec["correct"]),
            "tokens": float(rec["tokens"]),
            "flops": float(rec["flops"]),
            "ops": int((rec.get("meta") or {}).get("ops", 0)),
        }
    return out


def rec_label(rec: dict[str, Any]) -> str:
    from ratts.router.candidates import record_config

    return record_config(rec).label()


def train_costs(store: Store) -> tuple[float, dict[str, float]]:
    """(the probe's mean tokens, config label -> mean tokens) on the train problems."""
    sums: dict[str, list[float]] = defaultdict(list)
    probe: list[float] = []
    for rec in records_from_store(store, dataset=TRAIN_DS):
        if rec["strategy"] == "probe":
            probe.append(float(rec["tokens"]))
        else:
            sums[rec_label(rec)].append(float(rec["tokens"]))
    mean_probe = sum(probe) / len(probe) if probe else 0.0
    return mean_probe, {k: sum(v) / len(v) for k, v in sums.items()}


def default_budgets(probe: float, costs: dict[str, float]) -> list[int]:
    """Mean total-token levels from the train costs: 1.1x the cheapest config's (room for
    a router that does not probe), the probe plus half and plus 1.2x the cheapest (room
    for one that does), and the probe plus 1.2x the median and the dearest config's."""
    ordered = sorted(costs.values())
    cheapest, median, dearest = ordered[0], ordered[len(ordered) // 2], ordered[-1]
    levels = (1.1 * cheapest, probe + 0.5 * cheapest, probe + 1.2 * cheapest)
    return sorted({int(c) for c in (*levels, probe + 1.2 * median, probe + 1.2 * dearest)})


def train_features(store: Store) -> list[dict[str, Any]]:
    """Each train problem's features as the router sees them at serve time (text + probe,
    no metadata): the sample a mean budget's lam is calibrated on."""
    runs, probes = split_probes(records_from_store(store, dataset=TRAIN_DS))
    per: dict[str, dict[str, Any]] = {}
    for rec in with_features(runs, probes, default_probe(probes)):
        per.setdefault(str(rec["problem_id"]), dict(rec["features"]))
    return list(per.values())


def calibrate_lams(
    settings: Settings, store: Store, budgets: Sequence[int], probe_cost: float
) -> dict[int, float]:
    """Per mean budget, the trained router's lam (``ratts.router.allocate``); none without
    a trained router (the cold start then routes under a per-question budget)."""
    router = Router(settings, store)
    features = train_features(store)
    out: dict[int, float] = {}
    for budget in budgets:
        try:
            lam, mean = lam_for_mean(router, features, budget, probe_cost=probe_cost)
        except RouterError as exc:
            print(f"  mean budget {budget}: {exc}", flush=True)
            continue
        if lam in out.values():  # the same picks as a smaller budget: nothing new to measure
            print(f"  mean budget {budget}: lam {lam:.3g} again (train mean {mean:.0f}); skipped")
            continue
        out[budget] = lam
        print(f"  mean budget {budget}: lam {lam:.3g} (train mean {mean:.0f} tokens)", flush=True)
    return out


async def solve_held_out(
    settings: Settings,
    store_url: str,
    problems: Sequence[Problem],
    budgets: Sequence[int],
    state: dict[str, Any],
    path: Path,
    k: int,
    concurrency: int,
    lams: dict[int, float],
) -> None:
    """Every held-out problem through the served path at each budget, saved as it lands.

    A budget with a calibrated lam is a mean budget: ``Orchestrator(lam=...)`` and no
    per-question cap; without one (no trained router) it caps each question."""
    solved: dict[str, dict[str, Any]] = state.setdefault("solves", {})
    state["lams"] = {str(b): lam for b, lam in lams.items()}

    async def level(budget: int) -> None:
        lam = lams.get(budget)
        cap = None if lam is not None else Budget(tokens=budget)
        async with Orchestrator(settings, store=store_url, probe_k=k, seed=0, lam=lam) as orch:
            await asyncio.gather(*(one(orch, cap, budget, p) for p in problems))

    gate = asyncio.Semaphore(concurrency)

    async def one(orch: Orchestrator, cap: Budget | None, budget: int, problem: Problem) -> None:
        key = f"{budget}|{problem.question}"
        if key in solved:
            return
        bare = Problem(id=problem.id, question=problem.question, answer=problem.answer)
        async with gate:
            try:
                r = await orch.solve(bare, budget=cap, timeout=900, dataset=SOLVE_DS)
            except RattsError as exc:
                solved[key] = {
                    "error": str(exc),
                    "correct": False,
                    "tokens": 0.0,
                    "flops": 0.0,
                    "config": None,
                }
                return
        solved[key] = {
            "budget": budget,
            "question": problem.question,
            "ops": int(problem.meta.get("ops", 0)),
            "correct": bool(r.correct),
            "tokens": float(r.usage.total_tokens),
            "probe_tokens": float(r.probe_usage.total_tokens),
            "flops": float(r.usage.flops),
            "config": r.config.label(),
            "reason": r.reason,
            "router_version": r.router_version,
            "rule": (r.features.get(ROUTING) or {}).get("rule"),
            "answer_source": r.answer_source,
        }
        save_json(path, state)
        done = sum(1 for x in solved if x.startswith(f"{budget}|"))
        print(
            f"  solve budget {budget}: {done}/{len(problems)} ({r.config.label()}, "
            f"{'right' if r.correct else 'wrong'}, {r.usage.total_tokens} tok)",
            flush=True,
        )

    for budget in budgets:
        await level(budget)


# ---------------------------------------------------------------- comparison


def best_within(
    table: dict[str, dict[str, dict[str, Any]]],
    questions: Sequence[str],
    limit: float,
    unit: str,
    only: str | None = None,
) -> tuple[str, float, float, float]:
    """(label, accuracy, mean tokens, mean flops) of the most accurate fixed config whose
    mean ``unit`` on the held-out problems is within ``limit`` (the cheapest if none)."""
    rows: list[tuple[str, float, float, float]] = []
    for label, per in table.items():
        if only is not None and only not in label:
            continue
        got = [per[q] for q in questions if q in per]
        if len(got) < len(questions):
            continue
        acc = sum(g["correct"] for g in got) / len(got)
        tok = sum(g["tokens"] for g in got) / len(got)
        fl = sum(g["flops"] for g in got) / len(got)
        rows.append((label, acc, tok, fl))
    if not rows:
        return ("none", math.nan, math.nan, math.nan)

    def cost(r: tuple[str, float, float, float]) -> float:
        return r[2] if unit == "tokens" else r[3]

    fitting = [r for r in rows if cost(r) <= limit * 1.0001]
    if not fitting:
        return min(rows, key=cost)
    return max(fitting, key=lambda r: (r[1], -cost(r)))


def oracle_bins(
    table: dict[str, dict[str, dict[str, Any]]],
    questions: Sequence[str],
    ops: dict[str, int],
    limit: float,
    unit: str,
) -> float:
    """The best per-difficulty (number of operations) choice of fixed configs whose mean
    ``unit`` stays within ``limit``, chosen on the held-out labels (an oracle)."""
    labels = [lb for lb, per in table.items() if all(q in per for q in questions)]
    bins = sorted({ops[q] for q in questions})
    by_bin = {b: [q for q in questions if ops[q] == b] for b in bins}
    best = math.nan
    for combo in itertools.product(labels, repeat=len(bins)):
        correct = cost = 0.0
        for b, lb in zip(bins, combo, strict=True):
            for q in by_bin[b]:
                correct += table[lb][q]["correct"]
                cost += table[lb][q][unit]
        n = len(questions)
        if cost / n <= limit * 1.0001 and (math.isnan(best) or correct / n > best):
            best = correct / n
    return best


def compare(
    table: dict[str, dict[str, dict[str, Any]]],
    held: Sequence[Problem],
    budgets: Sequence[int],
    solves: dict[str, dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    questions = [p.question for p in held]
    ops = {p.question: int(p.meta.get("ops", 0)) for p in held}
    levels, detail = [], []
    for budget in budgets:
        rows = [solves[f"{budget}|{q}"] for q in questions if f"{budget}|{q}" in solves]
        if len(rows) < len(questions):
            continue
        n = len(rows)
        acc = sum(r["correct"] for r in rows) / n
        tok = sum(r["tokens"] for r in rows) / n
        fl = sum(r["flops"] for r in rows) / n
        bl, bacc, btok, _ = best_within(table, questions, tok, "tokens")
        ml, macc, mtok, _ = best_within(table, questions, tok, "tokens", only="majority")
        oracle = oracle_bins(table, questions, ops, tok, "tokens")
        fbl, fbacc, _, fbfl = best_within(table, questions, fl, "flops")
        paired = [
            float(solves[f"{budget}|{q}"]["correct"]) - float(table[bl][q]["correct"])
            for q in questions
            if bl in table
        ]  # the same problems on both sides: the difference's SE is the paired one
        diff = sum(paired) / n if paired else math.nan
        diff_se = math.sqrt(sum((d - diff) ** 2 for d in paired) / max(n - 1, 1) / n)
        chosen: dict[str, int] = defaultdict(int)
        for r in rows:
            chosen[str(r["config"])] += 1
        levels.append(
            {
                "budget": budget,
                "mean_tokens": tok,
                "router": acc,
                "best_fixed": bacc,
                "best_fixed_config": bl,
                "majority": macc,
                "oracle_bins": oracle,
            }
        )
        detail.append(
            {
                "budget": budget,
                "n": n,
                "router": {
                    "accuracy": acc,
                    "se": se(acc, n),
                    "mean_tokens": tok,
                    "mean_flops": fl,
                    "mean_probe_tokens": sum(r.get("probe_tokens", 0) for r in rows) / n,
                    "chosen": dict(chosen),
                },
                "best_fixed_at_tokens": {
                    "config": bl,
                    "accuracy": bacc,
                    "se": se(bacc, n),
                    "mean_tokens": btok,
                },
                "majority_at_tokens": {
                    "config": ml,
                    "accuracy": macc,
                    "se": se(macc, n),
                    "mean_tokens": mtok,
                },
                "router_minus_best_fixed": {"diff": diff, "paired_se": diff_se},
                "oracle_bins_at_tokens": oracle,
                "best_fixed_at_flops": {
                    "config": fbl,
                    "accuracy": fbacc,
                    "se": se(fbacc, n),
                    "mean_flops": fbfl,
                },
                "oracle_bins_at_flops": oracle_bins(table, questions, ops, fl, "flops"),
            }
        )
    return levels, detail


def fixed_summary(
    table: dict[str, dict[str, dict[str, Any]]], questions: Sequence[str]
) -> list[dict[str, Any]]:
    out = []
    for label, per in sorted(table.items()):
        got = [per[q] for q in questions if q in per]
        if not got:
            continue
        n = len(got)
        acc = sum(g["correct"] for g in got) / n
        out.append(
            {
                "config": label,
                "n": n,
                "accuracy": acc,
                "se": se(acc, n),
                "mean_tokens": sum(g["tokens"] for g in got) / n,
                "mean_flops": sum(g["flops"] for g in got) / n,
            }
        )
    return out


def markdown(result: dict[str, Any], detail: dict[str, Any]) -> str:
    lines = [
        f"Train problems: {result['train_problems']}, held-out: {result['held_out_problems']} "
        f"(policy {', '.join(detail['setup']['models'])}, N in {detail['setup']['ns']}, "
        f"max tokens {detail['setup']['max_tokens']}).",
        "",
        "| mean token budget | router (± SE) | mean tokens | best fixed at those tokens | "
        "router - best fixed (paired SE) | majority | oracle by difficulty | router picks |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for lv, d in zip(result["levels"], detail["levels"], strict=True):
        picks = ", ".join(
            f"{k} x{v}" for k, v in sorted(d["router"]["chosen"].items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"| {lv['budget']} | {lv['router']:.3f} ± {d['router']['se']:.3f} "
            f"| {lv['mean_tokens']:.0f} | {lv['best_fixed']:.3f} ({lv['best_fixed_config']}) "
            f"| {d['router_minus_best_fixed']['diff']:+.3f} ± "
            f"{d['router_minus_best_fixed']['paired_se']:.3f} "
            f"| {lv['majority']:.3f} | {lv['oracle_bins']:.3f} | {picks} |"
        )
    lines += [
        "",
        "| fixed config (held-out) | accuracy (± SE) | mean tokens | GFLOPs |",
        "|---|---:|---:|---:|",
    ]
    for f in detail["fixed"]:
        lines.append(
            f"| {f['config']} | {f['accuracy']:.3f} ± {f['se']:.3f} "
            f"| {f['mean_tokens']:.0f} | {f['mean_flops'] / 1e9:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(detail: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    fx = detail["fixed"]
    ax.errorbar(
        [f["mean_tokens"] for f in fx],
        [f["accuracy"] for f in fx],
        yerr=[f["se"] for f in fx],
        fmt="o",
        color="gray",
        label="fixed configs",
    )
    for f in fx:
        ax.annotate(f["config"].split(":")[-1][:28], (f["mean_tokens"], f["accuracy"]), fontsize=6)
    lv = detail["levels"]
    ax.errorbar(
        [x["router"]["mean_tokens"] for x in lv],
        [x["router"]["accuracy"] for x in lv],
        yerr=[x["router"]["se"] for x in lv],
        fmt="-s",
        color="C3",
        label="router (Orchestrator.solve)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per problem (probe included)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Router vs fixed configs, SmolLM2-135M on vLLM-CPU, arithmetic")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    ns = [int(x) for x in args.ns.split(",")]
    tree_ns = [int(x) for x in args.tree_ns.split(",")] if args.tree_ns else ns
    tree_ns = [n for n in tree_ns if n > 0]  # --tree-ns 0: no beam search / DVTS
    models = args.models.split(",")
    # The split is fixed by --split (default: --train,--held-out); a later run may take
    # more train problems of the same split (up to its train side) and keep its held-out.
    split_train, split_held = (
        (int(x) for x in args.split.split(",")) if args.split else (args.train, args.held_out)
    )
    pool = dedupe(
        arithmetic_problems(
            (split_train + split_held) * 2,
            seed=args.seed,
            min_ops=1,
            max_ops=3,
            max_value=args.max_value,
        )
    )
    train, held = split_by_text(pool, split_held / (split_train + split_held), seed=args.seed)
    if args.train > len(train) or args.held_out > len(held):
        raise SystemExit(
            f"--split {split_train},{split_held} has {len(train)} train and {len(held)} "
            f"held-out problems; asked for {args.train} and {args.held_out}"
        )
    train, held = train[: args.train], held[: args.held_out]
    # --use-*: fewer problems of the same split (the logged runs stay valid)
    train = train[: args.use_train or None]
    held = held[: args.use_held_out or None]
    print(f"{len(train)} train and {len(held)} held-out problems (disjoint texts)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{args.out / 'real_router.db'}"
    state_path = args.out / "real_router_solves.json"
    state = load_json(state_path)
    if args.ship:
        print(f"shipped {ship(db_url, args.ship)}")
        return
    if args.report_only:  # what is logged so far, no model: after an interrupted run
        store = open_store(db_url)
        try:
            found = RouterRegistry(store).current()
            version = found[0] if found is not None else None
            table = fixed_table(store, HELD_DS)
        finally:
            store.close()
        solves = state.get("solves", {})
        budgets = sorted({int(k.split("|", 1)[0]) for k in solves})
        held = [p for p in held if all(f"{b}|{p.question}" in solves for b in budgets)]
        held = [p for p in held if all(p.question in per for per in table.values())]
        write_report(args, train, held, budgets, table, state, version, ns, tree_ns, models)
        return
    started_here: list[str] = []
    sim = None
    try:
        specs = []
        if args.sim:  # a smoke test of this script's plumbing: the simulator, not a model
            from ratts.settings import PolicySpec
            from ratts.sim import SimConfig, SimServer

            sim = SimServer(SimConfig()).start()
            specs = [
                PolicySpec(name=m, base_url=sim.v1_url, model="sim-weak", params=1e9)
                for m in models
            ]
        for name in [] if args.sim else models:
            prepared = prepare(name, yes=True, progress=print)
            info = read_record(name)
            if info is None:
                info = start_server(name, port=free_port(), progress=print)
                started_here.append(name)
            specs.append(policy_spec(name, info, params=prepared.params))
        settings = load_settings(
            db_url=db_url,
            data_dir=args.out / "real_router_data",
            policies=[s.model_dump() for s in specs],
            prms=[{"name": PRM_NAME, "kind": "arithmetic"}],
        )
        cfgs = [c for m in models for c in configs(m, ns, tree_ns, args.max_tokens)]
        store = open_store(db_url)
        try:
            await sweep_side(
                "train",
                train,
                cfgs,
                store,
                settings,
                TRAIN_DS,
                args.k,
                args.max_tokens,
                args.concurrency,
            )
            registry = RouterRegistry(store)
            version = None
            try:
                if registry.current() is None or args.retrain:
                    version, metrics = train_and_register(store, settings, dataset=TRAIN_DS)
                    print(f"trained router {version}: {json.dumps(metrics)[:600]}", flush=True)
            except RouterError as exc:
                print(f"training failed, the cold start routes: {exc}", flush=True)
            found = registry.current()
            version = found[0] if found is not None else None
            if state.get("router_version") != version:  # solves of another router: redo
                if state.get("solves"):
                    print(f"router {version} is new: its held-out solves start afresh")
                state["solves"] = {}
                state["router_version"] = version
            row = store.current_router_model()
            if row is not None and row.get("artifact_path"):
                shutil.copy(row["artifact_path"], args.out / "real_router.skops")
            await sweep_side(
                "held-out",
                held,
                cfgs,
                store,
                settings,
                HELD_DS,
                args.k,
                args.max_tokens,
                args.concurrency,
            )
            probe_cost, costs = train_costs(store)
            print(f"train mean tokens: probe {probe_cost:.0f}, configs {json.dumps(costs)}")
            if args.budgets:
                budgets = [int(b) for b in args.budgets.split(",")]
            else:
                budgets = default_budgets(probe_cost, costs)
            print(f"budgets (total tokens per problem, probe included): {budgets}", flush=True)
            lams = calibrate_lams(settings, store, budgets, probe_cost)
            budgets = [b for b in budgets if b in lams] if lams else budgets
            await solve_held_out(
                settings, db_url, held, budgets, state, state_path, args.k, args.concurrency, lams
            )
            table = fixed_table(store, HELD_DS)
        finally:
            store.close()
    finally:
        for name in started_here:
            stop_server(name)
        if sim is not None:
            sim.stop()
    write_report(args, train, held, budgets, table, state, version, ns, tree_ns, models)


SHIP_NAME = "smollm2-135m-arith"
SHIP_DIR = Path(__file__).resolve().parents[1] / "ratts" / "router" / "shipped"


def ship(db_url: str, command: str) -> Path:
    """Copy the bench's current router into ``ratts/router/shipped`` with its sha256,
    provenance, training summary and the text hashes of its training problems (so the
    demo can check that its own problems are not among them)."""
    from ratts.router.registry import SHA_KEY, sha256_file
    from ratts.router.splits import text_key

    store = open_store(db_url)
    try:
        row = store.current_router_model()
        if row is None:
            raise SystemExit("no trained router in the bench's log to ship")
        texts = sorted({text_key(str(r["question"])) for r in store.runs(dataset=TRAIN_DS)})
    finally:
        store.close()
    SHIP_DIR.mkdir(parents=True, exist_ok=True)
    target = SHIP_DIR / f"{SHIP_NAME}.skops"
    shutil.copy(row["artifact_path"], target)
    metrics = dict(row["metrics"] or {})
    meta = {
        SHA_KEY: sha256_file(target),
        "provenance": {
            "by": "bench/real_router.py",
            "command": command,
            "policy": "smollm2-135m (vLLM-CPU)",
            "prm": "ArithmeticPRM",
            "source_version": str(row["version"]),
        },
        "training": {k: v for k, v in metrics.items() if k != SHA_KEY},
        "train_text_hashes": texts,
    }
    (SHIP_DIR / f"{SHIP_NAME}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return target


def write_report(
    args: argparse.Namespace,
    train: Sequence[Problem],
    held: Sequence[Problem],
    budgets: Sequence[int],
    table: dict[str, dict[str, dict[str, Any]]],
    state: dict[str, Any],
    version: str | None,
    ns: Sequence[int],
    tree_ns: Sequence[int],
    models: Sequence[str],
) -> None:
    """The issue's JSON, the details, the markdown table and the plot."""
    levels, detail_levels = compare(table, held, budgets, state.get("solves", {}))
    result = {"train_problems": len(train), "held_out_problems": len(held), "levels": levels}
    detail = {
        "setup": {
            "models": models,
            "ns": ns,
            "tree_ns": tree_ns,
            "max_tokens": args.max_tokens,
            "k": args.k,
            "seed": args.seed,
            "budgets": budgets,
            "router_version": version,
        },
        "levels": detail_levels,
        "fixed": fixed_summary(table, [p.question for p in held]),
    }
    save_json(args.out / "real_router.json", result)
    save_json(args.out / "real_router_detail.json", detail)
    md = markdown(result, detail)
    (args.out / "real_router.md").write_text(md, encoding="utf-8")
    plot(detail, args.out / "real_router.png")
    print(md)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=150)
    parser.add_argument(
        "--split",
        default="",
        help="TRAIN,HELD: the sizes that fix the split (default --train,--held-out); "
        "a later --train of up to twice TRAIN reuses it and its held-out runs",
    )
    parser.add_argument("--use-train", type=int, default=0, help="use the first N train")
    parser.add_argument("--use-held-out", type=int, default=0, help="use the first N held")
    parser.add_argument("--ns", default="4,8,16", help="N for majority / Best-of-N")
    parser.add_argument("--tree-ns", default="", help="N for beam search / DVTS (default --ns)")
    parser.add_argument(
        "--budgets", default="", help="mean token budgets (default: from train costs)"
    )
    parser.add_argument("--models", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--max-value", type=int, default=20)
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="probe samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--sim", action="store_true", help="smoke-test on the simulator")
    parser.add_argument(
        "--report-only", action="store_true", help="report what is logged; run no model"
    )
    parser.add_argument(
        "--ship",
        default="",
        help="copy the trained router into ratts/router/shipped, "
        "recording this text as the command that trained it",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
