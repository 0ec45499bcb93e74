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

Load shape: ``--clients`` clients (default 200), each sending its next request as soon as
its last one is answered, for ``--duration`` seconds (default 60) per scenario; requests
still in flight at the end are awaited and counted. The ratts server's memory is sampled
from /proc every 0.5 s: its resident set at the start and end of each scenario, the
highest sample, and the kernel's own peak (VmHWM) for the whole process.

Usage: ``flock /tmp/ratts-vllm.lock .venv/bin/python bench/server_load.py`` (about two and a
half minutes on 2 cores). Writes ``bench/results/server_load.json``. Every model number is
from a SIMULATION.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    clients: int
    duration_s: float
    requests: int
    errors: int
    rss_start_mb: float
    rss_end_mb: float
    rss_max_mb: float
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


@dataclass
class Served:
    url: str  # its /v1 URL
    pid: int


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process ``pid`` from /proc (VmRSS now, VmHWM its peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def ratts_server(sim: SimProcess, tmp: Path, *, log_runs: bool = True) -> Iterator[Served]:
    """``python -m ratts.cli serve`` on a free port; yields its /v1 URL and pid."""
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
        yield Served(f"{url}/v1", proc.pid)
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


async def scenario(
    served: Served, name: str, model: str, budget: int, clients: int, duration_s: float
) -> Summary:
    replies: list[Reply] = []
    rss: list[float] = []

    async def client_loop(client: openai.AsyncOpenAI, c: int, until: float) -> None:
        i = 0
        while time.perf_counter() < until:
            replies.append(await one(client, model, budget, c * 1_000_000 + i))
            i += 1

    async def sample_memory(stop: asyncio.Event) -> None:
        while not stop.is_set():
            rss.append(memory_mb(served.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)

    # the openai client's own pool allows 1,000 connections: enough for every client
    async with openai.AsyncOpenAI(
        base_url=served.url, api_key="unused", max_retries=0, timeout=300
    ) as client:
        for i in range(3):  # warm-up: first-request imports and connections
            await one(client, model, budget, -1 - i)
        rss_start = memory_mb(served.pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(stop))
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, c, start + duration_s) for c in range(clients)))
        wall = time.perf_counter() - start
        stop.set()
        await sampler
        rss_end = memory_mb(served.pid)
    good = [r for r in replies if r.ok]
    for r in replies[:5]:
        if not r.ok:
            print(f"  error: {r.error}", file=sys.stderr)
    added = [r.seconds - r.sim_seconds for r in good]
    e2e = [r.seconds for r in good]
    sim = [r.sim_seconds for r in good]
    return Summary(
        scenario=name,
        model=model,
        budget=budget,
        clients=clients,
        duration_s=duration_s,
        requests=len(replies),
        errors=len(replies) - len(good),
        rss_start_mb=round(rss_start, 1),
        rss_end_mb=round(rss_end, 1),
        rss_max_mb=round(max(rss, default=rss_end), 1),
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
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per scenario")
    parser.add_argument("--out", type=Path, default=OUT / "server_load.json")
    parser.add_argument("--no-log", action="store_true", help="run ratts serve without the run log")
    args = parser.parse_args(argv)

    summaries: list[Summary] = []
    with (
        simulator(SimConfig(capacity=CAPACITY)) as sim,
        tempfile.TemporaryDirectory(prefix="ratts-load-") as tmp,
        ratts_server(sim, Path(tmp), log_runs=not args.no_log) as served,
    ):
        for name, model, budget in SCENARIOS:
            sim.reset()
            summaries.append(
                asyncio.run(scenario(served, name, model, budget, args.clients, args.duration))
            )
        stats = sim.stats()
        peak_mb = memory_mb(served.pid, "VmHWM")

    print(
        f"ratts serve, {args.clients} concurrent clients for {args.duration:g}s per scenario; "
        "the sim is a SIMULATION"
    )
    header = (
        f"{'scenario':<22}{'requests':>9}{'errors':>7}{'req/s':>7}{'e2e p50':>9}{'e2e p99':>9}"
        f"{'added p50':>11}{'added p99':>11}{'RSS start':>11}{'RSS max':>9}{'RSS end':>9}"
    )
    print(header)
    for s in summaries:
        print(
            f"{s.scenario:<22}{s.requests:>9}{s.errors:>7}{s.throughput_rps:>7.1f}"
            f"{s.e2e_p50_s:>9.3f}{s.e2e_p99_s:>9.3f}{s.added_p50_s:>11.3f}{s.added_p99_s:>11.3f}"
            f"{s.rss_start_mb:>9.0f}MB{s.rss_max_mb:>7.0f}MB{s.rss_end_mb:>7.0f}MB"
        )
    print(f"peak RSS of the ratts serve process (VmHWM): {peak_mb:.0f} MiB")
    record: dict[str, Any] = {
        "bench": "server_load",
        "simulated_backend": True,
        "clients": args.clients,
        "duration_s": args.duration,
        "run_log": not args.no_log,
        "peak_rss_mb": round(peak_mb, 1),
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
