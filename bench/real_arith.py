"""What test-time compute buys two REAL tiny models on arithmetic word problems.

Models: SmolLM2 135M Instruct (chat prompt) and Gemma 3 270M base (few-shot prompt), both
prepared from their PyPI weight packages and served by vLLM(-CPU) through ``ratts.local``.
Problems: ``arithmetic_problems`` with a fixed seed (default 100 one-step problems, numbers
up to 20). Verifier: ``ArithmeticPRM`` (programmatic; these models carry no signal as
judges). Per model and N in {4, 8, 16}:

- greedy CoT (once per model), majority@N, Best-of-N (PRM-weighted vote), beam search (N, M)
  and DVTS (N, M) with ``ArithmeticPRM`` (M = 2 for N = 4, else 4);
- pass@N (an oracle: any of the majority run's N samples correct) as the ceiling.

Every number is measured on real servers: accuracy, mean policy tokens and FLOPs per problem
(2 x params x tokens, tokens from vLLM's usage) and wall seconds. Results are written after
each config to ``bench/results/real_arith.json`` (re-running skips what is there), then a
plot of accuracy vs compute and a markdown table (``real_arith.md``) including the question
"SmolLM2 135M + test-time scaling vs Gemma 270M CoT".

Usage: ``python bench/real_arith.py [--problems 100] [--models smollm2-135m,gemma3-270m]``;
``--quick`` runs 20 problems at N = 4 (a few minutes). The full run takes hours on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy
from ratts.endpoints.policy import PolicyClient
from ratts.grading import grade
from ratts.local import policy_spec, prepare, start_server, stop_server
from ratts.local.serve import free_port, read_record
from ratts.settings import PRMSpec
from ratts.strategies import get_strategy
from ratts.types import Aggregation, Outcome, Problem, StrategyParams

OUT = Path(__file__).resolve().parent / "results"
MAX_TOKENS = 384
MAX_STEP_TOKENS = 128
MAX_STEPS = 12
TEMPERATURE = 0.7
# min over steps: one false claim sinks a solution; "last" would read only the final
# "The answer is ..." step, which has nothing to check
AGGREGATION: Aggregation = "min"
CONCURRENCY = 16
PROBLEM_TIMEOUT_S = 900.0


def configs(ns: Sequence[int]) -> list[tuple[str, str, StrategyParams]]:
    """(key, strategy, params) for one model, cheapest first."""
    base = StrategyParams(
        temperature=TEMPERATURE,
        aggregation=AGGREGATION,
        max_tokens=MAX_TOKENS,
        max_step_tokens=MAX_STEP_TOKENS,
        max_steps=MAX_STEPS,
        seed=0,
    )
    out = [("cot", "cot", base.model_copy(update={"n": 1, "temperature": 0.0}))]
    for n in ns:
        m = 2 if n < 8 else 4
        tree = base.model_copy(update={"n": n, "beam_width": m})
        out += [
            (f"majority@{n}", "majority", base.model_copy(update={"n": n})),
            (f"best_of_n@{n}", "best_of_n", base.model_copy(update={"n": n})),
            (f"beam_search@{n},{m}", "beam_search", tree),
            (f"dvts@{n},{m}", "dvts", tree),
        ]
    return out


def is_correct(answer: str | None, gold: str | None) -> bool:
    return answer is not None and bool(grade(answer, gold))


async def run_config(
    policy: PolicyClient, strategy: str, params: StrategyParams, problems: Sequence[Problem]
) -> dict[str, Any]:
    """One config over all problems (bounded concurrency); per-problem and mean results."""
    impl = get_strategy(strategy)
    prm = ArithmeticPRM(PRMSpec(name="arith", kind="arithmetic")) if impl.needs_prm else None
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(problem: Problem) -> Outcome | None:
        async with gate:
            try:
                return await asyncio.wait_for(
                    impl.run(problem, policy, prm, params), PROBLEM_TIMEOUT_S
                )
            except TimeoutError:
                return None

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(p) for p in problems))
    wall = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    for problem, o in zip(problems, outcomes, strict=True):
        if o is None:
            rows.append({"id": problem.id, "timeout": True, "correct": False})
            continue
        answers = [c.answer for c in o.candidates]
        rows.append(
            {
                "id": problem.id,
                "answer": o.answer,
                "correct": is_correct(o.answer, problem.answer),
                "any_correct": any(is_correct(a, problem.answer) for a in answers),
                "tokens": o.usage.policy_tokens,
                "flops": o.usage.flops,
                "requests": o.usage.policy_requests,
                "seconds": o.usage.wall_seconds,
            }
        )
    done = [r for r in rows if not r.get("timeout")]
    n = len(rows)
    return {
        "strategy": strategy,
        "params": params.model_dump(mode="json"),
        "accuracy": sum(r["correct"] for r in rows) / n,
        "pass_at_n": sum(r.get("any_correct", False) for r in rows) / n,
        "tokens": sum(r["tokens"] for r in done) / max(len(done), 1),
        "flops": sum(r["flops"] for r in done) / max(len(done), 1),
        "timeouts": n - len(done),
        "wall_seconds": wall,
        "rows": rows,
    }


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    return {"results": {}}


def save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


async def bench_model(
    name: str,
    problems: Sequence[Problem],
    ns: Sequence[int],
    data: dict[str, Any],
    path: Path,
) -> None:
    prepared = prepare(name, yes=True, progress=print)
    todo = [c for c in configs(ns) if c[0] not in data["results"].get(name, {})]
    if not todo:
        print(f"{name}: all configs already measured")
        return
    info = read_record(name)
    ours = info is None
    if info is None:
        info = start_server(name, port=free_port(), progress=print)
    try:
        spec = policy_spec(name, info, params=prepared.params)
        policy = build_policy(spec)
        try:
            for key, strategy, params in todo:
                result = await run_config(policy, strategy, params, problems)
                data["results"].setdefault(name, {})[key] = result
                save(path, data)
                print(
                    f"{name:14s} {key:20s} acc {result['accuracy']:.2f} "
                    f"pass@N {result['pass_at_n']:.2f} tokens {result['tokens']:7.0f} "
                    f"wall {result['wall_seconds']:6.0f}s",
                    flush=True,
                )
        finally:
            await policy.aclose()
    finally:
        if ours:
            stop_server(name)


def table(data: dict[str, Any]) -> str:
    """Markdown: one row per (model, config), plus the small-vs-large comparison."""
    lines = [
        "| model | config | accuracy | pass@N (oracle) | policy tokens / problem "
        "| GFLOPs / problem |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, results in data["results"].items():
        for key, r in results.items():
            pass_n = f"{r['pass_at_n']:.2f}" if r["strategy"] == "majority" else ""
            lines.append(
                f"| {model} | {key} | {r['accuracy']:.2f} | {pass_n} | {r['tokens']:.0f} "
                f"| {r['flops'] / 1e9:.1f} |"
            )
    smol = data["results"].get("smollm2-135m", {})
    gemma_cot = data["results"].get("gemma3-270m", {}).get("cot")
    scaled = {k: r for k, r in smol.items() if k != "cot"}
    if scaled and gemma_cot:
        best_key = max(scaled, key=lambda k: (scaled[k]["accuracy"], -scaled[k]["flops"]))
        best = scaled[best_key]
        cot = smol.get("cot")
        cot_text = f" (its greedy CoT: {cot['accuracy']:.2f})" if cot else ""
        verdict = "beats" if best["accuracy"] > gemma_cot["accuracy"] else "does not beat"
        lines += [
            "",
            f"**SmolLM2 135M + TTS vs Gemma 270M CoT:** SmolLM2's best test-time scaling "
            f"config ({best_key}) scores {best['accuracy']:.2f} at "
            f"{best['flops'] / 1e9:.0f} GFLOPs/problem{cot_text}; Gemma 3 270M greedy CoT "
            f"scores {gemma_cot['accuracy']:.2f} at {gemma_cot['flops'] / 1e9:.0f} "
            f"GFLOPs/problem: the small model with search {verdict} the larger one here.",
        ]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"majority": "o", "best_of_n": "s", "beam_search": "^", "dvts": "D", "cot": "*"}
    for index, (model, results) in enumerate(data["results"].items()):
        style = ("-", "--", ":")[index % 3]
        by_strategy: dict[str, list[tuple[float, float]]] = {}
        for r in results.values():
            by_strategy.setdefault(r["strategy"], []).append((r["flops"], r["accuracy"]))
        for strategy, points in by_strategy.items():
            points.sort()
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=markers.get(strategy, "."),
                linestyle=style,
                label=f"{model} {strategy}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("policy FLOPs per problem (2 x params x tokens, measured)")
    ax.set_ylabel("accuracy")
    ax.set_title("Real tiny models on vLLM-CPU: accuracy vs test-time compute")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-ops", type=int, default=1)
    parser.add_argument("--max-value", type=int, default=20)
    parser.add_argument("--ns", default="4,8,16")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--out", type=Path, default=OUT / "real_arith.json")
    parser.add_argument("--quick", action="store_true", help="20 problems, N=4")
    args = parser.parse_args(argv)
    n_problems, ns = args.problems, [int(x) for x in args.ns.split(",")]
    if args.quick:
        n_problems, ns = 20, [4]
        if args.out == OUT / "real_arith.json":
            args.out = OUT / "real_arith_quick.json"
    problems = arithmetic_problems(
        n_problems, seed=args.seed, max_ops=args.max_ops, max_value=args.max_value
    )
    data = load(args.out)
    setup = {
        "problems": n_problems,
        "seed": args.seed,
        "max_ops": args.max_ops,
        "max_value": args.max_value,
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }
    if data.get("setup", setup) != setup:
        data = {"results": {}}  # a different experiment: start over
    data["setup"] = setup
    for name in args.models.split(","):
        asyncio.run(bench_model(name, problems, ns, data, args.out))
    md = table(data)
    args.out.with_suffix(".md").write_text(md, encoding="utf-8")
    plot(data, args.out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
