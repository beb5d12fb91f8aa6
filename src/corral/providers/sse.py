"""Streamed answers: server-sent events decoded from bytes, and the answer assembled from them.

Both adapters stream the same way: the HTTP layer yields events, an API-specific subclass of
`StreamedAnswer` reads them, hands each piece to the call's sink as it arrives, and keeps the
whole so the caller still gets one LLMResult, or, when the stream breaks, a ProviderError that
carries what was spent.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from corral.calls import (
    LLMCall,
    LLMResult,
    StreamDelta,
    ToolCallRequest,
    Usage,
    estimate_input_tokens,
)
from corral.providers.base import FailureKind, ProviderError


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its `event:` name ("" when none was given) and its data."""

    name: str
    data: str


class SSEDecoder:
    """Turns chunks of an event stream into events, wherever the chunks split it.

    Follows the WHATWG rules the providers rely on: lines end in LF, CRLF or CR; `data:`
    lines join with LF; a blank line ends an event; `:` lines are comments; an event with no
    data is dropped.
    """

    __slots__ = ("_data", "_name", "_partial")

    def __init__(self) -> None:
        self._partial = b""
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        lines = (self._partial + chunk).splitlines(keepends=True)
        # The last line may be unfinished; one ending in CR may be the first half of a CRLF.
        if lines and (not lines[-1].endswith((b"\n", b"\r")) or lines[-1].endswith(b"\r")):
            self._partial = lines.pop()
        else:
            self._partial = b""
        events: list[Event] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n").decode()
            if not line:
                if self._data:
                    events.append(Event(self._name, "\n".join(self._data)))
                self._name = ""
                self._data = []
                continue
            key, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if key == "data":
                self._data.append(value)
            elif key == "event":
                self._name = value
        return events

    def close(self) -> list[Event]:
        """What the end of the stream completes: a last line ending in CR was whole after all."""
        return self.feed(b"\n") if self._partial.endswith(b"\r") else []


def as_text(value: Any) -> str:
    """A string field of an event, None meaning empty; anything else is a malformed event."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


@dataclass(slots=True)
class _Tool:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class StreamedAnswer(ABC):
    """A streamed answer as it arrives. A subclass reads one API's events in `feed`, reports
    pieces through `add` and usage through the fields, and sets `done` on the
    API's end-of-answer event, which `terminator` names for the error when it never comes."""

    terminator: str

    def __init__(self, call: LLMCall, url: str, max_tokens: int | None) -> None:
        self.call = call
        self.url = url
        self.done = False
        self.finish_reason: str | None = None
        # None until the provider reports them; then they replace the estimates.
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self._max_tokens = max_tokens
        self._texts: list[str] = []
        self._tools: dict[int, _Tool] = {}
        self._events = 0
        self._deltas = 0
        self._chars = 0

    @abstractmethod
    async def feed(self, event: Event) -> None:
        """Read one event; raise ProviderError naming what was wrong with it."""

    async def read(self, events: AsyncGenerator[Event, None], name: str) -> LLMResult:
        """Read `events` to their end and return the answer, or raise ProviderError with the
        usage spent once anything arrived."""
        try:
            async with aclosing(events):
                async for event in events:
                    # Read on past the end so the connection finishes its body and goes back to
                    # the pool; whatever follows the end is not part of the answer.
                    if not self.done:
                        await self.feed(event)
                        self._events += 1
        except ProviderError as exc:
            if not self.done:  # a server that stalls or breaks after the end lost us nothing
                raise self._spent(exc) from exc
        if not self.done:
            failure = ProviderError(
                FailureKind.UNAVAILABLE, f"{self.url}: the stream ended before {self.terminator}"
            )
            raise self._spent(failure)
        return LLMResult(
            text="".join(self._texts),
            usage=self.usage(),
            model=name,
            tool_calls=tuple(
                ToolCallRequest(tool.id, tool.name, "".join(tool.arguments))
                for _, tool in sorted(self._tools.items())
            ),
            finish_reason=self.finish_reason,
        )

    def malformed(self, what: str) -> ProviderError:
        return ProviderError(FailureKind.UNAVAILABLE, f"{self.url} streamed {what}")

    async def add(self, delta: StreamDelta) -> None:
        """Keep a piece of the answer and hand it to the sink; empty pieces are dropped."""
        if delta.tool_index is None:
            if not delta.text:
                return
            self._texts.append(delta.text)
            chars = len(delta.text)
        else:
            tool = self._tools.setdefault(delta.tool_index, _Tool())
            if delta.tool_id:
                tool.id = delta.tool_id
            if delta.tool_name:
                tool.name = delta.tool_name
            if delta.tool_arguments:
                tool.arguments.append(delta.tool_arguments)
            elif not (delta.tool_id or delta.tool_name):
                return
            chars = len(delta.tool_arguments)
        self._deltas += 1
        self._chars += chars
        sink = self.call.sink
        if sink is not None:
            self.call.delivered = True
            await sink(delta)

    def tool_arguments(self, index: int) -> str:
        tool = self._tools.get(index)
        return "".join(tool.arguments) if tool else ""

    def usage(self) -> Usage:
        """As reported, with upper-bound estimates for what was not: the input as the budget
        bounds it, the output from what arrived (a token is rarely under 4 characters, never
        less than one delta), within the max_tokens sent."""
        input_tokens = self.input_tokens
        if input_tokens is None:
            input_tokens = estimate_input_tokens(self.call)
        output_tokens = self.output_tokens
        if output_tokens is None:
            output_tokens = max(self._deltas, math.ceil(self._chars / 4))
            if self._max_tokens is not None:
                output_tokens = min(output_tokens, self._max_tokens)
        return Usage(input_tokens, output_tokens, self.cache_read_tokens, self.cache_write_tokens)

    def _spent(self, failure: ProviderError) -> ProviderError:
        # Until a good event arrived nothing is known to be spent: the budget releases it all.
        return failure.with_usage(self.usage()) if self._events or self._deltas else failure
