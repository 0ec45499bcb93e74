"""Test-time scaling strategies by name: cot, majority, best_of_n, beam_search, dvts."""

from __future__ import annotations

from ratts.errors import UnknownStrategyError
from ratts.strategies.base import Strategy
from ratts.strategies.beam_search import BeamSearch
from ratts.strategies.best_of_n import BestOfN
from ratts.strategies.cot import CoT
from ratts.strategies.dvts import DVTS
from ratts.strategies.majority import Majority
from ratts.types import StrategyParams

STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (CoT(), Majority(), BestOfN(), BeamSearch(), DVTS())
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered under ``name``; UnknownStrategyError lists the choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        choices = ", ".join(STRATEGIES)
        raise UnknownStrategyError(f"unknown strategy {name!r}; choose one of: {choices}") from None


def with_defaults(strategy: str, params: StrategyParams) -> StrategyParams:
    """``params`` with the strategy's own defaults (``param_defaults``, e.g. CoT's greedy
    temperature) for the fields the caller left unset."""
    defaults = getattr(get_strategy(strategy), "param_defaults", {})
    update = {k: v for k, v in defaults.items() if k not in params.model_fields_set}
    return params.model_copy(update=update) if update else params


__all__ = [
    "DVTS",
    "STRATEGIES",
    "BeamSearch",
    "BestOfN",
    "CoT",
    "Majority",
    "Strategy",
    "get_strategy",
    "with_defaults",
]
