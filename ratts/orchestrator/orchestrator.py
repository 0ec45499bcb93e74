"""Orchestrator: the one path every front door takes. probe -> route -> run -> grade -> log.

Why it is shaped like this:
- it owns what it builds: endpoint clients made from settings and a store opened from a URL
  are closed by ``aclose`` (``async with``); clients and stores passed in stay the caller's;
- strategies never see a deadline: the pipeline runs as a task watched through thin client
  wrappers (``ratts.orchestrator.watch``); when ``timeout`` passes the task is cancelled and
  the best answer seen so far is returned, marked partial, with the usage really spent;
- cancelling the caller's task cancels the pipeline task, which cancels its HTTP requests
  (the endpoint clients close the connections of cancelled requests);
- every solve that ran leaves a run row (answer, features, usage, router version,
  correctness when a gold answer is known); partial or failed runs carry an ``error`` text
  so a router trained on the log leaves them out. A solve refused as bad input (or one whose
  budget no config fits) and a cancelled solve leave none;
- the router's current version is looked up on each routed solve, so a long-lived server
  picks up a retrained router without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from ratts.endpoints.policy import Policy, PolicyClient
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage
from ratts.errors import ConfigError, InputError, RattsError
from ratts.orchestrator.inputs import (
    as_problem,
    check_budget,
    check_prices,
    check_prm_flops,
    check_probe_fits,
    forced_config,
    probe_floor,
)
from ratts.orchestrator.progress import Progress, result_of
from ratts.orchestrator.result import SolveResult
from ratts.orchestrator.runner import DbThread, Endpoints, Runner, one_line
from ratts.orchestrator.watch import EventSink, ProgressEvent, Watch, WatchedPolicy, WatchedPRM
from ratts.router import Current, Decision, Router
from ratts.router.candidates import CostUnit
from ratts.router.features import text_features
from ratts.router.modes import PROBE
from ratts.settings import Settings, load_settings
from ratts.store import Store, budget_label, open_store
from ratts.strategies.probe import DEFAULT_K, ProbeResult, probe_config
from ratts.types import Budget, Outcome, Problem, RunConfig, StrategyParams

log = logging.getLogger(__name__)


class Orchestrator:
    """Solve questions with the compute-optimal strategy: the async Python API.

    Build from settings (``Orchestrator()`` reads ratts.toml / ``RATTS_*``) or from explicit
    endpoint objects (``policies=[...]``, ``prms=[...]``; the first of each is the default;
    the router chooses among all of them). ``store`` is a Store or a database URL (default:
    the settings' ``db_url``): the run log and the home of trained routers; with
    ``log_runs=False`` nothing is written to it. ``probe_k`` samples feed the cold-start
    rule's difficulty estimate (a trained router brings its own probe); ``epsilon`` is the
    exploration rate (0 = always the best guess); ``lam`` makes the router maximise
    accuracy - lam x cost within the budget instead of accuracy alone, cost counted in
    ``lam_unit`` (tokens by default, as ``ratts.router.allocate.lam_for_mean`` calibrates).

        async with Orchestrator() as orch:
            result = await orch.solve("What is 2 + 3?", budget=Budget(n=16))
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policies: Sequence[PolicyClient] | None = None,
        prms: Sequence[PRM] | None = None,
        store: Store | str | None = None,
        log_runs: bool = True,
        probe_k: int = DEFAULT_K,
        epsilon: float = 0.0,
        lam: float | None = None,
        lam_unit: CostUnit = "tokens",
        seed: int | None = None,
    ) -> None:
        if probe_k < 1:
            raise ConfigError(f"probe_k must be at least 1, got {probe_k}")
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
        self.settings = settings if settings is not None else load_settings()
        self.probe_k = probe_k
        self.epsilon = epsilon
        self.lam = lam
        self.lam_unit: CostUnit = lam_unit
        self.seed = seed
        self.log_runs = log_runs
        self.endpoints = Endpoints(self.settings, policies=policies, prms=prms)
        self._router: Router | None = None
        self._runner: Runner | None = None
        self._store_arg = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self._owns_store = False
        self._db: DbThread | None = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the run log (upgrading a fresh database). ``solve`` calls it when needed."""
        if self._closed:
            raise RattsError("this Orchestrator is closed")
        async with self._start_lock:
            if self._started:
                return
            self._db = db = DbThread("ratts-solve-db")
            if self._store is None:
                url = self._store_arg if isinstance(self._store_arg, str) else None
                self._store = await db(open_store, url or self.settings.db_url)
                self._owns_store = True
            self._runner = Runner(self.endpoints, self._store if self.log_runs else None, db)
            self._router = Router(
                self.endpoints.settings,
                self._store,
                epsilon=self.epsilon,
                lam=self.lam,
                lam_unit=self.lam_unit,
                seed=self.seed,
            )
            self._started = True

    async def aclose(self) -> None:
        """Close the clients and the store this Orchestrator built (not the ones given)."""
        if self._closed:
            return
        self._closed = True
        await self.endpoints.aclose()
        if self._db is not None:
            if self._owns_store and self._store is not None:
                await self._db(self._store.close)
                self._store = None
            self._db.close()
            self._db = None

    @property
    def store(self) -> Store | None:
        return self._store

    # -- endpoints ------------------------------------------------------------------------

    @property
    def policy_names(self) -> list[str]:
        return self.endpoints.policy_names

    @property
    def prm_names(self) -> list[str]:
        return self.endpoints.prm_names

    def policy(self, name: str | None = None) -> Policy:
        """The policy client called ``name`` (default: the first), built on first use."""
        return self.endpoints.policy(name)

    def prm(self, name: str | None = None) -> PRM:
        """The PRM called ``name`` (default: the first), built on first use."""
        return self.endpoints.prm(name)

    # -- solving --------------------------------------------------------------------------

    async def solve(
        self,
        question: str | Problem,
        *,
        budget: Budget | int | None = None,
        policy: str | None = None,
        prm: str | None = None,
        strategy: str | None = None,
        params: StrategyParams | None = None,
        timeout: float | None = None,
        on_event: EventSink | None = None,
        dataset: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SolveResult:
        """Answer one question.

        Routed (no ``strategy``): probe (k samples, PRM-scored), ask the router for the best
        (policy, PRM, strategy, params) within ``budget`` (among ``policy``/``prm`` only,
        when given), run it reusing the probe's samples where it can. Forced (``strategy``):
        run it with ``params`` (default: N from ``budget.n``, else 1 for CoT and 4 for the
        rest) on ``policy``/``prm`` (default: the first configured), without a probe.

        ``timeout`` (seconds, for the whole solve) returns the best answer seen so far with
        ``partial=True`` instead of nothing. ``on_event`` gets each ProgressEvent as it
        happens (called synchronously; keep it fast). Cancelling the awaiting task cancels
        the solve and its in-flight HTTP requests. ``dataset`` names the problem's dataset
        in the log (default: ``problem.meta["dataset"]``). ``meta`` (level, dataset,
        subject) feeds the router's metadata features; without it they are missing, as
        for any bare question.

        Bad input raises InputError or ConfigError before anything runs; an endpoint that
        fails raises its EndpointError after the failed run is logged.
        """
        started = time.perf_counter()  # the deadline covers everything from here
        problem = as_problem(question)
        checked = check_budget(budget)
        if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout}")
        if strategy is None and params is not None:
            raise InputError("params need a strategy: give strategy= with params=")
        check_prices(self.settings, checked, policy)
        forced = forced_config(self.endpoints, strategy, params, checked, policy, prm)
        if checked is not None and checked.flops is not None:
            check_prm_flops(self.endpoints, forced.prm if forced is not None else prm, forced)
        fallback_probe = None if forced is not None else self._default_probe(policy, prm)
        await self.start()
        current: Current | None = None
        if forced is None and checked is not None:
            current = await self._check_probe_budget(problem, checked, policy, prm)

        events: list[dict[str, Any]] = []

        def sink(event: ProgressEvent) -> None:
            events.append(event.to_dict())
            if on_event is not None:
                on_event(event)

        aggregation = (params or StrategyParams()).aggregation
        state = Progress(
            watch=Watch(sink=sink, aggregation=aggregation, separator=self._separator(policy)),
            features=dict(text_features(replace(problem, meta=dict(meta or {})))),
            probe_config=fallback_probe,
        )
        sink(
            ProgressEvent(
                "start",
                {
                    "problem": problem.id,
                    "budget": budget_label(checked),
                    "forced": forced is not None,
                },
            )
        )
        task = asyncio.create_task(
            self._pipeline(problem, checked, policy, prm, forced, state, current)
        )
        try:
            remaining = None if timeout is None else timeout - (time.perf_counter() - started)
            done, _ = await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        outcome: Outcome | None = None
        error: str | None = None
        failure: BaseException | None = None
        partial = False
        if task in done:
            try:
                outcome = task.result()
            except Exception as exc:  # logged below, then raised to the caller
                failure = exc
                error = one_line(exc)
        else:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            partial = True
            error = f"partial: deadline of {timeout:g}s reached"
            sink(ProgressEvent("deadline", {"seconds": timeout, "phase": state.watch.phase}))

        if isinstance(failure, InputError | ConfigError):
            raise failure  # the request cannot be served as asked (e.g. no config fits)
        result = result_of(problem, checked, state, outcome, partial, error, events)
        result.usage.wall_seconds = time.perf_counter() - started
        runner = self._runner
        assert runner is not None
        if result.answer is not None:
            result.correct = await runner.grade(result.answer, problem.answer)
        if self.log_runs:
            await runner.record_result(result, dataset)
        if failure is not None:
            raise failure
        return result

    @overload
    async def solve_many(
        self,
        problems: Iterable[str | Problem],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[False] = ...,
        **options: Any,
    ) -> list[SolveResult]: ...

    @overload
    async def solve_many(
        self,
        problems: Iterable[str | Problem],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[True],
        **options: Any,
    ) -> list[SolveResult | BaseException]: ...

    async def solve_many(
        self,
        problems: Iterable[str | Problem],
        *,
        concurrency: int = 8,
        return_exceptions: bool = False,
        **options: Any,
    ) -> list[SolveResult] | list[SolveResult | BaseException]:
        """Solve many with at most ``concurrency`` in flight; results in input order.

        ``options`` are ``solve``'s keywords. With ``return_exceptions`` a failed problem's
        slot holds its exception; otherwise the first failure cancels the rest and raises.
        """
        if concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {concurrency}")
        items = list(problems)
        gate = asyncio.Semaphore(concurrency)

        async def one(item: str | Problem) -> SolveResult:
            async with gate:
                return await self.solve(item, **options)

        tasks = [asyncio.create_task(one(item)) for item in items]
        try:
            if return_exceptions:
                return list(await asyncio.gather(*tasks, return_exceptions=True))
            return list(await asyncio.gather(*tasks))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the pipeline ---------------------------------------------------------------------

    def _separator(self, policy: str | None) -> str:
        try:
            return self.endpoints.policy_spec(policy).step_separator
        except ConfigError:
            return "\n\n"

    def _default_probe(self, policy: str | None, prm: str | None) -> RunConfig:
        """The probe on the requested (or first) policy and PRM, as a config (validating
        the names now). The router in charge may probe differently (``_pipeline``)."""
        policy_name = self.policy(policy).name
        prm_name = self.prm(prm).name if prm is not None or self.prm_names else None
        return probe_config(policy_name, prm_name, self.probe_k)

    async def _check_probe_budget(
        self, problem: Problem, budget: Budget, policy: str | None, prm: str | None
    ) -> Current:
        """Refuse (InputError) a budget that the probe alone would break, before it runs;
        the router in charge (read once, passed on to the pipeline) says which probe."""
        router = self._router
        assert router is not None and self._db is not None
        current: Current = await self._db(router.current)
        if router.rule(current) != PROBE:
            return current  # no probe runs, so there is no probe floor to check
        plan = router.probe_spec(current, policy, prm, self.probe_k)
        prompt = self.policy(plan.policy).prompt(problem.question)
        floor = probe_floor(
            self.endpoints.settings, plan.policy, plan.prm, plan.k, prompt, problem.question
        )
        scorer = f" scored by {plan.prm}" if plan.prm else ""
        check_probe_fits(budget, floor, f"{plan.k} samples from {plan.policy}{scorer}")
        return current

    async def _pipeline(
        self,
        problem: Problem,
        budget: Budget | None,
        policy: str | None,
        prm: str | None,
        forced: RunConfig | None,
        state: Progress,
        current: Current | None = None,
    ) -> Outcome:
        watch = state.watch
        if forced is not None:
            state.decision = Decision(config=forced, reason="forced", explanation="forced")
            watch.emit("routed", config=forced.label(), reason="forced")
            return await self._run(problem, forced, watch)

        # Routed: the router in charge, its probe, its choice, then the run (which reuses
        # the probe's samples where it can).
        router = self._router
        assert router is not None
        if current is None:
            assert self._db is not None
            current = await self._db(router.current)
        rule = router.rule(current)
        if rule != PROBE:  # the trained router's rule here needs no probe (it would not pay)
            decision = router.decide(
                state.features, budget, current=current, policy=policy, prm=prm, rule=rule
            )
            state.decision = decision
            self._emit_routed(watch, decision)
            return await self._run(problem, decision.config, watch)
        plan = router.probe_spec(current, policy, prm, self.probe_k)
        state.probe_config = probe_config(plan.policy, plan.prm, plan.k, plan.params)
        result = await self._run(problem, state.probe_config, watch, phase="probe")
        assert isinstance(result, ProbeResult)
        state.probe = result
        state.probe_usage = Usage() + watch.usage
        state.features.update(result.features)
        watch.emit(
            "probe",
            k=result.k,
            answer=result.answer,
            agreement=result.features.get("probe_agreement"),
            prm_mean=result.features.get("probe_prm_mean"),
        )
        decision = router.decide(
            state.features, budget, current=current, policy=policy, prm=prm, probe_result=result
        )
        state.decision = decision
        self._emit_routed(watch, decision)
        return await self._run(problem, decision.config, watch, reuse=result)

    @staticmethod
    def _emit_routed(watch: Watch, decision: Decision) -> None:
        watch.emit(
            "routed",
            config=decision.config.label(),
            reason=decision.reason,
            rule=decision.rule,
            router_version=decision.router_version,
            predicted_accuracy=decision.predicted_accuracy,
        )

    async def _run(
        self,
        problem: Problem,
        config: RunConfig,
        watch: Watch,
        *,
        phase: str = "strategy",
        reuse: ProbeResult | None = None,
    ) -> Outcome:
        """One config through the runner, on clients the watch observes."""
        runner = self._runner
        assert runner is not None
        watch.enter(phase)
        policy = WatchedPolicy(self.policy(config.policy), watch)
        prm = WatchedPRM(self.prm(config.prm), watch) if config.prm is not None else None
        return await runner.execute(problem, config, policy=policy, prm=prm, reuse=reuse)

    # -- results and logging --------------------------------------------------------------
