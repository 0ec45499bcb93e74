"""The Strategy base: the traits every other layer reads, and the one ``run`` opening.

Facts about a strategy live here, on its class, so the router, the candidates, the
orchestrator and the demo ask the strategy instead of matching its name. A new strategy is
one subclass (its traits plus a ``_run`` body) and one ``register_strategy`` call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from ratts.endpoints.policy import Policy
from ratts.endpoints.prm import PRM
from ratts.errors import EndpointError, InvalidParamsError
from ratts.strategies.sampling import (
    RunLedger,
    check_common,
    check_problem,
    check_tree,
    prm_down,
    require_prm,
    solution_candidate,
)
from ratts.strategies.scoring import majority_index, off_loop
from ratts.types import Candidate, Outcome, Problem, StrategyParams


class Strategy(ABC):
    """A test-time scaling strategy. Stateless: all knobs come in ``params``.

    ``run`` is the same for every strategy (validate params, require the PRM, check the
    problem, open the ledger); the strategy's own work is ``_run``.
    """

    name: ClassVar[str]
    """The registry key, logged with every run."""

    needs_prm: ClassVar[bool] = False
    """Scores candidates with a PRM: ``run`` refuses ``prm=None``, configs name a PRM."""

    stepwise: ClassVar[bool] = False
    """Samples step by step (a PRM-guided tree search): M, ``max_steps`` and
    ``max_step_tokens`` apply, and the policy must be able to continue a partial solution."""

    fixed_n: ClassVar[int | None] = None
    """The N this strategy always uses, whatever the budget (CoT: 1); None when N is a
    parameter. Cost predictions and configs read N from here."""

    reuses_samples: ClassVar[bool] = False
    """Draws independent whole-solution samples from the bare prompt, so samples already
    drawn for the same question (a router probe) can stand in for some of its own."""

    param_defaults: ClassVar[Mapping[str, Any]] = {}
    """This strategy's own defaults for params the caller left unset (CoT: greedy), applied
    by ``ratts.strategies.with_defaults`` wherever a config is built."""

    def validate(self, params: StrategyParams) -> None:
        """Raise InvalidParamsError (one line) if params cannot work for this strategy."""
        if self.stepwise:
            check_tree(self.name.replace("_", " "), params)
        else:
            check_common(params)
        if self.fixed_n is not None and params.n != self.fixed_n:
            what = "one solution" if self.fixed_n == 1 else f"{self.fixed_n} solutions"
            raise InvalidParamsError(
                f"{self.name} samples {what}: N must be {self.fixed_n}, got {params.n}",
                param="n",
            )

    async def run(
        self,
        problem: Problem,
        policy: Policy,
        prm: PRM | None,
        params: StrategyParams,
    ) -> Outcome:
        """Solve ``problem``; every error is raised before the first request."""
        self.validate(params)
        if self.needs_prm:
            require_prm(self.name, prm)
        if self.stepwise and not policy.spec.can_continue:
            raise InvalidParamsError(
                f"{self.name} continues partial solutions, which policy {policy.name!r} cannot "
                "(api = chat without chat_prefill); use cot, majority or best_of_n"
            )
        check_problem(problem)
        return await self._run(RunLedger(self.name, params), problem, policy, prm)

    @abstractmethod
    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        """The strategy's own work, on checked input; ``run`` holds the params."""


async def vote_instead(
    run: RunLedger, problem: Problem, policy: Policy, drawn: list[Candidate] | None
) -> Outcome:
    """Majority vote over whole solutions, for a run whose PRM is down: over ``drawn`` (the
    run's own whole samples) when given, else over N fresh ones."""
    candidates = drawn
    if candidates is None:
        prompt = policy.prompt(problem.question)
        choices = await run.sample(policy, prompt, n=run.params.n, step=False)
        candidates = [solution_candidate(c, policy.separator) for c in choices]
    for c in candidates:
        c.step_scores = []
    selected = await off_loop(majority_index, [c.answer for c in candidates])
    run.event("select", how="majority", index=selected)
    return run.outcome(candidates, selected)


class ScoredStrategy(Strategy):
    """A strategy guided by a PRM: its body gets the PRM, never None.

    When the PRM is down (no connection or no answer after its retries, having answered
    before: ``sampling.prm_down``) the run falls back to majority vote rather than fail: a
    strategy that ``reuses_samples`` votes over the whole samples it drew, a search over N
    fresh ones. The Outcome's ``prm_fallback`` (and its trace) says so.
    """

    needs_prm: ClassVar[bool] = True

    async def _run(
        self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM | None
    ) -> Outcome:
        # run() has refused prm=None already; this narrows the type for the body.
        try:
            return await self._scored(run, problem, policy, require_prm(self.name, prm))
        except EndpointError as exc:
            if not prm_down(exc):
                raise
            run.prm_is_down(exc)
            drawn = run.unscored if self.reuses_samples else None
            return await vote_instead(run, problem, policy, drawn)

    @abstractmethod
    async def _scored(self, run: RunLedger, problem: Problem, policy: Policy, prm: PRM) -> Outcome:
        """The strategy's own work with its PRM."""
