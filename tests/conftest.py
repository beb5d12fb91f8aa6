"""What every test shares: a data key in the environment.

The example policy redacts what Corral stores (guards.output.pii is on), which encrypts
the values Corral must use again under CORRAL_DATA_KEY and refuses to start without it.
A deployment sets one; so do the tests, one key for the whole session, set before any
fixture of a wider scope opens a store (subprocesses the tests start inherit it). A test
of the missing key removes it for itself with monkeypatch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from corral.state.sealed import DATA_KEY_ENV, new_data_key


@pytest.fixture(autouse=True, scope="session")
def data_key() -> Iterator[str]:
    key = new_data_key()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_KEY_ENV, key)
        yield key


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """The spans a test's `provider` finished."""
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """A tracer provider that hands each span to `exporter` as it ends."""
    found = TracerProvider()
    found.add_span_processor(SimpleSpanProcessor(exporter))
    return found
