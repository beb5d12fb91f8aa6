"""The circuit breaker gate: opens on failure and slow-call rates, probes, per provider+model."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from corral.calls import (
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    StreamDelta,
    ToolCall,
    Usage,
)
from corral.cli import app
from corral.gates.base import Next, RunContext, compose
from corral.gates.breaker import BreakerGate, CircuitOpen, breaker_report, breaker_settings
from corral.policy import Breaker
from corral.providers.base import FailureKind, ProviderError
from corral.providers.http import HttpClient
from corral.providers.openai import OpenAIAdapter
from corral.providers.sim import Fault, SimProvider
from corral.runtime.transport import Transport
from corral.state import MemoryCounters
from corral.state.counters import BreakerState
from tests.state.conftest import FakeClock

from .conftest import POLICY, context, messages, policy

# Two failures of three open it; three slow calls of four do; 30 s open; two probes.
BREAKER = """
breaker: {window: 4, min_calls: 3, failure_rate: 0.5, slow_call: 2s, slow_rate: 0.75,
          open_for: 30s, half_open_probes: 2}
"""
M, BIG = "breaker:p:test-model", "breaker:p:test-big"


def down(kind: FailureKind = FailureKind.UNAVAILABLE) -> ProviderError:
    return ProviderError(kind, "upstream trouble")


class Upstream:
    """A fake provider. Each call takes the next scripted outcome: an exception to raise,
    or the seconds it takes before answering (on the fake clock); then it answers at once.
    A streamed call gets its first delta after `first_delta` of those seconds."""

    def __init__(self, clock: FakeClock, *outcomes: BaseException | float) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.calls = 0
        self.first_delta: float | None = None

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else 0.0
        if isinstance(outcome, BaseException):
            raise outcome
        assert call.kind == "llm"
        if call.sink is not None and self.first_delta is not None:
            self.clock.advance(self.first_delta)
            await call.sink(StreamDelta(text="o"))
            self.clock.advance(outcome - self.first_delta)
            await call.sink(StreamDelta(text="k"))
        else:
            self.clock.advance(outcome)
        return LLMResult("ok", Usage(1, 1), model=call.target or call.model)


class Setup:
    def __init__(self, text: str = POLICY + BREAKER) -> None:
        self.clock = FakeClock()
        self.counters = MemoryCounters(clock=self.clock, wall_clock=self.clock)
        self.gate = BreakerGate(self.counters, clock=self.clock, timer=self.clock)
        self.ctx = context(policy(text))

    async def send(self, upstream: Next, target: str | None = "m", model: str = "r") -> str:
        """One call: 'ok', the failure kind it raised, or 'refused' by the breaker."""
        call = LLMCall(model, messages(), target=target)
        try:
            await self.gate(call, self.ctx, upstream)
        except CircuitOpen:
            return "refused"
        except ProviderError as exc:
            return exc.kind.value
        return "ok"

    async def state(self, key: str = M) -> BreakerState | None:
        found = (await self.counters.breaker_snapshots()).get(key)
        return None if found is None else found.state

    async def open_it(self) -> None:
        upstream = Upstream(self.clock, down(), down(), down())
        for _ in range(3):
            await self.send(upstream)
        assert await self.state() is BreakerState.OPEN


async def test_opens_at_the_failure_rate_only_after_min_calls() -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, down(), down(FailureKind.TIMEOUT), down())
    assert [await setup.send(upstream) for _ in range(2)] == ["unavailable", "timeout"]
    assert await setup.state() is BreakerState.CLOSED  # 2 of 2 failed, but min_calls is 3
    assert await setup.send(upstream) == "unavailable"
    assert await setup.state() is BreakerState.OPEN
    assert upstream.calls == 3


async def test_stays_closed_below_the_failure_rate() -> None:
    setup = Setup()
    # One failure in every four calls: 0.25 of any window, under 0.5.
    upstream = Upstream(setup.clock, *([down(), 0.0, 0.0, 0.0] * 5))
    outcomes = [await setup.send(upstream) for _ in range(20)]
    assert outcomes.count("refused") == 0 and upstream.calls == 20
    report = await breaker_report(setup.counters, setup.clock())
    assert report[0]["state"] == "closed" and report[0]["failure_rate"] == 0.25


async def test_opens_on_the_slow_call_rate() -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, 2.0, 1.9, 2.0, 2.5)  # slow_call is 2 s: reached is slow
    assert [await setup.send(upstream) for _ in range(3)] == ["ok"] * 3
    assert await setup.state() is BreakerState.CLOSED  # 2 of 3 slow, under 0.75
    assert await setup.send(upstream) == "ok"
    assert await setup.state() is BreakerState.OPEN  # 3 of 4 slow
    snap = (await setup.counters.breaker_snapshots())[M]
    assert (snap.calls, snap.failures, snap.slow) == (4, 0, 3)


async def test_a_streamed_call_is_timed_to_its_first_delta() -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, 30.0, 30.0, 30.0, 30.0)
    upstream.first_delta = 0.5  # a long answer, started quickly
    got: list[StreamDelta] = []

    async def sink(delta: StreamDelta) -> None:
        got.append(delta)

    for _ in range(4):
        call = LLMCall("r", messages(), sink=sink, target="m")
        await setup.gate(call, setup.ctx, upstream)
        assert call.sink is sink  # the gate's timing sink is gone again
    assert [d.text for d in got] == ["o", "k"] * 4
    snap = (await setup.counters.breaker_snapshots())[M]
    assert (snap.state, snap.calls, snap.slow) == (BreakerState.CLOSED, 4, 0)
    upstream.first_delta = 2.0  # the first byte alone takes slow_call
    upstream.outcomes = [3.0, 3.0, 3.0]
    for _ in range(3):
        await setup.gate(LLMCall("r", messages(), sink=sink, target="m"), setup.ctx, upstream)
    assert await setup.state() is BreakerState.OPEN


async def test_open_refuses_without_calling_and_tells_when_it_half_opens() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(10)
    upstream = Upstream(setup.clock)
    with pytest.raises(CircuitOpen) as refused:
        await setup.gate(LLMCall("r", messages(), target="m"), setup.ctx, upstream)
    assert upstream.calls == 0
    assert (refused.value.key, refused.value.model) == (M, "m")
    assert (refused.value.retry_in, refused.value.state) == (20.0, BreakerState.OPEN)
    assert str(refused.value) == f"breaker {M} for model 'm' is open, half-open in 20.0s"
    assert not isinstance(refused.value, ProviderError)  # the retry gate lets it pass


class Held:
    """A provider that holds every call until released, then answers or fails."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self.failures: list[BaseException] = []

    async def __call__(self, call: Call, ctx: RunContext) -> Result:
        self.entered += 1
        await self.release.wait()
        if self.failures:
            raise self.failures.pop(0)
        return LLMResult("ok", Usage(1, 1), model="m")


async def probes(setup: Setup, held: Held, count: int) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(setup.send(held)) for _ in range(count)]
    for _ in range(10):
        await asyncio.sleep(0)
    return tasks


async def test_after_open_for_exactly_the_probes_go_through_and_success_closes() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    held = Held()
    tasks = await probes(setup, held, 5)
    assert held.entered == 2  # half_open_probes, all at once
    assert await setup.state() is BreakerState.HALF_OPEN
    held.release.set()
    assert sorted(await asyncio.gather(*tasks)) == ["ok", "ok", "refused", "refused", "refused"]
    snap = (await setup.counters.breaker_snapshots())[M]
    assert (snap.state, snap.calls, snap.probes_out) == (BreakerState.CLOSED, 0, 0)
    # A fresh window: two failures are under min_calls again.
    upstream = Upstream(setup.clock, down(), down())
    assert [await setup.send(upstream) for _ in range(2)] == ["unavailable"] * 2
    assert await setup.state() is BreakerState.CLOSED


async def test_a_refusal_while_probes_are_out_says_half_open() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    held = Held()
    tasks = await probes(setup, held, 2)
    with pytest.raises(CircuitOpen) as refused:
        await setup.gate(LLMCall("r", messages(), target="m"), setup.ctx, Upstream(setup.clock))
    assert (refused.value.state, refused.value.retry_in) == (BreakerState.HALF_OPEN, 0.0)
    assert "half-open, its trial calls are all out" in str(refused.value)
    held.release.set()
    await asyncio.gather(*tasks)


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    held = Held()
    held.failures = [down()]
    tasks = await probes(setup, held, 2)
    held.release.set()
    assert sorted(await asyncio.gather(*tasks)) == ["ok", "unavailable"]  # 0.5: failure_rate
    assert await setup.state() is BreakerState.OPEN
    setup.clock.advance(29)
    upstream = Upstream(setup.clock)
    assert await setup.send(upstream) == "refused" and upstream.calls == 0
    setup.clock.advance(1)
    assert await setup.send(upstream) == "ok"  # half-open again: a probe


@pytest.mark.parametrize(
    "kind",
    [FailureKind.RATE_LIMITED, FailureKind.BAD_REQUEST, FailureKind.AUTH,
     FailureKind.CONTEXT_LENGTH, FailureKind.CONTENT_POLICY],
)  # fmt: skip
async def test_quota_and_client_errors_do_not_count(kind: FailureKind) -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, down(), *(down(kind) for _ in range(10)), down())
    outcomes = [await setup.send(upstream) for _ in range(12)]
    assert outcomes == ["unavailable", *[kind.value] * 10, "unavailable"]
    snap = (await setup.counters.breaker_snapshots())[M]
    assert (snap.state, snap.calls, snap.failures) == (BreakerState.CLOSED, 2, 2)


async def test_an_ignored_error_on_a_probe_gives_its_place_back() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    upstream = Upstream(setup.clock, down(FailureKind.RATE_LIMITED), 0.0, 0.0)
    assert [await setup.send(upstream) for _ in range(3)] == ["rate_limited", "ok", "ok"]
    assert await setup.state() is BreakerState.CLOSED


async def test_a_halt_passing_through_is_not_recorded() -> None:
    setup = Setup()
    halt = Halt(HaltReason.BUDGET_COST, "cap")
    upstream = Upstream(setup.clock, *(halt for _ in range(5)))
    for _ in range(5):
        with pytest.raises(Halt):
            await setup.gate(LLMCall("r", messages(), target="m"), setup.ctx, upstream)
    assert await setup.counters.breaker_snapshots() == {}


async def test_a_halted_or_cancelled_probe_gives_its_place_back() -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    held = Held()
    held.failures = [Halt(HaltReason.KILLED, "operator")]
    tasks = await probes(setup, held, 2)
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    held.release.set()
    with pytest.raises(Halt):
        await tasks[0]
    snap = (await setup.counters.breaker_snapshots())[M]
    assert (snap.state, snap.probes_out, snap.calls) == (BreakerState.HALF_OPEN, 0, 0)
    upstream = Upstream(setup.clock)
    assert [await setup.send(upstream) for _ in range(2)] == ["ok", "ok"]
    assert await setup.state() is BreakerState.CLOSED


async def test_breakers_are_per_provider_and_model() -> None:
    setup = Setup()
    await setup.open_it()
    upstream = Upstream(setup.clock)
    assert await setup.send(upstream, target="big", model="pricey") == "ok"
    assert await setup.send(upstream, target="m", model="pricey") == "refused"
    assert upstream.calls == 1
    assert await setup.state(BIG) is BreakerState.CLOSED


async def test_without_a_target_the_chain_head_is_the_breaker() -> None:
    setup = Setup()
    await setup.open_it()
    upstream = Upstream(setup.clock)
    assert await setup.send(upstream, target=None, model="pricey") == "refused"  # [m, big]
    with pytest.raises(CircuitOpen, match="model 'm'"):
        await setup.gate(LLMCall("m", messages()), setup.ctx, upstream)


async def test_tool_calls_pass_straight_through() -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, *(down() for _ in range(5)))
    for _ in range(5):
        with pytest.raises(ProviderError):
            await setup.gate(ToolCall("lookup", {}), setup.ctx, upstream)
    assert await setup.counters.breaker_snapshots() == {}


async def test_state_changes_log_warnings_and_calls_log_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup()
    caplog.set_level(logging.DEBUG, logger="corral")
    upstream = Upstream(setup.clock)
    for _ in range(10):
        await setup.send(upstream)
    assert caplog.records == []
    await setup.open_it()
    setup.clock.advance(30)
    for _ in range(2):
        await setup.send(upstream)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"breaker {M} open: 2 of 4 calls failed, 0 slow; refusing calls for 30s"),
        (logging.WARNING, f"breaker {M} half-open: letting 2 trial calls through"),
        (logging.WARNING, f"breaker {M} closed: its trial calls answered"),
    ]


async def test_silent_probes_reopen_the_breaker_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = Setup()
    await setup.open_it()
    setup.clock.advance(30)
    admissions = [
        await setup.counters.breaker_admit(
            M, setup.clock(), breaker_settings(setup.ctx.policy.breaker)
        )
        for _ in range(2)
    ]  # two probes whose process dies: they never report
    assert all(a.admitted for a in admissions)
    setup.clock.advance(30)  # probe_silence: max(open_for 30 s, slow_call 2 s)
    caplog.clear()
    assert await setup.send(Upstream(setup.clock)) == "refused"
    assert caplog.messages == [
        f"breaker {M} open again: no word from its trial calls for 30s; refusing calls for 30s"
    ]


def test_settings_follow_the_policy() -> None:
    settings = breaker_settings(Breaker(window=5, min_calls=10, open_for="30s", slow_call="1m"))
    assert settings.min_calls == 5  # a window of 5 never holds 10 calls
    assert settings.probe_silence == 60.0
    assert settings.half_open_probes == 3 and settings.failure_rate == 0.5


async def test_a_reload_with_another_breaker_section_takes_effect() -> None:
    setup = Setup()
    upstream = Upstream(setup.clock, down(), down())
    await setup.send(upstream)
    setup.ctx.policy = policy(POLICY + BREAKER.replace("min_calls: 3", "min_calls: 2"))
    await setup.send(upstream)
    assert await setup.state() is BreakerState.OPEN


async def test_the_report_reflects_every_breaker() -> None:
    setup = Setup()
    await setup.send(Upstream(setup.clock), target="big", model="pricey")
    await setup.open_it()
    opened_at = setup.clock()
    setup.clock.advance(12)
    report = await breaker_report(setup.counters, setup.clock())
    assert report == [
        {
            "key": BIG, "provider": "p", "model": "test-big", "state": "closed", "calls": 1,
            "failures": 0, "slow": 0, "failure_rate": 0.0, "slow_rate": 0.0,
            "opened_at": None, "half_open_in": None, "probes_out": 0,
        },
        {
            "key": M, "provider": "p", "model": "test-model", "state": "open", "calls": 3,
            "failures": 3, "slow": 0, "failure_rate": 1.0, "slow_rate": 0.0,
            "opened_at": opened_at, "half_open_in": 18.0, "probes_out": 0,
        },
    ]  # fmt: skip
    setup.clock.advance(60)  # past open_until: half-opens at the next call, not before
    assert (await breaker_report(setup.counters, setup.clock()))[1]["half_open_in"] == 0.0


# --- end to end: the sim's 503s through the real adapter ----------------------------


async def test_sim_503s_open_the_breaker_through_the_real_adapter() -> None:
    async with SimProvider(fault=Fault.parse("error;status=503")) as sim:
        text = POLICY.replace("http://127.0.0.1:9/v1", sim.openai_base_url) + BREAKER
        setup = Setup(text)
        http = HttpClient()
        try:
            adapter = OpenAIAdapter(http, sim.openai_base_url, "sim", 5.0)
            pipeline = compose([setup.gate], Transport({"p": adapter}, {}))
            outcomes = []
            for _ in range(4):
                try:
                    await pipeline(LLMCall("r", messages(), target="m"), setup.ctx)
                    outcomes.append("ok")
                except ProviderError as exc:
                    outcomes.append(f"{exc.kind.value} {exc.status}")
                except CircuitOpen:
                    outcomes.append("refused")
            assert outcomes == ["unavailable 503"] * 3 + ["refused"]
            sim.set_fault(None, None)  # the provider recovers
            setup.clock.advance(30)
            for _ in range(2):
                await pipeline(LLMCall("r", messages(), target="m"), setup.ctx)
            assert await setup.state() is BreakerState.CLOSED

        finally:
            await http.close()


# --- corral breakers ---------------------------------------------------------------

runner = CliRunner()


def policy_file(tmp_path: Path, counters: str) -> Path:
    path = tmp_path / "corral.yaml"
    text = POLICY.replace("version: 1", f"version: 1\ncounters: {counters}")
    path.write_text(text + f"store: sqlite:///{tmp_path}/corral.db\n")
    return path


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_with_memory_counters_points_to_the_gateway(tmp_path: Path, as_json: bool) -> None:
    """In-process breakers are out of this command's sight: it says so and where to look,
    and fails rather than list none (which would read as "no breaker is open")."""
    args = ["breakers", "--policy", str(policy_file(tmp_path, "memory"))]
    result = runner.invoke(app, args + (["--json"] if as_json else []))
    assert result.exit_code == 1, result.output
    shown = " ".join(result.output.split())
    assert "cannot see them" in shown and "GET /admin/breakers" in shown
    assert result.stdout.strip() == "" or not result.stdout.strip().startswith("[")


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> MemoryCounters:
    """Counters standing in for a shared (redis) server, seeded with one open breaker."""
    counters = MemoryCounters()
    settings = breaker_settings(Breaker(window=4, min_calls=2))

    async def seed() -> None:
        for key in (M, M, BIG):
            admission = await counters.breaker_admit(key, 1000.0, settings)
            await counters.breaker_record(
                key, admission, failed=key == M, slow=False, now=1000.0, settings=settings
            )

    asyncio.run(seed())
    opened: list[str] = []

    def open_counters(url: str) -> MemoryCounters:
        opened.append(url)
        return counters

    monkeypatch.setattr("corral.state.open_counters", open_counters)
    monkeypatch.setattr("corral.cli.time", SimpleNamespace(time=lambda: 1010.0))
    return counters


def test_cli_lists_shared_breakers(tmp_path: Path, shared: MemoryCounters) -> None:
    path = policy_file(tmp_path, "redis://127.0.0.1:6379/0")
    listing = runner.invoke(app, ["breakers", "--policy", str(path), "--json"])
    assert listing.exit_code == 0, listing.output
    rows: list[dict[str, Any]] = orjson.loads(listing.stdout)
    assert [(r["key"], r["state"], r["half_open_in"]) for r in rows] == [
        (BIG, "closed", None),
        (M, "open", 20.0),
    ]
    table = runner.invoke(app, ["breakers", "--policy", str(path)])
    assert table.exit_code == 0, table.output
    for text in ("p/test-model", "open", "100%", "10s ago", "20s", "p/test-big", "closed"):
        assert text in table.output


def test_cli_names_counters_it_cannot_reach(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    path = policy_file(tmp_path, f"redis://127.0.0.1:{closed}/0")
    result = runner.invoke(app, ["breakers", "--policy", str(path)])
    assert result.exit_code == 2
    assert f"counters at redis://127.0.0.1:{closed}/0" in " ".join(result.output.split())


def test_cli_with_no_breakers_yet_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("corral.state.open_counters", lambda url: MemoryCounters())
    path = policy_file(tmp_path, "redis://127.0.0.1:6379/0")
    result = runner.invoke(app, ["breakers", "--policy", str(path)])
    assert result.exit_code == 0, result.output
    assert "No breakers yet" in result.output
