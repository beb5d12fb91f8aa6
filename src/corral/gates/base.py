"""The gate mechanism: a RunContext, the `Next` continuation, and composition.

A gate is any object with `async def __call__(call, ctx, next) -> Result`. It may
inspect or change the call, call `next` zero or one time (more for a retry), and
raise Halt to stop the run. `compose` nests gates around a transport once, when a
supervisor is built, so a call pays one function frame per gate and nothing else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from corral.calls import Call, Result, Usage
from corral.policy import Agent, Policy

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


@dataclass(slots=True)
class RunContext:
    """Everything the gates know about the run a call belongs to.

    Built once per run; gates read the policy snapshot taken at run start, so a
    reload never changes the rules under a run in flight.
    """

    run_id: str
    agent: str
    agent_type: str
    task: str | None
    session: str
    policy: Policy
    agent_policy: Agent
    started_at: float
    trace_id: str
    deadline: float | None = None  # wall-clock time past which the run halts with `timeout`
    topup: dict[str, float] = field(default_factory=dict)  # budget added by `dlq retry`
    call_seq: int = 0  # calls made, restored from the checkpoint on resume
    step_seq: int = 0  # step rows written, always growing
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    steps: int = 0
    tool_calls: int = 0
    kill_requested_at: float | None = None
    last_checkpoint_id: int | None = None
    recent: deque[StepView] = field(default_factory=lambda: deque(maxlen=10))


def compose(gates: Sequence[Gate], transport: Next) -> Next:
    """Nest `gates` around `transport`: the first gate is the outermost."""
    handler = transport
    for gate in reversed(gates):
        # partial, not a wrapper coroutine: calling it starts the gate's own coroutine.
        handler = partial(gate, next=handler)
    return handler
