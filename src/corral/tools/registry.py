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
    """A registered tool. `preview` (a side-effect-free dry run) and `shadow` (the result
    an agent in shadow mode gets instead) take the same arguments as the tool; `rollback`
    tells a reviewer how to undo it."""

    name: str
    fn: Callable[..., Any]
    scope: str
    arguments: type[BaseModel]
    takes_key: bool
    is_async: bool
    preview: Callable[..., Any] | None = None
    shadow: Callable[..., Any] | None = None
    rollback: str | None = None

    async def invoke(self, args: Mapping[str, Any], idempotency_key: str | None) -> Any:
        kwargs = self._kwargs(args)
        if self.takes_key:
            kwargs[KEY_PARAMETER] = idempotency_key
        if self.is_async:
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)

    def coerce(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as the tool will get them (validated and coerced), in JSON form:
        what an approval is bound to. ToolArgumentError if they do not fit the signature."""
        return self._checked(args).model_dump(mode="json")

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments, for checking a reviewer's edit of them."""
        return self.arguments.model_json_schema()

    async def run_preview(self, args: Mapping[str, Any]) -> Any:
        assert self.preview is not None
        return await _call(self.preview, self._kwargs(args))

    async def run_shadow(self, args: Mapping[str, Any]) -> Any:
        assert self.shadow is not None
        return await _call(self.shadow, self._kwargs(args))

    def _checked(self, args: Mapping[str, Any]) -> BaseModel:
        try:
            return self.arguments.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolArgumentError(f"tool '{self.name}': {problems}") from None

    def _kwargs(self, args: Mapping[str, Any]) -> dict[str, Any]:
        checked = self._checked(args)
        return {field: getattr(checked, field) for field in type(checked).model_fields}


async def _call(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    # A blocking function must not stall every other run on the loop.
    return await asyncio.to_thread(fn, **kwargs)


def describe(
    fn: Callable[..., Any],
    name: str,
    scope: str,
    *,
    preview: Callable[..., Any] | None = None,
    shadow: Callable[..., Any] | None = None,
    rollback: str | None = None,
) -> Tool:
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
    return Tool(
        name,
        fn,
        scope,
        arguments,
        takes_key,
        inspect.iscoroutinefunction(fn),
        preview,
        shadow,
        rollback,
    )
