"""Sessions under concurrency: one run per session, whatever happens to the first request."""

from __future__ import annotations

import asyncio

import pytest

from corral.calls import RunStatus
from corral.gateway.sessions import Sessions
from tests.gateway.conftest import Serve


async def test_a_cancelled_first_request_does_not_strand_the_others(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await serve()
    sessions: Sessions = gw.app.sessions
    release = asyncio.Event()
    find = sessions._find_or_start

    async def slow_find(*args: object) -> object:
        await release.wait()
        return await find(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sessions, "_find_or_start", slow_find)
    first = asyncio.create_task(sessions.enter("support", "s", None))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(sessions.enter("support", "s", None))
    await asyncio.sleep(0.01)
    first.cancel()  # the client of the request opening the session hangs up
    await asyncio.sleep(0.01)
    release.set()
    run = await asyncio.wait_for(second, 5)
    assert run.status is RunStatus.RUNNING
    assert first.cancelled()
    assert [r.id for r in await gw.sup.store.list_runs(session="s")] == [run.id]


async def test_a_failing_opening_fails_every_request_waiting_on_it(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await serve()
    sessions: Sessions = gw.app.sessions
    release = asyncio.Event()

    async def broken_find(*args: object) -> object:
        await release.wait()
        raise OSError("disk gone")

    monkeypatch.setattr(sessions, "_find_or_start", broken_find)
    waiting = [asyncio.create_task(sessions.enter("support", "s", None)) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert len(sessions) == 0
