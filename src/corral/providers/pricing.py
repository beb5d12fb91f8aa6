"""Model prices: the policy's override, else the genai-prices table.

Resolved once per policy snapshot, so the per-call cost is a multiply-add. Tiered
prices resolve to their highest tier: a budget must never under-count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from corral.calls import Usage
from corral.policy import Model, Policy


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float
    cache_write_per_mtok: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_per_mtok
            + usage.output_tokens * self.output_per_mtok
            + usage.cache_read_tokens * self.cache_read_per_mtok
            + usage.cache_write_tokens * self.cache_write_per_mtok
        ) / 1_000_000


def _highest(price: Any) -> float | None:
    if price is None:
        return None
    if isinstance(price, int | float | Decimal):
        return float(price)
    return float(max([price.base, *(tier.price for tier in price.tiers)]))


def lookup_price(model: Model, provider_kind: str) -> ModelPrice | None:
    """The model's price, or None when neither the policy nor the table knows it."""
    if model.price is not None:
        p = model.price
        return ModelPrice(
            p.input_per_mtok,
            p.output_per_mtok,
            p.cache_read_per_mtok if p.cache_read_per_mtok is not None else p.input_per_mtok,
            p.cache_write_per_mtok if p.cache_write_per_mtok is not None else p.input_per_mtok,
        )
    try:
        table = calc_price(PriceUsage(), model.model, provider_id=provider_kind).model_price
    except LookupError:
        return None
    input_price = _highest(table.input_mtok)
    output_price = _highest(table.output_mtok)
    if input_price is None or output_price is None:
        return None  # half a price is no price: never count the missing half as 0 $
    cache_read = _highest(table.cache_read_mtok)
    cache_write = _highest(table.cache_write_mtok)
    return ModelPrice(
        input_price,
        output_price,
        input_price if cache_read is None else cache_read,
        input_price if cache_write is None else cache_write,
    )


def price_table(policy: Policy) -> Mapping[str, ModelPrice | None]:
    """Every policy model's price, by policy model name."""
    return {
        name: lookup_price(model, policy.providers[model.provider].kind)
        for name, model in policy.models.items()
    }
