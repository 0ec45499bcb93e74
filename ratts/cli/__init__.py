"""The ``ratts`` command line. Each command group lives in its own module."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from ratts.errors import RattsError
from ratts.text import plain

app = typer.Typer(
    name="ratts",
    help="Reward-Aware Test-Time Scaling: route each query to the compute-optimal strategy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


def _register() -> None:
    from ratts.cli import db_cmd, models_cmd, router_cmd, serve_cmd, sim_cmd, solve_cmd, sweep_cmd

    app.add_typer(sim_cmd.app, name="sim", help="The simulated policy/PRM server.")
    app.add_typer(db_cmd.app, name="db", help="The run-log database.")
    app.add_typer(router_cmd.app, name="router", help="The learned strategy router.")
    app.add_typer(models_cmd.app, name="models", help="Local models served by vLLM(-CPU).")
    app.command("sweep")(sweep_cmd.sweep)
    app.command("runs")(sweep_cmd.runs)
    app.command("report")(sweep_cmd.report)
    app.command("solve")(solve_cmd.solve)
    app.command("serve")(serve_cmd.serve)


def main() -> None:
    """Entry point: any RattsError becomes one line on stderr and exit code 2."""
    _register()
    try:
        app()
    except RattsError as exc:
        # the message may quote upstream text: shown literally, never as markup or escapes
        err_console.print(f"[red]error:[/red] {plain(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
