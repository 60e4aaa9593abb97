"""The request bodies of /v1/completions and /v1/chat/completions, as OpenAI's API names them.

Strict types (no "0.5" for 0.5) and the ranges of limits.py; FastAPI turns a mismatch into a
RequestValidationError, which errors.py answers as a 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.limits import (
    MAX_CHARS,
    MAX_MESSAGES,
    MAX_PENALTY,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
)

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class GenerationRequest(_Strict):
    """Fields both routes share; None means the default, as OpenAI's clients may send null."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)  # not in OpenAI's API; vLLM's name
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = None
    presence_penalty: float | None = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)
    frequency_penalty: float | None = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)
    n: Literal[1] | None = None  # one choice per request
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(stop)


class CompletionRequest(GenerationRequest):
    prompt: str = Field(min_length=1, max_length=MAX_CHARS)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_CHARS)


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer clients' name for max_tokens
