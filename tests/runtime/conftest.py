"""A supervisor on the example policy, its store in tmp_path, the sim as its upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral import Supervisor
from corral.providers.sim import SimProvider
from tests import support


def example_policy(tmp_path: Path, sim: SimProvider, edits: dict[str, str] | None = None) -> Path:
    """The example policy with its store in tmp_path and `sim` as its provider."""
    return support.example_policy(
        tmp_path, {"http://127.0.0.1:4010/v1": sim.openai_base_url, **(edits or {})}
    )


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


@pytest.fixture
async def sup(
    tmp_path: Path, sim: SimProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Supervisor]:
    monkeypatch.setenv("SIM_API_KEY", "sim")
    supervisor = Supervisor.from_policy(example_policy(tmp_path, sim))

    @supervisor.tool()
    async def get_customer(customer_id: int) -> dict[str, object]:
        return {"id": customer_id, "name": "Ada"}

    @supervisor.tool()
    def draft_email(to: str, body: str = "") -> dict[str, str]:  # a blocking tool
        return {"to": to, "body": body}

    yield supervisor
    await supervisor.close()
