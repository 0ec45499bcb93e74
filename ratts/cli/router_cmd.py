"""``ratts router probe | train | show | use | eval``: the learned router's life cycle.

probe (log difficulty features for a dataset) -> sweep (elsewhere) -> train (version n+1,
made current) -> show / use (switch versions) -> eval (held-out comparison with baselines).
Heavy imports (scikit-learn, skops) happen inside the commands.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from ratts.cli.db_cmd import SettingsOption, UrlOption
from ratts.cli.sweep_cmd import wide_stdout
from ratts.errors import ConfigError
from ratts.settings import load_settings
from ratts.text import plain

app = typer.Typer(no_args_is_help=True)
_err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """The learned strategy router: probe, train, show, use, eval."""


@app.command()
def probe(
    dataset: Annotated[str, typer.Argument(help="a .jsonl file, or arith[:ops=A-B,max=M]")],
    policy: Annotated[str | None, typer.Option(help="probe policy (default: the first)")] = None,
    prm: Annotated[str | None, typer.Option(help="probe PRM (default: the first)")] = None,
    k: Annotated[int, typer.Option("-k", help="samples per probe")] = 4,
    limit: Annotated[int | None, typer.Option(help="first N problems")] = None,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    concurrency: Annotated[int, typer.Option(help="probes in flight at once")] = 16,
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Probe every problem of DATASET once and log the features (resumable)."""
    from ratts.endpoints.factory import build_policy, build_prm
    from ratts.orchestrator.sweep import collect_probes, load_problems
    from ratts.store import open_store

    cfg = load_settings(settings)
    policy_client = build_policy(cfg.policy(policy))
    prm_client = build_prm(cfg.prm(prm)) if (prm or cfg.prms) else None
    loaded = load_problems(dataset, n=limit, seed=seed)
    for line_error in loaded.errors:
        _err.print(
            f"[yellow]warning:[/yellow] {plain(dataset)}: {plain(line_error)}", highlight=False
        )
    store = open_store(db or cfg.db_url)

    async def go() -> int:
        try:
            return await collect_probes(
                store, loaded.problems, policy_client, prm_client, k=k, concurrency=concurrency
            )
        finally:
            await policy_client.aclose()
            if prm_client is not None:
                await prm_client.aclose()

    try:
        logged = asyncio.run(go())
    finally:
        store.close()
    typer.echo(
        f"probed {logged} problems ({len(loaded.problems) - logged} already probed) "
        f"with {policy_client.name} k={k}"
    )


@app.command()
def train(
    dataset: Annotated[str | None, typer.Option(help="only runs of this dataset")] = None,
    seed: Annotated[int, typer.Option(help="seed of the model and its holdout split")] = 0,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where artifacts go (default: data_dir/routers)")
    ] = None,
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Train on the logged runs, save version n+1 (skops) and make it current."""
    from ratts.router.train import train_and_register
    from ratts.store import open_store

    cfg = load_settings(settings)
    store = open_store(db or cfg.db_url)
    try:
        version, metrics = train_and_register(
            store, cfg, directory=directory, dataset=dataset, seed=seed
        )
    finally:
        store.close()
    brier = metrics.get("holdout_brier")
    auc = metrics.get("holdout_auc")
    typer.echo(
        f"trained router {version} on {metrics['rows']} runs of {metrics['problems']} problems "
        f"({metrics['configs']} configs); holdout brier "
        f"{'-' if brier is None else f'{brier:.3f}'}, auc {'-' if auc is None else f'{auc:.3f}'}; "
        "now current"
    )


@app.command()
def show(
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """List the trained versions, their metrics, and which one is current."""
    # Straight from the store: ratts.router.registry would pull in the router package
    # (candidates, strategies, endpoint clients), which listing rows never needs.
    from ratts.store import open_store

    store = open_store(db or load_settings(settings).db_url)
    try:
        rows = store.router_models()
    finally:
        store.close()
    if not rows:
        typer.echo("no trained router yet (cold start: the paper's rule); run `ratts router train`")
        return
    table = Table(title="router versions")
    for name in ("version", "current", "trained", "rows", "problems", "brier", "auc", "artifact"):
        table.add_column(name, overflow="fold")
    for r in rows:
        m = r["metrics"] or {}
        table.add_row(
            plain(r["version"]),
            "*" if r["is_current"] else "",
            str(r["trained_at"])[:19],
            str(r["rows_used"]),
            str(m.get("problems", "-")),
            f"{m['holdout_brier']:.3f}" if "holdout_brier" in m else "-",
            f"{m['holdout_auc']:.3f}" if "holdout_auc" in m else "-",
            plain(r["artifact_path"]),
        )
    wide_stdout().print(table)
    for r in rows:  # provenance and training summary of shipped or bench-trained routers
        m = r["metrics"] or {}
        if "provenance" in m:
            typer.echo(f"{r['version']} provenance: {json.dumps(m['provenance'])}")
        if "training" in m:
            typer.echo(f"{r['version']} training: {json.dumps(m['training'])}")
        rules = m.get("rules") or (m.get("training") or {}).get("rules")
        if rules:  # which rule serves at which lam: probe first, text alone, or fixed
            typer.echo(f"{r['version']} rules: {json.dumps(rules)}")


@app.command()
def use(
    version: Annotated[str, typer.Argument(help="version to make current (v3 or 3)")],
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Make VERSION the current router (its artifact must load and verify)."""
    from ratts.router.registry import use as use_version
    from ratts.store import open_store

    store = open_store(db or load_settings(settings).db_url)
    try:
        chosen = use_version(store, version)
    finally:
        store.close()
    typer.echo(f"router {chosen} is now current")


Unit = Literal["tokens", "flops", "usd"]


@app.command("eval")
def eval_(
    dataset: Annotated[str | None, typer.Option(help="only runs of this dataset")] = None,
    seed: Annotated[int, typer.Option(help="seed of the train/test split by problem")] = 0,
    test_fraction: Annotated[float, typer.Option(help="share of problems held out")] = 0.3,
    unit: Annotated[str, typer.Option(help="compute axis: tokens, flops or usd")] = "flops",
    probe_policy: Annotated[str | None, typer.Option(help="probe rows of this policy")] = None,
    probe_prm: Annotated[str | None, typer.Option(help="probe rows of this PRM")] = None,
    probe_k: Annotated[int | None, typer.Option(help="probe rows with this k")] = None,
    png: Annotated[Path | None, typer.Option(help="write accuracy vs compute here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    db: UrlOption = None,
    settings: SettingsOption = None,
) -> None:
    """Held-out comparison at matched mean compute: router, best fixed config, oracle
    difficulty bins (paper rule), per-problem oracle, majority vote."""
    from ratts.router import ProbeSpec
    from ratts.router.evaluate import EvalConfig, evaluate
    from ratts.router.offpolicy import estimate, trained_target
    from ratts.router.registry import RouterRegistry
    from ratts.router.report import format_table, plot_curves
    from ratts.router.train import records_from_store
    from ratts.store import open_store

    if unit not in ("tokens", "flops", "usd"):
        raise ConfigError(f"unknown compute unit {unit!r}; choose tokens, flops or usd")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    spec = None
    if probe_policy is not None or probe_k is not None:
        if probe_policy is None or probe_k is None:
            raise ConfigError("give --probe-policy and --probe-k together (and --probe-prm)")
        spec = ProbeSpec(probe_policy, probe_prm, probe_k)
    store = open_store(db or load_settings(settings).db_url)
    try:
        records = records_from_store(store, dataset=dataset)
        current = RouterRegistry(store).current()
    finally:
        store.close()
    report = evaluate(
        records,
        EvalConfig(seed=seed, test_fraction=test_fraction, unit=cast(Unit, unit), probe=spec),
    )
    typer.echo(format_table(report))
    off = None
    if current is not None:
        off = estimate(records, trained_target(current[1]))
        if off.routed_rows:
            typer.echo(
                f"off-policy ({current[0]} on {off.routed_rows} logged routed runs, "
                f"{off.matched} matching its choice): IPS {off.ips:.3f}, SNIPS "
                + ("n/a" if off.snips is None else f"{off.snips:.3f}")
                + f"; the logging policy scored {off.logged_accuracy:.3f}"
            )
        else:
            typer.echo("off-policy: no logged routed runs (route with ratts solve/serve)")
    if png is not None:
        plot_curves(report, png)
        typer.echo(f"wrote {png}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        data = report.to_dict()
        data["off_policy"] = off.to_dict() if off is not None else None
        json_out.write_text(json.dumps(data, indent=2))
        typer.echo(f"wrote {json_out}")
