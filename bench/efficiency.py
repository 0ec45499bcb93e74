"""Orchestrator efficiency against a SIMULATED server's capacity.

Does ratts keep an inference server busy, or waste it on client overhead and idle waits?
The server is ``ratts sim serve`` in its own process with a capacity model (64 batch slots,
prefill and decode tokens/s per slot, a fixed latency per request, a PRM with its own
slots); the client is the real sweep (``run_sweep``: strategies, endpoint clients, grading,
the SQLite store) in this process. For Best-of-16, beam search (16, 4) and DVTS (16, 4),
one sweep each of ``--problems`` problems; from the server's own counters:

- utilisation = busy policy slot-seconds / (slots x the sweep's measured wall time);
- the ideal time (policy tokens / capacity = busy slot-seconds / slots) vs the wall time;
- the orchestrator's CPU seconds (this process, ``resource.getrusage``: user + system) per
  1000 policy requests, next to the server process's CPU.

A "policy request" is one prompt sampled ``n`` times (a sequence group: what vLLM schedules
as one request). Several of them may share one HTTP request (beam search sends a step's
beams as a list of prompts); HTTP requests are counted separately.

Targets: utilisation >= 90%; <= 0.5 client CPU-s per 1000 policy requests.
``--profile`` adds a pyinstrument profile of the client (the breakdown by library that the
closing note relies on). Every number comes from a SIMULATED server; the client is real.

Usage: ``.venv/bin/python bench/efficiency.py`` (about 3 minutes on 2 cores; 4 with
``--profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simproc import SimProcess, simulator

from ratts.orchestrator.sweep import run_sweep
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.sim import Capacity, SimConfig, SimPolicy, SimPRM, gold_answer
from ratts.store import open_store
from ratts.types import Problem, RunConfig, StrategyParams

OUT = Path(__file__).resolve().parent / "results"
MAX_INTERVALS = 10_000  # the sim keeps this many request intervals
POLICY = "sim-policy"
PRM = "sim-prm"
TARGET_UTILISATION = 0.90
TARGET_CPU_PER_1K = 0.5

# A GPU-like server: 64 sequences decode together at 100 tokens/s each (6,400 tokens/s in
# all), prompts prefill at 5,000 tokens/s per slot (a request's choices share one prefill,
# as with a prefix cache), and every request pays 20 ms of scheduling and network latency.
# A step (~18 tokens) takes ~0.2 s and a whole solution ~1 s, so a Python client has tens
# to hundreds of ms per request to spare. The PRM is prefill-only: 16 slots x 20,000 tok/s.
CAPACITY = Capacity(
    slots=64,
    prefill_tps=5000.0,
    decode_tps=100.0,
    base_latency_s=0.02,
    prm_slots=16,
    prm_tps=20000.0,
)

CONFIGS = (
    ("best_of_n", 16, 4),
    ("beam_search", 16, 4),
    ("dvts", 16, 4),
)


def sim_config() -> SimConfig:
    return SimConfig(
        seed=0,
        policies={POLICY: SimPolicy(skill=0.5, params=1.5e9)},
        prms={PRM: SimPRM(quality=2.0, noise=0.8)},
        capacity=CAPACITY,
    )


def problems(count: int) -> list[Problem]:
    out = []
    for i in range(count):
        q = f"Efficiency problem {i}: follow the recurrence x_k = (a_k x_(k-1) + b_k) mod 10007."
        out.append(Problem(id=f"eff-{i}", question=q, answer=gold_answer(q)))
    return out


def settings_for(sim: SimProcess, db: Path, max_concurrency: int) -> Settings:
    return Settings(
        db_url=f"sqlite:///{db}",
        data_dir=db.parent / "data",
        policies=[
            PolicySpec(
                name=POLICY,
                base_url=sim.v1_url,
                model=POLICY,
                params=1.5e9,
                max_concurrency=max_concurrency,
            )
        ],
        prms=[
            PRMSpec(
                name=PRM,
                kind="vllm_pooling",
                base_url=sim.url,
                model=PRM,
                params=1.5e9,
                max_concurrency=max_concurrency,
            )
        ],
    )


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Row:
    label: str
    problems: int
    done: int
    failed: int
    accuracy: float | None
    wall_s: float
    ideal_s: float
    utilisation: float
    prm_utilisation: float
    policy_requests: int
    policy_http_requests: int
    prm_http_requests: int
    generations: int
    prompt_tokens: int
    completion_tokens: int
    prm_tokens: int
    client_cpu_s: float
    cpu_per_1k_policy_requests: float
    cpu_per_1k_http_requests: float
    cpu_per_1k_generations: float
    server_cpu_s: float | None
    load_average: float
    demand_saturated: float | None


async def run_one(
    sim: SimProcess,
    settings: Settings,
    items: Sequence[Problem],
    strategy: str,
    n: int,
    m: int,
    concurrency: int,
) -> Row:
    config = RunConfig(
        policy=POLICY, prm=PRM, strategy=strategy, params=StrategyParams(n=n, beam_width=m)
    )
    label = f"best_of_n({n})" if strategy == "best_of_n" else f"{strategy}({n},{m})"
    sim.reset()
    server_cpu0 = sim.cpu_seconds()
    with open_store(settings.db_url) as store:
        cpu0 = _cpu_self()
        epoch0, t0 = time.time(), time.perf_counter()
        stats = await run_sweep(items, [config], store, settings, concurrency=concurrency)
        wall = time.perf_counter() - t0
        cpu = _cpu_self() - cpu0
        epoch1 = time.time()
    server_cpu1 = sim.cpu_seconds()
    s = sim.stats()
    cap = CAPACITY
    # Every slot hold is tokens / rate (prefill once per prompt, as with a prefix cache),
    # so the PRM's share of the busy counter is exactly its tokens / its rate.
    prm_busy = s["prm_tokens"] / cap.prm_tps if cap.prm_tps else 0.0
    policy_busy = s["busy_slot_seconds"] - prm_busy
    from_tokens = s["prompt_tokens"] / cap.prefill_tps + s["completion_tokens"] / cap.decode_tps
    if abs(from_tokens - policy_busy) > 1e-6 * max(1.0, policy_busy):
        raise RuntimeError(f"busy counter {policy_busy} != tokens / capacity {from_tokens}")
    http = int(s["requests"].get("completions", 0))
    prm_http = int(s["requests"].get("pooling", 0))
    groups = int(s["prompts"])
    return Row(
        label=label,
        problems=len(items),
        done=stats.done,
        failed=stats.failed,
        accuracy=stats.accuracy,
        wall_s=wall,
        ideal_s=policy_busy / cap.slots,
        utilisation=policy_busy / (cap.slots * wall),
        prm_utilisation=prm_busy / (cap.prm_slots * wall),
        policy_requests=groups,
        policy_http_requests=http,
        prm_http_requests=prm_http,
        generations=int(s["choices"]),
        prompt_tokens=int(s["prompt_tokens"]),
        completion_tokens=int(s["completion_tokens"]),
        prm_tokens=int(s["prm_tokens"]),
        client_cpu_s=cpu,
        cpu_per_1k_policy_requests=1000 * cpu / max(groups, 1),
        cpu_per_1k_http_requests=1000 * cpu / max(http + prm_http, 1),
        cpu_per_1k_generations=1000 * cpu / max(int(s["choices"]), 1),
        server_cpu_s=(
            None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
        ),
        load_average=os.getloadavg()[0],
        demand_saturated=demand_saturated(s, epoch0, epoch1, cap.slots),
    )


def demand_saturated(stats: dict[str, Any], start: float, end: float, slots: int) -> float | None:
    """Share of the sweep's wall time during which the client had at least ``slots``
    policy sequences in flight at the server (from the server's request intervals).

    Near 1 with utilisation below target means the client kept the server fed and the
    shortfall is on the server's side (here: the simulator's own process short of CPU).
    None when the server's interval log overflowed and the answer would be partial.
    """
    spans = [i for i in stats["intervals"] if i["endpoint"] == "completions"]
    if not spans or len(stats["intervals"]) >= MAX_INTERVALS or end <= start:
        return None
    edges = sorted(
        [(max(i["start"], start), i["choices"]) for i in spans]
        + [(min(i["end"], end), -i["choices"]) for i in spans]
    )
    saturated = 0.0
    level = 0
    last = start
    for at, delta in edges:
        if level >= slots:
            saturated += max(0.0, at - last)
        last = max(last, at)
        level += delta
    return saturated / (end - start)


def table(rows: Sequence[Row]) -> str:
    head = (
        f"{'config':<18} {'wall s':>6} {'ideal s':>7} {'util':>6} {'PRM util':>8} "
        f"{'pol req':>7} {'HTTP pol':>8} {'HTTP PRM':>8} {'gens':>6} {'cli CPU s':>9} "
        f"{'CPU/1k req':>10} {'CPU/1k HTTP':>11} {'CPU/1k gen':>10} {'srv CPU s':>9} "
        f"{'fed':>5} {'acc':>6} {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        srv = "-" if r.server_cpu_s is None else f"{r.server_cpu_s:.1f}"
        acc = "-" if r.accuracy is None else f"{r.accuracy:.1%}"
        fed = "-" if r.demand_saturated is None else f"{r.demand_saturated:.0%}"
        lines.append(
            f"{r.label:<18} {r.wall_s:>6.1f} {r.ideal_s:>7.1f} {r.utilisation:>6.1%} "
            f"{r.prm_utilisation:>8.1%} {r.policy_requests:>7} {r.policy_http_requests:>8} "
            f"{r.prm_http_requests:>8} {r.generations:>6} {r.client_cpu_s:>9.2f} "
            f"{r.cpu_per_1k_policy_requests:>10.2f} {r.cpu_per_1k_http_requests:>11.2f} "
            f"{r.cpu_per_1k_generations:>10.3f} {srv:>9} {fed:>5} {acc:>6} {r.load_average:>5.1f}"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> list[str]:
    out = []
    for r in rows:
        util_ok = r.utilisation >= TARGET_UTILISATION
        cpu_ok = r.cpu_per_1k_policy_requests <= TARGET_CPU_PER_1K
        line = (
            f"{r.label}: utilisation {r.utilisation:.1%} "
            f"({'MET' if util_ok else 'MISSED'}: target >= {TARGET_UTILISATION:.0%}); "
            f"client CPU {r.cpu_per_1k_policy_requests:.2f} s per 1000 policy requests "
            f"({'MET' if cpu_ok else 'MISSED'}: target <= {TARGET_CPU_PER_1K})"
        )
        if not util_ok and r.demand_saturated is not None:
            if r.demand_saturated >= TARGET_UTILISATION:
                line += (
                    f"; the client kept >= {CAPACITY.slots} sequences at the server "
                    f"{r.demand_saturated:.0%} of the time, so the shortfall is the simulated "
                    f"server's own (its process short of CPU: load average {r.load_average:.1f} "
                    "on this machine)"
                )
            else:
                line += (
                    f"; the client had >= {CAPACITY.slots} sequences at the server only "
                    f"{r.demand_saturated:.0%} of the time: it did not keep the server fed"
                )
        out.append(line)
    return out


# ---------------------------------------------------------------- profile breakdown

_HTTP_LIBS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "h11", "anyio", "sniffio")


def _library(path: str | None) -> str | None:
    """Which library a frame's file belongs to (None: a built-in, ask the caller)."""
    if not path or path.startswith("<"):
        return None
    if "site-packages/" in path:
        top = path.split("site-packages/")[1].split("/")[0].removesuffix(".py")
        if top in _HTTP_LIBS:
            return "HTTP client stack (openai SDK, httpx/httpcore, h11, anyio)"
        if top == "sqlalchemy":
            return "SQLAlchemy (store)"
        return f"other library: {top}"
    if "/ratts/" in path:
        part = path.split("/ratts/")[1].split("/")[0].removesuffix(".py")
        return f"ratts.{part}"
    if "/asyncio/" in path or path.endswith("selectors.py"):
        return "asyncio event loop (incl. socket reads/writes)"
    if "/lib/python3" in path:
        return "stdlib: " + path.rsplit("/", 1)[1].removesuffix(".py")
    return "other: " + path.rsplit("/", 1)[1]


def profile_breakdown(root: Any) -> dict[str, float]:
    """Main-thread seconds by library from a pyinstrument frame tree; time waiting in
    ``select`` is idle. A built-in's time goes to the library that called it."""
    totals: Counter[str] = Counter()

    def walk(frame: Any, owner: str, idle: bool) -> None:
        idle = idle or frame.function in ("select", "epoll.poll", "poll.poll")
        lib = _library(frame.file_path) or owner
        own = frame.time - sum(child.time for child in frame.children)
        if own > 0:
            totals["idle (waiting for replies)" if idle else lib] += own
        for child in frame.children:
            walk(child, lib, idle)

    walk(root, "other", False)
    busy = sum(v for k, v in totals.items() if not k.startswith("idle")) or 1.0
    out: dict[str, float] = {}
    rest = 0.0
    for name, seconds in totals.most_common():
        if name.startswith("idle") or seconds / busy >= 0.01:
            out[name] = seconds
        else:
            rest += seconds
    out["everything else (< 1% each)"] = rest
    return out


# ---------------------------------------------------------------- output


def plot(rows: Sequence[Row], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=120)
    ax1, ax2 = fig.subplots(1, 2)
    labels = [r.label for r in rows]
    xs = list(range(len(rows)))
    ax1.bar([x - 0.2 for x in xs], [r.ideal_s for r in rows], 0.4, label="ideal: tokens / capacity")
    ax1.bar([x + 0.2 for x in xs], [r.wall_s for r in rows], 0.4, label="measured wall")
    for x, r in zip(xs, rows, strict=True):
        ax1.annotate(f"{r.utilisation:.0%}", (x + 0.2, r.wall_s), ha="center", va="bottom")
    ax1.set_xticks(xs, labels, fontsize=8)
    ax1.set_ylabel("seconds for the sweep")
    ax1.set_title("server time, ideal vs wall (label: utilisation)", fontsize=9)
    ax1.legend(fontsize=8, loc="lower right")
    width = 0.27
    ax2.bar(
        [x - width for x in xs],
        [r.cpu_per_1k_policy_requests for r in rows],
        width,
        label="per 1000 policy requests",
    )
    ax2.bar(xs, [r.cpu_per_1k_http_requests for r in rows], width, label="per 1000 HTTP requests")
    ax2.bar(
        [x + width for x in xs],
        [r.cpu_per_1k_generations for r in rows],
        width,
        label="per 1000 generations",
    )
    ax2.axhline(TARGET_CPU_PER_1K, color="red", linestyle="--", label="target (per 1000 req.)")
    ax2.set_xticks(xs, labels, fontsize=8)
    ax2.set_ylabel("client CPU seconds")
    ax2.set_title("orchestrator CPU", fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle(
        f"SIMULATION: ratts sweeps of {rows[0].problems} problems against a simulated "
        f"{CAPACITY.slots}-slot server",
        fontsize=10,
    )
    fig.savefig(path, format="png", bbox_inches="tight")


async def run_all(args: argparse.Namespace, sim: SimProcess, db: Path) -> list[Row]:
    settings = settings_for(sim, db, args.max_concurrency)
    items = problems(args.problems)
    rows = []
    for strategy, n, m in CONFIGS:
        if args.only and strategy not in args.only:
            continue
        row = await run_one(sim, settings, items, strategy, n, m, args.concurrency)
        print(
            f"  {row.label}: wall {row.wall_s:.1f}s (ideal {row.ideal_s:.1f}s), "
            f"utilisation {row.utilisation:.1%}, "
            f"CPU/1k policy requests {row.cpu_per_1k_policy_requests:.2f}s",
            flush=True,
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64, help="problems in flight")
    parser.add_argument(
        "--max-concurrency", type=int, default=64, help="HTTP requests in flight per endpoint"
    )
    parser.add_argument("--only", nargs="*", help="strategies to run (default: all three)")
    parser.add_argument("--profile", action="store_true", help="profile the client too")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print("SIMULATION: a simulated server (ratts.sim) driven by the real ratts client.")
    print(f"capacity: {CAPACITY.model_dump()}", flush=True)
    breakdown: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ratts-eff-") as tmp, simulator(sim_config()) as sim:
        db = Path(tmp) / "runs.db"
        if args.profile:
            from pyinstrument import Profiler

            rows = []
            for strategy, *_ in CONFIGS:
                if args.only and strategy not in args.only:
                    continue
                one = argparse.Namespace(**{**vars(args), "only": [strategy]})
                profiler = Profiler(interval=0.001, async_mode="disabled")
                with profiler:
                    got = asyncio.run(run_all(one, sim, db))
                rows.extend(got)
                session = profiler.last_session
                assert session is not None
                breakdown[got[0].label] = profile_breakdown(session.root_frame())
                text = profiler.output_text(unicode=False, color=False)
                (args.out / f"efficiency_profile_{strategy}.txt").write_text(text)
        else:
            rows = asyncio.run(run_all(args, sim, db))
    print()
    print("SIMULATION (ratts.sim server; real ratts client)")
    print(table(rows))
    print()
    for line in verdicts(rows):
        print(line)
    if breakdown:
        print("\nclient main thread by library (pyinstrument, wall seconds; idle = waiting):")
        for label, parts in breakdown.items():
            busy = sum(v for k, v in parts.items() if not k.startswith("idle"))
            print(f"  {label}:")
            for name, seconds in parts.items():
                share = "" if name.startswith("idle") else f" ({seconds / busy:.0%} of busy)"
                print(f"    {seconds:7.2f}s  {name}{share}")
    result: dict[str, Any] = {
        "simulation": True,
        "command": "python bench/efficiency.py " + " ".join(sys.argv[1:]),
        "capacity": CAPACITY.model_dump(),
        "problems": args.problems,
        "concurrency": args.concurrency,
        "max_concurrency": args.max_concurrency,
        "targets": {"utilisation": TARGET_UTILISATION, "cpu_s_per_1k_requests": TARGET_CPU_PER_1K},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": [asdict(r) for r in rows],
        "verdicts": verdicts(rows),
        "profile_by_library_s": breakdown or None,
        "total_seconds": time.perf_counter() - started,
    }
    name = "efficiency_profiled" if args.profile else "efficiency"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.out / f"{name}.png")
    print(f"\nwrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
