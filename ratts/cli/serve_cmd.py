"""``ratts serve``: the OpenAI-compatible chat server in the foreground.

The run log is opened (and migrated) before uvicorn starts, so a bad database URL or a bad
config is one line on stderr and exit code 2, not a stack trace from the startup hook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ratts.errors import ConfigError


def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one)")] = 8000,
    config: Annotated[
        Path | None,
        typer.Option("--config", "--settings", help="ratts.toml (default: ./ratts.toml)"),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="database URL (default: settings' db_url)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="default per-request deadline in seconds")
    ] = None,
    probe_k: Annotated[int, typer.Option(help="probe samples for the router's features")] = 4,
    epsilon: Annotated[float, typer.Option(help="router exploration rate")] = 0.0,
    log_runs: Annotated[bool, typer.Option("--log/--no-log", help="log every run")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve /v1/chat/completions (model ratts/auto or ratts/<strategy>) and /v1/models.

    Set RATTS_SERVER_TOKEN to require 'Authorization: Bearer <token>'.
    """
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {timeout}")

    from ratts.settings import load_settings
    from ratts.store import open_store

    settings = load_settings(config)
    store = open_store(db or settings.db_url)  # before the heavy imports: fail fast

    from ratts.server.app import TOKEN_ENV, create_app
    from ratts.serving import bind, make_server

    try:
        app = create_app(
            settings,
            default_timeout=timeout,
            orchestrator_options={
                "store": store,
                "log_runs": log_runs,
                "probe_k": probe_k,
                "epsilon": epsilon,
            },
        )
        sock = bind(host, port)
    except BaseException:
        store.close()
        raise
    bound = sock.getsockname()[1]
    auth = "bearer token required" if os.environ.get(TOKEN_ENV) else "no auth"
    policies = ", ".join(p.name for p in settings.policies) or "none configured"
    typer.echo(f"ratts serving on http://{host}:{bound}/v1 ({auth}; policies: {policies})")
    try:
        make_server(app, log_level=log_level, access_log=log_level == "debug").run(sockets=[sock])
    finally:
        store.close()
