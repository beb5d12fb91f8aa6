"""The loop gate: each detector fires on the loop it is for, with the steps that prove it,
and never on the corpus of normal agent work."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
)
from corral.gates import loops as loops_module
from corral.gates.base import Next, RunContext, compose
from corral.gates.loops import LoopGate, RunLoops, canonical, similarity, text_of
from corral.policy import Policy
from corral.state import AuditEntry, SQLiteStore
from corral.telemetry.audit import AuditLog
from corral.tools.registry import ToolArgumentError

from .conftest import POLICY, Echo, context, messages, policy
from .loop_corpus import LOOPS, NORMAL, SCOPES, Ask, Report, Tool, Trace

TOOLS_LINE = "tools: {lookup: {scope: read}, send: {scope: irreversible}}"
EXAMPLE_LOOPS = (
    "loops: {repeat: 3, similar: {threshold: 0.9, count: 4}, no_progress_steps: 5,"
    " error_repeat: 3, ping_pong: 4, window: 32, action: %s}\n"
)


def loop_policy(action: str = "halt", window: int = 32) -> Policy:
    """conftest's policy with every corpus tool and the example loop thresholds."""
    tools = ", ".join(f"{name}: {{scope: {scope}}}" for name, scope in SCOPES.items())
    text = POLICY.replace(
        TOOLS_LINE, f"tools: {{lookup: {{scope: read}}, send: {{scope: irreversible}}, {tools}}}"
    )
    text += (EXAMPLE_LOOPS % action).replace("window: 32", f"window: {window}")
    return policy(text)


HALTING = loop_policy()
ERRORS: dict[str, type[Exception]] = {
    "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError,
    "ValueError": ValueError,
    "ToolArgumentError": ToolArgumentError,
}
_sessions = itertools.count(1)


class ListAudit(AuditLog):
    """An audit log kept in a list: what a gate under test appended, nothing stored."""

    def __init__(self) -> None:
        self._clock = time.time
        self.entries: list[AuditEntry] = []

    async def append(
        self, kind: str, payload: Mapping[str, Any], run_id: str | None = None
    ) -> AuditEntry:
        entry = self.seal(kind, payload, run_id)(self.entries[-1] if self.entries else None)
        self.entries.append(entry)
        return entry


NOW = 1_800_000_000.0


def gate(audit: AuditLog | None = None) -> LoopGate:
    return LoopGate(audit or ListAudit(), clock=lambda: NOW)


# --- replaying traces ---------------------------------------------------------------


@dataclass
class Agent:
    ctx: RunContext
    conversation: list[dict[str, Any]]
    halt: Halt | None = None


@dataclass
class Replay:
    halts: list[Halt] = field(default_factory=list)
    sent: int = 0  # calls that reached the transport


def scripted(event: Tool | Ask, replay: Replay) -> Next:
    async def transport(call: Call, ctx: RunContext) -> Result:
        replay.sent += 1
        if isinstance(event, Ask):
            return LLMResult(event.answer, Usage(10, 10), model="m")
        if event.error is not None:
            raise ERRORS[event.error](f"scripted {event.error}")
        return ToolResult(event.result)

    return transport


async def replay(trace: Trace, loop_gate: LoopGate, snapshot: Policy = HALTING) -> Replay:
    """Run a trace's events through the gate as its agents would, one run per agent (one
    session when there are several). A halted agent makes no more calls."""
    session = f"session-{next(_sessions)}" if len(trace.agents) > 1 else None
    agents = {
        name: Agent(
            context(snapshot, agent=name, session=session),
            [{"role": "system", "content": trace.system}],
        )
        for name in trace.agents
    }
    outcome = Replay()
    for event in trace.events:
        agent = agents[event.agent]
        ctx = agent.ctx
        if agent.halt is not None:
            continue
        if isinstance(event, Report):  # what Run.progress does
            if event.value != ctx.progress:
                ctx.progress = event.value
                ctx.progress_changes += 1
            continue
        call: Call
        if isinstance(event, Tool):
            call = ToolCall(event.name, event.args)
        else:
            if event.fresh:
                agent.conversation = agent.conversation[:1]
            if event.prompt is not None:
                agent.conversation.append({"role": "user", "content": event.prompt})
            call = LLMCall("r", list(agent.conversation))
        try:
            await loop_gate(call, ctx, scripted(event, outcome))
        except Halt as halt:
            agent.halt = halt
            outcome.halts.append(halt)
        except Exception as exc:  # a scripted failure: the agent carries on
            agent.conversation.append({"role": "tool", "content": f"error: {exc}"})
        else:
            if isinstance(event, Tool):
                content = orjson.dumps(event.result).decode()
                agent.conversation.append({"role": "tool", "content": content})
            else:
                agent.conversation.append({"role": "assistant", "content": event.answer})
        finally:
            ctx.step_seq += 1  # the record gate numbers every call, halted or not
    return outcome


def by_name(name: str) -> Trace:
    return next(t for t in LOOPS if t.name == name)


# --- the corpus ---------------------------------------------------------------------


async def test_normal_corpus_never_halts() -> None:
    assert len(NORMAL) >= 50
    assert max(len(t.events) for t in NORMAL) >= 30
    loop_gate = gate()  # one gate for all: its cross-run state must not leak between sessions
    fired: list[tuple[str, str]] = []
    for trace in NORMAL:
        outcome = await replay(trace, loop_gate)
        fired += [(trace.name, f"{h.reason.value}: {h.detail}") for h in outcome.halts]
    steps = sum(len(t.events) for t in NORMAL)
    print(f"loop gate false positives: {len(fired)}/{len(NORMAL)} traces ({steps} events)")
    assert fired == []


@pytest.mark.parametrize("trace", LOOPS, ids=lambda t: t.name)
async def test_each_loop_fires_with_its_reason(trace: Trace) -> None:
    outcome = await replay(trace, gate())
    assert [h.reason.value for h in outcome.halts] == [trace.expect]
    halt = outcome.halts[0]
    assert halt.detail["rule"].startswith("loops.")
    assert halt.detail["steps"], "the evidence names the steps"


# --- loop.similar ---------------------------------------------------------------------


def test_similarity_scores() -> None:
    def score(a: str, b: str) -> float:
        return similarity(text_of(a), text_of(b))

    assert score("weather in paris", "weather in london") == 0.5
    assert score("cheap flights paris", "paris flights cheap") == 1.0  # reordered
    assert score("cheap flights paris", "cheap flights to paris from lyon") == 1.0  # words added
    assert score("cheapest flights to paris", "cheap flight paris") == 1.0  # stems
    assert score("status of ORD-1001", "status of ORD-1002") == 0.0  # ids differ
    assert score("report for 2025-05-03", "report for 2025-05-04") == 0.0
    assert score("the weather", "weather in paris") == 0.0  # one word says too little
    # Arguments: only free text may differ between near-identical calls.
    assert canonical("s", {"q": "a b", "page": 1})[1] != canonical("s", {"q": "a b", "page": 2})[1]
    assert canonical("s", {"q": "a b", "page": 1})[1] == canonical("s", {"page": 1, "q": "b c"})[1]


async def test_rephrasing_loop_is_refused_with_its_evidence() -> None:
    outcome = await replay(by_name("rephrasing search loop"), gate())
    (halt,) = outcome.halts
    assert halt.reason is HaltReason.LOOP_SIMILAR
    # Step 1 asked the model; 2 searched "best flights paris", which is another search.
    assert halt.detail["rule"] == "loops.similar"
    assert (halt.detail["threshold"], halt.detail["similarity"]) == (4, 0.9)
    assert [(s["step"], s["kind"], s["name"], s["args"]) for s in halt.detail["steps"]] == [
        (3, "tool", "search", {"q": "cheapest flights to paris"}),
        (4, "tool", "search", {"q": "paris flights cheap"}),
        (5, "tool", "search", {"q": "cheap flights to paris"}),
        (6, "tool", "search", {"q": "flights paris cheapest"}),
    ]
    assert outcome.sent == 1 + 4, "the fourth rephrasing never ran"


async def test_a_near_duplicate_after_a_change_the_agent_made_starts_afresh() -> None:
    loop_gate, ctx = gate(), context(HALTING)
    commands = ["pytest -q tests", "pytest tests -q", "pytest -q tests -x", "pytest -x -q tests"]
    for n, command in enumerate(commands * 2):
        await loop_gate(ToolCall("run_tests", {"cmd": command}), ctx, Echo())
        body = f"fix {n}"
        await loop_gate(ToolCall("write_file", {"path": "a.py", "content": body}), ctx, Echo())


async def test_re_asking_the_model_fires_only_while_the_answer_stays_the_same() -> None:
    question = "Give me the order as JSON with keys id and total."
    loop_gate, ctx = gate(), context(HALTING)
    for answer in ("{'id': 7}", "id=7, total=41", "Order 7 totals 41", "here: 7 / 41"):
        await loop_gate(LLMCall("r", messages(question)), ctx, answering(answer))
    same = context(HALTING)
    for _ in range(3):
        await loop_gate(LLMCall("r", messages(question)), same, answering("Sure, order 7!"))
    with pytest.raises(Halt) as raised:
        await loop_gate(LLMCall("r", messages(question)), same, answering("Sure, order 7!"))
    assert raised.value.reason is HaltReason.LOOP_SIMILAR
    assert [s["answer"] for s in raised.value.detail["steps"][:-1]] == ["Sure, order 7!"] * 3


def answering(text: str) -> Next:
    async def transport(call: Call, ctx: RunContext) -> Result:
        return LLMResult(text, Usage(5, 5), model="m")

    return transport


# --- loop.repeat ----------------------------------------------------------------------


class Counting:
    """A tool transport that answers the same for the same canonical call, as a real one."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.calls += 1
        return ToolResult(self.value)


async def test_the_nth_identical_call_is_refused_before_it_runs() -> None:
    audit, transport, ctx = ListAudit(), Counting({"id": "ORD-7"}), context(HALTING)
    handler = compose([gate(audit)], transport)
    spelled = [
        {"order_id": "ORD-7", "opts": {"full": True, "n": 7}},
        {"opts": {"n": 7.0, "full": True}, "order_id": " ORD-7"},  # key order, 7.0, spacing
        {"order_id": "ORD-7", "opts": {"n": 7, "full": True}},
    ]
    await handler(ToolCall("get_order", spelled[0]), ctx)
    await handler(ToolCall("get_order", spelled[1]), ctx)
    with pytest.raises(Halt) as raised:
        await handler(ToolCall("get_order", spelled[2]), ctx)
    assert transport.calls == 2
    assert audit.entries == [], "a halt is the pipeline's to record, not an audit of ours"
    assert raised.value.reason is HaltReason.LOOP_REPEAT
    detail = raised.value.detail
    assert (detail["rule"], detail["threshold"]) == ("loops.repeat", 3)
    assert [s["step"] for s in detail["steps"]] == [1, 2, 3]
    assert detail["steps"][1]["args"] == {"opts": {"n": 7.0, "full": True}, "order_id": " ORD-7"}


async def test_identical_reads_separated_by_changes_are_not_repeats() -> None:
    loop_gate, ctx = gate(), context(HALTING)
    for n in range(6):  # read, write, read again: each read sees the last write
        await loop_gate(ToolCall("read_file", {"path": "a.md"}), ctx, returning(f"v{n}"))
        await loop_gate(
            ToolCall("write_file", {"path": "a.md", "content": f"v{n + 1}"}),
            ctx,
            returning({"ok": True}),
        )
    for _ in range(6):  # the same call, the same answer, the agent reporting progress
        await loop_gate(ToolCall("process_next", {"queue": "q"}), ctx, returning({"ok": True}))
        ctx.progress, ctx.progress_changes = ctx.progress_changes, ctx.progress_changes + 1


async def test_a_reported_tool_call_is_judged_like_any_other() -> None:
    loop_gate, ctx = gate(), context(HALTING)

    async def transport(call: Call, ctx: RunContext) -> Result:
        assert isinstance(call, ToolCall) and call.reported is not None
        return call.reported

    for _ in range(2):
        call = ToolCall("search", {"q": "x"}, reported=ToolResult("error: bad args"))
        await loop_gate(call, ctx, transport)
    with pytest.raises(Halt, match=r"loop\.repeat"):
        await loop_gate(
            ToolCall("search", {"q": "x"}, reported=ToolResult("error")), ctx, transport
        )


def returning(value: Any) -> Next:
    async def transport(call: Call, ctx: RunContext) -> Result:
        return ToolResult(value)

    return transport


# --- loop.error_repeat ----------------------------------------------------------------


class Malformed:
    """A tool transport that refuses the arguments every time, as a schema check does."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.calls += 1
        raise ToolArgumentError("tool 'search': page: Field required")


async def test_847_retries_of_a_malformed_call_stop_at_the_threshold() -> None:
    transport, ctx = Malformed(), context(HALTING)
    handler = compose([gate()], transport)
    halt: Halt | None = None
    for _ in range(847):
        try:
            await handler(ToolCall("search", {"q": "flights to paris"}), ctx)
        except ToolArgumentError:
            continue
        except Halt as stopped:
            halt = stopped
            break
    assert transport.calls == 3
    assert halt is not None and halt.reason is HaltReason.LOOP_ERROR_REPEAT
    assert isinstance(halt.__cause__, ToolArgumentError)
    assert halt.detail["rule"] == "loops.error_repeat"
    assert (halt.detail["threshold"], halt.detail["error"]) == (3, "ToolArgumentError")
    assert halt.detail["steps"] == [
        {
            "step": n,
            "kind": "tool",
            "name": "search",
            "at": NOW,
            "args": {"q": "flights to paris"},
            "error": "ToolArgumentError",
        }
        for n in (1, 2, 3)
    ]


async def test_only_the_same_call_failing_the_same_way_counts() -> None:
    loop_gate, ctx = gate(), context(HALTING)

    def failing(error: type[Exception]) -> Next:
        async def transport(call: Call, ctx: RunContext) -> Result:
            raise error("no")

        return transport

    plan = [
        ({"id": 1}, failing(ValueError)),
        ({"id": 1}, failing(TimeoutError)),  # another error
        ({"id": 2}, failing(ValueError)),  # another call
        ({"id": 1}, failing(ValueError)),
        ({"id": 1}, returning("ok")),  # a success starts the count afresh
        ({"id": 1}, failing(ValueError)),
        ({"id": 1}, failing(ValueError)),
    ]
    for args, transport in plan:
        try:
            await loop_gate(ToolCall("get_order", args), ctx, transport)
        except Halt:
            pytest.fail("halted before the third identical failure")
        except (ValueError, TimeoutError):
            pass
    with pytest.raises(Halt, match=r"loop\.error_repeat"):
        await loop_gate(ToolCall("get_order", {"id": 1}), ctx, failing(ValueError))


async def test_a_failing_model_call_repeated_halts() -> None:
    loop_gate, ctx = gate(), context(HALTING)

    async def refuse(call: Call, ctx: RunContext) -> Result:
        raise ValueError("400: messages[1].content: invalid")

    for _ in range(2):
        with pytest.raises(ValueError):
            await loop_gate(LLMCall("r", messages("go")), ctx, refuse)
    with pytest.raises(Halt) as raised:
        await loop_gate(LLMCall("r", messages("go")), ctx, refuse)
    assert raised.value.reason is HaltReason.LOOP_ERROR_REPEAT
    assert [s["text"] for s in raised.value.detail["steps"]] == ["go"] * 3


async def test_a_halt_from_a_later_gate_is_not_a_failure() -> None:
    loop_gate, ctx = gate(), context(HALTING)

    async def over_budget(call: Call, ctx: RunContext) -> Result:
        raise Halt(HaltReason.BUDGET_COST, "cap")

    for _ in range(5):
        with pytest.raises(Halt) as raised:
            await loop_gate(ToolCall("get_order", {"id": 1}), ctx, over_budget)
        assert raised.value.reason is HaltReason.BUDGET_COST


# --- loop.no_progress -----------------------------------------------------------------


async def test_reading_the_same_unchanged_state_halts_after_the_fifth_stale_step() -> None:
    outcome = await replay(by_name("reading the same unchanged state"), gate())
    (halt,) = outcome.halts
    assert halt.reason is HaltReason.LOOP_NO_PROGRESS
    assert (halt.detail["rule"], halt.detail["threshold"]) == ("loops.no_progress_steps", 5)
    steps = halt.detail["steps"]
    assert [s["step"] for s in steps] == [4, 5, 6, 7, 8]
    assert steps[0] == {
        "step": 4,
        "kind": "tool",
        "name": "get_status",
        "at": NOW,
        "args": {"service": "queue"},
        "result": {"queue": 12},
    }
    assert outcome.sent == 8, "decided after the call: the fifth stale step ran"


async def test_a_progress_report_or_a_new_fact_resets_the_count() -> None:
    loop_gate, ctx = gate(), context(HALTING)
    cycle: list[tuple[str, dict[str, Any]]] = [
        ("get_status", {"s": 1}),
        ("list_files", {"dir": "in"}),
        ("get_ticket", {"id": 4}),
    ]
    for round_ in range(8):
        for name, args in cycle:
            await loop_gate(ToolCall(name, args), ctx, returning("same"))
        ctx.progress, ctx.progress_changes = round_, ctx.progress_changes + 1
    # Model calls in between neither make progress nor break a stale run's count.
    stale = context(HALTING)
    for name, args in cycle:
        await loop_gate(ToolCall(name, args), stale, returning("same"))
    with pytest.raises(Halt, match=r"loop\.no_progress"):
        for name, args in cycle * 2:
            await loop_gate(LLMCall("r", messages("next?")), stale, answering(f"try {name}"))
            await loop_gate(ToolCall(name, args), stale, returning("same"))


# --- loop.ping_pong -------------------------------------------------------------------


async def test_analyzer_and_verifier_bouncing_the_same_content_halt() -> None:
    loop_gate = gate()
    analyzer = context(HALTING, agent="a", session="review-42")
    verifier = context(HALTING, agent="b", session="review-42")
    claim = "Revenue rose because of the new pricing; the churn figure is an outlier."
    rebuttal = "The churn figure is not an outlier; please re-check the pricing effect."
    turns = [(analyzer, claim), (verifier, rebuttal)] * 2 + [
        (analyzer, "Revenue rose: " + claim.lower())
    ]
    with pytest.raises(Halt) as raised:
        for ctx, answer in turns:
            await loop_gate(LLMCall("r", messages("Your turn.")), ctx, answering(answer))
            ctx.step_seq += 1
    halt = raised.value
    assert halt.reason is HaltReason.LOOP_PING_PONG
    assert (halt.detail["rule"], halt.detail["threshold"]) == ("loops.ping_pong", 4)
    assert halt.detail["session"] == "review-42"
    assert [(s["agent"], s["run"], s["step"]) for s in halt.detail["steps"]] == [
        ("a", analyzer.run_id, 1),
        ("b", verifier.run_id, 1),
        ("a", analyzer.run_id, 2),
        ("b", verifier.run_id, 2),
        ("a", analyzer.run_id, 3),
    ]
    assert halt.detail["steps"][1]["text"] == rebuttal
    # The verifier is in the same loop: its next bounce halts it too.
    with pytest.raises(Halt, match=r"loop\.ping_pong"):
        await loop_gate(LLMCall("r", messages("Your turn.")), verifier, answering(rebuttal))


async def test_two_agents_exchanging_new_content_do_not_bounce() -> None:
    loop_gate = gate()
    a = context(HALTING, agent="a", session="s-1")
    b = context(HALTING, agent="b", session="s-1")
    for n in range(10):
        await loop_gate(LLMCall("r", messages("go")), a, answering(f"claim {n} about churn"))
        await loop_gate(LLMCall("r", messages("go")), b, answering(f"check {n}: agreed"))
    # One side repeating itself is not a bounce either, when the other moves on.
    for n in range(10):
        ask = messages(f"reply to point {n}")
        await loop_gate(LLMCall("r", ask), a, answering("churn is an outlier, fine"))
        await loop_gate(LLMCall("r", ask), b, answering(f"noted point {n}"))


async def test_sessions_kept_for_ping_pong_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops_module, "MAX_SESSIONS", 8)
    loop_gate = gate()
    for n in range(50):
        ctx = context(HALTING, session=f"s-{n}")
        await loop_gate(LLMCall("r", messages("hi")), ctx, answering("hello"))
    assert len(loop_gate._sessions) == 8
    assert list(loop_gate._sessions) == [f"s-{n}" for n in range(42, 50)]
    alone = context(HALTING)  # a run alone in its session takes no slot
    await loop_gate(LLMCall("r", messages("hi")), alone, answering("hello"))
    assert alone.session not in loop_gate._sessions


# --- warn mode ------------------------------------------------------------------------


async def test_warn_mode_lets_calls_through_and_audits_once(store: SQLiteStore) -> None:
    audit = AuditLog(store)
    loop_gate, ctx = LoopGate(audit), context(loop_policy("warn"))
    await store.create_run(ctx.record)
    echo = Echo()
    for _ in range(8):
        await loop_gate(ToolCall("get_customer", {"customer_id": 7}), ctx, echo)
        ctx.step_seq += 1
    assert len(echo.calls) == 8
    entries = [e for e in await store.list_audit() if e.kind == "loop.warn"]
    # repeat warns at the third call, no_progress at the sixth (five stale steps after
    # the first); each once, however long the loop goes on.
    assert [e.payload["reason"] for e in entries] == ["loop.repeat", "loop.no_progress"]
    first = entries[0]
    assert first.run_id == ctx.run_id
    assert first.payload["rule"] == "loops.repeat" and first.payload["threshold"] == 3
    assert [s["step"] for s in first.payload["steps"]] == [1, 2, 3]
    assert first.payload["steps"][0]["args"] == {"customer_id": 7}
    assert (await audit.verify()).ok


async def test_warn_mode_warns_again_for_a_new_loop(store: SQLiteStore) -> None:
    audit = AuditLog(store)
    loop_gate, ctx = LoopGate(audit), context(loop_policy("warn"))
    await store.create_run(ctx.record)
    for n in range(2):
        for _ in range(3):
            await loop_gate(ToolCall("get_order", {"id": n}), ctx, returning("same"))
        ctx.progress, ctx.progress_changes = n, ctx.progress_changes + 1
    entries = [e for e in await store.list_audit() if e.kind == "loop.warn"]
    assert [e.payload["steps"][0]["args"] for e in entries] == [{"id": 0}, {"id": 1}]


# --- the window -----------------------------------------------------------------------


async def test_the_window_bounds_what_is_remembered() -> None:
    """Near-identical searches five calls apart: a loop in a window of 32, forgotten in 4."""

    phrasings = [
        "cheap flights paris",
        "paris flights cheap",
        "cheap paris flights",
        "flights to paris cheap",
        "cheap flights paris tonight",
        "paris cheap flights",
        "flights paris cheap",
        "cheapest flights paris",
    ]

    async def run(window: int) -> RunContext:
        loop_gate, ctx = gate(), context(loop_policy(window=window))
        for n in range(40):
            if n % 5 == 0:
                query = phrasings[n // 5]
                await loop_gate(ToolCall("search", {"q": query}), ctx, echo)
            else:
                await loop_gate(ToolCall("get_customer", {"customer_id": n}), ctx, echo)
        return ctx

    echo = Echo()
    with pytest.raises(Halt, match=r"loop\.similar"):
        await run(32)
    ctx = await run(4)
    state: RunLoops = ctx.scratch["loops"]
    assert len(state.window) == 4
    assert len(state.facts) <= 4
    assert [s.seq for s in state.window] == [37, 38, 39, 40]
