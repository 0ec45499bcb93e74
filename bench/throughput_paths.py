"""Diagnostic: which layer, if any, makes the server slower for ratts's requests?

The same problems x N samples, at one cap on sequences in flight, in one server, through
each path in turn, each path ``--reps`` times interleaved:

- ``ceiling``: the raw loop of ``real_throughput.py`` (single-sample requests, each
  problem's samples together);
- ``ceiling_interleaved``: the same loop with the problems interleaved (p1, p2, ..., p1, ...),
  to see whether the mix of prompts in the server's batch matters;
- ``client_n1``: ``PolicyClient.complete`` sending the same single-sample requests;
- ``client_n8``: ``PolicyClient.complete`` with ``n=N`` per problem (admission splits it
  as slots free);
- ``majority``: ratts majority@N through ``Orchestrator.solve_many`` (the bench's row).

Per path: completion tokens/s and the server's decode seconds per completion token (equal
figures mean the engine worked as hard per token for every path). Not a bench of ratts's
targets (that is ``real_throughput.py``); it separates causes.

Usage::

    flock /tmp/ratts-vllm.lock .venv/bin/python bench/throughput_paths.py   # ~17 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from real_throughput import (
    MAX_TOKENS,
    OUT,
    TEMPERATURE,
    Clock,
    ratts_row,
    raw_loop,
    real_server,
    sim_server,
)

from ratts.datasets import arithmetic_problems
from ratts.endpoints.policy import PolicyClient
from ratts.settings import PolicySpec
from ratts.types import Problem

N = 8


async def client(spec: PolicySpec, prompts: Sequence[str], n: int) -> None:
    """Every prompt ``N // n`` times with ``n`` samples each, all at once, through one
    PolicyClient (its admission keeps the cap)."""
    async with PolicyClient(spec) as policy:
        await asyncio.gather(
            *(
                policy.complete(q, n=n, max_tokens=MAX_TOKENS, temperature=TEMPERATURE)
                for q in prompts
                for _ in range(N // n)
            )
        )


def paths(
    spec: PolicySpec, problems: Sequence[Problem], cap: int
) -> dict[str, Callable[[], object]]:
    prompts = [PolicyClient(spec).prompt(p.question) for p in problems]
    together = [q for q in prompts for _ in range(N)]
    interleaved = [q for _ in range(N) for q in prompts]
    return {
        "ceiling": lambda: asyncio.run(raw_loop(spec, together, cap)),
        "ceiling_interleaved": lambda: asyncio.run(raw_loop(spec, interleaved, cap)),
        "client_n1": lambda: asyncio.run(client(spec, prompts, 1)),
        "client_n8": lambda: asyncio.run(client(spec, prompts, N)),
        "majority": lambda: asyncio.run(ratts_row(spec, problems, "majority", Clock(lambda: {}))),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=12)
    ap.add_argument("--cap", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--sim", action="store_true", help="the simulator (checks the script)")
    args = ap.parse_args(argv)
    problems = arithmetic_problems(args.problems, seed=7)
    rows: list[dict[str, Any]] = []
    with sim_server() if args.sim else real_server() as (counters, spec_for):
        spec = spec_for(args.cap)
        runs = paths(spec, problems, args.cap)
        runs["ceiling"]()  # warm-up: connections, the prefix cache
        for rep in range(args.reps):
            for name, run in runs.items():
                before, start = counters(), time.perf_counter()
                run()
                wall = time.perf_counter() - start
                after = counters()
                spent = {k: after[k] - before[k] for k in after}
                tokens = spent["completion_tokens"]
                row = {
                    "path": name,
                    "rep": rep,
                    "wall_s": round(wall, 1),
                    "completion_tokens": int(tokens),
                    "tokens_per_s": round(tokens / wall, 1),
                    "decode_ms_per_token": round(
                        1000 * spent.get("server_decode_s", 0.0) / max(tokens, 1), 1
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if not args.sim:
        out = OUT / "throughput_paths.json"
        out.write_text(json.dumps({"cap": args.cap, "problems": args.problems, "rows": rows}))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
