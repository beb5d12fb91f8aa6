"""Typed tools: a function's signature becomes its argument schema, checked on every call.

A tool that declares an `idempotency_key` parameter receives the call's key, so it can
pass it on to the system it changes (a payment API, say) and make its own side effect
safe to repeat if a crash ever lands between the effect and its record.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

KEY_PARAMETER = "idempotency_key"


class ToolArgumentError(ValueError):
    """A tool was called with arguments its signature does not accept."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    fn: Callable[..., Any]
    scope: str
    arguments: type[BaseModel]
    takes_key: bool
    is_async: bool

    async def invoke(self, args: Mapping[str, Any], idempotency_key: str | None) -> Any:
        try:
            checked = self.arguments.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolArgumentError(f"tool '{self.name}': {problems}") from None
        kwargs = {field: getattr(checked, field) for field in type(checked).model_fields}
        if self.takes_key:
            kwargs[KEY_PARAMETER] = idempotency_key
        if self.is_async:
            return await self.fn(**kwargs)
        # A blocking tool must not stall every other run on the loop.
        return await asyncio.to_thread(self.fn, **kwargs)


def describe(fn: Callable[..., Any], name: str, scope: str) -> Tool:
    """Build a Tool from a function's annotated signature."""
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    takes_key = False
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.name == KEY_PARAMETER:
            takes_key = True
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"tool '{name}': *args/**kwargs cannot be described to a model")
        if parameter.name not in hints:
            raise TypeError(f"tool '{name}': parameter '{parameter.name}' needs a type annotation")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    arguments = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return Tool(name, fn, scope, arguments, takes_key, inspect.iscoroutinefunction(fn))
