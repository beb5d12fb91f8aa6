"""What the gateway's two API formats (OpenAI Chat Completions, Anthropic Messages) share.

Each format is a `Door`: it parses a request body into a ChatRequest in the canonical
shape (OpenAI chat messages and tools, which the runtime and the adapters speak) and
writes answers, stream events and errors back in its own shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.calls import LLMResult, StreamDelta


@dataclass(slots=True)
class ChatRequest:
    """A chat request, whichever API it came through."""

    model: str  # a policy model or route
    messages: list[dict[str, Any]]  # OpenAI chat messages (system first, tool results as role tool)
    params: dict[str, Any] = field(default_factory=dict)  # params.split's: forwarded as they are
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False  # OpenAI's stream_options.include_usage


class ClientError(Exception):
    """A request the client got wrong: answered with `status` in the door's error shape."""

    def __init__(self, status: int, type: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.param = param


class StreamEncoder(Protocol):
    """Server-sent events of one streamed answer, in one door's format."""

    def start(self) -> bytes:
        """What opens the stream (b"" where the format has no opening event)."""
        ...

    def delta(self, delta: StreamDelta) -> bytes:
        """The event(s) for one delta; b"" for a delta with nothing to show."""
        ...

    def end(self, result: LLMResult) -> bytes:
        """The closing events: finish reason, usage, terminator."""
        ...

    def error(self, type: str, message: str, *, code: str | None, run_id: str | None) -> bytes:
        """An error event that ends the stream (no terminator follows it)."""
        ...


class Door(Protocol):
    """One API format."""

    kind: str  # "openai" | "anthropic": the provider kind whose answers pass through verbatim

    def parse(self, body: Any) -> ChatRequest:
        """The request body (decoded JSON) as a ChatRequest, or ClientError naming the field."""
        ...

    def answer(self, result: LLMResult, request: ChatRequest, response_id: str) -> bytes:
        """The JSON body of a whole answer."""
        ...

    def error(
        self,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        run_id: str | None = None,
    ) -> bytes:
        """The JSON body of an error."""
        ...

    def stream(
        self, request: ChatRequest, response_id: str, model: str | None = None
    ) -> StreamEncoder:
        """An encoder for one streamed answer by `model`, the policy model that answers
        (`LLMCall.target` once the first delta is in: a stream never falls back after it),
        which the stream names as a whole answer does; not given, the request's model or
        route."""
        ...


# How deep request JSON may nest: orjson re-encodes at most 255 levels (the records of a
# call nest a body a few levels deeper), and no API body needs more than a dozen.
MAX_JSON_DEPTH = 64


def too_deep(value: dict[str, Any] | list[Any], levels: int) -> list[str | int] | None:
    """The way (innermost first) to an array or object nested more than `levels` levels
    deep in `value`, which is one; None if there is none."""
    if levels == 0:
        return []
    items = value.items() if type(value) is dict else enumerate(value)
    for key, child in items:
        kind = type(child)  # what orjson makes: exactly dict and list, no subclasses
        if kind is dict or kind is list:
            path = too_deep(child, levels - 1)
            if path is not None:
                path.append(key)
                return path
    return None
