"""Request schemas of the OpenAI-compatible server, and OpenAI's error shape.

Requests are parsed leniently where OpenAI clients send fields ratts does not use (they are
ignored) and strictly where a value would change the answer (``model``, ``messages``,
``budget``, ``n``): a bad value is a 400 naming the field, never a silent default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ratts.errors import InputError
from ratts.redact import redact
from ratts.types import Budget, StrategyParams

AUTO_MODEL = "ratts/auto"
MODEL_PREFIX = "ratts/"


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(redact(" ".join(message.split())))
        self.status = status
        self.kind = kind
        self.param = param
        self.code = code

    @property
    def message(self) -> str:
        return str(self)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


class TextPart(BaseModel):
    """One part of a multi-part message; only text parts carry a question."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class BudgetBody(BaseModel):
    """The ``budget`` extra field as an object; every limit must be positive."""

    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    flops: float | None = Field(default=None, gt=0)
    usd: float | None = Field(default=None, gt=0)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: the OpenAI fields ratts reads plus its extras.

    Extras: ``budget`` (an integer N, or an object with n/tokens/flops/usd), ``prm`` and
    ``policy`` (names from the settings), ``timeout`` (seconds; past it the best answer so
    far comes back marked partial), ``metadata`` (level, dataset, subject: the router's
    metadata features, used only when given). ``temperature``, ``top_p``, ``max_tokens``
    and ``seed`` shape the sampling of a forced strategy (``ratts/<strategy>``); the router sets its
    own under ``ratts/auto``.
    """

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    seed: int | None = None
    budget: int | BudgetBody | None = None
    prm: str | None = Field(default=None, min_length=1)
    policy: str | None = Field(default=None, min_length=1)
    timeout: float | None = Field(default=None, gt=0)
    metadata: dict[str, str | int | float] | None = None

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_number(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("budget must be a positive integer N or an object")
        if isinstance(value, int) and value <= 0:
            raise ValueError(f"budget must be a positive integer N, got {value}")
        return value

    def question(self) -> str:
        """The text of the last user message (the question to solve)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text().strip()
        return ""

    def strategy(self, known: tuple[str, ...]) -> str | None:
        """The forced strategy of ``ratts/<strategy>``, None for ``ratts/auto``."""
        if self.model == AUTO_MODEL:
            return None
        name = self.model.removeprefix(MODEL_PREFIX)
        if self.model.startswith(MODEL_PREFIX) and name in known:
            return name
        choices = ", ".join([AUTO_MODEL, *(MODEL_PREFIX + s for s in known)])
        raise ApiError(
            400,
            f"unknown model {self.model!r}; choose one of: {choices}",
            param="model",
            code="model_not_found",
        )

    def to_budget(self) -> Budget | None:
        if self.budget is None:
            return None
        if isinstance(self.budget, int):
            return Budget(n=self.budget)
        return Budget(**self.budget.model_dump())

    def to_params(self, strategy: str | None) -> StrategyParams | None:
        """Sampling overrides for a forced strategy (N from ``budget``); None if unchanged."""
        if strategy is None:
            return None
        update: dict[str, Any] = {}
        if self.temperature is not None:
            update["temperature"] = self.temperature
        if self.top_p is not None:
            update["top_p"] = self.top_p
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            update["max_tokens"] = limit
        if self.seed is not None:
            update["seed"] = self.seed
        if not update:
            return None
        return StrategyParams().model_copy(update=update)


def parse_request(body: object) -> ChatCompletionRequest:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "body"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "too_short" and loc[:1] == ["messages"]:
            message = "messages must hold at least one message"
        raise ApiError(400, f"invalid {where}: {message}", param=loc[0] if loc else None) from None
    if not request.question():
        raise ApiError(400, "messages hold no user message with text to answer", param="messages")
    return request


def budget_error(exc: InputError) -> ApiError:
    return ApiError(400, str(exc), param="budget")
