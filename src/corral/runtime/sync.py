"""A synchronous facade for scripts that are not async.

The async Supervisor runs on an event loop in one background thread; each call
here submits a coroutine to it and waits. Runs and limits behave exactly as in
async code, because it is the same code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from corral.calls import LLMResult
from corral.runtime.run import Run
from corral.runtime.supervisor import RunScope, Supervisor

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _Loop:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the loop, in a copy of the caller's context: the caller's current
        span (and other context variables) are the work's, so a run nests under it."""
        context = contextvars.copy_context()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            try:
                task = self.loop.create_task(work, context=context)
            except BaseException as exc:  # the caller must not wait for a task never made
                work.close()
                done.set_exception(exc)
                return
            task.add_done_callback(lambda finished: _settle(finished, done))

        self.loop.call_soon_threadsafe(start)
        return done.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncSupervisor:
    """`SyncSupervisor.from_policy(path)`; then `with sup.run(agent=...) as run:`."""

    def __init__(self, supervisor_factory: Callable[[], Supervisor]) -> None:
        self._loop = _Loop()
        self._supervisor = self._loop.call(_build(supervisor_factory))

    @classmethod
    def from_policy(cls, path: str | Path, **options: Any) -> SyncSupervisor:
        return cls(lambda: Supervisor.from_policy(path, **options))

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    def tool(self, name: str | None = None) -> Callable[[F], F]:
        return self._supervisor.tool(name)

    def run(
        self,
        *,
        agent: str,
        task: str | None = None,
        session: str | None = None,
        parent_run: str | None = None,
    ) -> SyncRun:
        scope = self._supervisor.run(agent=agent, task=task, session=session, parent_run=parent_run)
        return SyncRun(self._loop, scope)

    def resume(self, run_id: str) -> SyncRun:
        return SyncRun(self._loop, self._supervisor.resume(run_id))

    def close(self) -> None:
        self._loop.call(self._supervisor.close())
        self._loop.stop()

    def __enter__(self) -> SyncSupervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _report_progress(run: Run, value: Any) -> None:
    run.progress(value)


def _settle(task: asyncio.Task[T], done: concurrent.futures.Future[T]) -> None:
    if task.cancelled():
        done.cancel()
    elif (error := task.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(task.result())


async def _build(factory: Callable[[], Supervisor]) -> Supervisor:
    return factory()  # built on the loop's thread, where its resources will be used


class SyncRun:
    """The blocking twin of Run; a halt raises `corral.Halted` as in async code."""

    def __init__(self, loop: _Loop, scope: RunScope) -> None:
        self._loop = loop
        self._scope = scope
        self._run: Run | None = None

    def __enter__(self) -> SyncRun:
        self._run = self._loop.call(self._scope.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call(self._scope.__aexit__(exc_type, exc, tb))

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("use the run in a `with` block")
        return self._run

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def state(self) -> Any:
        return self.run.state

    def chat(self, model: str, messages: Sequence[Mapping[str, Any]], **params: Any) -> LLMResult:
        return self._loop.call(self.run.chat(model, messages, **params))

    def tool(self, name: str, args: Mapping[str, Any], **options: Any) -> Any:
        return self._loop.call(self.run.tool(name, args, **options))

    def checkpoint(self, state: Any) -> int:
        return self._loop.call(self.run.checkpoint(state))

    def progress(self, value: Any) -> None:
        self._loop.call(_report_progress(self.run, value))  # on the loop's thread, as gates read it

    def artifact(self, handle: str) -> bytes:
        return self._loop.call(self.run.artifact(handle))

    def complete(self, outcome: Any = None) -> None:
        self._loop.call(self.run.complete(outcome))
