"""What ``solve`` accepts: a question or a Problem, a budget as a Budget or an int N, and a
forced strategy with its params.

Checked before anything runs, so bad input is one InputError line (HTTP 400 at the server,
exit 2 at the CLI), never a half-run solve.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from ratts.errors import ConfigError, InputError
from ratts.orchestrator.runner import Endpoints
from ratts.settings import Settings
from ratts.strategies import get_strategy, with_defaults
from ratts.text import check_text
from ratts.types import Budget, Problem, RunConfig, StrategyParams

#: N of a forced strategy when neither ``params`` nor ``budget.n`` says otherwise.
DEFAULT_FORCED_N = 4
#: characters per token for the probe's floor: more than any tokenizer packs into one token
#: of ordinary text (about 4 is usual), so the floor errs low and never refuses a probe that
#: would have fit
FLOOR_CHARS_PER_TOKEN = 6


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


@dataclass(frozen=True, slots=True)
class ProbeFloor:
    """The least a probe can spend: its prompt once, one token per sample, and the PRM
    reading the question once per sample. A budget under it cannot pay for the probe."""

    tokens: int
    flops: float
    usd: float

    def over(self, budget: Budget) -> list[str]:
        """The limits of ``budget`` this floor is already over (empty: the probe may run)."""
        out = []
        if budget.tokens is not None and self.tokens > budget.tokens:
            out.append(f"at least {self.tokens} tokens > {budget.tokens}")
        if budget.flops is not None and self.flops > budget.flops:
            out.append(f"at least {self.flops:.3g} FLOPs > {budget.flops:.3g}")
        if budget.usd is not None and self.usd > budget.usd:
            out.append(f"at least ${self.usd:.4g} > ${budget.usd:.4g}")
        return out


def _floor_tokens(text: str) -> int:
    return -(-len(text) // FLOOR_CHARS_PER_TOKEN)


def probe_floor(
    settings: Settings, policy: str, prm: str | None, k: int, prompt: str, question: str
) -> ProbeFloor:
    """What a probe of ``k`` samples of ``prompt`` on ``policy`` (scored by ``prm``) spends
    at the very least, priced as the endpoints price what they serve."""
    pol = settings.policy(policy)
    prompt_tokens, completion_tokens = _floor_tokens(prompt), k
    flops = 2.0 * pol.params * (prompt_tokens + completion_tokens)
    usd = (
        prompt_tokens * pol.usd_per_mtok_prompt + completion_tokens * pol.usd_per_mtok_completion
    ) / 1e6
    prm_tokens = 0
    if prm is not None:
        spec = settings.prm(prm)
        prm_tokens = k * _floor_tokens(question)
        flops += 2.0 * spec.flops_params * prm_tokens
        usd += prm_tokens * spec.usd_per_mtok / 1e6
    return ProbeFloor(prompt_tokens + completion_tokens + prm_tokens, flops, usd)


def check_probe_fits(budget: Budget | None, floor: ProbeFloor, who: str) -> None:
    """InputError when ``budget`` is below what the probe (``who``) must spend: refused
    before the probe runs, so a hopeless budget costs nothing."""
    if budget is None:
        return
    over = floor.over(budget)
    if over:
        raise InputError(
            f"no config fits the budget after the probe: the probe alone ({who}) needs "
            + "; ".join(over),
            param="budget",
        )
