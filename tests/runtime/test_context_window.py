"""The context gate in a supervised run: compaction before the upstream sees the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import Halted, HaltReason, Supervisor
from corral.gates.input_guard import SPOTLIGHT_NOTE, SPOTLIGHT_OPEN
from corral.providers.sim import SimProvider
from tests.runtime.conftest import example_policy

BIG = "order line " * 1200  # ~13 kB of tool output: ~3,300 tokens against a 3,000 window
CALL = {"id": "c1", "type": "function", "function": {"name": "get_customer", "arguments": "{}"}}
CONVERSATION = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "What did customer 7 order?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": BIG},
    {"role": "assistant", "content": "They ordered a lot."},
    {"role": "user", "content": "Summarise it."},
    {"role": "assistant", "content": "Many order lines."},
    {"role": "user", "content": "And the total?"},
]


@pytest.fixture
async def small_window(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> Supervisor:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    policy = example_policy(tmp_path, sim, {"context_window: 128000": "context_window: 3000"})
    return Supervisor.from_policy(policy)


async def test_large_old_tool_output_becomes_an_artifact_the_run_can_read(
    small_window: Supervisor,
) -> None:
    async with small_window as sup, sup.run(agent="support", session="ctx") as run:
        await run.chat("default", CONVERSATION, max_tokens=200)
        [step] = await sup.store.list_steps(run.id)
        # The step shows what the model got: compacted, and its tool output spotlit (the
        # example policy marks tool output as data, with a system note saying so).
        sent = [m for m in step.input["messages"] if m["content"] != SPOTLIGHT_NOTE["delimit"]]
        assert sent[0] == CONVERSATION[0] and sent[-1] == CONVERSATION[-1]
        assert len(sent) == len(CONVERSATION)
        pointer = sent[3]["content"].removeprefix(f"{SPOTLIGHT_OPEN}\n")
        assert pointer.startswith("[artifact art_") and len(pointer) < 500
        handle = pointer.removeprefix("[artifact ").split(":", 1)[0]
        assert (await run.artifact(handle)).decode() == BIG
        kinds = [e.kind for e in await sup.store.list_audit() if e.run_id == run.id]
        assert {"context.warn", "context.critical", "context.compacted"} <= set(kinds)
        with pytest.raises(LookupError):
            await run.artifact("art_nothing")


async def test_a_prompt_that_cannot_fit_halts_context_overflow(small_window: Supervisor) -> None:
    huge = [{"role": "user", "content": "x " * 20000}]  # the last user turn is never compacted
    async with small_window as sup:
        with pytest.raises(Halted) as halted:
            async with sup.run(agent="support") as run:
                await run.chat("default", huge, max_tokens=200)
    assert halted.value.reason is HaltReason.CONTEXT_OVERFLOW
    assert halted.value.packet["rule"]["rule"] == "context"


async def test_progress_reports_count_changes_only(small_window: Supervisor) -> None:
    async with small_window as sup, sup.run(agent="support") as run:
        run.progress({"tickets": 1})
        run.progress({"tickets": 1})
        run.progress({"tickets": 2})
        assert (run.context.progress, run.context.progress_changes) == ({"tickets": 2}, 2)
