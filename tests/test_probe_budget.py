"""A budget too small for the router's probe is refused before the probe spends anything:
through ``Orchestrator.solve``, ``ratts solve`` (one line, exit 2) and ``ratts serve`` (a
400 naming the budget), with zero requests reaching the simulated endpoints. A budget
over the probe's floor still probes, and the floor is below what the probe really spent.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sweep_helpers import run_cli, settings_file

from ratts import Budget, Orchestrator
from ratts.errors import InputError
from ratts.orchestrator.inputs import probe_floor
from ratts.server import ServerThread, create_app
from ratts.settings import Settings, load_settings
from ratts.sim import SimServer
from ratts.store import open_store
from ratts.strategies.probe import DEFAULT_K

QUESTION = "Puzzle budget: follow the hidden chain of operations; give the value."


@pytest.fixture
def settings(sim: SimServer, tmp_path: Path) -> Settings:
    return load_settings(settings_file(tmp_path / "ratts.toml", sim.base_url, tmp_path / "r.db"))


@pytest.mark.parametrize(
    ("budget", "needle"),
    [
        (Budget(tokens=10), "tokens > 10"),
        (Budget(flops=1e6), "FLOPs > 1e+06"),
        (Budget(usd=1e-9), "> $1e-09"),
        (Budget(n=16, tokens=20), "tokens > 20"),
    ],
)
async def test_a_budget_under_the_probe_is_refused_before_any_request(
    sim: SimServer, settings: Settings, budget: Budget, needle: str
) -> None:
    async with Orchestrator(settings) as orch:
        with pytest.raises(InputError) as info:
            await orch.solve(QUESTION, budget=budget)
        assert orch.store is not None and orch.store.count_runs() == 0  # nothing logged
    message = str(info.value)
    assert message.startswith("no config fits the budget after the probe: the probe alone")
    assert needle in message and "\n" not in message and info.value.param == "budget"
    assert sim.stats()["requests"] == {}  # refused before the probe spent anything


async def test_a_budget_over_the_floor_probes_and_the_floor_is_a_floor(
    sim: SimServer, settings: Settings
) -> None:
    async with Orchestrator(settings, log_runs=False) as orch:
        result = await orch.solve(QUESTION, budget=Budget(tokens=200_000, usd=1.0, flops=1e18))
        prompt = orch.policy("sim-weak").prompt(QUESTION)
    assert result.answer is not None and sim.stats()["requests"]["completions"] >= 1
    floor = probe_floor(settings, "sim-weak", "sim-prm", DEFAULT_K, prompt, QUESTION)
    spent = result.probe_usage
    assert 0 < floor.tokens <= spent.total_tokens
    assert 0 < floor.flops <= spent.flops and 0 < floor.usd <= spent.dollars


def test_ratts_solve_refuses_it_in_one_line_with_exit_2(
    sim: SimServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.db"
    toml = settings_file(tmp_path / "cli.toml", sim.base_url, db)
    code, out, err = run_cli(
        capsys, "solve", QUESTION, "--budget-tokens", "10", "--settings", str(toml)
    )
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "the probe alone" in lines[0] and "Traceback" not in err
    assert sim.stats()["requests"] == {}
    with open_store(f"sqlite:///{db}") as store:
        assert store.count_runs() == 0


def test_ratts_serve_answers_400_naming_the_budget(sim: SimServer, settings: Settings) -> None:
    with ServerThread(create_app(settings, token="")) as server:
        for stream in (False, True):
            resp = httpx.post(
                f"{server.v1_url}/chat/completions",
                json={
                    "model": "ratts/auto",
                    "messages": [{"role": "user", "content": QUESTION}],
                    "budget": {"tokens": 10},
                    "stream": stream,
                },
                timeout=60,
            )
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error["param"] == "budget" and "the probe alone" in error["message"]
    assert sim.stats()["requests"] == {}
