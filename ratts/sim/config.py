"""Simulator configuration: models, capacity and fault injection, loadable from TOML.

Every section rejects unknown keys so a typo in ``sim.toml`` is an error, not a silent default.
Example (any section may be left out; ``[policies]``/``[prms]`` replace the defaults)::

    seed = 0
    supports_n = true
    dialect = "vllm"  # or "sglang", "llamacpp", "openai"
    chat_only = false
    [policies.sim-weak]
    skill = 0.35
    terse_errors = 0.0
    [prms.sim-prm]
    quality = 2.0
    noise = 0.8
    length_bias = 0.0
    step_length_bias = 0.0
    [capacity]
    slots = 64
    prefill_tps = 4000.0
    decode_tps = 40.0
    [faults]
    error_500 = 0.01
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ratts.errors import ConfigError
from ratts.sim.dialects import SimDialect

FaultKind = Literal["ok", "500", "429", "timeout", "malformed"]


class SimPolicy(BaseModel):
    """A simulated policy model: ``skill`` in [0, 1] sets how often its steps are right."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    skill: float = Field(ge=0.0, le=1.0)
    params: float | None = Field(default=None, gt=0, description="parameter count (metadata)")
    rush: float = Field(
        default=0.35, ge=0.0, le=1.0, description="chance per step that a wrong chain answers"
    )
    terse_errors: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="how much shorter (less reasoning) the step that goes wrong is written",
    )


class SimPRM(BaseModel):
    """A simulated PRM: reward logit = +-quality + noise*z (+ length bias on the answer step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quality: float = Field(default=2.0, ge=0.0, description="separation of right vs wrong steps")
    noise: float = Field(default=0.8, ge=0.0, description="std of the logit noise")
    length_bias: float = Field(
        default=0.0, description="logit bonus on the answer step per step shorter than 6"
    )
    step_length_bias: float = Field(
        default=0.0,
        description="logit bonus on every other step per token shorter than 18 (prefers terse)",
    )


class Capacity(BaseModel):
    """Latency model. A rate of 0 means instantaneous (the default: tests stay fast)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: int = Field(default=256, ge=1, description="policy batch slots")
    prefill_tps: float = Field(default=0.0, ge=0.0, description="prompt tokens/s per slot")
    decode_tps: float = Field(default=0.0, ge=0.0, description="completion tokens/s per slot")
    base_latency_s: float = Field(default=0.0, ge=0.0, description="added once per request")
    prm_slots: int = Field(default=64, ge=1, description="PRM batch slots")
    prm_tps: float = Field(default=0.0, ge=0.0, description="PRM tokens/s per slot")


class Faults(BaseModel):
    """Fault injection on /v1/completions and /pooling.

    ``sequence`` is consumed first, one entry per request (deterministic retry tests); after
    it runs out each request draws from the rates with the server's seeded RNG.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_500: float = Field(default=0.0, ge=0.0, le=1.0)
    error_429: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout: float = Field(default=0.0, ge=0.0, le=1.0)
    malformed: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_s: float = Field(default=30.0, ge=0.0, description="sleep before a 'timeout' reply")
    retry_after_s: float = Field(
        default=0.0, ge=0.0, description="the Retry-After header of a '429' reply, in seconds"
    )
    drop_choices: int = Field(
        default=0,
        ge=0,
        description="choices left out of each reply with several (at most all but one)",
    )
    sequence: tuple[FaultKind, ...] = ()


def _default_policies() -> dict[str, SimPolicy]:
    return {
        "sim-weak": SimPolicy(skill=0.35, params=1e9),
        "sim-strong": SimPolicy(skill=0.8, params=7e10),
    }


def _default_prms() -> dict[str, SimPRM]:
    return {
        "sim-prm": SimPRM(quality=2.0, noise=0.8),
        "sim-prm-weak": SimPRM(quality=0.5, noise=1.0),
        "sim-prm-short": SimPRM(quality=1.5, noise=0.8, length_bias=0.6),
    }


class SimConfig(BaseModel):
    """The whole simulator: seed, served models, capacity, faults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    policies: dict[str, SimPolicy] = Field(default_factory=_default_policies)
    prms: dict[str, SimPRM] = Field(default_factory=_default_prms)
    supports_n: bool = True
    max_n: int = Field(default=1024, ge=1)
    dialect: SimDialect = Field(
        default="vllm", description="whose response shape to mimic (see ratts.sim.dialects)"
    )
    chat_only: bool = Field(default=False, description="/v1/completions answers 404 (hosted)")
    prefix_cache: bool = Field(
        default=False,
        description="report usage.prompt_tokens_details.cached_tokens (a prompt prefix served "
        "before counts as cached), as vLLM does with --enable-prompt-tokens-details",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=1,
        description="context length: a longer prompt gets vLLM's 400, max_tokens is clamped "
        "to what is left, and /v1/models reports it",
    )
    capacity: Capacity = Capacity()
    faults: Faults = Faults()


def load_sim_config(path: str | Path) -> SimConfig:
    """Read a sim TOML file; any problem is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sim config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sim config {p} is not valid TOML: {exc}") from None
    return sim_config_from_dict(data, source=str(p))


def sim_config_from_dict(data: object, source: str = "sim config") -> SimConfig:
    """Validate plain data into a SimConfig with a one-line ConfigError on failure."""
    try:
        return SimConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "top level"
        raise ConfigError(f"invalid {source} at {where}: {err['msg']}") from None
