"""Loops: stop a run that goes round in circles, naming the steps that prove it.

Five detectors, each with its own halt reason and the offending steps in `Halt.detail`:

  loop.repeat        the same tool call (canonical arguments) for the Nth time while nothing
                     observed has changed since the earlier ones; refused before it runs
  loop.similar       the Nth near-identical call: a search rephrased, a word added, the same
                     question re-asked of a model that keeps giving the same answer; refused
  loop.no_progress   N tool steps in a row that observed nothing new; decided after the call
  loop.error_repeat  the same call failing with the same error N times; the Nth failure halts
  loop.ping_pong     runs of one session bouncing near-identical content back and forth

Progress is defined once and shared: a successful tool step makes progress when its
fact (the call's canonical form with its result) is not already in the window, and the
run makes progress when the agent reports a different `run.progress(...)`. Facts, not bare
results: a batch of distinct sends all answering {"status": "sent"}, or five distinct
items all in stock, learns something new at every step. Model calls neither make nor
break progress: their wording always differs, so counting them would hide a loop, and
counting them as no progress would fire on a long writing run.

The gate sits after the record and idempotency gates: a call it refuses is on the record
as halted, and a replayed tool call (a result recorded before) never reaches it. A
reported tool call (the agent ran it and only tells us) is judged as any other: refusing
it halts the run that is looping; its result is the one reported.

What a detector compares is worked out once per call (canonical arguments, token sets)
and kept with the call in a window of the last `loops.window` calls, so a step costs
one pass over the window and never re-reads an old call's arguments.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

import orjson

from corral.calls import (
    ApprovalPending,
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    ToolResult,
)
from corral.gates.base import Next, RunContext
from corral.gates.similarity import (
    Feature,
    Text,
    canonical,
    feature,
    feature_similarity,
    similarity,
    text_of,
    texts_similarity,
)
from corral.policy import Loops
from corral.providers.base import ProviderError
from corral.telemetry.audit import AuditLog
from corral.telemetry.kpis import Kpis

SCRATCH_KEY: Final = "loops"
# Sessions whose turns are kept for ping-pong, least recently used dropped first: at most
# MAX_SESSIONS x (1 + loops.ping_pong) turns, each answer cut to KEPT_ANSWER characters.
MAX_SESSIONS: Final = 2048
KEPT_ANSWER: Final = 2000
SHOWN_CHARS: Final = 200  # evidence: strings cut to this, lists and mappings to SHOWN_ITEMS
SHOWN_ITEMS: Final = 20
WARNED_KEPT: Final = 64  # warn-mode latches a run keeps before starting afresh
WRITE_SCOPES: Final = frozenset({"write", "irreversible"})

PENDING, OK, FAILED, REFUSED = range(4)  # a step's status; REFUSED: a gate after us halted it

# --- model calls ------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return "" if content is None else str(content)


def _anchor(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Which conversation a prompt belongs to: its system prompt and its first user message,
    0 when that is the question itself (a conversation's first call, or one started afresh:
    it belongs to any conversation with the same system prompt). A question re-asked in a
    conversation that grew, or afresh, stays in its conversation; the same instruction about
    other material ('classify the text above' after another document) does not."""
    system = user = 0
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "system" and index == 0:
            system = hash(_content_text(message.get("content")))
        elif role == "user":
            if index != last:
                user = hash(_content_text(message.get("content")))
            break
    return system, user


def _same_conversation(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] == b[0] and (a[1] == b[1] or not a[1] or not b[1])


def _answer_text(result: LLMResult) -> str:
    if result.text or not result.tool_calls:
        return result.text[:KEPT_ANSWER]
    return " ".join(f"{call.name} {call.arguments}" for call in result.tool_calls)[:KEPT_ANSWER]


def _digest(value: Any) -> int:
    """A result or a prompt, canonical and hashed: equal digests, equal content."""
    try:
        return hash(
            orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
        )
    except TypeError:  # orjson's encode error; e.g. an int past 64 bits
        return hash(repr(value))


# --- per-call and per-run state ---------------------------------------------------


class Step:
    """One call as the detectors remember it, worked out once when it starts."""

    __slots__ = (
        "after",
        "anchor",
        "answer",
        "answer_words",
        "args",
        "at",
        "changes",
        "error",
        "fact",
        "ident",
        "in_window",
        "key",
        "kind",
        "name",
        "question",
        "result",
        "seq",
        "shape",
        "status",
        "text",
        "texts",
    )

    def __init__(self, seq: int, kind: str, name: str, at: float) -> None:
        self.seq = seq  # the step row's number in the pipeline (call number within the run)
        self.kind = kind
        self.name = name
        self.at = at
        self.status = PENDING
        self.after = -1  # the run's epoch once the step ended
        self.changes = -1  # the run's change count once the step ended
        self.in_window = False
        self.fact: int | None = None
        self.error: str | None = None
        self.ident: Hashable = None  # what must match for "the same failing call"
        # tool calls
        self.args: Mapping[str, Any] = {}
        self.key = ""
        self.shape: str | None = None
        self.texts: tuple[Text, ...] = ()
        self.result: Any = None
        # model calls
        self.text = ""  # the question as shown in evidence
        self.question: Feature | None = None
        self.anchor: tuple[int, int] = (0, 0)
        self.answer = ""
        self.answer_words: Text | None = None

    def answer_feature(self) -> Text:
        if self.answer_words is None:  # only ping-pong and re-asked questions need it
            self.answer_words = text_of(self.answer)
        return self.answer_words


class RunLoops:
    """One run's detector state, in `ctx.scratch["loops"]`: at most `loops.window` steps,
    the facts they observed, and counters. Bounded whatever the run's length."""

    __slots__ = (
        "changes",
        "epoch",
        "facts",
        "last_seq",
        "progress_seen",
        "size",
        "streak",
        "streak_count",
        "streak_start",
        "warned",
        "window",
    )

    def __init__(self, loops: Loops, progress_changes: int) -> None:
        self.size = loops.window
        self.window: deque[Step] = deque()
        self.facts: dict[int, int] = {}  # fact -> how many steps in the window observed it
        # Bumped by every progress; identical calls in different epochs are not repeats.
        self.epoch = 0
        # Bumped only when the agent changed the world (a write-scope tool observing a new
        # fact) or reported progress. Near-identical calls in different change epochs are
        # not a loop: the same test command after an edit is work.
        self.changes = 0
        self.progress_seen = progress_changes
        self.streak: deque[Step] = deque(maxlen=loops.no_progress_steps)
        self.streak_count = 0
        self.streak_start = 0
        self.last_seq = 0
        self.warned: set[Hashable] = set()

    def sync(self, ctx: RunContext) -> None:
        """A different `run.progress(...)` since the last look is progress, whatever the step."""
        if ctx.progress_changes != self.progress_seen:
            self.progress_seen = ctx.progress_changes
            self.changes += 1
            self.progressed()

    def progressed(self) -> None:
        self.epoch += 1
        self.streak.clear()
        self.streak_count = 0

    def stalled(self, step: Step) -> None:
        if not self.streak_count:
            self.streak_start = step.seq
        self.streak.append(step)
        self.streak_count += 1

    def push(self, step: Step) -> None:
        window = self.window
        if len(window) >= self.size:
            old = window.popleft()
            old.in_window = False
            if old not in self.streak:  # a session's turns may keep the step: not its result
                old.result = None
            if old.fact is not None:
                left = self.facts[old.fact] - 1
                if left:
                    self.facts[old.fact] = left
                else:
                    del self.facts[old.fact]
        window.append(step)
        step.in_window = True

    def observe(self, step: Step, fact: int) -> bool:
        """Note the fact a step observed; true if the window had not seen it yet."""
        new = fact not in self.facts
        if step.in_window:  # a step pushed out while it ran is forgotten already
            step.fact = fact
            self.facts[fact] = self.facts.get(fact, 0) + 1
        return new


class _Turn:
    """A run's consecutive calls in a session; its content is its latest model answer, else
    its latest tool call (an agent that looks something up and then answers, answers)."""

    __slots__ = ("agent", "run_id", "step")

    def __init__(self, run_id: str, agent: str, step: Step) -> None:
        self.run_id = run_id
        self.agent = agent
        self.step = step


class _Session:
    __slots__ = ("episode", "turns", "warned")

    def __init__(self, size: int) -> None:
        self.turns: deque[_Turn] = deque(maxlen=size)
        self.episode = 0  # bumped whenever the session is seen not bouncing
        self.warned: set[Hashable] = set()


def _alternate(parties: list[str]) -> bool:
    """Exactly two parties, taking turns: A B A B ..."""
    first, second = parties[0], parties[1]
    return first != second and all(
        party == (first if index % 2 == 0 else second) for index, party in enumerate(parties)
    )


def _content_similarity(a: Step, b: Step) -> float:
    if a.kind != b.kind:
        return 0.0
    if a.kind == "tool":
        return texts_similarity(a.texts, b.texts) if a.shape == b.shape else 0.0
    return similarity(a.answer_feature(), b.answer_feature())


def _bounced(turns: list[_Turn], threshold: float) -> bool:
    """The turns alternate between two agents (or two runs of one agent) and each says
    nearly what its side said the time before."""
    if not (_alternate([t.agent for t in turns]) or _alternate([t.run_id for t in turns])):
        return False
    return all(
        _content_similarity(turns[index].step, turns[index - 2].step) >= threshold
        for index in range(2, len(turns))
    )


# --- evidence ---------------------------------------------------------------------


def _shown(value: Any, depth: int = 0) -> Any:
    """`value` as evidence: JSON-able (the audit chain hashes it), long parts cut."""
    if isinstance(value, str):
        return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else str(value)
    if depth >= 6:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())[:SHOWN_ITEMS]
        return {str(name): _shown(item, depth + 1) for name, item in items}
    if isinstance(value, list | tuple):
        return [_shown(item, depth + 1) for item in value[:SHOWN_ITEMS]]
    return _shown(repr(value))


def _step_evidence(step: Step, **extra: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "step": step.seq,
        "kind": step.kind,
        "name": step.name,
        "at": step.at,  # how fast a loop goes is part of what it cost
    }
    if step.kind == "tool":
        shown["args"] = _shown(step.args)
    else:
        shown["text"] = _shown(step.text)
    shown.update(extra)
    return shown


# --- the gate ---------------------------------------------------------------------


class LoopGate:
    def __init__(
        self,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        kpis: Kpis | None = None,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._kpis = kpis
        # Ping-pong needs several runs' calls, so it is kept here, per session, in an LRU
        # of at most MAX_SESSIONS sessions (a dropped session starts counting afresh).
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        loops = ctx.policy.loops
        run: RunLoops | None = ctx.scratch.get(SCRATCH_KEY)
        if run is None:
            run = ctx.scratch[SCRATCH_KEY] = RunLoops(loops, ctx.progress_changes)
        run.sync(ctx)
        # The number the record gate will give this step's row (it writes after we return),
        # kept increasing on our own when no record gate counts (tests, calls in parallel).
        seq = run.last_seq = max(ctx.step_seq, run.last_seq) + 1
        session = self._session(ctx, loops)
        if call.kind == "tool":
            step = Step(seq, "tool", call.name, self._clock())
            step.args = call.args
            step.key, step.shape, step.texts = canonical(call.name, call.args)
            await self._before_tool(step, run, session, ctx, loops)
        else:
            step = Step(seq, "llm", call.model, self._clock())
            self._read_prompt(step, call)
            await self._before_llm(step, run, ctx, loops)
        run.push(step)
        try:
            result = await next(call, ctx)
        except (Halt, ApprovalPending):  # an answer held for a human is no failure either
            step.status = REFUSED
            raise
        except Exception as exc:
            step.status = FAILED
            step.error = type(exc).__name__
            step.after, step.changes = run.epoch, run.changes
            halt = await self._failed(step, call, run, ctx, loops)
            if halt is not None:
                if isinstance(exc, ProviderError) and exc.usage is not None:  # cut, then halted
                    model = getattr(call, "target", None) or ""
                    halt.spent = LLMResult("", exc.usage, model, cost_usd=exc.cost_usd)
                raise halt from exc
            raise
        except BaseException:  # cancelled: neither a failure nor a fact
            step.status = REFUSED
            raise
        if isinstance(result, ToolResult):
            await self._after_tool(step, result, run, session, ctx, loops)
            return result
        if result.replayed:  # a held answer sent again once decided: the same turn, not a new one
            step.status = REFUSED
            return result
        try:
            await self._after_llm(step, result, run, session, ctx, loops)
        except Halt as halt:  # decided on the answer: it was paid for, and is recorded
            halt.spent = result
            raise
        return result

    # -- before the call ----------------------------------------------------------

    async def _before_tool(
        self, step: Step, run: RunLoops, session: _Session | None, ctx: RunContext, loops: Loops
    ) -> None:
        threshold = loops.similar.threshold
        epoch, changes = run.epoch, run.changes
        key, shape, texts = step.key, step.shape, step.texts
        repeats: list[Step] = []
        similar: list[tuple[Step, float]] = []
        for seen in run.window:
            if seen.shape != shape:
                continue
            if seen.key == key:
                # An identical call repeats only while nothing new was observed since it
                # ended: a job polled until its status changes, a file read, written and
                # read again, are not loops. A failed one is error_repeat's to count.
                if seen.status == OK and seen.after == epoch:
                    repeats.append(seen)
                    similar.append((seen, 1.0))
            elif seen.changes == changes and seen.status in (OK, FAILED):
                # Near-identical calls count across new results (a rephrased search finds
                # a slightly different page each time, which must not hide the loop), but
                # not across a change the agent made.
                score = texts_similarity(seen.texts, texts)
                if score >= threshold:
                    similar.append((seen, score))
        if len(repeats) + 1 >= loops.repeat:
            found = [*repeats, step]
            halt = await self._fire(
                ctx,
                loops,
                HaltReason.LOOP_REPEAT,
                f"tool '{step.name}' called {len(found)} times with the same arguments, "
                "with nothing new observed in between",
                {
                    "rule": "loops.repeat",
                    "threshold": loops.repeat,
                    "steps": [_step_evidence(s) for s in found],
                },
                run.warned,
                ("repeat", key, epoch),
            )
            if halt is not None:
                raise halt
        elif len(similar) + 1 >= loops.similar.count:
            halt = await self._fire(
                ctx,
                loops,
                HaltReason.LOOP_SIMILAR,
                f"{len(similar) + 1} near-identical calls to tool '{step.name}' "
                f"(similarity >= {threshold:g})",
                {
                    "rule": "loops.similar",
                    "threshold": loops.similar.count,
                    "similarity": threshold,
                    "steps": [
                        *(_step_evidence(s, similarity=round(score, 3)) for s, score in similar),
                        _step_evidence(step, similarity=1.0),
                    ],
                },
                run.warned,
                ("similar", shape, changes),
            )
            if halt is not None:
                raise halt
        if session is not None:
            turns = self._turns_with(session, step, ctx)
            if turns is not None:  # a bounce by tool call is refused before it runs
                await self._ping_pong(session, turns, ctx, loops)

    @staticmethod
    def _read_prompt(step: Step, call: LLMCall) -> None:
        """The question of a model call: its last message, if the user (or an agent
        playing one) asks it. A tool message last is a result, judged on the tool step."""
        messages = call.messages
        if not messages:
            return
        last = messages[-1]
        step.text = _content_text(last.get("content"))  # evidence, whoever wrote it
        if last.get("role") == "user":
            step.question = feature(step.text)
            step.anchor = _anchor(messages)

    async def _before_llm(self, step: Step, run: RunLoops, ctx: RunContext, loops: Loops) -> None:
        """A re-asked question: the same conversation asking its model nearly the same thing
        again, with nothing new observed meanwhile, after getting nearly the same answer
        each time. Asking again about new material is work; so is a long writing run that
        asks to continue and gets a new section each time."""
        question = step.question
        if question is None:
            return
        threshold, count = loops.similar.threshold, loops.similar.count
        asked: list[tuple[Step, float]] = []
        for seen in run.window:
            if (
                seen.kind == "llm"
                and seen.question is not None
                and seen.status == OK
                and seen.after == run.epoch
                and seen.name == step.name
                and _same_conversation(seen.anchor, step.anchor)
            ):
                score = feature_similarity(seen.question, question)
                if score >= threshold:
                    asked.append((seen, score))
        if len(asked) + 1 < count:
            return
        latest = asked[-1][0].answer_feature()
        same = [
            (seen, score)
            for seen, score in asked
            if similarity(seen.answer_feature(), latest) >= threshold
        ]
        if len(same) + 1 < count:
            return
        halt = await self._fire(
            ctx,
            loops,
            HaltReason.LOOP_SIMILAR,
            f"the same question asked of '{step.name}' {len(same) + 1} times, "
            "getting the same answer",
            {
                "rule": "loops.similar",
                "threshold": count,
                "similarity": threshold,
                "steps": [
                    *(
                        _step_evidence(s, similarity=round(score, 3), answer=_shown(s.answer))
                        for s, score in same
                    ),
                    _step_evidence(step, similarity=1.0),
                ],
            },
            run.warned,
            ("similar", step.name, step.anchor[0], run.epoch),
        )
        if halt is not None:
            raise halt

    # -- after the call -----------------------------------------------------------

    async def _after_tool(
        self,
        step: Step,
        result: ToolResult,
        run: RunLoops,
        session: _Session | None,
        ctx: RunContext,
        loops: Loops,
    ) -> None:
        run.sync(ctx)
        if run.observe(step, hash((step.key, _digest(result.value)))):
            tool = ctx.policy.tools.get(step.name)
            if tool is not None and tool.scope in WRITE_SCOPES:
                run.changes += 1
            run.progressed()
        else:
            run.stalled(step)
        step.status = OK
        step.after, step.changes = run.epoch, run.changes
        step.result = result.value
        if session is not None:
            self._commit(session, step, ctx)
        if run.streak_count < loops.no_progress_steps:
            return
        halt = await self._fire(
            ctx,
            loops,
            HaltReason.LOOP_NO_PROGRESS,
            f"{run.streak_count} tool steps in a row observed nothing new",
            {
                "rule": "loops.no_progress_steps",
                "threshold": loops.no_progress_steps,
                "steps": [_step_evidence(s, result=_shown(s.result)) for s in run.streak],
            },
            run.warned,
            ("no_progress", run.streak_start),
        )
        if halt is not None:
            raise halt

    async def _after_llm(
        self,
        step: Step,
        result: LLMResult,
        run: RunLoops,
        session: _Session | None,
        ctx: RunContext,
        loops: Loops,
    ) -> None:
        step.status = OK
        step.after, step.changes = run.epoch, run.changes
        step.answer = _answer_text(result)
        if session is not None and self._commit(session, step, ctx):
            # An answer is known only now: a bounce by model call halts after it.
            await self._ping_pong(session, list(session.turns), ctx, loops)

    async def _failed(
        self, step: Step, call: Call, run: RunLoops, ctx: RunContext, loops: Loops
    ) -> Halt | None:
        """The same call failing the same way again: count it since that call (a tool call;
        for a model, any call to it) last succeeded."""
        if call.kind == "tool":
            step.ident = step.key
        else:
            step.ident = _digest(call.messages)
        chain = [step]
        for seen in reversed(run.window):
            if seen is step or seen.kind != step.kind or seen.name != step.name:
                continue
            if seen.status == OK and (step.kind == "llm" or seen.key == step.key):
                break
            if seen.status == FAILED and seen.error == step.error and seen.ident == step.ident:
                chain.append(seen)
        if len(chain) < loops.error_repeat:
            return None
        chain.reverse()
        return await self._fire(
            ctx,
            loops,
            HaltReason.LOOP_ERROR_REPEAT,
            f"the same call to '{step.name}' failed {len(chain)} times with {step.error}",
            {
                "rule": "loops.error_repeat",
                "threshold": loops.error_repeat,
                "error": step.error,
                "steps": [_step_evidence(s, error=s.error) for s in chain],
            },
            run.warned,
            ("error_repeat", step.ident, step.error, chain[0].seq),
        )

    # -- ping-pong ----------------------------------------------------------------

    def end_session(self, key: str) -> None:
        """Forget a session's turns: none of its runs is open any more (a run that
        reopens it starts counting bounces afresh)."""
        self._sessions.pop(key, None)

    def _session(self, ctx: RunContext, loops: Loops) -> _Session | None:
        """The session's turns; none for a run alone in its own session (it cannot bounce,
        and must not push a real session out of the LRU)."""
        key = ctx.session
        if key == ctx.run_id:
            return None
        sessions = self._sessions
        found = sessions.get(key)
        size = 1 + loops.ping_pong
        if found is None:
            found = sessions[key] = _Session(size)
            if len(sessions) > MAX_SESSIONS:
                sessions.popitem(last=False)
        else:
            sessions.move_to_end(key)
            if found.turns.maxlen != size:  # another policy snapshot for this run
                found.turns = deque(found.turns, maxlen=size)
        return found

    @staticmethod
    def _turns_with(session: _Session, step: Step, ctx: RunContext) -> list[_Turn] | None:
        """The session's turns as they would be with `step` in them; None if it would
        change nothing (a tool call in a turn that has an answer already)."""
        turns = list(session.turns)
        turn = _Turn(ctx.run_id, ctx.record.agent, step)
        if turns and turns[-1].run_id == ctx.run_id:
            if step.kind == "tool" and turns[-1].step.kind == "llm":
                return None
            turns[-1] = turn
        else:
            turns.append(turn)
        return turns

    @staticmethod
    def _commit(session: _Session, step: Step, ctx: RunContext) -> bool:
        """Put `step` in the session's turns; false if that changes nothing."""
        turns = session.turns
        if turns and turns[-1].run_id == ctx.run_id:
            if step.kind == "tool" and turns[-1].step.kind == "llm":
                return False
            turns[-1] = _Turn(ctx.run_id, ctx.record.agent, step)
        else:
            turns.append(_Turn(ctx.run_id, ctx.record.agent, step))
        return True

    async def _ping_pong(
        self, session: _Session, turns: list[_Turn], ctx: RunContext, loops: Loops
    ) -> None:
        need = 1 + loops.ping_pong
        bounced = turns[-need:]
        if len(bounced) < need or not _bounced(bounced, loops.similar.threshold):
            session.episode += 1
            return
        halt = await self._fire(
            ctx,
            loops,
            HaltReason.LOOP_PING_PONG,
            f"runs {', '.join(sorted({t.run_id for t in bounced}))} of session "
            f"'{ctx.session}' bounced near-identical content {loops.ping_pong} times",
            {
                "rule": "loops.ping_pong",
                "threshold": loops.ping_pong,
                "similarity": loops.similar.threshold,
                "session": ctx.session,
                "steps": [
                    _step_evidence(
                        t.step,
                        run=t.run_id,
                        agent=t.agent,
                        **({"text": _shown(t.step.answer)} if t.step.kind == "llm" else {}),
                    )
                    for t in bounced
                ],
            },
            session.warned,
            ("ping_pong", session.episode),
        )
        if halt is not None:
            raise halt

    # -- firing -------------------------------------------------------------------

    async def _fire(
        self,
        ctx: RunContext,
        loops: Loops,
        reason: HaltReason,
        message: str,
        detail: dict[str, Any],
        warned: set[Hashable],
        subject: Hashable,
    ) -> Halt | None:
        """The Halt to raise; under `action: warn`, a `loop.warn` audit event instead, once
        per firing: `subject` names the loop, and a loop that goes on warns no more."""
        if loops.action == "halt":
            if self._kpis is not None:
                self._kpis.loop(ctx.record.agent_type, reason.value, "halt")
            return Halt(reason, message, detail)
        if subject not in warned:
            if self._kpis is not None:
                self._kpis.loop(ctx.record.agent_type, reason.value, "warn")
            if len(warned) >= WARNED_KEPT:
                warned.clear()
            warned.add(subject)
            await self._audit.append(
                "loop.warn", {"reason": reason.value, "message": message, **detail}, ctx.run_id
            )
        return None
