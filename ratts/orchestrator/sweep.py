"""The sweep: every problem x every config, graded and logged one row per run.

Why it is shaped like this:
- resumable: rows already in the store are skipped (failures too, unless ``retry_failed``),
  and each row is committed the moment its run finishes, so killing the process loses only
  the runs in flight;
- safe with other writers: runs go in random order and each key is checked again just
  before its run starts (another process may have done it), so concurrent sweeps split the
  work; the store's insert-or-ignore makes any remaining race harmless;
- bounded: ``concurrency`` runs at once; each endpoint client also keeps its own limit;
- database calls go through one worker thread, so the event loop never blocks on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ratts.datasets import LoadResult, load_dataset, load_jsonl
from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage, spent
from ratts.errors import ConfigError
from ratts.grading import grade
from ratts.orchestrator.sweep_config import validate_configs
from ratts.settings import Settings
from ratts.store import RunKey, Store, budget_label, problem_key
from ratts.strategies import get_strategy
from ratts.types import Problem, RunConfig

T = TypeVar("T")


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
        ds = dataset if dataset is not None else _meta_dataset(problem)
        pkey = problem_key(problem, ds)
        for config in configs:
            key = RunKey(pkey, config.key(), budget_label(config.params.n))
            items.append(SweepItem(problem, config, ds, key))
    return items


def _meta_dataset(problem: Problem) -> str | None:
    value = problem.meta.get("dataset")
    return str(value) if value is not None else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


class _Sweep:
    """One invocation's state: clients, the DB thread, counters and the progress bar."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        retry_failed: bool,
        progress: Progress | None,
        task: TaskID | None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.retry_failed = retry_failed
        self.progress = progress
        self.task = task
        self.stats = SweepStats()
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ratts-db")
        self.policies: dict[str, PolicyClient] = {}
        self.prms: dict[str, PRM] = {}

    async def db(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, functools.partial(fn, *args, **kwargs))

    def clients(self, config: RunConfig) -> tuple[PolicyClient, PRM | None]:
        if config.policy not in self.policies:
            self.policies[config.policy] = build_policy(self.settings.policy(config.policy))
        prm: PRM | None = None
        if config.prm is not None:
            if config.prm not in self.prms:
                self.prms[config.prm] = build_prm(self.settings.prm(config.prm))
            prm = self.prms[config.prm]
        return self.policies[config.policy], prm

    async def close(self) -> None:
        clients: list[PolicyClient | PRM] = [*self.policies.values(), *self.prms.values()]
        for client in clients:
            with contextlib.suppress(Exception):  # closing must not mask the sweep's outcome
                await client.aclose()
        self.db_thread.shutdown(wait=True)

    def _tick(self, advance: int = 1) -> None:
        if self.progress is None or self.task is None:
            return
        s = self.stats
        self.progress.update(
            self.task,
            advance=advance,
            done=s.done,
            failed=s.failed,
            acc=f"{s.accuracy:.1%}" if s.accuracy is not None else "-",
            tps=f"{s.tokens_per_second:,.0f}",
        )

    async def run_item(self, item: SweepItem) -> None:
        include_failed = not self.retry_failed
        if await self.db(self.store.has_run, item.key, include_failed=include_failed):
            self.stats.skipped += 1  # another process logged it since we planned
            self._tick()
            return
        policy, prm = self.clients(item.config)
        strategy = get_strategy(item.config.strategy)
        started = time.perf_counter()
        answer: str | None = None
        correct: bool | None = None
        reward: float | None = None
        error: str | None = None
        try:
            outcome = await strategy.run(item.problem, policy, prm, item.config.params)
            usage = outcome.usage
            answer, reward = outcome.answer, outcome.final_reward
            correct = await asyncio.to_thread(grade, answer, item.problem.answer)
        except Exception as exc:
            usage = spent(exc) or Usage()  # what the failed run was served still counts
            error = _one_line(exc)
        if not usage.wall_seconds:
            usage.wall_seconds = time.perf_counter() - started
        inserted = await self.db(
            self.store.record_run,
            item.problem,
            item.config,
            item.key.budget,
            dataset=item.dataset,
            answer=answer,
            correct=correct,
            final_reward=reward,
            usage=usage,
            error=error,
            replace_failed=self.retry_failed,
        )
        s = self.stats
        if not inserted:
            s.skipped += 1  # a concurrent writer got there first
        elif error is not None:
            s.failed += 1
            s.errors.append(f"{item.problem.id} x {item.config.label()}: {error}")
        else:
            s.done += 1
            s.tokens += usage.total_tokens
            if correct is not None:
                s.graded += 1
                s.correct += int(correct)
        self._tick()


async def run_sweep(
    problems: Sequence[Problem],
    configs: Sequence[RunConfig],
    store: Store,
    settings: Settings,
    *,
    dataset: str | None = None,
    concurrency: int = 16,
    retry_failed: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> SweepStats:
    """Run every (problem, config) not yet logged and log each as it finishes.

    ``dataset`` names the problems' dataset in the store (default: each problem's
    ``meta["dataset"]``). A run that raises is logged with its one-line error and counted as
    failed; with ``retry_failed`` logged failures are run again and replaced. Config and
    settings problems raise ConfigError before anything runs; a StoreError stops the sweep
    (rows already committed stay).
    """
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    if not configs:
        raise ConfigError("no configs to sweep")
    validate_configs(configs, settings)
    items = plan(problems, configs, dataset)
    done = await asyncio.to_thread(store.done_keys, include_failed=not retry_failed)
    todo = [item for item in items if item.key not in done]
    random.shuffle(todo)  # concurrent sweeps of the same plan then split the work

    bar = Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("done {task.fields[done]} · failed {task.fields[failed]}"),
        TextColumn("· acc {task.fields[acc]} · {task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=not progress,
    )
    task = bar.add_task("sweep", total=len(todo), done=0, failed=0, acc="-", tps="0")
    sweep = _Sweep(store, settings, retry_failed=retry_failed, progress=bar, task=task)
    sweep.stats.planned = len(items)
    sweep.stats.skipped = len(items) - len(todo)
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

    workers: list[asyncio.Task[None]] = []
    try:
        for config in configs:  # build every client now: a bad endpoint spec fails up front
            sweep.clients(config)
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(todo)))]
        with bar:
            await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await sweep.close()
    return sweep.stats
