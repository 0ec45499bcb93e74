"""Router benchmark on a SIMULATED world: build it, log it with the sweep, train, evaluate.

Every number this prints comes from ``ratts.sim`` (a simulated policy/PRM server), not from
real models. The world: two policies (sim-weak, skill 0.35, 1B params; sim-strong, skill
0.8, 70B params), the good simulated PRM, problems whose difficulty spans easy..hard (from
the sim's hash of the question), and every config (CoT, majority, Best-of-N, beam search
at N = 4, 16, 64 on both policies). Steps, each resumable (re-running skips what is logged):

1. start the simulator in its own process (so server and client use separate cores);
2. ``run_sweep`` (what ``ratts sweep`` runs) logs problems x configs into a SQLite file;
3. ``collect_probes`` logs the router's probe (sim-weak, k=4, sim-prm) for every problem,
   and a k=32 probe per policy whose graded samples give the Pass@1 for the oracle bins;
4. ``evaluate`` splits by problem, trains on one part, and compares the router with the
   baselines at matched mean compute on the held-out part; the table is printed and saved
   as JSON and PNG under bench/results/.

Usage: ``python bench/router_sim.py [--problems 600] [--seed 0]`` (about 20-30 min on 2
cores the first time; seconds when everything is already logged).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simproc import simulator

from ratts.endpoints.factory import build_policy, build_prm
from ratts.orchestrator.sweep import collect_probes
from ratts.router import ProbeSpec
from ratts.router.evaluate import EvalConfig, evaluate
from ratts.router.report import format_table, plot_curves
from ratts.router.train import records_from_store
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import SimConfig, gold_answer
from ratts.store import open_store
from ratts.types import Problem, RunConfig, StrategyParams

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results"
POLICIES = (("sim-weak", 1e9, 0.1, 0.4), ("sim-strong", 7e10, 2.0, 8.0))
PRM_NAME = "sim-prm"
PRM_PARAMS = 1.5e9
STRATEGIES = ("majority", "best_of_n", "beam_search")
BUDGETS = (4, 16, 64)
PROBE_K = 4
PASS1_K = 32
DATASET = "sim-router"


def settings_for(url: str, out: Path) -> Settings:
    policies = [
        PolicySpec(
            name=name,
            base_url=f"{url}/v1",
            model=name,
            params=params,
            usd_per_mtok_prompt=p_in,
            usd_per_mtok_completion=p_out,
            max_concurrency=64,
        )
        for name, params, p_in, p_out in POLICIES
    ]
    prm = PRMSpec(
        name=PRM_NAME,
        kind="vllm_pooling",
        base_url=url,
        model=PRM_NAME,
        params=PRM_PARAMS,
        usd_per_mtok=0.05,
        max_concurrency=64,
    )
    return Settings(
        db_url=f"sqlite:///{out / 'router_sim.db'}",
        data_dir=out / "data",
        policies=policies,
        prms=[prm],
    )


def problems(count: int, seed: int) -> list[Problem]:
    """Sim problems: the question text carries no hint of difficulty (the sim hashes it)."""
    out = []
    for i in range(count):
        q = (
            f"Problem {seed}-{i}: a sequence starts at x_0 and each step applies "
            "x_k = (a_k * x_(k-1) + b_k) mod 10007 with the given a_k, b_k. What is the last x?"
        )
        out.append(
            Problem(
                id=f"sim-{seed}-{i}",
                question=q,
                answer=gold_answer(q, seed),
                meta={"dataset": DATASET},
            )
        )
    return out


def configs() -> list[RunConfig]:
    out = []
    for policy, *_ in POLICIES:
        out.append(RunConfig(policy=policy, prm=None, strategy="cot", params=StrategyParams(n=1)))
        for strategy in STRATEGIES:
            for n in BUDGETS:
                prm = None if strategy == "majority" else PRM_NAME
                out.append(
                    RunConfig(policy=policy, prm=prm, strategy=strategy, params=StrategyParams(n=n))
                )
    return out


async def build_world(settings: Settings, items: list[Problem], concurrency: int) -> None:
    from ratts.orchestrator.sweep import run_sweep

    with open_store(settings.db_url) as store:
        t = time.perf_counter()
        stats = await run_sweep(
            items, configs(), store, settings, dataset=DATASET, concurrency=concurrency
        )
        print(f"sweep: {stats.summary()} [{time.perf_counter() - t:.0f}s]", flush=True)
        t = time.perf_counter()
        prm = build_prm(settings.prm(PRM_NAME))
        for policy_name, k in ((POLICIES[0][0], PROBE_K), *((p[0], PASS1_K) for p in POLICIES)):
            policy = build_policy(settings.policy(policy_name))
            logged = await collect_probes(
                store, items, policy, prm, k=k, dataset=DATASET, concurrency=concurrency
            )
            await policy.aclose()
            print(f"probes {policy_name} k={k}: {logged} logged", flush=True)
        await prm.aclose()
        print(f"probes done [{time.perf_counter() - t:.0f}s]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--unit", default="flops", choices=["tokens", "flops", "usd"])
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    items = problems(args.problems, args.seed)
    with simulator(SimConfig(seed=args.seed)) as sim:
        settings = settings_for(sim.url, out)
        asyncio.run(build_world(settings, items, args.concurrency))
    with open_store(settings.db_url) as store:
        records = records_from_store(store, dataset=DATASET)
    t = time.perf_counter()
    report = evaluate(
        records,
        EvalConfig(
            seed=args.seed,
            unit=args.unit,
            probe=ProbeSpec(POLICIES[0][0], PRM_NAME, PROBE_K),
        ),
    )
    print(f"evaluate [{time.perf_counter() - t:.0f}s]")
    print("SIMULATED world (ratts.sim): numbers are simulations, not real-model results.")
    print(format_table(report))
    (out / "router_sim.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out / "router_sim.md").write_text(
        "SIMULATED world (ratts.sim); `python bench/router_sim.py --problems "
        f"{args.problems} --seed {args.seed}`\n\n{format_table(report)}\n"
    )
    plot_curves(report, out / "router_sim.png")
    print(f"wrote router_sim.json, router_sim.md and router_sim.png under {out}")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
