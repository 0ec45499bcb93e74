"""The sweep: every problem x every config, graded and logged one row per run.

Why it is shaped like this:
- resumable: rows already in the store are skipped (failures too, unless ``retry_failed``),
  and each row is committed the moment its run finishes, so killing the process loses only
  the runs in flight;
- safe with other writers: runs go in random order and each key is checked again just
  before its run starts (another process may have done it), so concurrent sweeps split the
  work; the store's insert-or-ignore makes any remaining race harmless;
- bounded: ``concurrency`` runs at once; each endpoint client also keeps its own limit;
- every run goes through the one runner (``ratts.orchestrator.runner``): its store calls
  use one worker thread, so the event loop never blocks on SQLite; progress is reported
  through a callback (the CLI draws the bar).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ratts.datasets import LoadResult, load_dataset, load_jsonl
from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.errors import ConfigError, RouterError
from ratts.orchestrator.runner import DbThread, Endpoints, Runner, dataset_of
from ratts.orchestrator.sweep_config import validate_configs
from ratts.settings import Settings
from ratts.store import RunKey, Store, budget_label, problem_key
from ratts.store.claims import DEFAULT_LEASE_S, WorkQueue
from ratts.strategies.probe import DEFAULT_K, probe_config
from ratts.types import Problem, RunConfig, StrategyParams


def load_problems(spec: str, *, n: int | None = None, seed: int = 0) -> LoadResult:
    """A dataset spec's problems plus its malformed lines (a JSONL file's, with numbers).

    ``arith[:ops=A-B,max=M]`` generates ``n`` problems (default 100); anything else is a
    JSONL path whose first ``n`` good problems are kept.
    """
    text = spec.strip()
    if text == "arith" or text.startswith("arith:"):
        return LoadResult(problems=load_dataset(text, n=n, seed=seed))
    path = Path(text).expanduser()
    if path.suffix != ".jsonl" and not path.exists():
        load_dataset(text)  # raises its DatasetError naming the accepted specs
    result = load_jsonl(path)
    if n is not None:
        result.problems = result.problems[:n]
    return result


@dataclass(frozen=True, slots=True)
class SweepItem:
    problem: Problem
    config: RunConfig
    dataset: str | None
    key: RunKey


@dataclass(slots=True)
class SweepStats:
    """What one invocation did. ``skipped`` were already logged (by anyone)."""

    planned: int = 0
    todo: int = 0  # not yet logged when planned
    processed: int = 0  # of ``todo``, finished (however it ended)
    skipped: int = 0
    done: int = 0
    failed: int = 0
    graded: int = 0
    correct: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    errors: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.elapsed, 1e-9)

    def summary(self) -> str:
        acc = f"{self.accuracy:.1%}" if self.accuracy is not None else "n/a"
        return (
            f"{self.done} done, {self.failed} failed, {self.skipped} already logged "
            f"(of {self.planned}); accuracy {acc}; {self.tokens} tokens in "
            f"{self.elapsed:.1f}s ({self.tokens_per_second:.0f} tok/s)"
        )


def plan(
    problems: Sequence[Problem], configs: Sequence[RunConfig], dataset: str | None = None
) -> list[SweepItem]:
    """Every (problem, config) pair with its store key; budget = the config's N."""
    items = []
    for problem in problems:
        ds = dataset_of(problem, dataset)
        pkey = problem_key(problem, ds)
        for config in configs:
            key = RunKey(pkey, config.key(), budget_label(config.params.n))
            items.append(SweepItem(problem, config, ds, key))
    return items


class _Sweep:
    """One invocation's state: the runner, counters and the progress callback."""

    def __init__(
        self,
        runner: Runner,
        *,
        retry_failed: bool,
        on_progress: Callable[[SweepStats], None] | None,
    ) -> None:
        self.runner = runner
        self.retry_failed = retry_failed
        self.on_progress = on_progress
        self.stats = SweepStats()

    def _tick(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)

    async def run_item(self, item: SweepItem) -> None:
        store = self.runner.store
        assert store is not None
        include_failed = not self.retry_failed
        s = self.stats
        if await self.runner.db(store.has_run, item.key, include_failed=include_failed):
            s.skipped += 1  # another process logged it since we planned
            s.processed += 1
            self._tick()
            return
        record = await self.runner.run_config(
            item.problem,
            item.config,
            budget=item.key.budget,
            dataset=item.dataset,
            replace_failed=self.retry_failed,
        )
        s.processed += 1
        if not record.logged:
            s.skipped += 1  # a concurrent writer got there first
        elif record.error is not None:
            s.failed += 1
            s.errors.append(f"{item.problem.id} x {item.config.label()}: {record.error}")
        else:
            s.done += 1
            s.tokens += record.usage.total_tokens
            if record.correct is not None:
                s.graded += 1
                s.correct += int(record.correct)
        self._tick()


async def drive(
    items: Sequence[SweepItem],
    store: Store,
    endpoints: Endpoints,
    *,
    concurrency: int = 16,
    retry_failed: bool = False,
    on_progress: Callable[[SweepStats], None] | None = None,
) -> SweepStats:
    """Run the ``items`` not yet logged through the runner, ``concurrency`` at once.

    Shared by ``run_sweep`` and router training's ``collect_probes``; the caller owns
    ``store`` and ``endpoints``.
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    db = DbThread()
    try:
        done = await db(store.done_keys, include_failed=not retry_failed)
        todo = [item for item in items if item.key not in done]
        random.shuffle(todo)  # concurrent sweeps of the same plan then split the work
        sweep = _Sweep(
            Runner(endpoints, store, db), retry_failed=retry_failed, on_progress=on_progress
        )
        sweep.stats.planned = len(items)
        sweep.stats.skipped = len(items) - len(todo)
        sweep.stats.todo = len(todo)
        sweep._tick()
        queue: asyncio.Queue[SweepItem] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await sweep.run_item(item)

        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return sweep.stats
    finally:
        db.close()


async def drive_claimed(
    items: Sequence[SweepItem],
    store: Store,
    endpoints: Endpoints,
    worker: str,
    *,
    concurrency: int = 16,
    retry_failed: bool = False,
    lease_s: float = DEFAULT_LEASE_S,
    poll_s: float = 2.0,
    on_progress: Callable[[SweepStats], None] | None = None,
) -> SweepStats:
    """``drive``, as one of several workers sharing ``store``: claim a batch of runs
    (``ratts.store.claims``), run it while renewing the leases, finish the claims, repeat.

    Returns when every planned run is logged. Runs other workers hold are waited for: if a
    worker dies its leases pass and they are claimed here, so nothing is lost. Workers
    must sweep the same dataset and configs (claims are scoped to this plan's configs).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    db = DbThread()
    queue = WorkQueue(store, worker, lease_s=lease_s)
    index = {item.key: item for item in items}
    config_keys = {item.key.config_key for item in items}
    include_failed = not retry_failed
    try:
        done = await db(store.done_keys, include_failed=include_failed)
        await db(queue.enqueue, [k for k in index if k not in done])
        sweep = _Sweep(
            Runner(endpoints, store, db), retry_failed=retry_failed, on_progress=on_progress
        )
        s = sweep.stats
        s.planned, s.skipped = len(items), sum(1 for k in index if k in done)
        s.todo = s.planned - s.skipped
        sweep._tick()
        while True:
            keys = await db(
                queue.claim, concurrency, include_failed=include_failed, config_keys=config_keys
            )
            mine = [k for k in keys if k in index]
            await db(queue.release, [k for k in keys if k not in index])  # another plan's
            if not mine:
                logged = await db(store.done_keys, include_failed=include_failed)
                if all(k in logged for k in index):
                    await db(queue.prune)  # claims left by workers that died after logging
                    return s
                await asyncio.sleep(poll_s)  # held by live workers, or leases not yet passed
                continue

            async def heartbeat(held: list[RunKey]) -> None:
                while True:
                    await asyncio.sleep(lease_s / 3)
                    await db(queue.renew, held)

            beat = asyncio.create_task(heartbeat(mine))
            try:
                await asyncio.gather(*(sweep.run_item(index[k]) for k in mine))
            finally:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            await db(queue.finish, mine)
    finally:
        with contextlib.suppress(Exception):  # a clean exit hands unfinished claims back
            await db(queue.release)
        db.close()


async def run_sweep(
    problems: Sequence[Problem],
    configs: Sequence[RunConfig],
    store: Store,
    settings: Settings,
    *,
    dataset: str | None = None,
    concurrency: int = 16,
    retry_failed: bool = False,
    on_progress: Callable[[SweepStats], None] | None = None,
    worker: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
) -> SweepStats:
    """Run every (problem, config) not yet logged and log each as it finishes.

    With ``worker`` (a name unique among the workers) the sweep shares the store with other
    workers, on other machines too, by claiming rows (``drive_claimed``).

    ``dataset`` names the problems' dataset in the store (default: each problem's
    ``meta["dataset"]``). A run that raises is logged with its one-line error and counted as
    failed; with ``retry_failed`` logged failures are run again and replaced. Config and
    settings problems raise ConfigError before anything runs; a StoreError stops the sweep
    (rows already committed stay). ``on_progress`` gets the stats once planned and after
    every run (the CLI draws its progress bar from it).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if not configs:
        raise ConfigError("no configs to sweep")
    validate_configs(configs, settings)
    endpoints = Endpoints(settings)
    try:
        for config in configs:  # build every client now: a bad endpoint spec fails up front
            endpoints.clients(config)
        items = plan(problems, configs, dataset)
        if worker is not None:
            return await drive_claimed(
                items,
                store,
                endpoints,
                worker,
                concurrency=concurrency,
                retry_failed=retry_failed,
                lease_s=lease_s,
                on_progress=on_progress,
            )
        return await drive(
            items,
            store,
            endpoints,
            concurrency=concurrency,
            retry_failed=retry_failed,
            on_progress=on_progress,
        )
    finally:
        await endpoints.aclose()


async def collect_probes(
    store: Store,
    problems: Sequence[Problem],
    policy: Policy,
    prm: PRM | None,
    *,
    k: int = DEFAULT_K,
    params: StrategyParams | None = None,
    dataset: str | None = None,
    concurrency: int = 16,
    on_progress: Callable[[SweepStats], None] | None = None,
) -> int:
    """Probe every problem not yet probed this way and log it (the ``probe`` strategy,
    through the runner like any sweep); returns how many were logged.

    Resumable like the sweep: problems whose probe row exists are skipped, and probes that
    failed before are tried again. Raises RouterError naming the first failure when some
    probes failed (they are logged as failed; the rest are kept).
    """
    if concurrency < 1:
        raise RouterError(f"concurrency must be >= 1, got {concurrency}")
    if k < 1:
        raise RouterError(f"the probe needs k >= 1 samples, got {k}")
    config = probe_config(policy.name, prm.name if prm is not None else None, k, params)
    endpoints = Endpoints(policies=[policy], prms=[prm] if prm is not None else None)
    stats = await drive(
        plan(problems, [config], dataset),
        store,
        endpoints,
        concurrency=concurrency,
        retry_failed=True,
        on_progress=on_progress,
    )
    if stats.failed:
        raise RouterError(
            f"{stats.failed} of {stats.todo} probes failed (first: {stats.errors[0]}); "
            f"{stats.done} were logged; run again to retry the failed ones"
        )
    return stats.done
