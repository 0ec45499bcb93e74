"""Request bodies the simulator accepts (unknown fields are ignored, as real servers do)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str | list[str]
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    logprobs: int | None = Field(default=None, ge=0)
    stream: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


SAMPLING_FIELDS = ("model", "n", "stop", "max_tokens", "temperature", "top_p", "seed", "stream")


class ChatRequest(BaseModel):
    """``/v1/chat/completions``: sampling fields as for completions, plus vLLM's
    continuation flags."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0)
    stream: bool = False
    continue_final_message: bool = False
    add_generation_prompt: bool = True


class PoolingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | None = None
    messages: list[ChatMessage] | None = None
