"""``ratts serve`` under load: N concurrent chat requests, latency added over the sim's own.

Question answered: how much latency does the ratts server add on top of the model calls it
makes, when many clients hit it at once? Three processes: ``ratts sim serve`` (a SIMULATED
policy + PRM server with a capacity model), ``ratts serve`` (the real server, the real
orchestrator, SQLite logging on) and this client, which fires ``--requests`` chat
completions at once with the official ``openai`` client.

Per request: end-to-end latency at the client; the sim's own time, which is the HTTP time
ratts spent waiting on the sim (``ratts.usage.request_seconds``, reported in each reply);
added = end-to-end - sim time. The scenarios force strategies whose model calls run one
after another (Best-of-N: one policy call then one PRM call; beam search with one beam:
one policy + one PRM call per step), so the sim time is the critical path and "added" is
exactly what ratts adds: HTTP in and out of ratts, parsing, routing, the strategy's own
work, grading and the log write, plus any queueing inside ratts under load. Endpoint
concurrency limits are raised above the load so they do not add queueing of their own.

Usage: ``.venv/bin/python bench/server_load.py`` (about a minute on 2 cores). Writes
``bench/results/server_load.json``. Every model number is from a SIMULATION.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simproc import SimProcess, free_port, simulator, stop_process, wait_healthy

from ratts.sim import Capacity, SimConfig

OUT = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

# Requests take tens to hundreds of milliseconds, like a loaded GPU server: 256 batch slots
# decoding at 400 tokens/s each, 20 ms of scheduling latency per request; a PRM at
# 50,000 tokens/s per slot.
CAPACITY = Capacity(
    slots=256,
    prefill_tps=20_000.0,
    decode_tps=400.0,
    base_latency_s=0.02,
    prm_slots=256,
    prm_tps=50_000.0,
)
SCENARIOS: list[tuple[str, str, int]] = [
    ("best_of_n N=4", "ratts/best_of_n", 4),
    ("beam_search N=4 M=4", "ratts/beam_search", 4),
]


@dataclass
class Reply:
    ok: bool
    seconds: float
    sim_seconds: float
    tokens: int
    error: str | None = None


@dataclass
class Summary:
    scenario: str
    model: str
    budget: int
    requests: int
    errors: int
    wall_s: float
    throughput_rps: float
    e2e_p50_s: float
    e2e_p99_s: float
    sim_p50_s: float
    sim_p99_s: float
    added_p50_s: float
    added_p99_s: float
    added_mean_s: float
    tokens_per_request: float


def settings_toml(sim_url: str, db: Path) -> str:
    return f"""
db_url = "sqlite:///{db}"

[[policies]]
name = "sim-weak"
base_url = "{sim_url}/v1"
model = "sim-weak"
params = 1e9
max_concurrency = 1024
timeout_s = 120

[[prms]]
name = "sim-prm"
kind = "vllm_pooling"
base_url = "{sim_url}"
model = "sim-prm"
max_concurrency = 1024
timeout_s = 120
"""


@contextmanager
def ratts_server(sim: SimProcess, tmp: Path, *, log_runs: bool = True) -> Iterator[str]:
    """``python -m ratts.cli serve`` on a free port; yields its /v1 URL."""
    toml = tmp / "ratts.toml"
    toml.write_text(settings_toml(sim.url, tmp / "runs.db"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATTS_")}
    cmd = [sys.executable, "-m", "ratts.cli", "serve", "--port", str(port)]
    cmd += ["--config", str(toml), "--log-level", "warning"]
    if not log_runs:
        cmd.append("--no-log")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, timeout_s=120, what="ratts serve")
        yield f"{url}/v1"
    finally:
        stop_process(proc, timeout_s=20)


async def one(client: openai.AsyncOpenAI, model: str, budget: int, i: int) -> Reply:
    question = f"Load {i}: follow the hidden chain of operations; give the value."
    start = time.perf_counter()
    try:
        resp = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            extra_body={"budget": budget},
        )
    except openai.OpenAIError as exc:
        return Reply(False, time.perf_counter() - start, 0.0, 0, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - start
    ratts = (resp.model_extra or {})["ratts"]
    usage = ratts["usage"]
    return Reply(True, seconds, float(usage["request_seconds"]), int(usage["total_tokens"]))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def scenario(url: str, name: str, model: str, budget: int, n: int) -> Summary:
    async with openai.AsyncOpenAI(
        base_url=url, api_key="unused", max_retries=0, timeout=300
    ) as client:
        for i in range(3):  # warm-up: first-request imports and connections
            await one(client, model, budget, -1 - i)
        start = time.perf_counter()
        replies = await asyncio.gather(*(one(client, model, budget, i) for i in range(n)))
        wall = time.perf_counter() - start
    good = [r for r in replies if r.ok]
    for r in replies:
        if not r.ok:
            print(f"  error: {r.error}", file=sys.stderr)
    added = [r.seconds - r.sim_seconds for r in good]
    e2e = [r.seconds for r in good]
    sim = [r.sim_seconds for r in good]
    return Summary(
        scenario=name,
        model=model,
        budget=budget,
        requests=n,
        errors=n - len(good),
        wall_s=wall,
        throughput_rps=len(good) / wall,
        e2e_p50_s=pct(e2e, 50),
        e2e_p99_s=pct(e2e, 99),
        sim_p50_s=pct(sim, 50),
        sim_p99_s=pct(sim, 99),
        added_p50_s=pct(added, 50),
        added_p99_s=pct(added, 99),
        added_mean_s=statistics.fmean(added) if added else float("nan"),
        tokens_per_request=statistics.fmean(r.tokens for r in good) if good else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests")
    parser.add_argument("--out", type=Path, default=OUT / "server_load.json")
    parser.add_argument("--no-log", action="store_true", help="run ratts serve without the run log")
    args = parser.parse_args(argv)

    summaries: list[Summary] = []
    with (
        simulator(SimConfig(capacity=CAPACITY)) as sim,
        tempfile.TemporaryDirectory(prefix="ratts-load-") as tmp,
        ratts_server(sim, Path(tmp), log_runs=not args.no_log) as url,
    ):
        for name, model, budget in SCENARIOS:
            sim.reset()
            summary = asyncio.run(scenario(url, name, model, budget, args.requests))
            summaries.append(summary)
        stats = sim.stats()

    print(f"ratts serve, {args.requests} concurrent chat requests; the sim is a SIMULATION")
    header = (
        f"{'scenario':<22}{'errors':>7}{'req/s':>8}{'e2e p50':>9}{'e2e p99':>9}"
        f"{'sim p50':>9}{'sim p99':>9}{'added p50':>11}{'added p99':>11}"
    )
    print(header)
    for s in summaries:
        print(
            f"{s.scenario:<22}{s.errors:>7}{s.throughput_rps:>8.1f}{s.e2e_p50_s:>9.3f}"
            f"{s.e2e_p99_s:>9.3f}{s.sim_p50_s:>9.3f}{s.sim_p99_s:>9.3f}"
            f"{s.added_p50_s:>11.3f}{s.added_p99_s:>11.3f}"
        )
    record: dict[str, Any] = {
        "bench": "server_load",
        "simulated_backend": True,
        "requests": args.requests,
        "run_log": not args.no_log,
        "capacity": CAPACITY.model_dump(),
        "sim_responses_by_status": stats.get("responses_by_status"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1_5_15": list(os.getloadavg()),  # other work on the box skews latency
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [asdict(s) for s in summaries],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if any(s.errors for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
