"""``ratts sweep``, ``ratts runs`` and ``ratts report``: fill the run log and read it back.

Registered as top-level commands by ``ratts.cli._register`` (plain functions, not a group).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.table import Table

from ratts.cli.db_cmd import SettingsOption, UrlOption
from ratts.errors import ConfigError, DatasetError, InputError
from ratts.settings import load_settings
from ratts.text import plain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ratts.orchestrator.sweep import SweepStats
    from ratts.report import ComputeAxis

_err = Console(stderr=True)


def wide_stdout() -> Console:
    """Stdout; wide when piped, so tables in logs are not truncated to 80 columns."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


@contextlib.contextmanager
def sweep_progress(
    enabled: bool, console: Console, label: str = "sweep"
) -> Iterator[Callable[[SweepStats], None]]:
    """A rich progress bar fed by the library sweep's ``on_progress`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done {task.fields[done]} · failed {task.fields[failed]}"),
        TextColumn("· acc {task.fields[acc]} · {task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )
    task = bar.add_task(label, total=None, done=0, failed=0, acc="-", tps="0")

    def update(s: SweepStats) -> None:
        bar.update(
            task,
            total=s.todo,
            completed=s.processed,
            done=s.done,
            failed=s.failed,
            acc=f"{s.accuracy:.1%}" if s.accuracy is not None else "-",
            tps=f"{s.tokens_per_second:,.0f}",
        )

    with bar:
        yield update


def sweep(
    dataset: Annotated[str, typer.Argument(help="a .jsonl file, or arith[:ops=A-B,max=M]")],
    configs: Annotated[
        Path | None,
        typer.Option("--configs", "-f", help="sweep TOML with \\[\\[configs]] tables"),
    ] = None,
    strategy: Annotated[
        list[str] | None, typer.Option("--strategy", "-s", help="strategy (repeatable)")
    ] = None,
    n: Annotated[list[int] | None, typer.Option("--n", help="budget N (repeatable)")] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="policy name (repeatable)")
    ] = None,
    prm: Annotated[list[str] | None, typer.Option("--prm", help="PRM name (repeatable)")] = None,
    beam_width: Annotated[int | None, typer.Option(help="M for beam search / DVTS")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature")] = None,
    limit: Annotated[
        int | None, typer.Option(help="first N problems (generator: how many to make)")
    ] = None,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    concurrency: Annotated[int, typer.Option(help="runs in flight at once")] = 16,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="run logged failures again")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker",
            help="share the sweep with other workers on one database (PostgreSQL) by "
            "claiming rows; start the same command on every machine",
        ),
    ] = False,
    worker_name: Annotated[
        str | None, typer.Option(help="this worker's name (default: host:pid)")
    ] = None,
    lease: Annotated[
        float,
        typer.Option(
            min=5.0,
            help="seconds a claim lasts unless renewed (a dead worker's runs return after it)",
        ),
    ] = 300.0,
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Run DATASET x configs, grade each outcome and log one row per run (resumable)."""
    from ratts.orchestrator.sweep import load_problems, run_sweep
    from ratts.orchestrator.sweep_config import configs_from_flags, load_sweep_file
    from ratts.store import open_store

    cfg = load_settings(settings)
    if configs is not None:
        if strategy or n or policy or prm or beam_width is not None or temperature is not None:
            raise ConfigError(
                "give either --configs FILE or config flags (--strategy ...), not both"
            )
        run_configs = load_sweep_file(configs)
    else:
        params: dict[str, Any] = {}
        if beam_width is not None:
            params["beam_width"] = beam_width
        if temperature is not None:
            params["temperature"] = temperature
        run_configs = configs_from_flags(
            cfg,
            strategies=strategy or [],
            ns=n or [],
            policies=policy or [],
            prms=prm or [],
            params=params,
        )
    loaded = load_problems(dataset, n=limit, seed=seed)
    for line_error in loaded.errors:
        _err.print(
            f"[yellow]warning:[/yellow] {plain(dataset)}: {plain(line_error)}", highlight=False
        )
    store = open_store(db or cfg.db_url)
    try:
        with sweep_progress(progress, _err) as on_progress:
            stats = asyncio.run(
                run_sweep(
                    loaded.problems,
                    run_configs,
                    store,
                    cfg,
                    concurrency=concurrency,
                    retry_failed=retry_failed,
                    on_progress=on_progress,
                    worker=(worker_name or f"{socket.gethostname()}:{os.getpid()}")
                    if worker
                    else None,
                    lease_s=lease,
                )
            )
    finally:
        store.close()
    typer.echo(stats.summary())
    for line in stats.errors[:5]:
        _err.print(f"[red]failed:[/red] {plain(line)}", highlight=False, soft_wrap=True)
    if len(stats.errors) > 5:
        _err.print(f"... and {len(stats.errors) - 5} more failures (see `ratts runs --failed`)")
    if loaded.errors:
        count = len(loaded.errors)
        raise DatasetError(
            f"{dataset}: {count} malformed line{'s' * (count != 1)} skipped "
            f"(first: {loaded.errors[0]}); the good lines ran"
            + (f"; {stats.failed} runs failed" if stats.failed else "")
        )
    if stats.failed:  # exit 1: the sweep ran, but not every run succeeded
        ran = stats.done + stats.failed
        _err.print(
            f"[red]error:[/red] {stats.failed} of {ran} runs failed (logged with their errors: "
            "`ratts runs --failed`; run again with --retry-failed)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def runs(
    limit: Annotated[int, typer.Option(help="how many of the newest runs")] = 20,
    failed: Annotated[bool, typer.Option("--failed", help="only runs that failed")] = False,
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """List the newest logged runs."""
    from ratts.store import open_store

    store = open_store(db or load_settings(settings).db_url)
    try:
        rows = store.runs(dataset=dataset, only_failed=failed, newest_first=True, limit=limit)
        total = store.count_runs()
    finally:
        store.close()
    table = Table(title=f"{len(rows)} of {total} runs (newest first)")
    for name in ("id", "problem", "config", "budget", "answer", "correct", "tokens", "s", "error"):
        wide = name in ("problem", "config", "error")
        table.add_column(name, overflow="fold", no_wrap=not wide)
    for r in rows:
        tokens = r["policy_prompt_tokens"] + r["policy_completion_tokens"] + r["prm_tokens"]
        table.add_row(  # every cell is logged text from datasets and models: shown literally
            str(r["run_id"]),
            plain(r["problem_id"]),
            plain(r["label"]),
            plain(r["budget"]),
            "" if r["answer"] is None else plain(str(r["answer"])[:24]),
            {True: "yes", False: "no", None: "-"}[r["correct"]],
            str(tokens),
            f"{r['seconds']:.2f}",
            plain(r["error"] or ""),
        )
    wide_stdout().print(table)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path(
        "ratts-report.png"
    ),
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    axis: Annotated[str, typer.Option(help="compute axis: tokens, flops or dollars")] = "tokens",
    by: Annotated[
        str, typer.Option(help="difficulty feature to bin by (features, else problem meta)")
    ] = "difficulty",
    bins: Annotated[int, typer.Option(help="number of difficulty bins")] = 5,
    title: Annotated[str, typer.Option(help="plot title")] = "Accuracy vs test-time compute",
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Accuracy and mean compute per config and difficulty bin; plot accuracy vs compute."""
    from ratts.report import plot_accuracy_vs_compute, print_report
    from ratts.store import open_store

    if axis not in ("tokens", "flops", "dollars"):
        raise ConfigError(f"--axis must be tokens, flops or dollars, got {axis!r}")
    if bins < 1:
        raise ConfigError(f"--bins must be >= 1, got {bins}")
    store = open_store(db or load_settings(settings).db_url)
    try:
        rows = store.runs(dataset=dataset)
    finally:
        store.close()
    if not rows:
        raise InputError("no runs logged yet (run `ratts sweep` first)")
    summaries = print_report(wide_stdout(), rows, by=by, n_bins=bins)
    try:
        path = plot_accuracy_vs_compute(summaries, out, axis=cast("ComputeAxis", axis), title=title)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"plot written to {path}")
