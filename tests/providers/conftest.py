"""Fixtures for the simulated provider tests: a provider on an ephemeral port and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest

from corral.providers.sim import SimProvider


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with SimProvider() as provider:
        yield provider


@pytest.fixture
async def oai(sim: SimProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=sim.openai_base_url, api_key="x", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(sim: SimProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.base_url, api_key="x", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http(sim: SimProvider) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client, for what the SDKs would hide: raw bodies, bad requests."""
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        yield client
