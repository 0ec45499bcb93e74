"""The benchmarks still run: each one that can use the simulator, at a toy size, in its own
process, writing into a temporary folder.

Why: a bench is only run by hand, before a claim goes into the README, so a change that
breaks one (a renamed internal, a table that cannot render a row) used to surface only then.
Nothing here checks a figure (speed is measured in the benches, not in tests); each case
checks that the bench exits 0 and writes the result it promises, with its headline field.
The benches that need a real model (``real_arith``, ``prm_throughput``, ``ab_rows``)
are left out: their paths are the real-model tests' and the benches' above.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# bench -> (arguments, {"file it writes": "a key its JSON must hold" or None for non-JSON});
# "{out}" is the test's temporary folder.
CASES: dict[str, tuple[list[str], dict[str, str | None]]] = {
    "client_cpu": (
        ["--requests", "40", "--rounds", "1", "--layers", "--out", "{out}/client_cpu.json"],
        {"client_cpu.json": "ratio_ratts_to_cheaper_bare"},
    ),
    "efficiency": (
        ["--problems", "4", "--concurrency", "4", "--out", "{out}"],
        {"efficiency.json": "rows", "efficiency.png": None},
    ),
    "fault_sweep": (
        ["--problems", "12", "--concurrency", "4", "--out", "{out}/fault_sweep.json"],
        {"fault_sweep.json": "lost"},
    ),
    "outage_sweep": (
        ["--problems", "6", "--after", "2", "--outage", "1", "--out", "{out}/outage_sweep.json"],
        {"outage_sweep.json": "done"},
    ),
    "real_throughput": (
        ["--sim", "--problems", "2", "--caps", "8", "--out", "{out}/real_throughput.json"],
        {"real_throughput.json": "rows", "real_throughput.md": None, "real_throughput.png": None},
    ),
    "real_router": (
        ["--sim", "--train", "16", "--held-out", "12", "--ns", "4", "--out", "{out}"],
        {"real_router.json": None, "real_router.md": None, "real_router.png": None},
    ),
    "router_sim": (
        ["--problems", "24", "--concurrency", "8", "--out", "{out}"],
        {"router_sim.json": None, "router_sim.md": None, "router_sim.png": None},
    ),
    "server_load": (
        ["--clients", "4", "--duration", "1", "--out", "{out}/server_load.json"],
        {"server_load.json": "results"},
    ),
    "throughput_paths": (["--sim", "--problems", "2", "--reps", "1"], {}),  # writes nothing
}


@pytest.mark.parametrize("bench", sorted(CASES))
def test_bench_runs_at_a_toy_size(bench: str, tmp_path: Path) -> None:
    args, files = CASES[bench]
    argv = [a.replace("{out}", str(tmp_path)) for a in args]
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{bench}.py"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name, key in files.items():
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"{bench} did not write {name}"
        if name.endswith(".json"):
            result = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(result, dict)
            if key is not None:
                assert key in result, f"{name} has no {key!r}: {sorted(result)}"
