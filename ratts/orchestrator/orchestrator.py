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
import contextlib
import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import PolicyClient
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage
from ratts.errors import ConfigError, InputError, RattsError
from ratts.grading import grade
from ratts.orchestrator.result import SolveResult
from ratts.orchestrator.routing import Current, Decision, ProbePlan, Routing
from ratts.orchestrator.watch import EventSink, ProgressEvent, Watch, WatchedPolicy, WatchedPRM
from ratts.router.features import text_features
from ratts.router.probe import DEFAULT_K, ProbeResult, probe, probe_params, run_with_probe
from ratts.settings import PolicySpec, PRMSpec, Settings, load_settings
from ratts.store import RunKey, Store, budget_label, open_store, problem_key
from ratts.strategies import get_strategy, with_defaults
from ratts.types import Budget, Outcome, Problem, RunConfig, StrategyParams

log = logging.getLogger(__name__)

T = TypeVar("T")

#: N of a forced strategy when neither ``params`` nor ``budget.n`` says otherwise.
DEFAULT_FORCED_N = 4


@dataclass(slots=True)
class _Progress:
    """What the pipeline has reached; read when the deadline cuts it short."""

    watch: Watch
    features: dict[str, Any]
    probe: ProbeResult | None = None
    probe_usage: Usage | None = None
    decision: Decision | None = None
    probe_config: RunConfig | None = None


def check_budget(budget: Budget | int | None) -> Budget | None:
    """A Budget from an int N or a Budget; every set limit must be positive (InputError)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, Budget | int):
        raise InputError(f"budget must be a Budget or an integer N, got {budget!r}")
    if isinstance(budget, int):
        budget = Budget(n=budget)
    for name, value in budget.model_dump().items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise InputError(f"budget {name} must be positive, got {value:g}")
    return budget


def as_problem(question: str | Problem) -> Problem:
    """A Problem from a question string (a fresh id) or as given; empty text is InputError."""
    if isinstance(question, Problem):
        problem = question
    elif isinstance(question, str):
        problem = Problem(id=f"q-{uuid.uuid4().hex[:12]}", question=question)
    else:
        raise InputError(f"expected a question string or a Problem, got {type(question).__name__}")
    if not problem.question.strip():
        raise InputError("the question is empty")
    return problem


def _jsonable(features: Mapping[str, Any]) -> dict[str, Any]:
    """Features fit for JSON everywhere (NaN is not JSON): non-finite floats become None."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


class Orchestrator:
    """Solve questions with the compute-optimal strategy: the async Python API.

    Build from settings (``Orchestrator()`` reads ratts.toml / ``RATTS_*``) or from explicit
    endpoint objects (``policies=[...]``, ``prms=[...]``; the first of each is the default;
    the router chooses among all of them). ``store`` is a Store or a database URL (default:
    the settings' ``db_url``): the run log and the home of trained routers; with
    ``log_runs=False`` nothing is written to it. ``probe_k`` samples feed the cold-start
    rule's difficulty estimate (a trained router brings its own probe); ``epsilon`` is the
    exploration rate (0 = always the best guess); ``lam`` makes the router maximise
    accuracy - lam x cost within the budget instead of accuracy alone.

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
        self.seed = seed
        self.log_runs = log_runs
        self._policies: dict[str, PolicyClient] = {}
        self._prms: dict[str, PRM] = {}
        self._owned: list[PolicyClient | PRM] = []
        self._policy_specs: dict[str, PolicySpec] = {p.name: p for p in self.settings.policies}
        self._prm_specs: dict[str, PRMSpec] = {p.name: p for p in self.settings.prms}
        self._policy_order = [p.name for p in self.settings.policies]
        self._prm_order = [p.name for p in self.settings.prms]
        if policies:
            self._policies = {p.name: p for p in policies}
            self._policy_specs = {p.name: p.spec for p in policies}
            self._policy_order = [p.name for p in policies]
        if prms:
            self._prms = {p.name: p for p in prms}
            self._prm_specs = {p.name: _prm_spec(p) for p in prms}
            self._prm_order = [p.name for p in prms]
        # The deployment the router sees: exactly these endpoints, with their prices.
        self._view = self.settings.model_copy(
            update={
                "policies": [self._policy_specs[n] for n in self._policy_order],
                "prms": [self._prm_specs[n] for n in self._prm_order],
            }
        )
        self._routing: Routing | None = None
        self._store_arg = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self._owns_store = False
        self._db: ThreadPoolExecutor | None = None
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
            self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ratts-solve-db")
            if self._store is None:
                url = self._store_arg if isinstance(self._store_arg, str) else None
                self._store = await self._in_db(open_store, url or self.settings.db_url)
                self._owns_store = True
            self._routing = Routing(
                self._view, self._store, epsilon=self.epsilon, lam=self.lam, seed=self.seed
            )
            self._started = True

    async def aclose(self) -> None:
        """Close the clients and the store this Orchestrator built (not the ones given)."""
        if self._closed:
            return
        self._closed = True
        for client in self._owned:
            with contextlib.suppress(Exception):  # closing must not mask the caller's error
                await client.aclose()
        self._owned.clear()
        if self._owns_store and self._store is not None:
            await self._in_db(self._store.close)
            self._store = None
        if self._db is not None:
            self._db.shutdown(wait=True)
            self._db = None

    async def _in_db(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a blocking store call on the one DB thread, off the event loop."""
        executor = self._db
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))

    @property
    def store(self) -> Store | None:
        return self._store

    # -- endpoints ------------------------------------------------------------------------

    @property
    def policy_names(self) -> list[str]:
        return list(self._policy_order)

    @property
    def prm_names(self) -> list[str]:
        return list(self._prm_order)

    def policy(self, name: str | None = None) -> PolicyClient:
        """The policy client called ``name`` (default: the first), built on first use."""
        if not self._policy_order:
            raise ConfigError("no policy endpoints configured (add [[policies]] to ratts.toml)")
        key = name or self._policy_order[0]
        if key not in self._policy_specs:
            known = ", ".join(self._policy_order)
            raise ConfigError(f"unknown policy {key!r}; configured: {known}")
        if key not in self._policies:
            client = build_policy(self._policy_specs[key])
            self._policies[key] = client
            self._owned.append(client)
        return self._policies[key]

    def _check_prm_flops(self, prm: str | None, forced: bool) -> None:
        """Under a FLOPs budget every PRM the run may use must have a parameter count."""
        if forced and prm is None:
            return
        for name in [prm] if prm is not None else self._prm_order:
            if name in self._prm_specs:
                self._prm_specs[name].check_flops_known()

    def prm(self, name: str | None = None) -> PRM:
        """The PRM called ``name`` (default: the first), built on first use."""
        if not self._prm_order:
            raise ConfigError("no PRMs configured (add [[prms]] to ratts.toml)")
        key = name or self._prm_order[0]
        if key not in self._prm_specs:
            known = ", ".join(self._prm_order)
            raise ConfigError(f"unknown PRM {key!r}; configured: {known}")
        if key not in self._prms:
            client = build_prm(self._prm_specs[key])
            self._prms[key] = client
            self._owned.append(client)
        return self._prms[key]

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
        in the log (default: ``problem.meta["dataset"]``).

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
        forced = self._forced_config(strategy, params, checked, policy, prm)
        if checked is not None and checked.flops is not None:
            self._check_prm_flops(forced.prm if forced is not None else prm, forced is not None)
        fallback_probe = None if forced is not None else self._default_probe(policy, prm)
        await self.start()

        events: list[dict[str, Any]] = []

        def sink(event: ProgressEvent) -> None:
            events.append(event.to_dict())
            if on_event is not None:
                on_event(event)

        aggregation = (params or StrategyParams()).aggregation
        state = _Progress(
            watch=Watch(sink=sink, aggregation=aggregation, separator=self._separator(policy)),
            features=dict(text_features(problem)),
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
        task = asyncio.create_task(self._pipeline(problem, checked, policy, prm, forced, state))
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
                error = _one_line(exc)
        else:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            partial = True
            error = f"partial: deadline of {timeout:g}s reached"
            sink(ProgressEvent("deadline", {"seconds": timeout, "phase": state.watch.phase}))

        if isinstance(failure, InputError | ConfigError):
            raise failure  # the request cannot be served as asked (e.g. no config fits)
        result = self._result(problem, checked, state, outcome, partial, error, events)
        result.usage.wall_seconds = time.perf_counter() - started
        if result.answer is not None and problem.answer is not None:
            result.correct = await asyncio.to_thread(grade, result.answer, problem.answer)
        if self.log_runs:
            await self._log(result, dataset)
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
        name = policy or (self._policy_order[0] if self._policy_order else None)
        spec = self._policy_specs.get(name) if name else None
        return spec.step_separator if spec is not None else "\n\n"

    def _forced_config(
        self,
        strategy: str | None,
        params: StrategyParams | None,
        budget: Budget | None,
        policy: str | None,
        prm: str | None,
    ) -> RunConfig | None:
        """The config of a forced strategy (validated now, before anything runs)."""
        if strategy is None:
            return None
        impl = get_strategy(strategy)
        if params is None:
            n = budget.n if budget is not None and budget.n is not None else DEFAULT_FORCED_N
            params = StrategyParams(n=1 if strategy == "cot" else n)
        elif budget is not None and budget.n is not None and params.n > budget.n:
            raise InputError(f"params N={params.n} is over the budget N={budget.n}")
        params = with_defaults(strategy, params)
        impl.validate(params)
        policy_name = self.policy(policy).name
        prm_name = self.prm(prm).name if impl.needs_prm or prm is not None else None
        return RunConfig(
            policy=policy_name,
            prm=prm_name if impl.needs_prm else None,
            strategy=strategy,
            params=params,
        )

    def _default_probe(self, policy: str | None, prm: str | None) -> RunConfig:
        """The probe on the requested (or first) policy and PRM, as a config (validating
        the names now). The router in charge may probe differently (``_pipeline``)."""
        policy_name = self.policy(policy).name
        prm_name = self.prm(prm).name if prm is not None or self._prm_order else None
        return _probe_as_config(ProbePlan(policy_name, prm_name, self.probe_k))

    async def _pipeline(
        self,
        problem: Problem,
        budget: Budget | None,
        policy: str | None,
        prm: str | None,
        forced: RunConfig | None,
        state: _Progress,
    ) -> Outcome:
        watch = state.watch
        if forced is not None:
            state.decision = Decision(config=forced, reason="forced", explanation="forced")
            watch.emit("routed", config=forced.label(), reason="forced")
            watch.enter("strategy")
            policy_client = WatchedPolicy(self.policy(forced.policy), watch)
            prm_client = WatchedPRM(self.prm(forced.prm), watch) if forced.prm is not None else None
            return await get_strategy(forced.strategy).run(
                problem, policy_client, prm_client, forced.params
            )

        # Routed: the router in charge, its probe, its choice, then the run (which reuses
        # the probe's samples where it can).
        routing = self._routing
        assert routing is not None
        current: Current = await self._in_db(routing.current)
        plan = routing.probe_plan(current, policy, prm, self.probe_k)
        state.probe_config = _probe_as_config(plan)
        watch.enter("probe")
        result = await probe(
            problem,
            WatchedPolicy(self.policy(plan.policy), watch),
            WatchedPRM(self.prm(plan.prm), watch) if plan.prm is not None else None,
            plan.k,
        )
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
        decision = routing.decide(
            current, state.features, budget, policy, prm, spent=state.probe_usage
        )
        state.decision = decision
        watch.emit(
            "routed",
            config=decision.config.label(),
            reason=decision.reason,
            router_version=decision.router_version,
            predicted_accuracy=next((c.predicted_accuracy for c in decision.why if c.chosen), None),
        )
        watch.enter("strategy")
        config = decision.config
        policy_client = WatchedPolicy(self.policy(config.policy), watch)
        prm_client = WatchedPRM(self.prm(config.prm), watch) if config.prm is not None else None
        return await run_with_probe(problem, policy_client, prm_client, config, result)

    # -- results and logging --------------------------------------------------------------

    def _result(
        self,
        problem: Problem,
        budget: Budget | None,
        state: _Progress,
        outcome: Outcome | None,
        partial: bool,
        error: str | None,
        events: list[dict[str, Any]],
    ) -> SolveResult:
        watch = state.watch
        decision = state.decision
        if decision is not None:
            config, reason = decision.config, decision.reason
        else:
            # Stopped before a config was chosen: the work done was the probe, which is
            # Best-of-k sampling with PRM scores; log it as what it was.
            assert state.probe_config is not None
            config, reason = state.probe_config, "probe_only"
        answer: str | None = None
        text: str | None = None
        source = "strategy"
        if outcome is not None:
            answer = outcome.answer
            if outcome.selected_index is not None:
                chosen = outcome.candidates[outcome.selected_index]
                text = chosen.text(watch.separator)
        elif partial:
            best = watch.best()
            answer, source = best.answer, best.source
            if best.candidate is not None:
                text = best.candidate.text(watch.separator)
            elif state.probe is not None and state.probe.answer is not None and answer is None:
                answer, source = state.probe.answer, "probe"
        else:
            source = "none"
        return SolveResult(
            problem=problem,
            answer=answer,
            config=config,
            usage=Usage() + watch.usage,
            probe_usage=state.probe_usage or Usage(),
            partial=partial,
            reason=reason,
            why=decision.why if decision is not None else [],
            features=_jsonable(state.features),
            budget=budget_label(budget),
            outcome=outcome,
            text=text,
            answer_source=source,
            explanation=decision.explanation if decision is not None else "stopped in the probe",
            router_version=decision.router_version if decision is not None else None,
            error=error,
            events=events,
        )

    async def _log(self, result: SolveResult, dataset: str | None) -> None:
        store = self._store
        if store is None:
            return
        problem = result.problem
        ds = dataset if dataset is not None else problem.meta.get("dataset")
        ds = None if ds is None else str(ds)
        result.run_key = RunKey(problem_key(problem, ds), result.config.key(), result.budget)
        result.logged = await self._in_db(
            store.record_run,
            problem,
            result.config,
            result.budget,
            dataset=ds,
            answer=result.answer,
            correct=result.correct,
            final_reward=result.final_reward,
            usage=result.usage,
            features=result.features,
            error=result.error,
            router_version=result.router_version,
        )


def _probe_as_config(plan: ProbePlan) -> RunConfig:
    """What a probe runs, as a config: Best-of-k with PRM scores (majority without a PRM).
    A solve stopped during its probe is logged under it: that is the work that was done."""
    return RunConfig(
        policy=plan.policy,
        prm=plan.prm,
        strategy="best_of_n" if plan.prm is not None else "majority",
        params=probe_params(None, plan.k),
    )


def _prm_spec(prm: PRM) -> PRMSpec:
    """The settings record of an explicit PRM object (every ratts PRM carries one)."""
    spec = getattr(prm, "spec", None)
    if isinstance(spec, PRMSpec):
        return spec
    # A PRM from outside ratts: price it as free (nothing else is known about it).
    return PRMSpec(name=prm.name, kind="arithmetic")
