"""What the faults suite, the crash matrix and the memory test share.

- `FaultySim`: the simulated provider with a seeded mix of fault kinds (the sim itself
  takes one fault per model) and a ledger of what it answered, keyed by the tag each
  request's last user message carries, so every call can be matched to its step.
- `write_policy`: the example policy with millisecond retries, breaker and timeouts, no
  rate-limit waits, an Anthropic-kind provider on the sim and a team of two agents.
- `serving`: a Gateway under uvicorn on a loopback port, in this process.
- `GatewayProcess`, `start_agent`: gateway_proc.py's gateway and SDK agent as
  subprocesses, to kill -9 or to measure apart.
- The invariants the tests check after their calls, over the store and the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from aiohttp import web

import corral
from corral import Supervisor
from corral.calls import RunStatus
from corral.gateway.app import Gateway
from corral.gateway.keys import issue
from corral.gateway.server import config
from corral.policy import Policy
from corral.providers.pricing import ModelPrice
from corral.providers.sim import Fault, FaultKind, SimProvider
from corral.providers.sim_wire import Answer, Wire, last_user_text
from corral.state import RunRecord, StepRecord, Store
from corral.state.memory import MemoryCounters
from corral.telemetry.audit import AuditLog
from tests import support

GATEWAY_PROC = Path(__file__).with_name("gateway_proc.py")
TAG = re.compile(r"\[#([A-Za-z0-9_.:-]+)\]")
BIG = "[big]"  # a request whose answer is as long as its output limit lets it be
BIG_TOKENS = 1500
# Faults after which the sim still wrote its whole answer, usage included.
WHOLE = frozenset({None, FaultKind.SLOW_FIRST_BYTE, FaultKind.SLOW_STREAM})
MICRO = 1_000_000

SESSION_USD = 0.25  # the operational type's session cap in the test policy
TEAM = "duo"

CLAUDE_MODEL = (
    "  claude: {provider: anthropic, model: claude-sonnet-4-5, context_window: 200000,\n"
    "           price: {input_per_mtok: 3.00, output_per_mtok: 15.00}}\n"
)


def tagged(tag: str, text: str, *, big: bool = False) -> str:
    return f"[#{tag}] {BIG + ' ' if big else ''}{text}"


def tag_of(step: StepRecord) -> str | None:
    """The tag of the request a model call's step was made for (its last message has it)."""
    messages = step.input.get("messages") if isinstance(step.input, dict) else None
    if not messages:
        return None
    found = TAG.search(orjson.dumps(messages[-1]).decode())
    return found.group(1) if found else None


# --- the upstream ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answered:
    """One answer the sim began to write: its usage as the sim reports it, and the fault."""

    tag: str | None
    model: str  # the upstream model
    input_tokens: int
    output_tokens: int
    fault: FaultKind | None
    stream: bool

    @property
    def whole(self) -> bool:
        return self.fault in WHOLE


class FaultySim(SimProvider):
    """The sim, with `mix`: (probability, fault) pairs drawn from its seeded generator for
    every request (the sim alone takes one fault per model; these tests want every kind
    at once); `sequence`: the faults of the first requests, in order (None for none),
    before the mix. With neither it is the plain sim, faults set with set_fault."""

    def __init__(
        self,
        mix: Sequence[tuple[float, Fault]] = (),
        *,
        seed: int = 0,
        sequence: Sequence[Fault | None] = (),
    ) -> None:
        super().__init__(seed=seed)
        assert sum(p for p, _ in mix) <= 1.0
        self.mix = list(mix)
        self._sequence = list(sequence)
        self.drawn: Counter[str] = Counter()  # per upstream request: the fault kind, or "none"
        self.begun: list[Answered] = []  # every answer the sim began to send
        self.answered: list[Answered] = []  # those it sent whole, after sending
        self._tags: dict[int, tuple[str | None, bool]] = {}

    def _fault_for(self, spec: str | None, model: str) -> Fault | None:
        if self._sequence and spec is None:
            return self._sequence.pop(0)
        if spec is not None or not self.mix:
            return super()._fault_for(spec, model)
        draw = self._random.random()
        for probability, fault in self.mix:
            if draw < probability:
                self.drawn[fault.kind.value] += 1
                return fault
            draw -= probability
        self.drawn["none"] += 1
        return None

    def _answer(
        self, body: Mapping[str, Any], model: str, messages: list[Any], script: Any
    ) -> Answer:
        answer = super()._answer(body, model, messages, script)
        text = last_user_text(messages)
        if BIG in text:  # as long as the limit lets it be (the sim stops at max_tokens)
            limit = body.get("max_tokens")
            tokens = BIG_TOKENS if not isinstance(limit, int) else min(limit, BIG_TOKENS)
            answer = replace(answer, output_tokens=tokens)
        found = TAG.search(text)
        self._tags[answer.seq] = (found.group(1) if found else None, body.get("stream") is True)
        return answer

    def _note(self, answer: Answer, fault: Fault | None) -> Answered:
        tag, stream = self._tags.pop(answer.seq, (None, False))
        kind = fault.kind if fault is not None else None
        noted = Answered(tag, answer.model, answer.input_tokens, answer.output_tokens, kind, stream)
        self.begun.append(noted)
        return noted

    async def _whole(
        self, request: web.BaseRequest, wire: Wire, answer: Answer, fault: Fault | None
    ) -> web.StreamResponse:
        noted = self._note(answer, fault)
        response = await super()._whole(request, wire, answer, fault)
        if noted.whole:
            self.answered.append(noted)
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        wire: Wire,
        answer: Answer,
        body: Mapping[str, Any],
        fault: Fault | None,
    ) -> web.StreamResponse:
        noted = self._note(answer, fault)
        response = await super()._stream(request, wire, answer, body, fault)
        if noted.whole:
            self.answered.append(noted)
        return response


# --- the policy ------------------------------------------------------------------------------


def write_policy(
    tmp_path: Path,
    sim: SimProvider,
    *,
    models: str = "",
    routes: str = "",
    agents: str = "",
    edits: Mapping[str, str] | None = None,
) -> Path:
    """The example policy for these tests (SIM_API_KEY must be set):

    - upstream calls time out after 2 s without a byte (a hang; a loaded loop never takes
      that long to read an answer that came), retries back off in milliseconds,
      Retry-After is honoured up to a total wait of 0.5 s, the retry budget is wide (half
      the calls may be retried), and a breaker that opens stays open 100 ms: every delay
      of the example scaled from seconds to milliseconds;
    - rate limits high enough never to make a call wait (the suite is about faults);
    - `claude` on an Anthropic-kind provider (the sim speaks both APIs), on route `mixed`;
    - agents `planner` and `critic` of team `duo` (they share session ids), and a session
      cap of 0.25 USD, so a team's session can bind before its runs' task caps do;
    - `models`, `routes` and `agents` added (YAML lines of those sections), then `edits`.
    """
    team = (
        f"  planner: {{type: operational, route: mixed, tools: [get_customer], team: {TEAM}}}\n"
        f"  critic:  {{type: operational, route: default, tools: [get_customer], team: {TEAM}}}\n"
    )
    text = {
        'http://127.0.0.1:4010/v1", api_key_env: SIM_API_KEY}': (
            f'{sim.openai_base_url}", api_key_env: SIM_API_KEY, timeout: 2s}}'
        ),
        '"https://api.anthropic.com", api_key_env: ANTHROPIC_API_KEY}': (
            f'"{sim.base_url}", api_key_env: SIM_API_KEY, timeout: 2s}}'
        ),
        "\nroutes:": f"\n{CLAUDE_MODEL}{models}\nroutes:",
        "default: [smart, fast]": f"default: [smart, fast]\n  mixed: [claude, fast]\n{routes}",
        "session: {usd: 0.50,": f"session: {{usd: {SESSION_USD},",
        "requests_per_minute: 600, tokens_per_minute: 200000": (
            "requests_per_minute: 6000000, tokens_per_minute: 1000000000"
        ),
        "rate_limit: {tokens_per_minute: 50000, priority: low}": (
            "rate_limit: {tokens_per_minute: 1000000000, priority: low}"
        ),
        "agents:\n": f"agents:\n{team}{agents}",
        "retry:   {max_attempts: 5, base_delay: 1s, max_delay: 8s, jitter: full, "
        "max_total_wait: 30s}": (
            "retry:   {max_attempts: 4, base_delay: 2ms, max_delay: 20ms, jitter: full, "
            "max_total_wait: 500ms, budget: 0.5}"
        ),
        "slow_call: 10s": "slow_call: 2s",
        "open_for: 30s": "open_for: 100ms",
    }
    path = support.example_policy(tmp_path, text)
    if edits:  # on the text above, each of which must apply
        policy = path.read_text()
        for old, new in edits.items():
            assert old in policy, old
            policy = policy.replace(old, new)
        path.write_text(policy)
    return path


async def agent_key(sup: Supervisor, agent: str) -> str:
    key, _ = await issue(sup.store, agent=agent, admin=False, expires_in=None, now=time.time())
    return key


# --- serving ---------------------------------------------------------------------------------


def loopback_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[str]:
    """The gateway under uvicorn on a loopback port in this process; yields its URL. On the
    way out uvicorn shuts down and the gateway closes its supervisor (lifespan)."""
    sock = loopback_socket()
    server = uvicorn.Server(config(gateway, "127.0.0.1", 0, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def child_env() -> dict[str, str]:
    """This environment, with PYTHONPATH finding corral (wherever this process found it)
    and the tests package."""
    source = str(Path(corral.__file__).resolve().parents[1])
    root = str(Path(__file__).resolve().parents[2])
    path = [source, root, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


def start_agent(policy: Path, journal: Path) -> subprocess.Popen[str]:
    """gateway_proc.py's SDK agent on `policy`, journaling to `journal`."""
    return subprocess.Popen(
        [sys.executable, str(GATEWAY_PROC), "agent", str(policy), str(journal)],
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
    )


class GatewayProcess:
    """gateway_proc.py in a subprocess on `policy`; `kill()` is a SIGKILL. Its log goes to
    a file beside the policy (a pipe nobody reads would stall a process that logs much),
    which `log()` reads."""

    def __init__(self, policy: Path, *, session_idle: float = 1800.0) -> None:
        self._log = policy.with_name(f"gateway-{time.monotonic_ns()}.log")
        with self._log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(GATEWAY_PROC), "gateway", str(policy), str(session_idle)],
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env(),
                text=True,
            )
        self.url = ""

    async def started(self, wait: float = 30.0) -> GatewayProcess:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), wait)
        if not line.startswith("port "):
            self.kill()
            raise AssertionError(f"gateway_proc did not start: {line!r}\n{self.log()}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def log(self) -> str:
        return self._log.read_text()

    def kill(self) -> None:
        """SIGKILL: no handler, no shutdown, nothing flushed (an OOM kill, a power cut)."""
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL, self.proc.returncode

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down and the gateway closes its supervisor."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- invariants ------------------------------------------------------------------------------


@dataclass
class Ledger:
    """The store's record of a test's runs, read once after the calls."""

    runs: dict[str, RunRecord]
    steps: dict[str, list[StepRecord]]
    inflight: dict[str, int] = field(default_factory=dict)

    @classmethod
    async def read(cls, store: Store) -> Ledger:
        runs = {run.id: run for run in await store.list_runs(limit=10**9)}
        steps = {run_id: await store.list_steps(run_id) for run_id in runs}
        inflight = {run_id: len(await store.inflight(run_id)) for run_id in runs}
        return cls(runs, steps, inflight)

    def all_steps(self) -> Iterable[StepRecord]:
        for steps in self.steps.values():
            yield from steps

    def llm_steps_by_tag(self) -> dict[str | None, list[StepRecord]]:
        found: dict[str | None, list[StepRecord]] = defaultdict(list)
        for step in self.all_steps():
            if step.kind == "llm" and step.status != "interrupted":
                found[tag_of(step)].append(step)
        return found


def price_of(policy: Policy, model: str) -> ModelPrice:
    price = policy.prices[model]
    assert price is not None, model
    return price


def expected_cost(policy: Policy, step: StepRecord) -> float:
    """The step's tokens at the price of the model that answered (none here is cached)."""
    assert step.model_used is not None, step
    price = price_of(policy, step.model_used)
    return (
        step.input_tokens * price.input_per_mtok + step.output_tokens * price.output_per_mtok
    ) / MICRO


def check_no_hold_in_flight(counters: MemoryCounters, ledger: Ledger) -> None:
    """(b) Nothing held in the counters, no write-ahead record left in the store."""
    held = {key: c.held for key, c in counters._counters.items() if c.held}
    assert held == {}, held
    left = {run_id: n for run_id, n in ledger.inflight.items() if n}
    assert left == {}, left


def check_totals(ledger: Ledger) -> None:
    """Every run's totals are the sum of its steps: nothing recorded twice or left out."""
    for run_id, run in ledger.runs.items():
        steps = ledger.steps[run_id]
        counted = [s for s in steps if s.status in ("ok", "interrupted")]
        assert run.cost_usd == _approx(sum(s.cost_usd for s in steps)), run
        assert run.input_tokens == sum(s.input_tokens for s in steps), run
        assert run.output_tokens == sum(s.output_tokens for s in steps), run
        assert run.steps == len(counted), run
        assert run.tool_calls == sum(s.kind == "tool" for s in counted), run


def _totals(runs: Iterable[RunRecord]) -> dict[str, float]:
    runs = list(runs)
    return {
        "usd": sum(r.cost_usd for r in runs),
        "tokens": sum(r.input_tokens + r.output_tokens for r in runs),
        "tool_calls": sum(r.tool_calls for r in runs),
        "steps": sum(r.steps for r in runs),
    }


def check_caps(policy: Policy, ledger: Ledger) -> None:
    """(d) No run past its agent type's task caps; no session (the team's, or the agent's
    own; a run without one is a session of its own) past its session caps: a team's
    members are each held to their own type's, on the session's shared total, so the
    total stays within the largest of them."""
    sessions: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in ledger.runs.values():
        assert run.topup is None  # caps as the policy says
        task = policy.agent_types[run.agent_type].task
        for dimension, spent in _totals([run]).items():
            cap = getattr(task, dimension, None)
            assert cap is None or spent <= cap + 1e-9, (dimension, run)
        # A run without a session is a session of its own.
        scope = policy.agents[run.agent].session_scope(run.agent)
        sessions[(scope, run.session or run.id)].append(run)
    for key, runs in sessions.items():
        kinds = [policy.agent_types[run.agent_type].session for run in runs]
        for dimension, spent in _totals(runs).items():
            caps = [getattr(kind, dimension, None) for kind in kinds]
            if None not in caps:
                assert spent <= max(caps) + 1e-9, (key, dimension, spent, runs)


async def check_audit(store: Store) -> int:
    """(e) The hash chain verifies end to end; returns its length."""
    verification = await AuditLog(store).verify()
    assert verification.ok, verification
    return verification.count


def _approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


def micro(usd: float) -> int:
    """USD as the budget counters commit it."""
    return math.ceil(usd * MICRO)


def running(ledger: Ledger) -> list[RunRecord]:
    return [run for run in ledger.runs.values() if run.status is RunStatus.RUNNING]
