"""What many tests share: the example policy copied into tmp_path, and the CLI runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

from typer.testing import CliRunner, Result

from corral.cli import app
from corral.policy import load_policy
from corral.runtime.sealing import open_policy_store
from corral.state import Store

T = TypeVar("T")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corral.yaml"
runner = CliRunner()


def example_policy(tmp_path: Path, edits: Mapping[str, str] | None = None) -> Path:
    """The example policy as `tmp_path/corral.yaml`, its store in tmp_path, with `edits`
    (text replacements, each of which must apply)."""
    text = EXAMPLE.read_text().replace("sqlite:///corral.db", f"sqlite:///{tmp_path}/corral.db")
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    return path


def on_store(policy: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` against the store of a policy made by example_policy, opened as Corral
    opens it (sealed when the policy redacts storage, as the example's does)."""

    async def go() -> T:
        async with open_policy_store(load_policy(policy, require_keys=False)) as store:
            return await work(store)

    return asyncio.run(go())


def corral(policy: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "--policy", str(policy)])


def flat(output: str) -> str:
    """The output on one line, without the box Typer draws around usage errors."""
    return " ".join(output.replace("│", " ").split())


class TcpProxy:
    """A TCP proxy on loopback in front of a server: `stop` is the server going away or a
    network partition (connections cut, new ones refused), `start` (again, on the same
    port) its coming back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.server: asyncio.Server | None = None
        self._transports: list[asyncio.WriteTransport] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._transports += [writer.transport, up_writer.transport]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
