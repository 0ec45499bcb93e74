"""Settings: ``ratts.toml`` (or ``$RATTS_CONFIG``) plus ``RATTS_*`` environment variables.

API keys never live here: a policy or PRM names the environment variable that holds its key
(``api_key_env``) and the key is read from the environment only when a client is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ratts.errors import ConfigError

DEFAULT_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. Separate steps with a blank line and "
    "put the final answer in \\boxed{{}}.\n\nProblem: {question}\n\nSolution:\n"
)


class PolicySpec(BaseModel):
    """An OpenAI-compatible completions endpoint serving one policy model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url: str
    model: str
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key"
    )
    params: float = Field(default=1e9, gt=0, description="parameter count, for FLOPs")
    usd_per_mtok_prompt: float = Field(default=0.0, ge=0)
    usd_per_mtok_completion: float = Field(default=0.0, ge=0)
    max_concurrency: int = Field(default=32, ge=1)
    step_separator: str = "\n\n"
    stop: tuple[str, ...] = Field(default=(), description="extra stop sequences, e.g. EOS text")
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    supports_n: bool = True
    context_tokens: int | None = Field(
        default=None,
        ge=1,
        description="context length in tokens (default: the max_model_len the server's "
        "/v1/models reports, if any)",
    )
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)

    def api_key(self) -> str:
        """The key from the environment, or a placeholder for local servers without auth."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"policy {self.name!r}: environment variable {self.api_key_env} is not set"
                )
            return value
        return "EMPTY"


PRMKind = Literal["vllm_pooling", "judge", "arithmetic", "transformers"]


class PRMSpec(BaseModel):
    """A process reward model: where it lives and how to talk to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: PRMKind
    base_url: str | None = None
    model: str | None = None
    format: Literal["qwen2.5-math-prm"] = "qwen2.5-math-prm"
    api_key_env: str | None = None
    params: float | None = Field(
        default=None,
        ge=0,
        description="parameter count, for FLOPs (a model PRM without it cannot serve a FLOPs "
        "budget)",
    )
    usd_per_mtok: float = Field(default=0.0, ge=0)
    max_concurrency: int = Field(default=16, ge=1)
    batch_size: int = Field(default=32, ge=1, description="candidates per /pooling request")
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _needs_url(self) -> PRMSpec:
        if self.kind in ("vllm_pooling", "judge") and not (self.base_url and self.model):
            raise ValueError(f"PRM {self.name!r} of kind {self.kind} needs base_url and model")
        if self.kind == "transformers" and not self.model:
            raise ValueError(f"PRM {self.name!r} of kind transformers needs model")
        return self

    @property
    def flops_params(self) -> float:
        """Parameters charged per PRM token: the programmatic verifier has none; a model
        PRM without a count is charged 0 here, and ``check_flops_known`` refuses it where a
        FLOPs budget depends on it."""
        return self.params or 0.0

    def check_flops_known(self) -> None:
        """ConfigError unless this PRM's FLOPs are known (a parameter count, or no model)."""
        if self.params is None and self.kind != "arithmetic":
            raise ConfigError(
                f"PRM {self.name!r} has no parameter count, so its FLOPs are unknown: "
                "set params in its [[prms]] entry to use a FLOPs budget"
            )

    def api_key(self) -> str:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"PRM {self.name!r}: environment variable {self.api_key_env} is not set"
                )
            return value
        return "EMPTY"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("ratts", appauthor=False))


def default_db_url() -> str:
    return f"sqlite:///{default_data_dir() / 'ratts.db'}"


class Settings(BaseSettings):
    """Everything a deployment configures. Env: ``RATTS_DB_URL``, ``RATTS_DATA_DIR`` ..."""

    model_config = SettingsConfigDict(
        env_prefix="RATTS_", extra="forbid", env_nested_delimiter="__"
    )

    db_url: str = Field(default_factory=default_db_url)
    data_dir: Path = Field(default_factory=default_data_dir)
    policies: list[PolicySpec] = Field(default_factory=list)
    prms: list[PRMSpec] = Field(default_factory=lambda: [PRMSpec(name="arith", kind="arithmetic")])

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = settings_cls.model_config.get("toml_file") or Path(
            os.environ.get("RATTS_CONFIG", "ratts.toml")
        )
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    def policy(self, name: str | None = None) -> PolicySpec:
        if not self.policies:
            raise ConfigError("no policy endpoints configured (add [[policies]] to ratts.toml)")
        if name is None:
            return self.policies[0]
        for spec in self.policies:
            if spec.name == name:
                return spec
        known = ", ".join(p.name for p in self.policies)
        raise ConfigError(f"unknown policy {name!r}; configured: {known}")

    def prm(self, name: str | None = None) -> PRMSpec:
        if not self.prms:
            raise ConfigError("no PRMs configured (add [[prms]] to ratts.toml)")
        if name is None:
            return self.prms[0]
        for spec in self.prms:
            if spec.name == name:
                return spec
        known = ", ".join(p.name for p in self.prms)
        raise ConfigError(f"unknown PRM {name!r}; configured: {known}")


def load_settings(path: str | Path | None = None, **overrides: object) -> Settings:
    """Load settings from ``path`` (default ``$RATTS_CONFIG`` or ./ratts.toml) and env.

    Raises ConfigError with one line naming the first bad field.
    """
    cls: type[Settings] = Settings
    if path is not None:
        toml_file = Path(path)
        if not toml_file.is_file():
            raise ConfigError(f"config file not found: {path}")

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=toml_file)

        cls = _FromFile
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid settings at {where or 'top level'}: {err['msg']}") from None
