"""Settings: ``ratts.toml`` (or ``$RATTS_CONFIG``) plus ``RATTS_*`` environment variables.

API keys never live here: a policy or PRM names the environment variable that holds its key
(``api_key_env``) and the key is read from the environment only when a client is built.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ratts import redact
from ratts.errors import ConfigError

DEFAULT_PROMPT_TEMPLATE = (
    "Solve the following math problem step by step. Separate steps with a blank line and "
    "put the final answer in \\boxed{{}}.\n\nProblem: {question}\n\nSolution:\n"
)
DEFAULT_USER_TEMPLATE = (
    "Solve the following math problem step by step. Separate steps with a blank line and "
    "put the final answer in \\boxed{{}}.\n\nProblem: {question}"
)

# Appended to a branch the context is about to end, so its last words are a final answer in
# the form the templates above ask for (see ``ratts.strategies.answer_room``).
DEFAULT_ANSWER_CUE = "The final answer is \\boxed{"

PolicyAPI = Literal["completions", "chat"]
# Whose response shape to read step ends from; "auto" reads whichever field is present.
Dialect = Literal["auto", "vllm", "sglang", "llamacpp", "openai"]
ChatRole = Literal["system", "user", "assistant"]


def api_key(role: str, name: str, env: str | None) -> str:
    """An endpoint's key from the environment variable ``env`` (read at use, never stored),
    or a placeholder for local servers without auth; ConfigError if ``env`` is unset."""
    if not env:
        return "EMPTY"
    value = os.environ.get(env)
    if not value:
        raise ConfigError(
            f"{role} {name!r}: environment variable {env} is not set", endpoint=name, role=role
        )
    redact.register(value)  # from now on scrubbed from anything ratts shows or stores
    return value


class Replicated(BaseModel):
    """Where an endpoint is served and how its replicas ride out failures.

    ``base_urls`` lists replicas of one model (``base_url`` is the one-replica form and,
    when only ``base_urls`` is given, is filled with its first entry). A replica that keeps
    failing is taken out of rotation (circuit breaker); an endpoint whose replicas are all
    down pauses the requests that need it for up to ``outage_grace_s`` instead of failing
    them, once it has answered at least once (one that never answered is misconfigured and
    fails fast).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = None
    base_urls: tuple[str, ...] = ()
    outage_grace_s: float = Field(
        default=60.0, ge=0, description="how long requests wait out an outage of all replicas"
    )
    breaker_threshold: int = Field(
        default=3,
        ge=1,
        description="consecutive failures (at most max_retries + 1) that take a replica out",
    )
    breaker_cooldown_s: float = Field(
        default=1.0, gt=0, description="first pause before a half-open probe (doubles, x8 max)"
    )

    @model_validator(mode="before")
    @classmethod
    def _first_replica(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("base_urls") and not data.get("base_url"):
            data = {**data, "base_url": next(iter(data["base_urls"]))}
        return data

    @model_validator(mode="after")
    def _one_replica_list(self) -> Replicated:
        if self.base_urls and self.base_url not in self.base_urls:
            raise ValueError("base_url must be one of base_urls (or left out)")
        if len(set(self.base_urls)) != len(self.base_urls):
            raise ValueError("base_urls lists a replica twice")
        return self

    @property
    def urls(self) -> tuple[str, ...]:
        """Every replica's base URL (one for the ``base_url`` form; none if unset)."""
        if self.base_urls:
            return self.base_urls
        return (self.base_url,) if self.base_url else ()


class PolicySpec(Replicated):
    """An OpenAI-compatible endpoint serving one policy model, over completions or chat.

    ``api = "chat"`` builds messages from ``system_prompt``, ``chat_history`` (earlier turns,
    e.g. worked examples) and ``user_template``; a partial solution is continued only with
    ``chat_prefill`` (the server continues a trailing assistant message).
    """

    name: str
    base_url: str  # required here (or filled from base_urls)
    model: str
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key"
    )
    params: float = Field(default=1e9, gt=0, description="parameter count, for FLOPs")
    usd_per_mtok_prompt: float = Field(default=0.0, ge=0)
    usd_per_mtok_completion: float = Field(default=0.0, ge=0)
    max_concurrency: int = Field(
        default=256,
        ge=1,
        description="sequences in flight (a request with n=8 holds 8; vLLM's max_num_seqs)",
    )
    step_separator: str = "\n\n"
    stop: tuple[str, ...] = Field(default=(), description="extra stop sequences, e.g. EOS text")
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    answer_cue: str = Field(
        default=DEFAULT_ANSWER_CUE,
        description="text that makes the model state its final answer next, appended when "
        "a search branch has only room left for an answer (match it to your templates)",
    )
    supports_n: bool = True
    max_n: int | None = Field(
        default=None, ge=1, description="most choices one request may ask for (None: any)"
    )
    stream: bool = Field(
        default=False,
        description=(
            "stream requests of several sequences, so each sequence's slot frees as it "
            "ends (vLLM, OpenAI; completions only); off for servers that cannot stream"
        ),
    )
    context_tokens: int | None = Field(
        default=None,
        ge=1,
        description="context length in tokens (default: the max_model_len the server's "
        "/v1/models reports, if any)",
    )
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    api: PolicyAPI = "completions"
    dialect: Dialect = "auto"
    chat_prefill: bool = Field(
        default=False,
        description="the chat server continues a trailing assistant message (vLLM: "
        "continue_final_message)",
    )
    system_prompt: str | None = None
    chat_history: tuple[tuple[ChatRole, str], ...] = ()
    user_template: str = DEFAULT_USER_TEMPLATE

    @model_validator(mode="after")
    def _chat_fields(self) -> PolicySpec:
        if self.chat_prefill and self.api != "chat":
            raise ValueError(f"policy {self.name!r}: chat_prefill needs api = 'chat'")
        return self

    @property
    def can_continue(self) -> bool:
        """Whether the endpoint can continue a partial solution (step-wise search).

        Completions always can; chat only with ``chat_prefill``. A policy that cannot offers
        only whole-solution strategies (CoT, majority, Best-of-N).
        """
        return self.api == "completions" or self.chat_prefill

    def api_key(self) -> str:
        return api_key("policy", self.name, self.api_key_env)


PRMKind = Literal["vllm_pooling", "judge", "arithmetic", "transformers"]
PRMFormatName = Literal["qwen2.5-math-prm", "math-shepherd"]


class PRMSpec(Replicated):
    """A process reward model: where it lives and how to talk to it (the PRM registry entry).

    Location: ``base_url`` (or ``base_urls``, replicas) + ``model`` (served name) for
    ``vllm_pooling`` and ``judge``; for ``transformers``, ``model`` is the PRM folder.
    ``format`` None means: read it from the folder (transformers) or Qwen2.5-Math-PRM
    (vllm_pooling).
    """

    name: str
    kind: PRMKind
    model: str | None = None
    format: PRMFormatName | None = None
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
    max_batch_tokens: int = Field(
        default=16384, ge=1, description="transformers: padded tokens per forward pass"
    )
    max_context: int | None = Field(
        default=None, ge=16, description="tokens per input; longer questions are cut from the left"
    )
    api: Literal["completions", "chat"] = Field(
        default="completions", description="judge: the OpenAI-compatible API it speaks"
    )
    judge_samples: int = Field(
        default=0, ge=0, le=64, description="judge without logprobs: verdicts sampled per step"
    )
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
        return api_key("PRM", self.name, self.api_key_env)


class ServerLimits(BaseModel):
    """What one request to ``ratts serve`` may ask for (``[server_limits]`` in ratts.toml,
    or ``RATTS_SERVER_LIMITS__MAX_N`` ...). Past a limit the answer is a 413 or a 400."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="else HTTP 413")
    max_json_depth: int = Field(default=32, ge=4, description="nesting of the JSON body")
    max_question_chars: int = Field(default=100_000, ge=1)
    max_n: int = Field(default=256, ge=1, description="budget N (generations per step)")
    max_tokens: int = Field(default=10_000_000, ge=1, description="budget tokens")
    max_timeout_s: float = Field(default=600.0, gt=0)


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
    server_limits: ServerLimits = Field(default_factory=ServerLimits)

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
        """The policy called ``name`` (default: the first); one-line ConfigError otherwise."""
        return _named(self.policies, name, "policy", "no policy endpoints", "[[policies]]")

    def prm(self, name: str | None = None) -> PRMSpec:
        """The PRM called ``name`` (default: the first); one-line ConfigError otherwise."""
        return _named(self.prms, name, "PRM", "no PRMs", "[[prms]]")


SpecT = TypeVar("SpecT", PolicySpec, PRMSpec)


def _named(specs: Sequence[SpecT], name: str | None, what: str, none: str, table: str) -> SpecT:
    """The spec called ``name`` among ``specs`` (default: the first). The ConfigError's
    ``param`` is the request field that picks one ("policy" or "prm")."""
    param = what.lower()
    if not specs:
        raise ConfigError(f"{none} configured (add {table} to ratts.toml)", param=param)
    if name is None:
        return specs[0]
    for spec in specs:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in specs)
    raise ConfigError(f"unknown {what} {name!r}; configured: {known}", param=param)


def load_settings(
    path: str | Path | None = None, *, config_may_be_missing: bool = False, **overrides: object
) -> Settings:
    """Load settings from ``path`` (default ``$RATTS_CONFIG`` or ./ratts.toml) and env.

    A ``$RATTS_CONFIG`` that names no file is an error (it was asked for), unless
    ``config_may_be_missing`` (a command that is about to write it). Raises ConfigError
    with one line naming the first bad field.
    """
    cls: type[Settings] = Settings
    named = os.environ.get("RATTS_CONFIG")
    if path is None and named and not (config_may_be_missing and not Path(named).exists()):
        path = named  # named explicitly, so it must exist (unless the caller will write it)
        where = f"RATTS_CONFIG={path}"
    else:
        where = str(path or "ratts.toml")
    if path is not None:
        toml_file = Path(path)
        if not toml_file.is_file():
            raise ConfigError(f"config file not found: {where}")

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=toml_file)

        cls = _FromFile
    try:
        settings = cls(**overrides)  # type: ignore[arg-type]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    except SettingsError as exc:
        # pydantic-settings names the field and the source; the cause says what was wrong
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        hint = " (RATTS_* values for lists and tables are JSON)" if "Env" in str(exc) else ""
        raise ConfigError(f"{exc}{cause}{hint}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid settings at {where or 'top level'}: {err['msg']}") from None
    # every key this configuration can read is a secret from the start, whoever prints it
    specs: list[PolicySpec | PRMSpec] = [*settings.policies, *settings.prms]
    redact.register_env([*(spec.api_key_env for spec in specs), "RATTS_SERVER_TOKEN"])
    return settings
