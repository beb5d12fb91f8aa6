"""The corral CLI with tracing on, for run.py's corral-traced target.

`python bench/gateway/traced_serve.py serve --policy ...` is `corral serve --policy ...`,
except that the Supervisor it builds is given a TracerProvider of this process's own:
SimpleSpanProcessor(InMemorySpanExporter(max_spans=...)), so every span is made, ended
and exported on the request's path, and the spans held stay a bounded deque (memory
flat). corral.gateway.server builds its Supervisor with `Supervisor.from_policy(path)`;
here that name is a subclass whose from_policy passes `tracer_provider`, and the rest of
`serve` (uvicorn, uvloop, the gc settings) is corral's own code, unchanged. Any other
verb (`keys create`) runs as it does under `corral`.

On the way out (SIGTERM, which uvicorn raises again once it has shut down) it prints how
many spans were exported, to the log run.py keeps.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import corral.gateway.server
from corral.cli import main
from corral.runtime.supervisor import Supervisor

MAX_SPANS = 10_000  # the oldest go as new ones come: what is held stays this many


class CountingExporter(InMemorySpanExporter):
    """An in-memory exporter that counts what it was given (its deque keeps the newest)."""

    def __init__(self) -> None:
        super().__init__(max_spans=MAX_SPANS)
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return super().export(spans)


EXPORTER = CountingExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


class TracedSupervisor(Supervisor):
    @classmethod
    def from_policy(cls, path: str | Path, **options: Any) -> Supervisor:
        options.setdefault("tracer_provider", PROVIDER)
        sup = super().from_policy(path, **options)
        assert sup.tracing.provider is PROVIDER
        return sup


corral.gateway.server.Supervisor = TracedSupervisor  # type: ignore[misc]


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # through the finally below, rather than dying of it


if __name__ == "__main__":
    serving = sys.argv[1:2] == ["serve"]
    if serving:
        signal.signal(signal.SIGTERM, _exit)
    try:
        main()
    finally:
        if serving:
            print(f"traced_serve: {EXPORTER.exported} spans exported", flush=True)
