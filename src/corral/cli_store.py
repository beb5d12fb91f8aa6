"""`corral migrate`: bring the policy's store to this Corral's schema, on purpose; and
`corral store copy`: move every record of one store into another, empty one.

A SQLite store migrates itself when opened (one machine's file); a PostgreSQL database
that several nodes share is migrated by this verb, and `corral serve` refuses a schema
that is behind (state/postgres_schema.py). The copy is state/copy.py's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from corral.cli_common import AsJson, PolicyPath, fail, out, policy_for_store, print_json
from corral.state import StoreError, open_store
from corral.state.copy import copy_store
from corral.state.sealed import DATA_KEY_ENV

store_app = typer.Typer(
    help="Move a store's records (to PostgreSQL, or into a backup file).", no_args_is_help=True
)


def migrate(policy: PolicyPath = Path("corral.yaml")) -> None:
    """Apply the store's schema migrations (each once, however many nodes run this)."""
    loaded = policy_for_store(policy)

    async def apply() -> str:
        store = open_store(loaded.store)  # opening migrates: one transaction per version
        try:
            await store.list_runs(limit=1)  # and it answers
            return getattr(store, "name", loaded.store)
        finally:
            await store.close()

    try:
        where = asyncio.run(apply())
    except (StoreError, ValueError) as exc:
        fail(str(exc), 2)
    out.print(f"{where}: migrated to the latest schema", highlight=False)


@store_app.command("copy")
def copy(
    from_url: Annotated[
        str,
        typer.Option("--from", help="The store to copy (sqlite:///corral.db, postgresql://...)."),
    ],
    to_url: Annotated[
        str,
        typer.Option("--to", help="An empty store to copy into, created and migrated if need be."),
    ],
    as_json: AsJson = False,
) -> None:
    """Copy every record into an empty store, in one transaction: all or nothing.

    Ids, sequence numbers and the audit chain are kept; encrypted values are copied as
    stored, so use the destination with the same CORRAL_DATA_KEY. The source is only read:
    stop the gateways writing to it first, or what they write after the copy stays behind.
    """
    try:
        report = copy_store(from_url, to_url)
    except (StoreError, ValueError) as exc:  # refused, unreachable, a bad URL or version
        fail(str(exc), 2)
    if as_json:
        print_json(
            {
                "source": report.source,
                "destination": report.destination,
                "copied": report.copied,
                "counted": report.counted,
                "verified": report.verified,
                "sequences": report.sequences,
            }
        )
    else:
        table = Table(
            "table", "copied", "in destination", title=f"{report.source} -> {report.destination}"
        )
        for name, count in report.copied.items():
            table.add_row(name, str(count), str(report.counted[name]))
        out.print(table)
        if report.sequences:
            nexts = ", ".join(f"{column} {n}" for column, n in report.sequences.items())
            out.print(f"Sequences set past the copied ids; next: {nexts}", highlight=False)
        out.print(
            f"Encrypted values were copied as stored: use {report.destination} with the same"
            f" {DATA_KEY_ENV} as the source.",
            highlight=False,
        )
    if not report.verified:
        fail(
            f"{report.destination} holds {report.counted} after the copy, {report.copied}"
            " were copied: check it before using it"
        )
    if not as_json:
        out.print(f"{sum(report.copied.values())} rows copied; counts verified.", highlight=False)
