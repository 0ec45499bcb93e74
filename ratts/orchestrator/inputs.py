"""What ``solve`` accepts: a question or a Problem, a budget as a Budget or an int N, and a
forced strategy with its params.

Checked before anything runs, so bad input is one InputError line (HTTP 400 at the server,
exit 2 at the CLI), never a half-run solve.
"""

from __future__ import annotations

import math
import uuid

from ratts.errors import ConfigError, InputError
from ratts.orchestrator.runner import Endpoints
from ratts.settings import Settings
from ratts.strategies import get_strategy, with_defaults
from ratts.text import check_text
from ratts.types import Budget, Problem, RunConfig, StrategyParams

#: N of a forced strategy when neither ``params`` nor ``budget.n`` says otherwise.
DEFAULT_FORCED_N = 4


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
    check_text(problem.question)
    if problem.answer is not None:
        check_text(problem.answer, "the gold answer")
    return problem


def check_prices(settings: Settings, budget: Budget | None, policy: str | None) -> None:
    """A dollar budget means nothing without prices: every config would look free and the
    largest would win. Refuse it before anything (the probe included) is spent."""
    if budget is None or budget.usd is None:
        return
    specs = [settings.policy(policy)] if policy else settings.policies
    if specs and all(s.usd_per_mtok_prompt == 0 and s.usd_per_mtok_completion == 0 for s in specs):
        names = ", ".join(s.name for s in specs)
        raise ConfigError(
            f"a budget in dollars needs prices, but policy {names} has none: set "
            "usd_per_mtok_prompt and usd_per_mtok_completion in ratts.toml"
        )


def forced_config(
    endpoints: Endpoints,
    strategy: str | None,
    params: StrategyParams | None,
    budget: Budget | None,
    policy: str | None,
    prm: str | None,
) -> RunConfig | None:
    """The config of a forced strategy (validated now, before anything runs): ``params``,
    else N from ``budget.n`` (else DEFAULT_FORCED_N), or the strategy's fixed N."""
    if strategy is None:
        return None
    impl = get_strategy(strategy)
    if params is None:
        n = budget.n if budget is not None and budget.n is not None else DEFAULT_FORCED_N
        params = StrategyParams(n=impl.fixed_n if impl.fixed_n is not None else n)
    elif budget is not None and budget.n is not None and params.n > budget.n:
        raise InputError(f"params N={params.n} is over the budget N={budget.n}")
    params = with_defaults(strategy, params)
    impl.validate(params)
    policy_name = endpoints.policy(policy).name
    prm_name = endpoints.prm(prm).name if impl.needs_prm or prm is not None else None
    return RunConfig(
        policy=policy_name,
        prm=prm_name if impl.needs_prm else None,
        strategy=strategy,
        params=params,
    )


def check_prm_flops(endpoints: Endpoints, prm: str | None, forced: RunConfig | None) -> None:
    """Under a FLOPs budget every PRM the run may use must have a parameter count
    (ConfigError otherwise): a forced config uses only its own PRM (or none); a routed
    solve may pick any PRM, or only ``prm`` when one is named."""
    if forced is not None and prm is None:
        return
    names = [prm] if prm is not None else endpoints.prm_names
    for name in names:
        if name in endpoints.prm_names:
            endpoints.settings.prm(name).check_flops_known()
