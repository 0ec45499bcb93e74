"""Test-time scaling strategies by name: cot, majority, best_of_n, beam_search, dvts, adaptive.

Adding a strategy is one new file (a ``Strategy`` subclass with its traits) plus a
``register_strategy`` call; every other layer reads the traits from the registry.
"""

from __future__ import annotations

from ratts.errors import ConfigError, UnknownStrategyError
from ratts.strategies.adaptive import AdaptiveConsistency
from ratts.strategies.base import ScoredStrategy, Strategy
from ratts.strategies.beam_search import BeamSearch
from ratts.strategies.best_of_n import BestOfN
from ratts.strategies.cot import CoT
from ratts.strategies.dvts import DVTS
from ratts.strategies.majority import Majority
from ratts.types import StrategyParams

STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy | type[Strategy]) -> Strategy:
    """Register a strategy (a class is instantiated with no arguments) under its ``name``.

    Registering the same class again is a no-op; another strategy under a taken name is a
    ConfigError. Returns the registered instance.
    """
    instance = strategy() if isinstance(strategy, type) else strategy
    current = STRATEGIES.get(instance.name)
    if current is not None:
        if type(current) is type(instance):
            return current
        raise ConfigError(
            f"strategy name {instance.name!r} is taken by {type(current).__name__}; "
            f"choose another name for {type(instance).__name__}"
        )
    STRATEGIES[instance.name] = instance
    return instance


def unregister_strategy(name: str) -> None:
    """Forget the strategy registered under ``name`` (tests that register a toy one)."""
    STRATEGIES.pop(name, None)


def get_strategy(name: str) -> Strategy:
    """The strategy registered under ``name``; UnknownStrategyError lists the choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        choices = ", ".join(STRATEGIES)
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; choose one of: {choices}", param="strategy"
        ) from None


def with_defaults(strategy: str, params: StrategyParams) -> StrategyParams:
    """``params`` with the strategy's own defaults (``param_defaults``, e.g. CoT's greedy
    temperature) for the fields the caller left unset."""
    defaults = get_strategy(strategy).param_defaults
    update = {k: v for k, v in defaults.items() if k not in params.model_fields_set}
    return params.model_copy(update=update) if update else params


for _builtin in (CoT, Majority, BestOfN, BeamSearch, DVTS, AdaptiveConsistency):
    register_strategy(_builtin)

__all__ = [
    "DVTS",
    "STRATEGIES",
    "AdaptiveConsistency",
    "BeamSearch",
    "BestOfN",
    "CoT",
    "Majority",
    "ScoredStrategy",
    "Strategy",
    "get_strategy",
    "register_strategy",
    "unregister_strategy",
    "with_defaults",
]
