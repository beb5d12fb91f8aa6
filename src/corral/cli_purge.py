"""`corral purge` (retention, runtime/retention.py) and `corral keys data-key` (the key that
storage redaction encrypts with, state/sealed.py): the verbs of what Corral keeps.

Registered by cli.py, which adds them to its command groups.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from corral.cli_common import (
    AsJson,
    PolicyPath,
    err,
    out,
    policy_for_store,
    print_json,
    with_store,
)
from corral.runtime import retention
from corral.state import Store
from corral.state.sealed import DATA_KEY_ENV, new_data_key
from corral.telemetry.audit import AuditLog


def purge(
    policy: PolicyPath = Path("corral.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be removed; remove nothing.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Remove records older than the policy's `retention` keeps them (and held answers no
    request can use again); print the rows removed per table. `corral serve` does this
    hourly. Records of running runs and of open dead letters, and steps a fleet or global
    cap's current window counts, are kept; the audit log is never purged."""
    loaded = policy_for_store(policy)

    async def run(store: Store) -> dict[str, int]:
        audit = AuditLog(store)
        return await retention.purge(store, audit, loaded, now=time.time(), dry_run=dry_run)

    counts = with_store(policy, run)
    if as_json:
        print_json(counts)
        return
    title = "Retention purge (dry run: nothing removed)" if dry_run else "Retention purge"
    table = Table(title=title)
    table.add_column("table")
    table.add_column("would remove" if dry_run else "removed", justify="right")
    for name, count in counts.items():
        table.add_row(name, str(count))
    out.print(table)


def data_key() -> None:
    """Print a new key for CORRAL_DATA_KEY, with which storage redaction (guards.storage.pii)
    encrypts the values Corral must use again exactly. Give every process that opens the
    store the same key, and keep it: without it those values cannot be read."""
    out.print(new_data_key(), highlight=False, soft_wrap=True)
    # Only the key goes to stdout, so `export CORRAL_DATA_KEY=$(corral keys data-key)` works.
    err.print(
        f"set it as {DATA_KEY_ENV} for every process that opens the store",
        highlight=False,
        soft_wrap=True,
    )
