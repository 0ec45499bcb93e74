"""A 300-problem sweep under the issue's fault mix, against the simulator's fault injection
(real HTTP on loopback): every (problem, config) ends graded or failed with its one-line
error, none lost, none twice; once the faults stop, ``--retry-failed`` completes the rest.

The mix: 10% HTTP 500, 5% 429 with a Retry-After, 5% timeouts (the sim sleeps past the
client's timeout), 2% malformed JSON bodies, on the policy's completions and the PRM's
pooling calls alike. Retries are cut to one so some runs really do fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep_helpers import sim_dataset

from ratts.orchestrator.sweep import load_problems, run_sweep
from ratts.settings import load_settings
from ratts.sim import SimConfig, SimServer
from ratts.store import open_store
from ratts.types import RunConfig, StrategyParams

FAULT_MIX = {
    "error_500": 0.10,
    "error_429": 0.05,
    "retry_after_s": 0.05,
    "timeout": 0.05,
    "timeout_s": 1.0,  # past the client's timeout_s below: the client gives up first
    "malformed": 0.02,
}
CONFIGS = [
    RunConfig(policy="sim-weak", prm=None, strategy="cot"),
    RunConfig(policy="sim-weak", prm="sim-prm", strategy="best_of_n", params=StrategyParams(n=4)),
]
KNOBS = "max_retries = 1\ntimeout_s = 0.3\nbreaker_cooldown_s = 0.1\noutage_grace_s = 5\n"


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["problem_key"], row["config_key"], row["budget"]


def _toml(path: Path, base_url: str, db: Path) -> Path:
    path.write_text(
        f'db_url = "sqlite:///{db}"\n\n'
        f'[[policies]]\nname = "sim-weak"\nbase_url = "{base_url}/v1"\nmodel = "sim-weak"\n'
        f"{KNOBS}\n"
        f'[[prms]]\nname = "sim-prm"\nkind = "vllm_pooling"\nbase_url = "{base_url}"\n'
        f'model = "sim-prm"\n{KNOBS}',
        encoding="utf-8",
    )
    return path


async def test_three_hundred_problems_under_the_fault_mix_lose_nothing(
    make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    faulty = make_sim(faults=FAULT_MIX)
    db = tmp_path / "runs.db"
    settings = load_settings(_toml(tmp_path / "ratts.toml", faulty.base_url, db))
    problems = load_problems(str(sim_dataset(tmp_path / "sim.jsonl", 300))).problems
    planned = len(problems) * len(CONFIGS)
    with open_store(settings.db_url) as store:
        first = await run_sweep(problems, CONFIGS, store, settings, concurrency=16)
        rows = store.runs()
        faults = faulty.stats()["faults"]
        assert set(faults) == {"500", "429", "timeout", "malformed"}  # every kind was hit
        assert (first.planned, first.done + first.failed) == (planned, planned)
        assert len(rows) == planned  # none lost
        keys = {_key(r) for r in rows}
        assert len(keys) == planned  # none twice
        graded = [r for r in rows if r["error"] is None]
        failed = [r for r in rows if r["error"] is not None]
        assert len(graded) == first.done and len(failed) == first.failed
        assert all(r["correct"] is not None for r in graded)
        assert all(r["answer"] is None and "\n" not in r["error"] for r in failed)
        assert all(r["error"].split(":")[0].endswith("Error") for r in failed)
        # one retry each: some calls hit two faults in a row, most recovered
        assert 0 < first.failed < planned // 10
        assert sum(faults.values()) > first.failed  # faults were retried, not all fatal

        port = faulty.port
        faulty.stop()  # the faults stop: the endpoint comes back clean on the same port
        calm = SimServer(SimConfig(), port=port)
        calm.start()
        try:
            retried = await run_sweep(
                problems, CONFIGS, store, settings, concurrency=16, retry_failed=True
            )
            assert calm.stats()["faults"] == {}
        finally:
            calm.stop()
        after = store.runs()
    assert (retried.done, retried.failed, retried.skipped) == (first.failed, 0, first.done)
    assert len(after) == planned
    assert len({_key(r) for r in after}) == planned
    assert all(r["error"] is None and r["correct"] is not None for r in after)
    before = {_key(r): r for r in graded}
    assert [r for r in after if _key(r) in before] == list(before.values())  # kept as they were
