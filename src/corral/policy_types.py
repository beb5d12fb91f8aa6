"""The policy's value types: durations, amounts, counts, fractions, URLs, frozen maps.

Each parses one scalar of the file and refuses what it cannot mean, with a message
that says what was expected; the loader adds the file, line and key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: object) -> float:
    """'30s' -> 30.0 seconds. A bare number is refused: '10' could mean seconds or minutes."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a duration like 500ms, 30s, 10m, 1h or 1d, got {value!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):  # 309 digits read as infinity: never a real limit
        raise ValueError(f"expected a finite duration, got {value!r}")
    return seconds


parse_duration = _duration


def _usd(value: object) -> float:
    """0.5, '0.50' or '$0.50' -> 0.5; negative or non-numeric amounts are refused."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().removeprefix("$").replace("_", ""))
        except ValueError:
            number = None
    if number is None or number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"expected an amount in USD like 0.50, got {value!r}")
    if number < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return number


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return value


def _positive_count(value: object) -> int:
    number = _count(value)
    if number == 0:
        raise ValueError("must be at least 1, got 0")
    return number


def _fraction(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)


Duration = Annotated[float, BeforeValidator(_duration)]
Usd = Annotated[float, BeforeValidator(_usd)]
Count = Annotated[int, BeforeValidator(_count)]
PositiveCount = Annotated[int, BeforeValidator(_positive_count)]
Fraction = Annotated[float, BeforeValidator(_fraction)]
FrozenMap = Annotated[Mapping[str, T], AfterValidator(MappingProxyType)]


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0, got {value!r}")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def url(value: object, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.startswith(schemes):
        raise ValueError(f"expected a URL starting with {' or '.join(schemes)}, got {value!r}")
    return value


def http_url(value: object) -> str:
    return url(value, ("http://", "https://"))


HttpUrl = Annotated[str, BeforeValidator(http_url)]
