"""A supervisor on the example policy, its store in tmp_path, the sim as its upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral import Supervisor
from corral.providers.sim import SimProvider

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "corral.yaml"


def example_policy(tmp_path: Path, sim: SimProvider, edits: dict[str, str] | None = None) -> Path:
    text = EXAMPLE.read_text()
    text = text.replace("sqlite:///corral.db", f"sqlite:///{tmp_path}/corral.db")
    text = text.replace("http://127.0.0.1:4010/v1", sim.openai_base_url)
    for old, new in (edits or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    return path


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
