"""Model prices from the genai-prices table.

Looked up once per policy snapshot (the policy's own `price:` overrides win), so
the per-call cost is a multiply-add. Tiered prices resolve to their highest tier:
a budget must never under-count.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from corral.calls import Usage


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


def lookup_price(model: str, provider_kind: str) -> ModelPrice | None:
    """The price-table entry for an upstream model, or None when the table does not know it."""
    try:
        table = calc_price(PriceUsage(), model, provider_id=provider_kind).model_price
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
