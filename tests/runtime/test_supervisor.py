"""The SDK end to end: runs, typed tools, halts with packets, checkpoints, resume, sync facade."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest

from corral import (
    Halted,
    HaltReason,
    RunStatus,
    Supervisor,
    SyncSupervisor,
    ToolArgumentError,
    UpstreamUnavailable,
)
from corral.calls import LLMCall, estimate_input_tokens
from corral.gates.budget import MICRO_USD
from corral.providers.sim import Fault, FaultKind, SimProvider

from .conftest import example_policy

HELLO = [{"role": "user", "content": "hello"}]


async def test_a_run_completes_with_its_steps_and_totals(sup: Supervisor) -> None:
    async with sup.run(agent="support", task="ticket-1") as run:
        reply = await run.chat("default", HELLO, max_tokens=50)
        found = await run.tool("get_customer", {"customer_id": 7})
        drafted = await run.tool("draft_email", {"to": "ada@example.com"})
    assert reply.model == "smart" and reply.cost_usd > 0
    assert found == {"id": 7, "name": "Ada"}
    assert drafted == {"to": "ada@example.com", "body": ""}
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.COMPLETED
    assert (stored.steps, stored.tool_calls) == (3, 2)
    assert stored.cost_usd == pytest.approx(reply.cost_usd)
    steps = await sup.store.list_steps(run.id)
    assert [s.name for s in steps] == ["default", "get_customer", "draft_email"]
    assert steps[0].model_used == "smart"
    assert (await sup.audit.verify()).ok


async def test_tool_arguments_are_checked_against_the_signature(sup: Supervisor) -> None:
    async with sup.run(agent="support") as run:
        with pytest.raises(ToolArgumentError, match="tool 'get_customer': customer_id"):
            await run.tool("get_customer", {"customer_id": "not a number"})
        with pytest.raises(ToolArgumentError, match="surprise: Extra inputs"):
            await run.tool("get_customer", {"customer_id": 1, "surprise": True})
    steps = await sup.store.list_steps(run.id)
    assert [s.status for s in steps] == ["error", "error"]


def test_registering_an_undeclared_tool_is_refused(sup: Supervisor) -> None:
    with pytest.raises(ValueError, match="tool 'wire_money' is not declared"):

        @sup.tool()
        async def wire_money(amount: int) -> None: ...


async def test_unknown_agent_is_a_clear_error(sup: Supervisor) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown agent 'nobody' \(known: analyzer, summarizer, support, verifier\)",
    ):
        async with sup.run(agent="nobody"):
            pass


async def test_a_denied_tool_halts_with_a_packet_in_the_dead_letter_queue(
    sup: Supervisor,
) -> None:
    async with sup.run(agent="summarizer", task="summarise") as run:
        await run.chat("default", HELLO, max_tokens=20)
        with pytest.raises(Halted) as caught:
            await run.tool("get_customer", {"customer_id": 1})
        # The run stays halted: the next call gets the same halt, not a new one.
        with pytest.raises(Halted) as again:
            await run.chat("default", HELLO)
    halted = caught.value
    assert again.value is halted
    assert halted.reason is HaltReason.POLICY_DENIED
    packet = halted.packet
    assert packet["agent"] == "summarizer" and packet["task"] == "summarise"
    assert packet["rule"] == {"rule": "agents.summarizer.tools", "allowed": []}
    assert [s["status"] for s in packet["steps"]] == ["ok", "halted"]
    assert packet["steps"][1]["input"] == {"customer_id": 1}
    assert packet["usage"]["steps"] == 1 and packet["usage"]["cost_usd"] > 0
    assert packet["trace_id"] == run.context.record.trace_id
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.HALTED
    assert stored.halt_reason == "policy.denied"
    letter = await sup.store.dead_letter_for_run(run.id)
    assert letter is not None and letter.packet == packet and letter.status == "open"
    kinds = [e.kind for e in await sup.store.list_audit() if e.run_id == run.id]
    assert kinds[-1] == "run.halted"


async def test_an_exception_in_the_agent_halts_the_run_with_error(sup: Supervisor) -> None:
    with pytest.raises(KeyError):
        async with sup.run(agent="support") as run:
            await run.tool("get_customer", {"customer_id": 1})
            raise KeyError("the agent's own bug")
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.halt_reason == "error"
    letter = await sup.store.dead_letter_for_run(run.id)
    assert letter is not None and "KeyError" in letter.packet["message"]


async def test_budget_halt_packet_names_the_limit_and_numbers(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    edits = {"task:    {usd: 0.20}": "task:    {usd: 0.01}"}
    sup = Supervisor.from_policy(example_policy(tmp_path, sim, edits))
    with pytest.raises(Halted) as caught:
        async with sup.run(agent="support", task="loop") as run:
            for turn in itertools.count():  # distinct prompts: not a loop, only costly
                await run.chat("default", [{"role": "user", "content": f"{turn} " + "x" * 800}])
    await sup.close()
    rule = caught.value.packet["rule"]
    assert caught.value.reason is HaltReason.BUDGET_COST
    assert rule["rule"] == "agent_types.operational.task.usd"
    assert rule["limit"] == 0.01 and rule["used"] <= 0.01
    assert rule["used"] + rule["needed"] > 0.01
    assert caught.value.packet["usage"]["cost_usd"] <= 0.01


async def test_256_concurrent_calls_through_the_sim_never_cross_the_session_cap(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    edits = {
        "session: {usd: 0.50, tokens: 200000, tool_calls: 50, steps: 40, wall_clock: 10m}": (
            "session: {usd: 0.05}"
        ),
        "task:    {usd: 0.20}": "task:    {usd: 5.0}",
    }
    sup = Supervisor.from_policy(example_policy(tmp_path, sim, edits))
    prompt = [{"role": "user", "content": "summarise this " * 40}]

    async def one(run_n: int) -> None:
        async with sup.run(agent="support", session="s-1", task=f"t{run_n}") as run:
            for _ in range(4):
                await run.chat("default", prompt, max_tokens=400)

    outcomes = await asyncio.gather(*(one(n) for n in range(64)), return_exceptions=True)
    assert any(isinstance(o, Halted) for o in outcomes)
    assert all(o is None or isinstance(o, Halted) for o in outcomes)
    runs = await sup.store.list_runs(limit=100)
    spent = sum(r.cost_usd for r in runs)
    used = await sup.counters.get("budget:session:s-1:usd")
    assert used.held == 0
    assert spent <= 0.05 and used.used <= 50_000
    # gpt-4o at 2.50/10.00 $ per Mtok: the worst case of one call of this prompt.
    worst = (estimate_input_tokens(LLMCall("default", prompt)) * 2.5 + 400 * 10) / MICRO_USD
    assert spent >= 0.05 - worst
    await sup.close()


async def test_checkpoint_then_resume_hands_back_the_state(sup: Supervisor) -> None:
    run = await sup.run(agent="support", task="long")
    await run.tool("get_customer", {"customer_id": 1})
    checkpoint = await run.checkpoint({"stage": "looked-up"})
    assert run.context.record.last_checkpoint_id == checkpoint
    run_id = run.id
    await sup._untrack(run)  # the agent "dies" here, leaving the run running

    async with sup.resume(run_id) as resumed:
        assert resumed.state == {"stage": "looked-up"}
        assert resumed.context.call_seq == 1
        assert resumed.context.step_seq == 1
        again = await resumed.tool("get_customer", {"customer_id": 2})
        assert again == {"id": 2, "name": "Ada"}
    stored = await sup.store.get_run(run_id)
    assert stored is not None and stored.status is RunStatus.COMPLETED
    assert stored.steps == 2


async def test_resume_refuses_unknown_completed_and_halted_runs(sup: Supervisor) -> None:
    with pytest.raises(LookupError, match="no run 'missing'"):
        await sup.resume("missing")
    async with sup.run(agent="support") as done:
        pass
    with pytest.raises(ValueError, match="is completed"):
        await sup.resume(done.id)
    with pytest.raises(Halted):
        async with sup.run(agent="summarizer") as halted:
            await halted.tool("get_customer", {"customer_id": 1})
    with pytest.raises(ValueError, match=r"is halted \(retry it with `corral dlq retry` first\)"):
        await sup.resume(halted.id)


async def test_dlq_retry_with_topup_lets_the_run_go_on(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    edits = {"tool_calls: 50": "tool_calls: 2"}
    sup = Supervisor.from_policy(example_policy(tmp_path, sim, edits))

    @sup.tool()
    async def get_customer(customer_id: int) -> dict[str, int]:
        return {"id": customer_id}

    with pytest.raises(Halted) as caught:
        async with sup.run(agent="support", task="many lookups") as run:
            for n in range(5):
                await run.tool("get_customer", {"customer_id": n})
                await run.checkpoint({"done": n + 1})
    assert caught.value.reason is HaltReason.BUDGET_TOOL_CALLS
    await sup.store.reopen_run(run.id, topup={"tool_calls": 3}, at=1.0)
    async with sup.resume(run.id) as resumed:
        assert resumed.state == {"done": 2}
        for n in range(resumed.state["done"], 5):
            await resumed.tool("get_customer", {"customer_id": n})
    stored = await sup.store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.COMPLETED
    assert stored.tool_calls == 5
    await sup.close()


def test_sync_facade_runs_the_same_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")

    async def start_sim() -> SimProvider:
        return await SimProvider().start()

    loop = asyncio.new_event_loop()
    sim = loop.run_until_complete(start_sim())

    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    try:
        with SyncSupervisor.from_policy(example_policy(tmp_path, sim)) as sup:

            @sup.tool()
            def get_customer(customer_id: int) -> dict[str, int]:
                return {"id": customer_id}

            with sup.run(agent="support", task="sync") as run:
                reply = run.chat("default", HELLO, max_tokens=10)
                assert reply.text.startswith("Simulated reply")
                assert run.tool("get_customer", {"customer_id": 3}) == {"id": 3}
                run.checkpoint({"n": 1})
            with pytest.raises(Halted), sup.run(agent="summarizer") as denied:
                denied.tool("get_customer", {"customer_id": 1})
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        serving.join()
        loop.close()


async def test_a_resumed_run_in_a_new_process_cannot_spend_its_caps_again(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    policy = example_policy(tmp_path, sim, {"tool_calls: 50": "tool_calls: 3"})

    def supervisor() -> Supervisor:
        built = Supervisor.from_policy(policy)  # fresh in-process counters, same store

        @built.tool()
        async def get_customer(customer_id: int) -> int:
            return customer_id

        return built

    first = supervisor()
    run = await first.run(agent="support")
    await run.tool("get_customer", {"customer_id": 1})
    await run.tool("get_customer", {"customer_id": 2})
    await run.checkpoint({"done": 2})
    await first.close()  # the process ends with the run still running

    second = supervisor()
    async with second.resume(run.id) as resumed:
        await resumed.tool("get_customer", {"customer_id": 3})
        with pytest.raises(Halted) as caught:
            await resumed.tool("get_customer", {"customer_id": 4})
    await second.close()
    assert caught.value.reason is HaltReason.BUDGET_TOOL_CALLS
    assert caught.value.packet["usage"]["tool_calls"] == 3


async def test_a_reload_applies_to_new_runs_and_spares_runs_in_flight(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    path = example_policy(tmp_path, sim)
    sup = Supervisor.from_policy(path)
    old_run = await sup.run(agent="support", task="before")
    # The new policy renames the provider and cuts the task budget.
    text = path.read_text().replace("  sim:", "  sim2:")
    text = text.replace("provider: sim,", "provider: sim2,")
    path.write_text(text.replace("task:    {usd: 0.20}", "task:    {usd: 0.00001}"))
    assert sup.policy.reload().ok
    with pytest.raises(Halted) as caught:
        async with sup.run(agent="support", task="after") as new_run:
            await new_run.chat("default", HELLO, max_tokens=10)
    assert caught.value.reason is HaltReason.BUDGET_COST  # the new snapshot's cap
    assert new_run.context.policy is sup.policy.current
    reply = await old_run.chat("default", HELLO, max_tokens=10)  # on the old snapshot's provider
    assert reply.text.startswith("Simulated reply")
    await old_run.complete()
    await sup.close()


async def test_a_run_told_not_to_halt_on_upstream_failure_raises_and_goes_on(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    sup = Supervisor.from_policy(
        example_policy(tmp_path, sim, {"max_attempts: 5": "max_attempts: 1"})
    )
    sim.set_fault(None, Fault(FaultKind.ERROR, status=503))
    async with sup, sup.run(agent="support", halt_on_upstream_failure=False) as run:
        with pytest.raises(UpstreamUnavailable) as failed:
            await run.chat("default", [{"role": "user", "content": "hi"}])
        assert failed.value.reason is HaltReason.PROVIDER_UNAVAILABLE
        assert [t["model"] for t in failed.value.detail["tried"]] == ["smart", "fast"]
        sim.set_fault(None, None)
        assert (await run.chat("default", [{"role": "user", "content": "hi"}])).text
        assert run.status is RunStatus.RUNNING
