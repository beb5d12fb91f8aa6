"""The agent KPIs from a scripted mix of runs, exactly; the anomaly and drift signals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

import corral.metrics
from corral import Halted, HaltReason, Supervisor, ToolArgumentError
from corral.providers.sim import SimProvider
from corral.telemetry.anomaly import DRIFT_MIN_CALLS, MIN_BASELINE_RUNS
from tests import support

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


# A task cap on steps, for a budget halt in the mix (on every test: caps are per run).
STEPS_CAP = {"task:    {usd: 0.20}": "task:    {usd: 0.20, steps: 2}"}


@pytest.fixture
async def sup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sim: SimProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Supervisor]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    edits = getattr(request, "param", {})
    policy = support.example_policy(
        tmp_path, {"http://127.0.0.1:4010/v1": sim.openai_base_url, **edits}
    )
    supervisor = Supervisor.from_policy(policy)

    @supervisor.tool()
    async def get_customer(customer_id: int) -> dict[str, object]:
        return {"id": customer_id}

    yield supervisor
    await supervisor.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, (name, labels)
    return found


@pytest.mark.parametrize("sup", [STEPS_CAP], indirect=True)
async def test_kpis_of_a_scripted_mix_of_runs(sup: Supervisor) -> None:
    ids = []
    async with sup.run(agent="support") as run:  # completed: a success
        await run.chat("default", HELLO, max_tokens=10)
        await run.tool("get_customer", {"customer_id": 1})
        ids.append(run.id)
    async with sup.run(agent="support") as run:  # completed, but escalated: no success
        await run.chat("default", HELLO, max_tokens=10)
        await run.complete(outcome="escalated")
        ids.append(run.id)
    reasons = []
    for script in ("loop", "budget", "kill"):
        with pytest.raises(Halted) as halted:
            async with sup.run(agent="support") as run:
                ids.append(run.id)
                if script == "loop":
                    for _ in range(3):
                        await run.tool("get_customer", {"customer_id": 1})
                elif script == "budget":
                    for n in range(3):
                        await run.tool("get_customer", {"customer_id": n})
                else:
                    run.kill(time.time())
                    await run.tool("get_customer", {"customer_id": 1})
        reasons.append(halted.value.reason)
    assert reasons == [HaltReason.LOOP_REPEAT, HaltReason.BUDGET_STEPS, HaltReason.KILLED]

    registry = corral.metrics.registry(sup)
    run = {"agent": "support", "agent_type": "operational"}
    for outcome, count in (
        ("completed", 2),
        ("loop.repeat", 1),
        ("budget.steps", 1),
        ("killed", 1),
    ):
        assert value(registry, "corral_runs_total", **run, outcome=outcome) == count
    assert value(registry, "corral_runs_successful_total", **run) == 1
    kind = {"agent_type": "operational"}
    assert value(registry, "corral_task_success_ratio", **kind) == pytest.approx(1 / 5)
    assert value(registry, "corral_escalations_per_run", **kind) == pytest.approx(3 / 5)
    assert value(registry, "corral_escalations_total", **run, kind="halt") == 3
    # Tool calls per task: 1 + 0 + 2 (the third repeat was halted) + 2 + 0.
    assert value(registry, "corral_run_tool_calls_count", **kind) == 5
    assert value(registry, "corral_run_tool_calls_sum", **kind) == 5
    records = [await sup.store.get_run(run_id) for run_id in ids]
    spent = sum(record.cost_usd for record in records if record is not None)
    assert spent > 0
    assert value(registry, "corral_run_cost_usd_total", **run) == pytest.approx(spent)
    assert value(registry, "corral_cost_per_success_usd", **kind) == pytest.approx(spent)
    assert value(registry, "corral_trace_cost_usd_count", **kind) == 5
    assert value(registry, "corral_trace_cost_usd_sum", **kind) == pytest.approx(spent)
    assert value(registry, "corral_trace_seconds_count", **kind) == 5
    assert value(registry, "corral_model_calls_total", **run) == 2
    assert value(registry, "corral_retry_ratio", **kind) == 0
    assert value(registry, "corral_fallback_ratio", **kind) == 0
    assert (
        value(
            registry,
            "corral_loop_detections_total",
            **kind,
            detector="loop.repeat",
            action="halt",
        )
        == 1
    )
    for reason in ("loop.repeat", "budget.steps", "killed"):
        assert value(registry, "corral_time_to_safe_fail_seconds_count", **kind, reason=reason) == 1
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "default",
        "gen_ai_response_model": "gpt-4o",
    }
    assert (
        value(registry, "gen_ai_client_token_usage_count", **genai, gen_ai_token_type="input") == 2
    )
    assert (
        value(registry, "gen_ai_client_operation_duration_seconds_count", **genai, error_type="")
        == 2
    )
    assert value(registry, "corral_context_utilization_count", **kind) == 2
    assert value(registry, "corral_breaker_state", provider="sim", model="gpt-4o") == 0


async def test_metrics_serve_for_sdk_users(sup: Supervisor) -> None:
    async with sup.run(agent="support") as run:
        await run.chat("default", HELLO, max_tokens=10)
    server, thread = corral.metrics.serve(0, sup)
    try:
        port = server.server_port
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        server.shutdown()
        thread.join()
    assert (
        'corral_runs_total{agent="support",agent_type="operational",outcome="completed"} 1.0'
        in (text)
    )
    assert "corral_spans_dropped_total" in text and "corral_guard_outcomes_total" in text


async def test_a_run_past_three_times_its_types_p99_is_an_anomaly(sup: Supervisor) -> None:
    for _ in range(MIN_BASELINE_RUNS):
        async with sup.run(agent="support") as run:
            await run.tool("get_customer", {"customer_id": 1})
    await sup.signals.refresh(sup.store)
    assert sup.signals.baselines["operational"][1] == 1.0  # p99 of steps
    session = {"session": "long"}
    async with sup.run(agent="summarizer", **session) as run:  # no tools: model calls only
        for n in range(4):
            await run.chat("default", [{"role": "user", "content": f"part {n}"}], max_tokens=5)
    await sup.signals.drain()
    events = [entry for entry in await sup.store.list_audit() if entry.kind == "run.anomaly"]
    assert [(e.run_id, e.payload["signal"]) for e in events] == [(run.id, "steps")]
    assert events[0].payload["p99"] == 1.0 and events[0].payload["value"] == 4.0
    registry = corral.metrics.registry(sup)
    assert (
        value(registry, "corral_run_anomalies_total", agent_type="operational", signal="steps") == 1
    )


async def test_schema_errors_past_five_percent_are_suspected_drift(sup: Supervisor) -> None:
    async with sup.run(agent="support") as run:
        for n in range(DRIFT_MIN_CALLS - 2):
            await run.tool("get_customer", {"customer_id": n})
        with pytest.raises(ToolArgumentError):  # 1 in 19: not yet 20 calls
            await run.tool("get_customer", {"customer": "forty-two"})
        drift = {"tool": "get_customer"}
        seen = corral.metrics.registry(sup).get_sample_value(
            "corral_tool_drift_suspected_total", drift
        )
        assert seen is None
        with pytest.raises(ToolArgumentError):  # 2 in 20: past 5 %
            await run.tool("get_customer", {"customer": "forty-three"})
    await sup.signals.drain()
    events = [e for e in await sup.store.list_audit() if e.kind == "tool.drift_suspected"]
    assert [e.payload for e in events] == [
        {"tool": "get_customer", "calls": DRIFT_MIN_CALLS, "schema_errors": 2}
    ]
    registry = corral.metrics.registry(sup)
    assert value(registry, "corral_tool_drift_suspected_total", tool="get_customer") == 1
