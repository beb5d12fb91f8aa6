"""Prices: the policy's override wins, the table fills in, and unknown never means free."""

from __future__ import annotations

import pytest

from corral.calls import Usage
from corral.policy import parse_policy
from corral.providers.pricing import ModelPrice, lookup_price

POLICY = """
version: 1
providers:
  oa: {kind: openai, base_url: "http://127.0.0.1:1/v1"}
  an: {kind: anthropic, base_url: "http://127.0.0.1:1"}
models:
  cheap: {provider: oa, model: gpt-4o-mini, context_window: 128000}
  custom: {provider: oa, model: gpt-4o, context_window: 128000,
           price: {input_per_mtok: 1, output_per_mtok: 2, cache_read_per_mtok: 0.5}}
  tiered: {provider: an, model: claude-sonnet-4-5, context_window: 200000}
  mystery: {provider: oa, model: our-own-finetune-7, context_window: 8000}
"""


@pytest.fixture(scope="module")
def prices() -> dict[str, ModelPrice | None]:
    return dict(parse_policy(POLICY, env={}).prices)


def test_override_wins_and_missing_cache_prices_fall_back_to_input(
    prices: dict[str, ModelPrice | None],
) -> None:
    assert prices["custom"] == ModelPrice(1.0, 2.0, 0.5, 1.0)


def test_table_price_for_a_known_model(prices: dict[str, ModelPrice | None]) -> None:
    cheap = prices["cheap"]
    assert cheap is not None
    assert (cheap.input_per_mtok, cheap.output_per_mtok) == (0.15, 0.6)
    assert cheap.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000)) == pytest.approx(0.75)


def test_tiered_price_takes_the_highest_tier(prices: dict[str, ModelPrice | None]) -> None:
    tiered = prices["tiered"]
    assert tiered is not None
    # Sonnet 4.5 costs more past 200k input tokens; a worst-case hold must use that.
    assert tiered.input_per_mtok > 3.0


def test_unknown_model_has_no_price_rather_than_zero(
    prices: dict[str, ModelPrice | None],
) -> None:
    assert prices["mystery"] is None
    assert lookup_price("our-own-finetune-7", "openai") is None


def test_cost_counts_every_token_kind() -> None:
    price = ModelPrice(2.0, 8.0, 1.0, 3.0)
    usage = Usage(input_tokens=100, output_tokens=50, cache_read_tokens=1000, cache_write_tokens=10)
    assert price.cost(usage) == pytest.approx((200 + 400 + 1000 + 30) / 1_000_000)
