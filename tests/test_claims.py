"""Row claims for distributed sweeps, on SQLite and on a real PostgreSQL server: workers in
separate processes split a plan with no duplicates, a killed worker's leases return."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sweep_helpers import settings_file, sim_dataset, spawn_cli

from ratts.sim import SimServer
from ratts.store import RunKey, open_store, problem_key
from ratts.store.claims import WorkQueue
from ratts.store.engine import make_engine
from ratts.store.models import run_claims
from ratts.types import Problem, RunConfig

CONFIG = RunConfig(policy="sim-weak", prm=None, strategy="cot")


def _problem(i: int) -> Problem:
    return Problem(f"q{i}", f"question {i}", str(i))


def _plan(count: int) -> list[RunKey]:
    return [RunKey(problem_key(_problem(i)), CONFIG.key(), "n=1") for i in range(count)]


def _work(url: str, worker: str, count: int, batch: int, pause_s: float) -> None:
    """A sweep worker: enqueue the plan, then claim, 'run', log and finish until none left."""
    problems = {problem_key(_problem(i)): _problem(i) for i in range(count)}
    with open_store(url) as store:
        queue = WorkQueue(store, worker)
        queue.enqueue(_plan(count))
        while keys := queue.claim(batch):
            for key in keys:
                time.sleep(pause_s)
                store.record_run(problems[key.problem_key], CONFIG, key.budget, answer=worker)
            queue.finish(keys)
        # a late worker's enqueue re-adds claims another finished meanwhile: drop them
        queue.prune()


def _claim_then_die(url: str, count: int) -> None:
    with open_store(url) as store:
        queue = WorkQueue(store, "doomed", lease_s=1.0)
        queue.enqueue(_plan(count))
        assert len(queue.claim(10)) == 10
    os.kill(os.getpid(), signal.SIGKILL)


def test_enqueue_is_idempotent_and_claims_are_disjoint(db_url: str) -> None:
    with open_store(db_url) as store:
        a, b = WorkQueue(store, "a"), WorkQueue(store, "b")
        assert a.enqueue(_plan(12)) == 12
        assert b.enqueue(_plan(12)) == 0  # the second worker adds nothing
        first, second = a.claim(5), b.claim(5)
        assert len(first) == len(second) == 5 and not set(first) & set(second)
        assert len(a.claim(5)) == 2  # only 2 free ones left
        assert b.claim(5) == []
        assert a.renew(first) == set(first)
        assert b.renew(first) == set()  # not b's to renew
        assert b.finish(first) == 0  # nor to finish
        assert a.pending() == 12
        assert b.release() == 5
        assert set(a.claim(10)) == set(second)


def test_logged_runs_are_never_handed_out(db_url: str) -> None:
    with open_store(db_url) as store:
        queue = WorkQueue(store, "w")
        plan = _plan(4)
        queue.enqueue(plan)
        store.record_run(_problem(0), CONFIG, "n=1", answer="0")
        store.record_run(_problem(1), CONFIG, "n=1", error="ServerError: 500")
        assert queue.pending() == 2
        assert set(queue.claim(10)) == set(plan[2:])
        queue.release()
        # --retry-failed: a logged failure is work again
        assert set(queue.claim(10, include_failed=False)) == {plan[1], *plan[2:]}


def test_two_worker_processes_split_a_sweep_without_duplicates(db_url: str) -> None:
    count = 120
    open_store(db_url).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_work, args=(db_url, f"w{w}", count, 5, 0.01)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with open_store(db_url) as store:
        rows = store.runs()
        assert store.count_runs() == count
        assert len({(r["problem_key"], r["config_key"], r["budget"]) for r in rows}) == count
        by_worker = {w: sum(r["answer"] == w for r in rows) for w in ("w0", "w1")}
        assert all(n > 0 for n in by_worker.values()), by_worker  # both really worked
        assert WorkQueue(store, "check").claims() == []  # every claim finished


def test_a_killed_workers_claims_return_after_the_lease(db_url: str) -> None:
    count = 30
    ctx = multiprocessing.get_context("fork")
    doomed = ctx.Process(target=_claim_then_die, args=(db_url, count))
    doomed.start()
    doomed.join(60)
    assert doomed.exitcode == -signal.SIGKILL
    with open_store(db_url) as store:
        survivor = WorkQueue(store, "survivor")
        assert len(survivor.claim(count)) == count - 10  # the dead worker's 10 are leased
        time.sleep(1.2)
        reclaimed = survivor.claim(count)
        assert len(reclaimed) == 10
        attempts = {
            r["attempts"]
            for r in survivor.claims()
            if RunKey(r["problem_key"], r["config_key"], r["budget"], r["repeat"]) in reclaimed
        }
        assert attempts == {2}  # claimed once by the dead worker, once now
        assert survivor.release() == count
    _work(db_url, "survivor", count, 8, 0.0)  # finishes everything, nothing twice
    with open_store(db_url) as store:
        assert store.count_runs() == count
        assert WorkQueue(store, "check").claims() == []


def test_postgresql_claims_skip_rows_locked_by_another_worker(postgres_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a claim does not wait for, or take, rows another holds."""
    with open_store(postgres_url) as store:
        queue = WorkQueue(store, "fast")
        plan = _plan(10)
        queue.enqueue(plan)
        engine = make_engine(postgres_url)
        with engine.connect() as other, other.begin():
            locked = other.execute(
                select(run_claims.c.problem_key)
                .order_by(run_claims.c.created_at, run_claims.c.problem_key)
                .limit(4)
                .with_for_update()
            ).all()
            started = time.monotonic()
            claimed = queue.claim(10)
            elapsed = time.monotonic() - started
        engine.dispose()
        assert len(locked) == 4 and elapsed < 5
        assert len(claimed) == 6
        assert not {k.problem_key for k in claimed} & {row[0] for row in locked}


# ---------------------------------------------------------------- ratts sweep --worker


def _worker_args(data: Path, toml: Path, name: str, *extra: str) -> list[str]:
    return [
        "sweep", str(data), "-s", "cot", "-s", "majority", "--n", "2", "--settings", str(toml),
        "--no-progress", "--worker", "--worker-name", name, "--concurrency", "2", *extra,
    ]  # fmt: skip


def _logged(url: str) -> tuple[int, int, set[str]]:
    """(rows, distinct run keys, workers' names seen in the claims) of the run log."""
    with open_store(url) as store:
        rows = store.runs()
        keys = {(r["problem_key"], r["config_key"], r["budget"], r["repeat"]) for r in rows}
        return len(rows), len(keys), {c["worker"] for c in WorkQueue(store, "x").claims()}


def test_two_sweep_workers_split_one_database_and_a_killed_one_loses_nothing(
    db_url: str, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    slow = make_sim(capacity={"base_latency_s": 0.4})  # slow enough for both to start
    toml = settings_file(tmp_path / "ratts.toml", slow.base_url, db_url)
    data = sim_dataset(tmp_path / "sim.jsonl", 30)
    total = 60
    open_store(db_url).close()

    # a worker killed mid-claim: its leased runs come back after the lease (5 s)
    doomed = spawn_cli(*_worker_args(data, toml, "doomed", "--lease", "5"))
    deadline = time.monotonic() + 90
    while not (_logged(db_url)[0] >= 6 and "doomed" in _logged(db_url)[2]):  # mid-claim
        assert doomed.poll() is None, doomed.communicate()
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)
    rows, _, holders = _logged(db_url)
    assert rows < total and "doomed" in holders  # it died holding claims

    workers = [spawn_cli(*_worker_args(data, toml, f"w{i}")) for i in range(2)]
    results = [w.communicate(timeout=240) for w in workers]
    for proc, (_, err) in zip(workers, results, strict=True):
        assert proc.returncode == 0, err
    done = [int(re.search(r"(\d+) done", out).group(1)) for out, _ in results]  # type: ignore[union-attr]
    assert sum(done) == total - rows  # every remaining run exactly once, none twice
    assert all(d > 0 for d in done), done  # both really worked
    rows, distinct, holders = _logged(db_url)
    assert rows == distinct == total and holders == set()  # no duplicates, no claims left
