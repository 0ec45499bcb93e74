"""A sweep through an outage of its only policy endpoint (SIMULATION).

The simulator serves the policy on loopback; once ``--after`` runs are logged it is
stopped for ``--outage`` seconds and then started again on the same port. Printed and
written to bench/results/outage_sweep.json: runs planned, done, failed, wall seconds.
Default settings throughout (outage_grace_s, breaker_cooldown_s, max_retries), so the
figure is what a user gets. Run: ``python bench/outage_sweep.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from ratts.orchestrator.sweep import load_problems, run_sweep
from ratts.settings import load_settings
from ratts.sim import SimConfig, SimServer
from ratts.sim.world import gold_answer
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot"),
    RunConfig(policy="sim-weak", prm=None, strategy="majority", params=StrategyParams(n=4)),
]


async def sweep_through_outage(problems: int, after: int, outage_s: float) -> dict[str, float]:
    config = SimConfig.model_validate({"capacity": {"base_latency_s": 0.05}})
    server = SimServer(config).start()
    port = server.port
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "sim.jsonl"
        with data.open("w", encoding="utf-8") as fh:
            for i in range(problems):
                question = f"Outage {i}: follow the hidden chain of operations; give the value."
                fh.write(json.dumps({"problem": question, "answer": gold_answer(question)}) + "\n")
        toml = folder / "ratts.toml"
        toml.write_text(
            f'db_url = "sqlite:///{folder / "runs.db"}"\n\n[[policies]]\nname = "sim-weak"\n'
            f'base_url = "{server.v1_url}"\nmodel = "sim-weak"\n',
            encoding="utf-8",
        )
        settings = load_settings(toml)
        loaded = load_problems(str(data)).problems
        done: list[int] = [0]
        with open_store(settings.db_url) as store:
            start = time.perf_counter()
            sweep = asyncio.ensure_future(
                run_sweep(
                    loaded,
                    CONFIGS,
                    store,
                    settings,
                    concurrency=4,
                    on_progress=lambda s: done.append(s.done + s.failed),
                )
            )
            while done[-1] < after and not sweep.done():
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(outage_s)
            back = await asyncio.to_thread(
                lambda: SimServer(SimConfig.model_validate(config.model_dump()), port=port).start()
            )
            try:
                stats = await sweep
            finally:
                back.stop()
            wall = time.perf_counter() - start
    return {
        "runs": float(stats.planned),
        "done": float(stats.done),
        "failed": float(stats.failed),
        "outage_s": outage_s,
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--after", type=int, default=10, help="runs logged before the outage")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the endpoint is down")
    parser.add_argument("--out", default=str(RESULTS / "outage_sweep.json"))
    args = parser.parse_args()
    figures = asyncio.run(sweep_through_outage(args.problems, args.after, args.outage))
    print("SIMULATION: sweep through an outage of its only policy endpoint")
    for key, value in figures.items():
        print(f"  {key:>9}: {value:g}")
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
