"""Which configs a sweep runs: from a TOML sweep file or from command-line flags.

A sweep file holds ``[[configs]]`` tables (``policy``, ``prm``, ``strategy`` and any
StrategyParams field); a list value expands into one config per element (a product over
every listed key). An optional top-level ``budgets = [4, 16, 64]`` gives ``n`` to every table
that does not set it. Unknown keys are errors, so a typo never silently becomes a default.

Budget semantics (for now): a run's budget is its config's N, logged as ``n=<N>``.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ratts.errors import ConfigError
from ratts.settings import Settings
from ratts.strategies import STRATEGIES, get_strategy, with_defaults
from ratts.types import RunConfig, StrategyParams

TOP_LEVEL_KEYS = ("configs", "budgets")
CONFIG_KEYS = ("policy", "prm", "strategy", *StrategyParams.model_fields)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _expand(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = list(table)
    values = [_as_list(table[k]) for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _build(entry: Mapping[str, Any], where: str) -> RunConfig:
    fields = dict(entry)
    policy, prm, strategy = (
        fields.pop("policy", None),
        fields.pop("prm", None),
        fields.pop("strategy", None),
    )
    if not isinstance(strategy, str):
        raise ConfigError(f"{where}: 'strategy' is required and must be a string")
    if not isinstance(policy, str):
        raise ConfigError(f"{where}: 'policy' is required and must be a string")
    if prm is not None and not isinstance(prm, str):
        raise ConfigError(f"{where}: 'prm' must be a string")
    try:
        params = StrategyParams(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "params"
        raise ConfigError(f"{where}: {key}: {err['msg']}") from None
    if strategy in STRATEGIES:  # an unknown name is reported by validate_configs
        params = with_defaults(strategy, params)
    return RunConfig(policy=policy, prm=prm, strategy=strategy, params=params)


def load_sweep_file(path: str | Path) -> list[RunConfig]:
    """Configs from a sweep TOML file; any problem is a one-line ConfigError."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"sweep file not found: {file}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep file {file} is not valid TOML: {exc}") from None
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"sweep file {file}: unknown key {key!r} (allowed: {', '.join(TOP_LEVEL_KEYS)})"
            )
    tables = data.get("configs")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"sweep file {file}: needs at least one [[configs]] table")
    budgets = data.get("budgets")
    if budgets is not None and (
        not isinstance(budgets, list)
        or not budgets
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in budgets)
    ):
        raise ConfigError(f"sweep file {file}: 'budgets' must be a list of integers")
    configs: list[RunConfig] = []
    for index, table in enumerate(tables):
        where = f"sweep file {file}: configs[{index}]"
        for key in table:
            if key not in CONFIG_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}")
        if budgets is not None and "n" not in table:
            table = {**table, "n": budgets}
        configs.extend(_build(entry, where) for entry in _expand(table))
    return dedupe(configs)


def configs_from_flags(
    settings: Settings,
    *,
    strategies: Sequence[str],
    ns: Sequence[int] = (),
    policies: Sequence[str] = (),
    prms: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
) -> list[RunConfig]:
    """The product of the flags. Missing policy/PRM: the first configured one.

    Strategies that need no PRM get none; a strategy with a fixed N (CoT: 1) runs with it.
    """
    if not strategies:
        raise ConfigError("give --strategy (one or more) or a sweep file with --configs")
    policy_names = list(policies) or [settings.policy().name]
    configs: list[RunConfig] = []
    for name in strategies:
        strategy = get_strategy(name)
        prm_names: list[str | None] = (
            (list(prms) or [settings.prm().name]) if strategy.needs_prm else [None]
        )
        n_values = [strategy.fixed_n] if strategy.fixed_n is not None else (list(ns) or [1])
        for policy, prm, n in itertools.product(policy_names, prm_names, n_values):
            entry = {"policy": policy, "prm": prm, "strategy": name, "n": n, **(params or {})}
            configs.append(_build(entry, f"--strategy {name}"))
    return dedupe(configs)


def dedupe(configs: Iterable[RunConfig]) -> list[RunConfig]:
    """Drop repeated configs (same key), keeping the first."""
    seen: dict[str, RunConfig] = {}
    for config in configs:
        seen.setdefault(config.key(), config)
    return list(seen.values())


def validate_configs(configs: Sequence[RunConfig], settings: Settings) -> None:
    """Fail before any run: unknown strategy, policy or PRM, bad params, a missing PRM."""
    for config in configs:
        strategy = get_strategy(config.strategy)
        settings.policy(config.policy)
        if config.prm is not None:
            settings.prm(config.prm)
        elif strategy.needs_prm:
            raise ConfigError(f"{config.label()}: {config.strategy} needs a PRM (set 'prm')")
        try:
            strategy.validate(config.params)
        except ConfigError as exc:
            raise ConfigError(f"{config.label()}: {exc}") from None
