"""The policy's guard settings: the input gate (injection, untrusted text as data), the
output gate (PII, schemas, grounding), what Corral keeps, and how long it keeps it.

Every guard fails closed: a detector that raises or runs past its `timeout` blocks the
call; it never lets the call through unchecked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corral.policy_types import Count, Duration, PositiveDuration, Strict

InjectionAction = Literal["block", "flag", "off"]
# Where text entering a conversation comes from: a user's turn, or a tool's result.
Source = Literal["user", "tool"]
SOURCES: tuple[Source, ...] = ("user", "tool")


class PerSource(Strict):
    """`injection` given per source of text."""

    user: InjectionAction = "off"
    tool: InjectionAction = "off"


class InputGuards(Strict):
    # One action for every source, or a mapping per source ({user: flag, tool: block}).
    injection: InjectionAction | PerSource = "off"
    # Tool outputs as data: delimited, or interleaved with a marker, before the model
    # sees them, with a system note that such content carries no instructions.
    spotlight: Literal["delimit", "datamark", "off"] = "off"
    timeout: PositiveDuration = 0.05  # per scan; past it the call is blocked

    def action(self, source: Source) -> InjectionAction:
        if isinstance(self.injection, PerSource):
            action: InjectionAction = getattr(self.injection, source)
            return action
        return self.injection

    @property
    def scans(self) -> bool:
        """Whether any source is scanned for injection."""
        return any(self.action(source) != "off" for source in SOURCES)


class SchemaRepair(Strict):
    repair: Count = 1  # attempts to repair an answer that fails its JSON schema


class OutputGuards(Strict):
    pii: Literal["redact", "block", "flag", "off"] = "off"
    redact_style: Literal["label", "mask", "hash"] = "label"
    schema_: SchemaRepair = Field(default_factory=SchemaRepair, alias="schema")
    grounding: Literal["flag", "block", "off"] = "off"
    timeout: PositiveDuration = 0.05  # per check; past it the call is blocked


class StorageGuards(Strict):
    # What Corral keeps for people and telemetry (steps, packets, audit, logs) with PII
    # redacted; None: redact when the output gate's pii is not off.
    pii: Literal["redact", "off"] | None = None


class Guards(Strict):
    input: InputGuards = Field(default_factory=InputGuards)
    output: OutputGuards = Field(default_factory=OutputGuards)
    storage: StorageGuards = Field(default_factory=StorageGuards)

    @property
    def redact_storage(self) -> bool:
        if self.storage.pii is None:
            return self.output.pii != "off"
        return self.storage.pii == "redact"


class Retention(Strict):
    """How long records are kept; None: for ever."""

    steps: Duration | None = None
    artifacts: Duration | None = None
    dead_letters: Duration | None = None
