"""A supervisor whose policy names an OTLP collector: a run's spans reach a real one on
loopback; a collector that is down loses no run and shows in the dropped-span metric."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import corral.metrics
from corral import RunStatus, Supervisor
from corral.providers.sim import SimProvider
from tests import support

from .test_export import HttpCollector, all_spans, closed_port, collector

__all__ = ["collector"]  # the fixture, used by name below

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


def policy_to(tmp_path: Path, sim: SimProvider, endpoint: str) -> Path:
    otlp = f"  otlp: {{endpoint: '{endpoint}', timeout: 1s}}\n"
    return support.example_policy(
        tmp_path,
        {
            "http://127.0.0.1:4010/v1": sim.openai_base_url,
            "  # otlp: {endpoint": f"{otlp}  # otlp: {{endpoint",
        },
    )


async def test_a_runs_spans_reach_the_collector_the_policy_names(
    tmp_path: Path, sim: SimProvider, collector: HttpCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    sup = Supervisor.from_policy(policy_to(tmp_path, sim, collector.base))
    async with sup.run(agent="support") as run:
        await run.chat("default", HELLO, max_tokens=10)
    await sup.close()  # shuts its provider down: what is queued is sent
    spans = all_spans(collector.requests)
    assert sorted(span.name for span in spans) == ["chat default", "invoke_agent support"]
    assert collector.paths[0] == "/v1/traces"
    root = next(span for span in spans if span.name == "invoke_agent support")
    chat = next(span for span in spans if span.name == "chat default")
    assert chat.parent_span_id == root.span_id and chat.trace_id == root.trace_id
    assert {kv.value.string_value for kv in root.attributes if kv.key == "corral.run.id"} == {
        run.id
    }


async def test_a_collector_that_is_down_loses_no_run_and_counts_what_it_dropped(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    sup = Supervisor.from_policy(policy_to(tmp_path, sim, f"http://127.0.0.1:{closed_port()}"))
    async with sup.run(agent="support") as run:
        answer = await run.chat("default", HELLO, max_tokens=10)
    assert answer.text
    registry = corral.metrics.registry(sup)
    await sup.close()
    failed = registry.get_sample_value("corral_spans_dropped_total", {"reason": "export_failed"})
    assert failed == 2  # the run's span and its call's
    async with support.open_policy_store(
        support.load_policy(sup.policy.path, require_keys=False)
    ) as store:
        record = await store.get_run(run.id)
    assert record is not None and record.status is RunStatus.COMPLETED and record.steps == 1
