"""``ratts sim serve``: run the simulated policy/PRM server in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ratts.errors import ConfigError

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """The simulated policy/PRM server (numbers it serves are simulations)."""


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 8765,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    config: Annotated[
        Path | None, typer.Option("--config", help="sim TOML (models, capacity, faults)")
    ] = None,
) -> None:
    """Serve /v1/completions, /v1/models, /pooling and /sim/stats over simulated models."""
    from ratts.serving import bind, make_server
    from ratts.sim import SimConfig, create_app, load_sim_config

    cfg = load_sim_config(config) if config is not None else SimConfig()
    sock = bind(host, port)
    models = ", ".join([*cfg.policies, *cfg.prms])
    typer.echo(
        f"ratts SIMULATOR on http://{host}:{port} (seed {cfg.seed}; models: {models})",
    )
    make_server(create_app(cfg)).run(sockets=[sock])


@app.command()
def dataset(
    out: Annotated[Path, typer.Argument(help="JSONL file to write")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="number of problems")] = 200,
    seed: Annotated[
        int, typer.Option(help="the sim server's seed (gold answers depend on it)")
    ] = 0,
    prefix: Annotated[str, typer.Option(help="question text prefix")] = "Sim problem",
) -> None:
    """Write problems whose gold answers are the simulator's own, so sweeps on the sim grade.

    The simulator invents its own answers (a hash of the question), so a real dataset
    graded against the sim scores 0%; use this file for sweeps, reports and router training
    against ``ratts sim serve``.
    """
    import json

    from ratts.sim import world

    try:
        with out.open("w", encoding="utf-8") as fh:
            for i in range(n):
                question = f"{prefix} {i}: follow the hidden chain of operations; give the value."
                record = {
                    "id": f"sim-s{seed}-{i}",
                    "problem": question,
                    "answer": world.gold_answer(question, seed),
                    "difficulty": round(world.difficulty(question, seed), 3),
                }
                fh.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    typer.echo(f"wrote {n} simulated problems to {out} (gold answers for sim seed {seed})")
