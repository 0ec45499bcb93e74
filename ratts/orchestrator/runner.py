"""THE run-and-log service: the one way ratts runs a config on a problem, grades it and
writes its row. ``Orchestrator.solve``, the sweep and router training all go through it.

Why it is shaped like this:
- ``Endpoints`` builds a client on first use from the deployment's settings (or takes the
  caller's objects) and closes only the clients it built: a client passed in stays the
  caller's;
- every store call goes through one worker thread (``DbThread``), so the event loop never
  blocks on SQLite and the store sees one writer per process;
- grading runs off the event loop (math-verify can take a while);
- ``Runner.record`` is the only call of ``Store.record_run`` in ratts, so a row means the
  same thing whoever wrote it; a failed run records the usage it spent when it is known;
- a probe is a strategy like any other (``ratts.strategies.probe``): its row carries the
  text and probe features, plus ``label_pass_at_1`` when the gold answer is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ratts.endpoints.factory import build_policy, build_prm
from ratts.endpoints.policy import Policy, PolicyClient
from ratts.endpoints.prm import PRM
from ratts.endpoints.usage import Usage, spent
from ratts.grading import grade
from ratts.orchestrator.result import SolveResult
from ratts.router.features import PASS_AT_1, text_features
from ratts.settings import PolicySpec, PRMSpec, Settings
from ratts.store import RunKey, Store, budget_label, problem_key
from ratts.strategies.probe import ProbeResult, pass_at_1, strategy_for
from ratts.strategies.reuse import run_with_probe
from ratts.types import Outcome, Problem, RunConfig

T = TypeVar("T")


# ---------------------------------------------------------------- small shared helpers


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and its message with whitespace folded."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


def jsonable(features: Mapping[str, Any]) -> dict[str, Any]:
    """Features fit for JSON everywhere (NaN is not JSON): non-finite floats become None."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()
    }


#: the features key that says a run's PRM was down and it voted instead (the PRM's error);
#: like the routing log, a note on the run, not a question feature
PRM_FALLBACK = "prm_fallback"


def noted(features: dict[str, Any] | None, outcome: Outcome | None) -> dict[str, Any] | None:
    """``features`` plus the PRM-fallback note of ``outcome``, when it had to vote."""
    if outcome is None or outcome.prm_fallback is None:
        return features
    return {**(features or {}), PRM_FALLBACK: outcome.prm_fallback}


def dataset_of(problem: Problem, dataset: str | None = None) -> str | None:
    """The dataset a problem is logged under: ``dataset`` if given, else its meta's."""
    if dataset is not None:
        return dataset
    value = problem.meta.get("dataset")
    return str(value) if value is not None else None


# ---------------------------------------------------------------- the DB thread


class DbThread:
    """The one worker thread every store call of a process-side service goes through."""

    def __init__(self, name: str = "ratts-db") -> None:
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name
        )

    async def __call__(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ---------------------------------------------------------------- endpoints


def _prm_spec(prm: PRM) -> PRMSpec:
    """The settings record of an explicit PRM object (every ratts PRM carries one)."""
    spec = getattr(prm, "spec", None)
    if isinstance(spec, PRMSpec):
        return spec
    # A PRM from outside ratts: price it as free (nothing else is known about it).
    return PRMSpec(name=prm.name, kind="arithmetic")


class Endpoints:
    """The endpoints of one deployment, by name: built on first use, closed if built here.

    ``settings`` configures them; explicit ``policies``/``prms`` objects replace the
    configured ones of their kind (the first of each is the default). ``settings`` is then
    the deployment as the router sees it: exactly these endpoints, with their prices.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policies: Sequence[Policy] | None = None,
        prms: Sequence[PRM] | None = None,
    ) -> None:
        base = settings if settings is not None else Settings.model_construct(policies=[])
        self._policies: dict[str, Policy] = {p.name: p for p in policies or ()}
        self._prms: dict[str, PRM] = {p.name: p for p in prms or ()}
        self._owned: list[PolicyClient | PRM] = []
        update: dict[str, Any] = {}
        if policies:
            update["policies"] = [p.spec for p in policies]
        if prms:
            update["prms"] = [_prm_spec(p) for p in prms]
        elif settings is None and policies:
            update["prms"] = []
        self.settings: Settings = base.model_copy(update=update) if update else base

    @property
    def policy_names(self) -> list[str]:
        return [p.name for p in self.settings.policies]

    @property
    def prm_names(self) -> list[str]:
        return [p.name for p in self.settings.prms]

    def policy_spec(self, name: str | None = None) -> PolicySpec:
        return self.settings.policy(name)

    def policy(self, name: str | None = None) -> Policy:
        """The policy client called ``name`` (default: the first), built on first use."""
        spec = self.settings.policy(name)
        found = self._policies.get(spec.name)
        if found is not None:
            return found
        client = self._policies[spec.name] = build_policy(spec)
        self._owned.append(client)
        return client

    def prm(self, name: str | None = None) -> PRM:
        """The PRM called ``name`` (default: the first), built on first use."""
        spec = self.settings.prm(name)
        client = self._prms.get(spec.name)
        if client is None:
            client = self._prms[spec.name] = build_prm(spec)
            self._owned.append(client)
        return client

    def clients(self, config: RunConfig) -> tuple[Policy, PRM | None]:
        """The clients ``config`` runs on."""
        return self.policy(config.policy), self.prm(config.prm) if config.prm else None

    async def aclose(self) -> None:
        """Close the clients built here (never the caller's)."""
        owned, self._owned = self._owned, []
        for client in owned:
            with contextlib.suppress(Exception):  # closing must not mask the caller's error
                await client.aclose()


# ---------------------------------------------------------------- running and logging


@dataclass(slots=True)
class RunRecord:
    """One run as logged: what came out, what it cost, and whether the row was new."""

    outcome: Outcome | None
    answer: str | None
    correct: bool | None
    usage: Usage
    features: dict[str, Any] | None
    error: str | None
    logged: bool


class Runner:
    """Run configs on problems, grade them and log them: one ``Endpoints``, one store
    (None: nothing is written) and the one DB thread."""

    def __init__(self, endpoints: Endpoints, store: Store | None, db: DbThread) -> None:
        self.endpoints = endpoints
        self.store = store
        self.db = db

    async def execute(
        self,
        problem: Problem,
        config: RunConfig,
        *,
        policy: Policy | None = None,
        prm: PRM | None = None,
        reuse: ProbeResult | None = None,
    ) -> Outcome:
        """Run ``config`` (on ``policy``/``prm`` when given, e.g. observed clients),
        reusing ``reuse``'s samples where the strategy can."""
        pol = policy if policy is not None else self.endpoints.policy(config.policy)
        if prm is None and config.prm is not None:
            prm = self.endpoints.prm(config.prm)
        if reuse is not None:
            return await run_with_probe(problem, pol, prm, config, reuse)
        return await strategy_for(config.strategy).run(problem, pol, prm, config.params)

    async def grade(self, answer: str | None, gold: str | None) -> bool | None:
        """Grade off the event loop (None without a gold answer)."""
        if gold is None:
            return None
        return await asyncio.to_thread(grade, answer, gold)

    async def features_of(
        self, problem: Problem, outcome: Outcome | None, given: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """What a row logs as features: the caller's, plus a probe's text and probe
        features and ``label_pass_at_1`` (never a model input)."""
        features: dict[str, Any] | None = dict(given) if given is not None else None
        if isinstance(outcome, ProbeResult):
            features = {**text_features(problem), **(features or {}), **outcome.features}
            rate = await asyncio.to_thread(pass_at_1, outcome, problem.answer)
            if rate is not None:
                features[PASS_AT_1] = rate
        return jsonable(features) if features is not None else None

    async def record(
        self,
        problem: Problem,
        config: RunConfig,
        budget: str,
        *,
        dataset: str | None = None,
        answer: str | None = None,
        correct: bool | None = None,
        final_reward: float | None = None,
        usage: Usage | None = None,
        features: Mapping[str, Any] | None = None,
        error: str | None = None,
        router_version: str | None = None,
        replace_failed: bool = False,
    ) -> bool:
        """Write one run row (on the DB thread); False if its key was already logged."""
        if self.store is None:
            return False
        return await self.db(
            self.store.record_run,
            problem,
            config,
            budget,
            dataset=dataset_of(problem, dataset),
            answer=answer,
            correct=correct,
            final_reward=final_reward,
            usage=usage,
            features=features,
            error=error,
            router_version=router_version,
            replace_failed=replace_failed,
        )

    async def record_result(self, result: SolveResult, dataset: str | None = None) -> None:
        """Log a solve's result as its row; sets ``run_key`` and ``logged`` on it."""
        problem = result.problem
        ds = dataset_of(problem, dataset)
        result.run_key = RunKey(problem_key(problem, ds), result.config.key(), result.budget)
        result.logged = await self.record(
            problem,
            result.config,
            result.budget,
            dataset=ds,
            answer=result.answer,
            correct=result.correct,
            final_reward=result.final_reward,
            usage=result.usage,
            features=noted(result.features, result.outcome),
            error=result.error,
            router_version=result.router_version,
        )

    async def run_config(
        self,
        problem: Problem,
        config: RunConfig,
        *,
        budget: str | None = None,
        dataset: str | None = None,
        reuse: ProbeResult | None = None,
        policy: Policy | None = None,
        prm: PRM | None = None,
        features: Mapping[str, Any] | None = None,
        router_version: str | None = None,
        replace_failed: bool = False,
    ) -> RunRecord:
        """Run ``config`` on ``problem``, grade it and log its row (budget: its N).

        A run that raises is logged with its one-line error and the usage it attached to
        the error (``spent``: what the servers served before it failed); the error is not
        raised again: the record says it.
        """
        started = time.perf_counter()
        outcome: Outcome | None = None
        error: str | None = None
        correct: bool | None = None
        try:
            outcome = await self.execute(problem, config, policy=policy, prm=prm, reuse=reuse)
            usage = outcome.usage
            correct = await self.grade(outcome.answer, problem.answer)
        except Exception as exc:
            usage = Usage() + (spent(exc) or Usage())  # a copy: the ledger stays as it was
            error = one_line(exc)
        if not usage.wall_seconds:
            usage.wall_seconds = time.perf_counter() - started
        logged_features = noted(await self.features_of(problem, outcome, features), outcome)
        answer = outcome.answer if outcome is not None else None
        logged = await self.record(
            problem,
            config,
            budget if budget is not None else budget_label(config.params.n),
            dataset=dataset,
            answer=answer,
            correct=correct,
            final_reward=outcome.final_reward if outcome is not None else None,
            usage=usage,
            features=logged_features,
            error=error,
            router_version=router_version,
            replace_failed=replace_failed,
        )
        return RunRecord(outcome, answer, correct, usage, logged_features, error, logged)
