"""The policy's `telemetry:` section: where spans go and what they may carry."""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from pydantic import Field

from corral.policy_types import FrozenMap, HttpUrl, PositiveDuration, Strict


class Otlp(Strict):
    """An OTLP collector. Without this section (and without OTEL_EXPORTER_OTLP_* in the
    environment) no span leaves the process."""

    endpoint: HttpUrl
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers: FrozenMap[str] = Field(default_factory=lambda: MappingProxyType({}))
    timeout: PositiveDuration = 10.0


class Telemetry(Strict):
    # Message content, tool arguments and results on spans: opt-in, and redacted by the
    # storage guard when it is on.
    capture_content: bool = False
    otlp: Otlp | None = None
    service_name: str = "corral"
