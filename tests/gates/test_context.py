"""The context gate: prompts are measured against the largest window on their route, and
compacted above critical_at by the policy's strategies, in its order, into valid prompts."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from corral.calls import (
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    ToolCall,
    ToolResult,
    Usage,
    estimate_input_tokens,
)
from corral.gates.base import Gate, Next, RunContext, compose
from corral.gates.budget import BudgetGate
from corral.gates.context import (
    IMAGE_TOKENS,
    SUMMARY_MAX_TOKENS,
    SUMMARY_PROMPT,
    ContextGate,
    ContextState,
    prompt_tokens,
)
from corral.gates.record import RecordGate
from corral.providers.base import FailureKind, ProviderError
from corral.state import ArtifactRecord, MemoryCounters, SQLiteStore
from corral.telemetry.audit import AuditLog

from .conftest import Echo, context, messages, policy

# Route r has two 2,000-token windows and 200 tokens of answer: 1,800 tokens of room, so
# warn_at 0.5 is 900 tokens (~3,600 bytes) and critical_at 0.8 is 1,440 (~5,760 bytes).
# Route both ends on an 8,000-token window. `cheap` has the lowest output price on r.
POLICY = """
version: 1
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  small: {provider: p, model: s, context_window: 2000, max_output_tokens: 200,
          price: {input_per_mtok: 1.0, output_per_mtok: 4.0}}
  cheap: {provider: p, model: c, context_window: 2000, max_output_tokens: 200,
          price: {input_per_mtok: 2.0, output_per_mtok: 1.0}}
  wide: {provider: p, model: w, context_window: 8000, max_output_tokens: 200,
         price: {input_per_mtok: 3.0, output_per_mtok: 12.0}}
routes: {r: [small, cheap], both: [small, wide]}
tools: {lookup: {scope: read}}
agent_types: {worker: {session: {usd: 5.0}}}
agents:
  a: {type: worker, route: r, tools: [lookup]}
  b: {type: worker, route: both, tools: [lookup]}
"""
ROOM = 1800
CRITICAL = 0.8
SETTINGS: dict[str, Any] = {
    "warn_at": 0.5,
    "critical_at": CRITICAL,
    "keep_recent": 2,
    "pointer_min_bytes": 500,
}
SUMMARY = "The agent looked up the numbers it needed; all results were 'x'."
HANDLE = re.compile(r"^\[artifact (art_[0-9a-f]{24}): (\d+) bytes of tool output from (\w+);")


def snapshot(**settings: Any) -> Any:
    return policy(POLICY + f"context: {orjson.dumps({**SETTINGS, **settings}).decode()}\n")


def conversation(sizes: Sequence[int], *, json_first: bool = False) -> list[dict[str, Any]]:
    """A system prompt, one task, then a lookup per size whose output is that many bytes."""
    found: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful test agent."},
        {"role": "user", "content": "Look up every number and report."},
    ]
    for n, size in enumerate(sizes):
        arguments = orjson.dumps({"n": n}).decode()
        found.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": arguments},
                    }
                ],
            }
        )
        output = f"result {n}: " + "x" * size
        if json_first and n == 0:
            output = orjson.dumps({"n": n, "rows": ["x" * size]}).decode()
        found.append({"role": "tool", "tool_call_id": f"call_{n}", "content": output})
    return found


def assert_valid(sent: Sequence[Any]) -> None:
    """A prompt both OpenAI and Anthropic take: a user turn first after the system prompt,
    and every assistant tool call answered right after it, by results that all have a call."""
    first = next(m for m in sent if m["role"] != "system")
    assert first["role"] == "user"
    pending: list[str] = []
    for message in sent:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"a result without its call: {message}"
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, f"calls without their results: {pending}"
        if message["role"] == "assistant":
            pending = [c["id"] for c in message.get("tool_calls") or []]
    assert not pending, f"calls without their results: {pending}"


class Models:
    """A transport: answers summary calls with SUMMARY (or fails them), the rest with ok."""

    def __init__(self, summary: str = SUMMARY, fail: BaseException | None = None) -> None:
        self.summary = summary
        self.fail = fail
        self.calls: list[LLMCall] = []
        self.summaries: list[LLMCall] = []
        self.seen: list[Sequence[Any]] = []

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        assert isinstance(call, LLMCall)
        self.seen.append(call.messages)
        if call.messages[0]["content"] == SUMMARY_PROMPT:
            self.summaries.append(call)
            if self.fail is not None:
                raise self.fail
            return LLMResult(self.summary, Usage(100, 20), model="cheap")
        self.calls.append(call)
        return LLMResult("ok", Usage(100, 10), model="small")

    @property
    def sent(self) -> Sequence[Any]:
        """The prompt of the last agent call, as it reached the model."""
        return self.seen[-1]


class CountingStore(SQLiteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.puts = 0
        self.gets = 0

    async def put_artifact(self, artifact: ArtifactRecord) -> None:
        self.puts += 1
        await super().put_artifact(artifact)

    async def get_artifact(self, handle: str) -> ArtifactRecord | None:
        self.gets += 1
        return await super().get_artifact(handle)


@pytest.fixture
async def counting(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(tmp_path / "counted.db")
    yield opened
    await opened.close()


async def start(
    store: SQLiteStore,
    transport: Next,
    snap: Any = None,
    *,
    agent: str = "a",
    outer: Sequence[Gate] = (),
    inner: Sequence[Gate] = (),
) -> tuple[RunContext, Next]:
    """A run in the store and a pipeline [outer..., ContextGate, inner...] bound to itself."""
    ctx = context(snap or snapshot(), agent=agent)
    await store.create_run(ctx.record)
    gate = ContextGate(store, AuditLog(store))
    pipeline = compose([*outer, gate, *inner], transport)
    gate.bind(pipeline)
    return ctx, pipeline


async def events(store: SQLiteStore, ctx: RunContext) -> list[tuple[str, dict[str, Any]]]:
    return [
        (entry.kind, dict(entry.payload))
        for entry in await store.list_audit()
        if entry.run_id == ctx.run_id and entry.kind.startswith("context.")
    ]


def tokens_of(sent: Sequence[Any]) -> int:
    return prompt_tokens(LLMCall("r", sent))


def state_of(ctx: RunContext) -> ContextState:
    found = ctx.scratch["context"]
    assert isinstance(found, ContextState)
    return found


# --- measuring ------------------------------------------------------------------------------


async def test_a_prompt_under_warn_at_passes_untouched(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport)
    sent = conversation([100, 100])
    call = LLMCall("r", sent)
    await pipeline(call, ctx)
    assert transport.calls[0].messages is sent  # not even copied
    assert await events(store, ctx) == []
    state = state_of(ctx)
    assert state.level == 0
    assert state.tokens == math.ceil(estimate_input_tokens(call) / 4)
    assert state.utilization == state.sent_utilization == state.tokens / ROOM
    assert state.window == 2000


async def test_tool_calls_pass_straight_through(store: SQLiteStore) -> None:
    ctx, pipeline = await start(store, Echo())
    result = await pipeline(ToolCall("lookup", {"n": 1}), ctx)
    assert isinstance(result, ToolResult)
    assert "context" not in ctx.scratch


async def test_warn_and_critical_are_recorded_once_per_crossing(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=[]))
    warm, hot = conversation([2000, 1500]), conversation([1500, 1500, 1500, 1000])
    cool = conversation([100])
    assert 0.5 * ROOM < tokens_of(warm) <= CRITICAL * ROOM < tokens_of(hot) <= ROOM
    for sent in (warm, warm, hot, hot, cool, warm):
        await pipeline(LLMCall("r", sent), ctx)
    found = await events(store, ctx)
    assert [kind for kind, _ in found] == ["context.warn", "context.critical", "context.warn"]
    tokens = tokens_of(warm)
    assert found[0][1] == {
        "tokens": tokens,
        "window": 2000,
        "reserved": 200,
        "model": "small",
        "utilization": round(tokens / ROOM * 100, 1),
    }
    assert found[1][1]["tokens"] == tokens_of(hot)
    assert state_of(ctx).level == 1
    assert len(transport.calls) == 6  # nothing was refused: even `hot` fits the window


async def test_a_jump_past_both_thresholds_records_both(store: SQLiteStore) -> None:
    ctx, pipeline = await start(store, Models(), snapshot(compaction=[]))
    await pipeline(LLMCall("r", conversation([1500, 1500, 1500, 1000])), ctx)
    assert [kind for kind, _ in await events(store, ctx)] == ["context.warn", "context.critical"]


async def test_the_largest_window_on_the_route_counts(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, agent="b")
    sent = conversation([2000, 2000, 2000, 2000])
    assert tokens_of(sent) > ROOM  # too long for `small`, which the route tries first
    await pipeline(LLMCall("both", sent), ctx)
    assert transport.calls[0].messages is sent
    assert await events(store, ctx) == []
    state = state_of(ctx)
    assert state.window == 8000
    assert state.utilization == tokens_of(sent) / (8000 - 200)


async def test_the_answer_s_max_tokens_is_set_aside_from_the_window(store: SQLiteStore) -> None:
    ctx, pipeline = await start(store, Models(), snapshot(compaction=[]))
    sent = conversation([1500])  # ~450 tokens: far under 0.5 of 1,800
    await pipeline(LLMCall("r", sent, max_tokens=1500), ctx)  # but over 0.8 of 500
    found = await events(store, ctx)
    assert [kind for kind, _ in found] == ["context.warn", "context.critical"]
    assert found[0][1]["reserved"] == 1500

    with pytest.raises(Halt) as halted:
        await pipeline(LLMCall("r", messages(), max_tokens=2000), ctx)
    assert halted.value.reason is HaltReason.CONTEXT_OVERFLOW
    assert halted.value.detail["reserved"] == 2000
    assert halted.value.detail["strategies_tried"] == []


async def test_images_count_as_images_not_as_the_bytes_of_their_data() -> None:
    text = [{"role": "user", "content": [{"type": "text", "text": "What is in it?"}]}]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 400_000}}
    with_image = [{"role": "user", "content": [*text[0]["content"], image]}]
    assert prompt_tokens(LLMCall("r", text)) == math.ceil(
        estimate_input_tokens(LLMCall("r", text)) / 4
    )
    added = prompt_tokens(LLMCall("r", with_image)) - prompt_tokens(LLMCall("r", text))
    assert IMAGE_TOKENS <= added <= IMAGE_TOKENS + 1  # the comma between the two parts


# --- pointers -------------------------------------------------------------------------------


async def test_pointers_store_old_large_tool_outputs_and_leave_handles(
    store: SQLiteStore,
) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["pointers"]))
    sent = conversation([3000, 3000, 1000, 3000], json_first=True)
    before = copy.deepcopy(sent)
    call = LLMCall("r", sent)
    await pipeline(call, ctx)

    assert sent == before  # the caller's list and dicts are as they were
    out = transport.sent
    assert out is not sent and call.messages is out
    assert out[0] is sent[0] and out[1] is sent[1]  # system prompt, last user message
    assert out[-2:] == sent[-2:] and out[-1] is sent[-1]  # the recent messages
    assert_valid(out)
    handles = []
    for position in (3, 5):
        match = HANDLE.match(out[position]["content"])
        assert match is not None, out[position]["content"]
        handle, size, tool = match.groups()
        original = sent[position]["content"].encode()
        assert (int(size), tool) == (len(original), "lookup")
        assert out[position]["tool_call_id"] == sent[position]["tool_call_id"]
        assert sent[position]["content"][:200] in out[position]["content"]
        stored = await store.get_artifact(handle)
        assert stored is not None and stored.content == original
        assert stored.run_id == ctx.run_id
        handles.append(stored)
    assert [h.media_type for h in handles] == ["application/json", "text/plain"]
    # Stopped once under critical_at: the third old output was left alone.
    assert out[7] is sent[7]
    assert tokens_of(out) <= CRITICAL * ROOM < tokens_of(sent)
    # The budget gate gets the new prompt's size without serializing it again.
    assert call.input_bound == (out, len(orjson.dumps(out)))

    kind, payload = (await events(store, ctx))[-1]
    assert kind == "context.compacted"
    assert payload["strategies"] == ["pointers"]
    assert payload["before"] > 80 >= payload["after"]
    assert state_of(ctx).sent_utilization <= CRITICAL


async def test_the_same_conversation_reuses_its_handles(counting: CountingStore) -> None:
    transport = Models()
    ctx, pipeline = await start(counting, transport, snapshot(compaction=["pointers"]))
    sent = conversation([3000, 3000, 3000, 3000])
    await pipeline(LLMCall("r", sent), ctx)
    first = transport.sent
    stored = counting.puts
    assert stored == 3 and counting.gets == stored

    # The gateway sends the whole history again with every request.
    await pipeline(LLMCall("r", copy.deepcopy(sent)), ctx)
    assert transport.sent == first
    assert counting.puts == counting.gets == stored  # known to this run: not even looked up

    ctx.scratch.clear()  # as after a restart: the store is asked, and has them
    await pipeline(LLMCall("r", sent), ctx)
    assert transport.sent == first
    assert counting.puts == stored and counting.gets == 2 * stored


async def test_small_tool_outputs_and_recent_ones_stay(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["pointers"]))
    sent = conversation([400] * 6 + [3000])  # old outputs under pointer_min_bytes
    assert CRITICAL * ROOM < tokens_of(sent) <= ROOM
    await pipeline(LLMCall("r", sent), ctx)
    assert transport.sent is sent
    assert [kind for kind, _ in await events(store, ctx)] == ["context.warn", "context.critical"]


# --- summarize ------------------------------------------------------------------------------


async def test_summarize_replaces_the_old_turns_with_a_summary(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize"]))
    sent = conversation([1000] * 6)
    before = copy.deepcopy(sent)
    await pipeline(LLMCall("r", sent), ctx)

    (summary_call,) = transport.summaries
    assert summary_call.model == "cheap"  # the lowest output price on the agent's route
    assert summary_call.max_tokens == SUMMARY_MAX_TOKENS
    transcript = summary_call.messages[1]["content"]
    assert '[assistant called lookup({"n":0})]' in transcript
    assert "[tool result from lookup] result 4: xxx" in transcript
    assert "result 5" not in transcript  # the recent messages stay as they are

    out = transport.sent
    assert sent == before
    assert out[:2] == sent[:2] and out[-2:] == sent[-2:]
    assert out[2] == {"role": "user", "content": f"[summary of 10 earlier messages]\n{SUMMARY}"}
    assert len(out) == 5
    assert_valid(out)
    assert tokens_of(out) < tokens_of(sent)
    compacted = (await events(store, ctx))[-1]
    assert compacted[0] == "context.compacted" and compacted[1]["strategies"] == ["summarize"]


async def test_a_summary_follows_the_last_user_message_when_it_covers_later_turns(
    store: SQLiteStore,
) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize"]))
    sent = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question " + "q" * 1500},
        {"role": "assistant", "content": "first answer " + "a" * 1500},
        {"role": "user", "content": "now the real task"},
        *conversation([1200, 1200, 100])[2:],
    ]
    await pipeline(LLMCall("r", sent), ctx)
    out = transport.sent
    assert out[:2] == [sent[0], sent[3]]  # the last user message keeps its place after system
    assert out[2]["content"].startswith("[summary of 6 earlier messages]")
    assert out[3:] == sent[-2:]
    assert_valid(out)


async def test_the_policy_s_summarizer_is_used(store: SQLiteStore) -> None:
    transport = Models()
    snap = snapshot(compaction=["summarize"], summarizer="wide")
    ctx, pipeline = await start(store, transport, snap)
    await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    assert [c.model for c in transport.summaries] == ["wide"]


async def test_a_summary_is_reused_then_extended_as_the_conversation_grows(
    store: SQLiteStore,
) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize"]))
    await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    first = transport.sent
    await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    assert len(transport.summaries) == 1 and transport.sent == first

    transport.summary = "Later the agent looked up 5 and 6 too."
    await pipeline(LLMCall("r", conversation([1000] * 8)), ctx)
    assert len(transport.summaries) == 2
    transcript = transport.summaries[1].messages[1]["content"]
    assert transcript.startswith(f"Summary of the conversation so far:\n{SUMMARY}\n")
    assert "result 5: " in transcript and "result 6: " in transcript
    assert "result 4: " not in transcript  # already in the earlier summary
    assert transport.sent[2]["content"] == (
        "[summary of 14 earlier messages]\nLater the agent looked up 5 and 6 too."
    )


async def test_a_long_transcript_is_cut_to_the_summarizer_s_window(store: SQLiteStore) -> None:
    transport = Models()
    snap = snapshot(compaction=["summarize", "evict"])
    ctx, pipeline = await start(store, transport, snap)
    await pipeline(LLMCall("r", conversation([5000, 200, 5000, 5000])), ctx)
    transcript = transport.summaries[0].messages[1]["content"]
    # cheap's window less the answer and the instructions, at critical_at, in bytes
    assert len(transcript.encode()) <= (2000 - SUMMARY_MAX_TOKENS) * CRITICAL * 4
    assert "result 1: " + "x" * 200 in transcript  # a short output stays whole
    assert "bytes cut]" in transcript
    assert_valid(transport.sent)


@pytest.mark.parametrize(
    "failure",
    [
        ProviderError(FailureKind.UNAVAILABLE, "the summarizer is down"),
        Halt(HaltReason.PROVIDER_UNAVAILABLE, "no model on 'cheap' answered"),
        None,  # an empty answer
    ],
    ids=["provider_error", "upstream_halt", "empty"],
)
async def test_a_failed_summary_falls_through_to_evict(
    store: SQLiteStore, failure: BaseException | None
) -> None:
    transport = Models(summary="", fail=failure)
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize", "evict"]))
    sent = conversation([1000] * 6)
    await pipeline(LLMCall("r", sent), ctx)
    assert len(transport.summaries) == 1
    found = await events(store, ctx)
    kinds = [kind for kind, _ in found]
    assert kinds == ["context.warn", "context.critical", "context.summarize_failed", *kinds[3:]]
    assert found[2][1]["model"] == "cheap"
    assert found[-1][0] == "context.compacted" and found[-1][1]["strategies"] == ["evict"]
    out = transport.sent
    assert out[:2] == sent[:2] and out[-2:] == sent[-2:]
    assert_valid(out)
    assert tokens_of(out) <= CRITICAL * ROOM


async def test_a_halt_from_the_summary_call_stops_the_run(store: SQLiteStore) -> None:
    spent = Halt(HaltReason.BUDGET_COST, "session usd cap of 5.0 would be crossed")
    transport = Models(fail=spent)
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize", "evict"]))
    with pytest.raises(Halt) as halted:
        await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    assert halted.value is spent
    assert transport.calls == []


async def test_the_summary_call_is_a_step_of_the_run_and_is_charged(
    store: SQLiteStore,
) -> None:
    transport = Models()
    counters = MemoryCounters()
    audit = AuditLog(store)
    ctx, pipeline = await start(
        store,
        transport,
        snapshot(compaction=["summarize"]),
        outer=[RecordGate(store, audit)],
        inner=[BudgetGate(counters)],
    )
    await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    steps = await store.list_steps(ctx.run_id)
    assert [(s.name, s.model_used) for s in steps] == [("cheap", "cheap"), ("r", "small")]
    assert steps[0].input["messages"][0]["content"] == SUMMARY_PROMPT
    # cheap: 100 in at 2 $/M, 20 out at 1 $/M; small: 100 in at 1 $/M, 10 out at 4 $/M
    assert steps[0].cost_usd == pytest.approx(220e-6)
    assert ctx.record.cost_usd == pytest.approx(220e-6 + 140e-6)
    used = await counters.get(f"budget:session:{ctx.session}:usd")
    assert used.used == 220 + 140 and used.held == 0


# --- evict ----------------------------------------------------------------------------------


async def test_evict_blanks_old_tool_outputs_first(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["evict"]))
    sent = conversation([3000, 3000, 1000, 3000])
    await pipeline(LLMCall("r", sent), ctx)
    out = transport.sent
    assert [m["content"] for m in out[3:8:2]] == ["[evicted]", "[evicted]", sent[7]["content"]]
    assert len(out) == len(sent)
    assert_valid(out)
    assert transport.summaries == []
    assert (await events(store, ctx))[-1][1]["strategies"] == ["evict"]


async def test_evict_drops_the_oldest_messages_but_never_the_last_user_message(
    store: SQLiteStore,
) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["evict"]))
    sent = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer " + "a" * 4000},
        {"role": "user", "content": "second question"},
        *conversation([2000, 1500])[2:],
    ]
    before = copy.deepcopy(sent)
    await pipeline(LLMCall("r", sent), ctx)
    out = transport.sent
    assert sent == before
    assert out == [
        sent[0],
        {"role": "user", "content": "[2 earlier messages were dropped to fit the context window]"},
        sent[3],
        sent[4],
        {**sent[5], "content": "[evicted]"},
        *sent[6:],
    ]
    assert out[2] is sent[3] and out[-1] is sent[-1]
    assert_valid(out)


@pytest.mark.parametrize(
    "sent",
    [
        # one long agentic turn: calls with long arguments, so blanking outputs is not enough
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Do it."},
            *[
                message
                for n in range(8)
                for message in (
                    {
                        "role": "assistant",
                        "content": "thinking " * 40,
                        "tool_calls": [
                            {
                                "id": f"c{n}_{k}",
                                "type": "function",
                                "function": {"name": "lookup", "arguments": "{}" + " " * 200},
                            }
                            for k in range(2)
                        ],
                    },
                    {"role": "tool", "tool_call_id": f"c{n}_0", "content": "y" * 300},
                    {"role": "tool", "tool_call_id": f"c{n}_1", "content": "z" * 300},
                )
            ],
        ],
        # many short user turns, no tools
        [
            {"role": "system", "content": "Be brief."},
            *[
                {"role": role, "content": f"{role} {n} " + "w" * 300}
                for n in range(12)
                for role in ("user", "assistant")
            ],
            {"role": "user", "content": "And now?"},
        ],
    ],
    ids=["agentic", "chat"],
)
async def test_evict_keeps_every_prompt_valid(store: SQLiteStore, sent: list[Any]) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["evict"]))
    assert tokens_of(sent) > CRITICAL * ROOM
    await pipeline(LLMCall("r", sent), ctx)
    out = transport.sent
    assert_valid(out)
    assert out[0] is sent[0]
    last_user = next(m for m in reversed(sent) if m["role"] == "user")
    assert any(m is last_user for m in out)
    assert out[-2:] == sent[-2:]
    assert tokens_of(out) <= CRITICAL * ROOM


# --- order and overflow ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "used"),
    [
        (["evict"], ["evict"]),
        (["pointers", "evict"], ["pointers"]),
        (["summarize", "pointers"], ["summarize"]),
        (["evict", "summarize"], ["evict"]),
    ],
)
async def test_compaction_follows_the_policy_s_order(
    counting: CountingStore, order: list[str], used: list[str]
) -> None:
    transport = Models()
    ctx, pipeline = await start(counting, transport, snapshot(compaction=order))
    await pipeline(LLMCall("r", conversation([3000, 3000, 3000, 3000])), ctx)
    compacted = (await events(counting, ctx))[-1]
    assert compacted[1]["strategies"] == used
    assert (counting.puts > 0) == ("pointers" in used)
    assert bool(transport.summaries) == ("summarize" in used)
    assert_valid(transport.sent)


async def test_a_prompt_over_the_window_after_every_strategy_halts(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport)
    sent = conversation([3000, 9000])  # the recent output alone is over the window
    with pytest.raises(Halt) as halted:
        await pipeline(LLMCall("r", sent), ctx)
    halt = halted.value
    assert halt.reason is HaltReason.CONTEXT_OVERFLOW
    detail = dict(halt.detail)
    assert detail.pop("tokens") > ROOM
    assert detail.pop("utilization") > 100
    assert detail == {
        "rule": "context",
        "window": 2000,
        "reserved": 200,
        "model": "small",
        "strategies_tried": ["pointers", "summarize", "evict"],
    }
    assert transport.calls == []
    # What could be compacted was (the old output's handle then blanked), and is on record.
    assert (await events(store, ctx))[-1][1]["strategies"] == ["pointers", "evict"]


async def test_the_summary_call_is_not_measured_as_the_agent_s(store: SQLiteStore) -> None:
    transport = Models()
    ctx, pipeline = await start(store, transport, snapshot(compaction=["summarize"]))
    await pipeline(LLMCall("r", conversation([1000] * 6)), ctx)
    state = state_of(ctx)
    assert state.tokens == tokens_of(conversation([1000] * 6))
    assert state.compactions == 1
