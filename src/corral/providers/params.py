"""Which request fields reach the upstream: one rule for the gateway's doors and the SDK.

The budget gate holds a call's worst case, its prompt and `LLMCall.max_tokens` of one
answer at the policy's prices, and clamps max_tokens to what the caps can still pay. A
field that could make the upstream bill more than that must not slip past the hold:

- output limits (`OUTPUT_LIMITS`) are folded into the call's one max_tokens, the smallest
  winning, and never sent beside it;
- fields that multiply the answers (`MULTIPLIERS`) are refused unless 1, the answer held;
- `FORWARDED` fields go as they are (service_tier only at the standard price or below);
- any other field is refused: a governance layer does not forward what it cannot bound.

Fields carry their OpenAI Chat Completions names, the canonical shape; the Anthropic door
maps its own onto them (`anthropic_format.from_anthropic`). The doors apply `split` to a
client's body, the adapters again to every call's params, so a call built by the SDK
(`run.chat(model, messages, **params)`) meets the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from corral.calls import LLMCall
from corral.providers.base import FailureKind, ProviderError

# Every name either API (or its clients) gives the output limit. Anthropic has only max_tokens;
# OpenAI's chat API has both of the first two (LangChain sends max_completion_tokens), its
# Responses API the third. Other servers' aliases (n_predict, num_predict...) are unknown
# fields here, so refused.
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# How many answers one request asks for, each billed: chat's n, legacy completions' best_of.
MULTIPLIERS = ("n", "best_of")

# Fields that cannot make the upstream bill past the hold, each for the reason beside it.
FORWARDED = frozenset(
    {
        # Sampling shapes the answer; its length stays within max_tokens.
        "temperature",
        "top_p",
        "top_k",  # Anthropic's and vLLM's; OpenAI refuses it, which costs nothing
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "seed",
        "stop",
        # Tool definitions are prompt tokens, counted in the prompt's bound
        # (calls.estimate_input_tokens).
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        # Constrains the answer's form, not its length past max_tokens.
        "response_format",
        # Reasoning tokens are output tokens and count within max_tokens (OpenAI's
        # max_completion_tokens, which the OpenAI adapter's max_tokens stands for).
        "reasoning_effort",
        "verbosity",
        # Log probabilities describe the tokens generated; they are not billed apart.
        "logprobs",
        "top_logprobs",
        # Bookkeeping: tags, stored completions, abuse and cache ids. No charge; a cache key
        # can only make the prompt cheaper.
        "metadata",
        "store",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        # Checked against SERVICE_TIERS.
        "service_tier",
    }
)
# Tiers billed at the standard price or below: "auto" is the account's default (as is
# leaving the field out), which the policy's prices are for. priority/fast and scale cost
# more per token, so they are refused.
SERVICE_TIERS = ("auto", "default", "flex")

# Known fields that are not forwarded, with why, for the error message.
_WHY_REFUSED = {
    "prediction": "rejected predicted tokens are billed as output beyond max_tokens",
    "audio": "audio output is billed at audio prices, which the budget does not hold",
    "modalities": "audio output is billed at audio prices, which the budget does not hold",
    "web_search_options": "each web search is billed on top of the tokens",
    "functions": "deprecated and not counted in the prompt's bound; use tools",
    "function_call": "deprecated with functions; use tool_choice",
    # Anthropic's
    "speed": "fast mode is billed at a premium over the policy's prices",
    "inference_geo": "inference kept to one region is billed at a premium",
    "cache_control": "cache writes are billed above the input price the budget holds",
    "container": "server-side tools are billed on top of the tokens",
    "mcp_servers": "server-side tools are billed on top of the tokens",
}


class FieldError(ValueError):
    """A request field that is malformed or that Corral will not send; `where` names it."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def shown(value: Any) -> str:
    """A value as an error message quotes it: strings and numbers themselves, else the type."""
    if isinstance(value, str):
        return repr(value[:60])
    if value is None or isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return "an object" if isinstance(value, dict) else "an array"


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def not_forwarded(field: str, forwarded: str) -> FieldError:
    """The refusal of a field that is on no list; `forwarded` names the fields that are."""
    why = _WHY_REFUSED.get(field)
    if why is not None:
        return FieldError(field, f"not forwarded: {why}")
    return FieldError(
        field,
        "unknown field; Corral forwards only fields whose cost its budget can bound: "
        f"{forwarded} (and the output limit)",
    )


_FORWARDED_LIST = ", ".join(sorted(FORWARDED))


def split(fields: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """`fields` as the params to forward, and the smallest output limit among them (None
    if none is given); FieldError for the first field that cannot go. A null value is a
    field not given, as OpenAI's clients send it."""
    params: dict[str, Any] = {}
    limit: int | None = None
    for field, value in fields.items():
        if value is None:
            continue
        if field in OUTPUT_LIMITS:
            if not positive_int(value):
                raise FieldError(field, f"expected a positive integer; got {shown(value)}")
            limit = value if limit is None else min(limit, value)
        elif field in MULTIPLIERS:
            if not positive_int(value) or value != 1:
                got = shown(value)
                raise FieldError(
                    field, f"only 1 is supported, as Corral budgets one answer per call; got {got}"
                )
        elif field == "service_tier" and value not in SERVICE_TIERS:
            raise FieldError(
                field,
                f"expected one of {', '.join(SERVICE_TIERS)} (tiers billed above the standard "
                f"price are refused); got {shown(value)}",
            )
        elif field in FORWARDED:
            params[field] = value
        else:
            raise not_forwarded(field, _FORWARDED_LIST)
    return params, limit


def outgoing(call: LLMCall, default_limit: int) -> tuple[dict[str, Any], dict[str, str], int]:
    """What an adapter sends for `call`: the params, the HTTP headers the SDK's
    `extra_headers` adds, and the one output limit (the call's, else `default_limit`,
    lowered by any limit among the params). A field that cannot go is a BAD_REQUEST
    ProviderError: no retry or other model can help."""
    params = dict(call.params)
    headers = params.pop("extra_headers", None) or {}
    try:
        fields, limit = split(params)
    except FieldError as exc:
        raise ProviderError(FailureKind.BAD_REQUEST, f"the request cannot be sent: {exc}") from exc
    chosen = call.max_tokens or default_limit
    return fields, headers, chosen if limit is None else min(chosen, limit)
