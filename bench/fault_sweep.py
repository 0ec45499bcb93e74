"""A sweep under injected faults, then ``--retry-failed`` once they stop (SIMULATION).

The simulator serves the policy and the PRM on loopback and injects the issue's fault mix
into every completions and pooling call: 10% HTTP 500, 5% 429 with a Retry-After, 5%
timeouts (it sleeps past the client's timeout) and 2% malformed JSON bodies. The sweep
runs CoT and Best-of-4 over ``--problems`` problems with ratts's default retry, breaker
and outage settings (only the client timeout is cut, so a timed-out call costs seconds,
not minutes). Then the faults stop (a clean server on the same port) and the sweep runs
again with ``retry_failed``.

Figures, printed and written to bench/results/fault_sweep.json:
- runs: (problem, config) pairs planned; graded / failed after the first pass;
- faults: faulty replies the simulator sent; retries: those a later attempt recovered
  from (every fault but the last attempt of each failed run or PRM fallback);
- prm_fallbacks: Best-of-N runs whose PRM call failed after its retries, graded by
  majority vote instead (their row's features say ``prm_fallback``);
- lost: planned pairs with no row; duplicated: pairs with more than one row;
- retried_ok / still_failed: the second pass with ``retry_failed``.
Run: ``python bench/fault_sweep.py`` (about 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ratts.orchestrator.runner import PRM_FALLBACK
from ratts.orchestrator.sweep import load_problems, run_sweep
from ratts.settings import load_settings
from ratts.sim import SimConfig, SimServer
from ratts.sim.world import gold_answer
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

RESULTS = Path(__file__).resolve().parent / "results"
FAULTS = {
    "error_500": 0.10,
    "error_429": 0.05,
    "retry_after_s": 0.1,
    "timeout": 0.05,
    "timeout_s": 3.0,
    "malformed": 0.02,
}
CLIENT_TIMEOUT_S = 1.0
CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot"),
    RunConfig(policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=4)),
]


def _write_inputs(folder: Path, problems: int, url: str) -> Path:
    data = folder / "sim.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for i in range(problems):
            question = f"Fault {i}: follow the hidden chain of operations; give the value."
            fh.write(json.dumps({"problem": question, "answer": gold_answer(question)}) + "\n")
    toml = folder / "ratts.toml"
    toml.write_text(
        f'db_url = "sqlite:///{folder / "runs.db"}"\n\n'
        f'[[policies]]\nname = "sim-weak"\nbase_url = "{url}/v1"\nmodel = "sim-weak"\n'
        f"timeout_s = {CLIENT_TIMEOUT_S}\n\n"
        f'[[prms]]\nname = "sim-prm"\nkind = "vllm_pooling"\nbase_url = "{url}"\n'
        f'model = "sim-prm"\ntimeout_s = {CLIENT_TIMEOUT_S}\n',
        encoding="utf-8",
    )
    return data


def _tally(rows: list[dict[str, Any]], planned: int) -> tuple[int, int]:
    """(lost, duplicated) pairs in the run log."""
    counts = Counter((r["problem_key"], r["config_key"], r["budget"]) for r in rows)
    return planned - len(counts), sum(1 for c in counts.values() if c > 1)


async def fault_sweep(problems: int, concurrency: int) -> dict[str, Any]:
    faulty = SimServer(SimConfig.model_validate({"faults": FAULTS}))
    faulty.start()
    port = faulty.port
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _write_inputs(folder, problems, faulty.base_url)
        settings = load_settings(folder / "ratts.toml")
        loaded = load_problems(str(data)).problems
        planned = len(loaded) * len(CONFIGS)
        with open_store(settings.db_url) as store:
            start = time.perf_counter()
            try:
                first = await run_sweep(loaded, CONFIGS, store, settings, concurrency=concurrency)
            finally:
                deadline = time.monotonic() + float(FAULTS["timeout_s"]) + 1
                while faulty.stats()["in_flight"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # let its sleeping 'timeout' replies finish
                faults = faulty.stats()["faults"]
                faulty.stop()
            first_wall = time.perf_counter() - start
            lost, duplicated = _tally(store.runs(), planned)
            fallbacks = sum(1 for r in store.runs() if PRM_FALLBACK in (r["features"] or {}))
            errors = Counter(
                (r["error"] or "").split(":")[0] for r in store.runs() if r["error"] is not None
            )
            calm = SimServer(SimConfig(), port=port)
            calm.start()
            try:
                start = time.perf_counter()
                second = await run_sweep(
                    loaded, CONFIGS, store, settings, concurrency=concurrency, retry_failed=True
                )
                second_wall = time.perf_counter() - start
            finally:
                calm.stop()
            lost_after, duplicated_after = _tally(store.runs(), planned)
    injected = sum(faults.values())
    return {
        "simulated": True,
        "runs": planned,
        "graded": first.done,
        "failed": first.failed,
        "faults": injected,
        "faults_by_kind": dict(faults),
        "retries": injected - first.failed - fallbacks,
        "prm_fallbacks": fallbacks,
        "lost": lost,
        "duplicated": duplicated,
        "failed_by_error": dict(errors),
        "first_wall_s": round(first_wall, 2),
        "retried_ok": second.done,
        "still_failed": second.failed,
        "lost_after_retry": lost_after,
        "duplicated_after_retry": duplicated_after,
        "retry_wall_s": round(second_wall, 2),
        "fault_mix": FAULTS,
        "client_timeout_s": CLIENT_TIMEOUT_S,
        "concurrency": concurrency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS / "fault_sweep.json"))
    args = parser.parse_args()
    figures = asyncio.run(fault_sweep(args.problems, args.concurrency))
    print("SIMULATION: sweep under the fault mix, then --retry-failed with the faults stopped")
    for key, value in figures.items():
        print(f"  {key:>22}: {value}")
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    ok = figures["lost"] == figures["duplicated"] == figures["still_failed"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
