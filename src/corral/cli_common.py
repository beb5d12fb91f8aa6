"""What every group of `corral` verbs shares: the consoles, the --policy and --json
options, opening the policy's store, failing with a message, and printing times and JSON.

Apart from cli.py so the verb groups in modules of their own (cli_review.py) can use them
while cli.py registers those groups.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console

from corral.policy import Policy, PolicyError, load_policy
from corral.runtime.operations import NotFound, StateConflict, UnknownRun
from corral.runtime.sealing import open_policy_store
from corral.state import Store, StoreError
from corral.state.sealed import DATA_KEY_ENV, DataKeyError

T = TypeVar("T")

out = Console()
err = Console(stderr=True)

PolicyPath = Annotated[
    Path,
    typer.Option(
        "--policy",
        envvar="CORRAL_POLICY",
        help="Policy file (default: $CORRAL_POLICY, else ./corral.yaml).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print("[red]error:[/red]", message, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def policy_for_store(path: Path) -> Policy:
    """The policy, for verbs that only read the store (no provider keys needed)."""
    try:
        return load_policy(path, require_keys=False)
    except PolicyError as exc:
        fail(str(exc), 2)


def with_store(path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on the policy's store; an operation's refusal exits 1 with its message."""

    policy = policy_for_store(path)

    async def run() -> T:
        # Sealed when the policy redacts storage: reviewers see approvals' arguments whole.
        store = open_policy_store(policy)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except UnknownRun as exc:
        fail(f"{exc} (list them with `corral runs ls`)")
    except (NotFound, StateConflict) as exc:
        fail(str(exc))
    except DataKeyError as exc:
        fail(f"{exc}{demo_key_hint(policy)}", 2)
    except ValueError as exc:  # a bad argument, a bad store URL or a store from a newer Corral
        fail(str(exc), 2)
    except StoreError as exc:  # a store server out of reach
        fail(str(exc), 2)


def demo_key_hint(policy: Policy) -> str:
    """What to do when the key is missing and `corral demo` made one for this store."""
    from corral.demo import demo_key_file

    where = demo_key_file(policy)
    if os.environ.get(DATA_KEY_ENV) or not where.exists():
        return ""
    return f"\n`corral demo` keeps its key beside the store: export {DATA_KEY_ENV}=$(cat {where})"


def when(ts: float | None, *, short: bool = False) -> str:
    """UTC; `short` drops the year and seconds, for tables that must fit 80 columns."""
    if ts is None:
        return "-"
    shape = "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(shape)


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
