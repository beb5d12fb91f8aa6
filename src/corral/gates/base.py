"""The gate mechanism: a RunContext, the `Next` continuation, and composition.

A gate is any object with `async def __call__(call, ctx, next) -> Result`. It may
inspect or change the call, call `next` zero or one time (more for a retry), and
raise Halt to stop the run. `compose` nests gates around a transport once, when a
supervisor is built, so a call pays one function frame per gate and nothing else.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.trace import Span

from corral.calls import Call, HaltReason, Result
from corral.policy import Agent, Policy
from corral.state import RunRecord

Next = Callable[[Call, "RunContext"], Awaitable[Result]]


class Gate(Protocol):
    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result: ...


@dataclass(frozen=True, slots=True)
class StepView:
    """A recent step as the escalation packet shows it."""

    seq: int
    kind: str
    name: str
    input: Any
    output: Any
    status: str
    error: str | None


@dataclass(frozen=True, slots=True)
class Cap:
    """One hard cap on one dimension at one level, in counter units (micro-USD for usd)."""

    level: str  # task | session | fleet | global
    dimension: str  # usd | tokens | tool_calls | steps
    key: str  # counter key; windowed caps get the window number appended
    limit: int
    window: float | None  # seconds, for caps that reset every hour, day or week
    reason: HaltReason
    rule: str  # where the policy sets it, e.g. agent_types.operational.session


@dataclass(slots=True)
class RunContext:
    """Everything the gates know about the run a call belongs to.

    Built once per run; gates read the policy snapshot taken at run start, so a
    reload never changes the rules under a run in flight.
    """

    record: RunRecord  # the run with its running totals; the record gate keeps it current
    session: str
    policy: Policy
    agent_policy: Agent
    caps: tuple[Cap, ...] = ()
    deadline: float | None = None  # wall-clock time past which the run halts with `timeout`
    call_seq: int = 0  # calls made; restored from the checkpoint on resume (idempotency keys)
    step_seq: int = 0  # step rows written; always grows, also across a resume
    kill_requested_at: float | None = None
    recent: deque[StepView] = field(default_factory=lambda: deque(maxlen=10))
    # What the agent last reported with `run.progress(...)` (JSON-able), and how many
    # times it reported a value that differed from the one before.
    progress: Any = None
    progress_changes: int = 0
    # Per-run state a gate keeps for itself, under the gate's own key (e.g. "loops").
    scratch: dict[str, Any] = field(default_factory=dict)
    # The agent runs its tools itself (the gateway's clients): the approval gate acts on
    # the model's answers, before a tool call in them reaches the agent. How long it may
    # hold such an answer for a decision (None: until the approval's own timeout).
    tools_in_client: bool = False
    approval_hold: float | None = None
    # The deadline gate's timers of the calls in flight: stopped while a call of the run
    # waits for a human, and moved on by that wait when it ends.
    deadline_timers: list[asyncio.Timeout] = field(default_factory=list)
    # The run's own span (the SDK's invoke_agent) and the context its calls' spans start
    # in; None at the gateway, where each request is a trace of its own.
    span: Span | None = None
    trace_context: Context | None = None
    _waiting: int = 0  # calls waiting for a human now
    _waiting_since: float = 0.0  # the run's clock when the first of them began
    _paused: list[tuple[asyncio.Timeout, float]] = field(default_factory=list)
    _paused_at: float = 0.0  # the event loop's time then (the timers run on it)

    @property
    def run_id(self) -> str:
        return self.record.id

    def human_wait_started(self, now: float) -> None:
        """A call waits for a human: the run's wall clock stops (the deadline's timers of
        its calls in flight are held) until no call of it waits any more. Calls waiting
        at once count once."""
        self._waiting += 1
        if self._waiting > 1:
            return
        self._waiting_since = now
        self._paused_at = asyncio.get_running_loop().time()
        self._paused = []
        for timer in self.deadline_timers:
            self._pause(timer)

    def human_wait_ended(self, now: float) -> None:
        """The wait is over: it is the run's `waiting_s`, not wall-clock time its cap
        counts, so the deadline (and each timer held) moves on by as much."""
        self._waiting -= 1
        if self._waiting:
            return
        seconds = max(0.0, now - self._waiting_since)
        self.record = replace(self.record, waiting_s=self.record.waiting_s + seconds)
        if self.deadline is not None:
            self.deadline += seconds
        shift = asyncio.get_running_loop().time() - self._paused_at
        for timer, when in self._paused:
            if not timer.expired():
                timer.reschedule(when + shift)
        self._paused = []

    def waiting_now(self, now: float) -> float:
        """Seconds the run has been waiting for a human in the wait under way, if any."""
        return max(0.0, now - self._waiting_since) if self._waiting else 0.0

    def track_deadline(self, timer: asyncio.Timeout) -> None:
        """The deadline gate's timer of a call starting: held at once if a call waits."""
        self.deadline_timers.append(timer)
        if self._waiting:
            self._pause(timer)

    def _pause(self, timer: asyncio.Timeout) -> None:
        when = timer.when()
        if when is not None:
            self._paused.append((timer, when))
            timer.reschedule(None)


def compose(gates: Sequence[Gate], transport: Next) -> Next:
    """Nest `gates` around `transport`: the first gate is the outermost."""
    handler = transport
    for gate in reversed(gates):
        # partial, not a wrapper coroutine: calling it starts the gate's own coroutine.
        handler = partial(gate, next=handler)
    return handler
