"""`corral migrate`: bring the policy's store to this Corral's schema, on purpose.

A SQLite store migrates itself when opened (one machine's file); a PostgreSQL database
that several nodes share is migrated by this verb, and `corral serve` refuses a schema
that is behind (state/postgres_schema.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.cli_common import PolicyPath, fail, out, policy_for_store
from corral.state import StoreError, open_store


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
