"""``ratts solve "question"``: one question through the Orchestrator, answer and why printed.

Heavy modules (the orchestrator, the router, the HTTP clients) are imported inside the
command so ``ratts --help`` and input errors stay instant.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ratts.errors import InputError
from ratts.redact import redact
from ratts.text import check_text, plain

if TYPE_CHECKING:
    from ratts.orchestrator.result import SolveResult
    from ratts.types import Budget


def _budget(
    n: int | None, usd: float | None, tokens: int | None, flops: float | None
) -> Budget | None:
    from ratts.orchestrator.inputs import check_budget
    from ratts.types import Budget

    if n is None and usd is None and tokens is None and flops is None:
        return None
    return check_budget(Budget(n=n, usd=usd, tokens=tokens, flops=flops))


def _usage_line(result: SolveResult) -> str:
    u = result.usage
    line = (
        f"{u.policy_tokens} policy tokens ({u.policy_prompt_tokens} prompt + "
        f"{u.policy_completion_tokens} completion), {u.prm_tokens} PRM tokens, "
        f"{u.flops:.3g} FLOPs, ${u.dollars:.6f}, {u.wall_seconds:.2f}s"
    )
    if result.probe_usage.total_tokens:
        line += f" (probe: {result.probe_usage.total_tokens} tokens)"
    return line


def _print(result: SolveResult, explain: bool, console: Console) -> None:
    how = result.reason
    if result.router_version:
        how += f", router {result.router_version}"
    # answers and errors are the model's and the upstream's text: shown literally
    console.print(f"[bold]answer:[/bold] {plain(result.answer)}", highlight=False)
    if result.partial:
        console.print(
            f"[yellow]partial:[/yellow] {plain(result.error)} ({plain(result.answer_source)})",
            highlight=False,
        )
    if result.correct is not None:
        console.print(f"[bold]correct:[/bold] {result.correct}")
    console.print(
        f"[bold]config:[/bold] {plain(result.config.label())} ({plain(how)})", highlight=False
    )
    console.print(f"[bold]usage:[/bold]  {_usage_line(result)}", highlight=False)
    if result.run_key is not None:
        state = "logged" if result.logged else "already logged"
        console.print(f"[bold]run:[/bold]    {state} (config {result.run_key.config_key})")
    if not explain:
        return
    if result.explanation:
        console.print(f"[bold]why:[/bold]    {result.explanation}", highlight=False)
    if not result.why:
        console.print("no router ranking: the strategy was forced")
        return
    table = Table(title="router candidates (best first)")
    for col in ("", "config", "P(correct)", "tokens", "FLOPs", "$", "fits"):
        table.add_column(col)
    for c in result.why:
        acc = "-" if c.predicted_accuracy is None else f"{c.predicted_accuracy:.3f}"
        cost = c.predicted_cost
        table.add_row(
            "*" if c.chosen else "",
            plain(c.config.label()),
            acc,
            f"{cost.get('tokens', 0):.0f}",
            f"{cost.get('flops', 0):.3g}",
            f"{cost.get('usd', 0):.6f}",
            "yes" if c.fits_budget else "no",
        )
    console.print(table)


def solve(
    question: Annotated[str, typer.Argument(help="the question to answer")],
    budget: Annotated[
        int | None, typer.Option("--budget", "-n", help="budget N (generations per step)")
    ] = None,
    budget_usd: Annotated[float | None, typer.Option(help="budget in dollars")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="budget in tokens")] = None,
    budget_flops: Annotated[float | None, typer.Option(help="budget in FLOPs")] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="force a strategy (skip the router)")
    ] = None,
    policy: Annotated[str | None, typer.Option(help="policy name from the settings")] = None,
    prm: Annotated[str | None, typer.Option(help="PRM name from the settings")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="seconds; then the best answer so far (partial)")
    ] = None,
    gold: Annotated[str | None, typer.Option(help="the known answer, to grade and log")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="show the router's top candidates")
    ] = False,
    probe_k: Annotated[int, typer.Option(help="probe samples for the router's features")] = 4,
    log_runs: Annotated[bool, typer.Option("--log/--no-log", help="log the run")] = True,
    db: Annotated[
        str | None, typer.Option("--db", help="database URL (default: settings' db_url)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "--settings", help="ratts.toml (default: ./ratts.toml)"),
    ] = None,
) -> None:
    """Answer QUESTION with the compute-optimal strategy within the budget."""
    if not question.strip():
        raise InputError("the question is empty")
    check_text(question)
    chosen_budget = _budget(budget, budget_usd, budget_tokens, budget_flops)

    from ratts.orchestrator.orchestrator import Orchestrator
    from ratts.settings import load_settings
    from ratts.types import Problem

    settings = load_settings(config)
    problem = Problem(id=f"cli-{uuid.uuid4().hex[:12]}", question=question, answer=gold)

    async def run() -> SolveResult:
        async with Orchestrator(settings, store=db, log_runs=log_runs, probe_k=probe_k) as orch:
            return await orch.solve(
                problem,
                budget=chosen_budget,
                policy=policy,
                prm=prm,
                strategy=strategy,
                timeout=timeout,
            )

    result = asyncio.run(run())
    if as_json:
        typer.echo(redact(json.dumps(result.to_dict(explain=True), indent=2, default=str)))
        return
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # tables in logs are not cut to 80 columns
    _print(result, explain, console)
