"""Chat requests between Corral's canonical shape (OpenAI Chat Completions messages and tools)
and Anthropic Messages, both ways.

One module for both directions so they stay each other's inverse: `to_anthropic` is what the
Anthropic adapter sends upstream, `from_anthropic` is how the gateway's Anthropic door reads a
client's request. Anything with no form on the other side raises `FormatError`, a FieldError
whose `where` names the offending field (e.g. ``messages[2].content[0]``).

Request fields: `to_anthropic` takes canonical params that `params.split` passed;
`from_anthropic` maps the Anthropic fields Corral forwards (`ANTHROPIC_FIELDS`) onto them and
refuses any other, leaving the shared names of output limits and multipliers to split.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from corral.providers.params import MULTIPLIERS, OUTPUT_LIMITS, FieldError, not_forwarded

Block = dict[str, Any]
System = str | list[Block] | None

# Roles Anthropic takes apart from the turns, as its top-level `system`. `developer` is what
# newer OpenAI models call the system role.
_SYSTEM_ROLES = ("system", "developer")  # a tuple: a malformed role may be unhashable

# Forwarded params with the same name and meaning in both APIs. The other forwarded params
# that to_anthropic does not map (seed, response_format, user, metadata...) are OpenAI's
# alone, and Anthropic refuses unknown fields with a 400, so they are left out.
_SAME = frozenset({"temperature", "top_p", "top_k"})

# Anthropic's request fields that from_anthropic takes, besides the output limits and
# multipliers whose names both APIs' clients share: the _SAME ones, those it maps, and two
# the canonical shape has no place for, left out: `metadata` (only a user id) and
# `thinking` (extended thinking needs the thinking blocks of earlier turns, which the
# canonical messages cannot carry either; its tokens would count within max_tokens anyway).
ANTHROPIC_FIELDS = _SAME | {"tools", "tool_choice", "stop_sequences", "service_tier"}
_LEFT_OUT = frozenset({"metadata", "thinking"})
_ANTHROPIC_LIST = ", ".join(sorted(ANTHROPIC_FIELDS | _LEFT_OUT))

# service_tier: Anthropic's "auto" (its default) uses priority capacity where the account has
# it, as OpenAI's "auto" follows the project's setting; "standard_only" is OpenAI's "default".
# OpenAI's "flex" asks for a discount Anthropic does not offer: standard is the nearest.
_TIER_TO_ANTHROPIC = {"auto": "auto", "default": "standard_only", "flex": "standard_only"}
_TIER_FROM_ANTHROPIC = {"auto": "auto", "standard_only": "default"}

# Anthropic block types that are valid but that OpenAI chat messages cannot express.
_UNMAPPED_BLOCKS = frozenset(
    {
        "container_upload",
        "document",
        "mcp_tool_result",
        "mcp_tool_use",
        "search_result",
        "server_tool_use",
        "web_fetch_tool_result",
        "web_search_tool_result",
    }
)
# Blocks an assistant turn may carry that are left out: they belong to extended thinking,
# which is dropped with the `thinking` parameter, and a model answers fine without them.
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# Anthropic accepts tool_use ids of these characters only; other providers' ids may have more.
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class FormatError(FieldError):
    """A request that has no form in the other API; `where` names the field."""


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    return "array" if isinstance(value, list | tuple) else type(value).__name__


# --- canonical -> Anthropic ---------------------------------------------------------------


def to_anthropic(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> tuple[System, list[Block], dict[str, Any]]:
    """The `system`, `messages` and other body fields of an Anthropic Messages request.

    System messages are joined into `system`; consecutive turns of one role (tool results
    are the user's) are merged, as Anthropic requires the roles to alternate."""
    systems: list[tuple[str, Any]] = []
    turns: list[Block] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise FormatError(where, f"expected an object; got {_type_name(message)}")
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            systems.append((where, message.get("content")))
        elif role == "user":
            _add_turn(turns, "user", _user_content(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _add_turn(turns, "assistant", _assistant_content(message, where))
        elif role == "tool":
            _add_turn(turns, "user", [_tool_result(message, where)])
        else:
            raise FormatError(f"{where}.role", f"unknown role {role!r}")
    return _system(systems), turns, _params_to_anthropic(params)


def _system(systems: list[tuple[str, Any]]) -> System:
    """One string when every system message is text, else a list of text blocks."""
    if not systems:
        return None
    if all(isinstance(content, str) for _, content in systems):
        return "\n\n".join(content for _, content in systems)
    blocks: list[Block] = []
    for where, content in systems:
        blocks += _as_blocks(_user_content(content, f"{where}.content"))
    for block in blocks:
        if block["type"] != "text":
            raise FormatError("system", "a system message may hold text only")
    return blocks


def _add_turn(turns: list[Block], role: str, content: str | list[Block]) -> None:
    if turns and turns[-1]["role"] == role:
        last = turns[-1]
        last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: str | list[Block]) -> list[Block]:
    if isinstance(content, str):
        # Anthropic refuses empty text blocks.
        return [{"type": "text", "text": content}] if content else []
    return content


def _user_content(content: Any, where: str) -> str | list[Block]:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _parts_to_blocks(content, where)
    raise FormatError(
        where, f"expected a string or an array of content parts; got {_type_name(content)}"
    )


def _parts_to_blocks(parts: list[Any], where: str) -> list[Block]:
    blocks: list[Block] = []
    for index, part in enumerate(parts):
        block = _part_to_block(part, f"{where}[{index}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _part_to_block(part: Any, where: str) -> Block | None:
    """An OpenAI content part as an Anthropic block; None for empty text, which Anthropic
    refuses and which says nothing."""
    if not isinstance(part, Mapping):
        raise FormatError(where, f"expected a content part object; got {_type_name(part)}")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise FormatError(f"{where}.text", f"expected a string; got {_type_name(text)}")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        return {"type": "image", "source": _image_source(part.get("image_url"), where)}
    raise FormatError(where, f"content part type {kind!r} has no Anthropic equivalent")


def _image_source(image: Any, where: str) -> Block:
    # Some clients send the URL itself rather than {"url": ...}.
    url = image.get("url") if isinstance(image, Mapping) else image
    where = f"{where}.image_url.url"
    if not isinstance(url, str):
        raise FormatError(where, f"expected a string; got {_type_name(url)}")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type = header.split(";", 1)[0]
        if not comma or not header.endswith(";base64") or not media_type:
            raise FormatError(where, "a data URL must read data:<media type>;base64,<data>")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise FormatError(where, "expected a data: or http(s) URL")


def _assistant_content(message: Mapping[str, Any], where: str) -> str | list[Block]:
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise FormatError(f"{where}.tool_calls", f"expected an array; got {_type_name(calls)}")
    if isinstance(content, str) and not calls:
        return content
    if content is None:
        blocks: list[Block] = []
    elif isinstance(content, str):
        blocks = _as_blocks(content)
    elif isinstance(content, list):
        blocks = _parts_to_blocks(content, f"{where}.content")
    else:
        raise FormatError(
            f"{where}.content",
            f"expected a string, an array of content parts or null; got {_type_name(content)}",
        )
    for index, call in enumerate(calls):
        blocks.append(_tool_use(call, f"{where}.tool_calls[{index}]"))
    return blocks


def _tool_use(call: Any, where: str) -> Block:
    if not isinstance(call, Mapping):
        raise FormatError(where, f"expected a tool call object; got {_type_name(call)}")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise FormatError(f"{where}.id", "expected a non-empty string")
    function, name = _function(call.get("function"), where)
    arguments = _tool_input(function.get("arguments"), f"{where}.function.arguments", call_id)
    return {"type": "tool_use", "id": _tool_id(call_id), "name": name, "input": arguments}


def _function(function: Any, where: str) -> tuple[Mapping[str, Any], str]:
    """The `function` object of an OpenAI tool, tool call or tool choice, and its name."""
    if isinstance(function, Mapping):
        name = function.get("name")
        if isinstance(name, str) and name:
            return function, name
    raise FormatError(f"{where}.function.name", "expected a non-empty string")


def _tool_input(arguments: Any, where: str, call_id: str) -> dict[str, Any]:
    """The JSON object a tool call's arguments text holds; Anthropic takes the object."""
    # Some OpenAI-compatible servers send no text at all for a tool without parameters.
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, Mapping):  # already decoded by a lenient client
        return dict(arguments)
    if not isinstance(arguments, str):
        raise FormatError(where, f"tool call {call_id!r}: expected a JSON string")
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise FormatError(where, f"tool call {call_id!r}: arguments are not JSON ({exc})") from None
    if not isinstance(value, dict):
        kind = _type_name(value)
        raise FormatError(where, f"tool call {call_id!r}: arguments must be an object, not {kind}")
    return value


def _tool_id(call_id: str) -> str:
    # Applied to tool_use ids and tool_result references alike, so the two still match.
    return _ID_UNSAFE.sub("_", call_id)


def _tool_result(message: Mapping[str, Any], where: str) -> Block:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise FormatError(f"{where}.tool_call_id", "expected a non-empty string")
    block: Block = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
    content = message.get("content")
    if isinstance(content, str):
        block["content"] = content
    elif isinstance(content, list):
        block["content"] = _parts_to_blocks(content, f"{where}.content")
    elif content is not None:
        raise FormatError(
            f"{where}.content",
            f"expected a string or an array of content parts; got {_type_name(content)}",
        )
    return block


def _params_to_anthropic(params: Mapping[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    choice: Block | None = None
    parallel: Any = None
    for key, value in params.items():
        if key == "tools":
            mapped["tools"] = _tools_to_anthropic(value)
        elif key == "tool_choice":
            choice = _choice_to_anthropic(value)
        elif key == "stop":
            mapped["stop_sequences"] = _stop_sequences(value)
        elif key == "parallel_tool_calls":
            parallel = value
        elif key == "service_tier":
            mapped["service_tier"] = _TIER_TO_ANTHROPIC[value]
        elif key in _SAME:
            mapped[key] = value
    # Anthropic says "no parallel tool use" on the tool choice, which has no say when no tool
    # is offered or none may be used.
    if parallel is False and mapped.get("tools"):
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
    if choice is not None:
        mapped["tool_choice"] = choice
    return mapped


def _tools_to_anthropic(tools: Any) -> list[Block]:
    if not isinstance(tools, list):
        raise FormatError("tools", f"expected an array; got {_type_name(tools)}")
    return [_tool_to_anthropic(tool, f"tools[{index}]") for index, tool in enumerate(tools)]


def _tool_to_anthropic(tool: Any, where: str) -> Block:
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        raise FormatError(f"{where}.type", "only function tools have an Anthropic equivalent")
    function, name = _function(tool.get("function"), where)
    # Anthropic requires a schema; OpenAI lets a tool without parameters omit it.
    mapped: Block = {"name": name, "input_schema": function.get("parameters") or _EMPTY_SCHEMA}
    description = function.get("description")
    if description is not None:
        mapped["description"] = description
    return mapped


def _choice_to_anthropic(choice: Any) -> Block:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "tool", "name": _function(choice.get("function"), "tool_choice")[1]}
    raise FormatError(
        "tool_choice", "expected 'auto', 'required', 'none' or a function tool choice"
    )


def _stop_sequences(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise FormatError("stop", "expected a string or an array of strings")


# --- Anthropic -> canonical ---------------------------------------------------------------


def from_anthropic(
    system: Any, messages: Any, params: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The canonical messages and params of an Anthropic Messages request's `system`,
    `messages` and other fields (all but model and stream)."""
    canonical: list[dict[str, Any]] = []
    if system is not None and system != "" and system != []:
        canonical.append({"role": "system", "content": _system_from(system)})
    if not isinstance(messages, list):
        raise FormatError("messages", f"expected an array; got {_type_name(messages)}")
    for index, message in enumerate(messages):
        canonical += _message_from(message, f"messages[{index}]")
    return canonical, _params_from_anthropic(params)


def _system_from(system: Any) -> str | list[Block]:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise FormatError(
            "system", f"expected a string or an array of text blocks; got {_type_name(system)}"
        )
    parts: list[Block] = []
    for index, block in enumerate(system):
        where = f"system[{index}]"
        if _block_type(block, where) != "text":
            raise FormatError(f"{where}.type", "expected a text block")
        parts.append({"type": "text", "text": _text(block, where)})
    return parts


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, Mapping):
        raise FormatError(where, f"expected a content block object; got {_type_name(block)}")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise FormatError(f"{where}.type", f"expected a string; got {_type_name(kind)}")
    return kind


def _text(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise FormatError(f"{where}.text", f"expected a string; got {_type_name(text)}")
    return text


def _unsupported(kind: str, where: str) -> FormatError:
    if kind in _UNMAPPED_BLOCKS:
        return FormatError(where, f"block type {kind!r} has no OpenAI chat equivalent")
    return FormatError(where, f"unknown block type {kind!r}")


def _message_from(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, Mapping):
        raise FormatError(where, f"expected an object; got {_type_name(message)}")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise FormatError(f"{where}.role", f"expected user or assistant; got {role!r}")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise FormatError(
            f"{where}.content",
            f"expected a string or an array of content blocks; got {_type_name(content)}",
        )
    if role == "assistant":
        return [_assistant_from(content, f"{where}.content")]
    return _user_from(content, f"{where}.content")


def _user_from(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages, ahead of the rest of the turn as OpenAI wants
    them right after the assistant's tool calls."""
    results: list[dict[str, Any]] = []
    parts: list[Block] = []
    for index, block in enumerate(blocks):
        at = f"{where}[{index}]"
        kind = _block_type(block, at)
        if kind == "tool_result":
            result, images = _tool_result_from(block, at)
            results.append(result)
            parts += images
        elif kind in ("text", "image"):
            parts.append(_part_from(block, kind, at))
        else:
            raise _unsupported(kind, at)
    if parts or not results:
        results.append({"role": "user", "content": parts})
    return results


def _part_from(block: Mapping[str, Any], kind: str, where: str) -> Block:
    if kind == "text":
        return {"type": "text", "text": _text(block, where)}
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise FormatError(f"{where}.source", f"expected an object; got {_type_name(source)}")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise FormatError(f"{where}.source", "expected string media_type and data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise FormatError(f"{where}.source.url", f"expected a string; got {_type_name(url)}")
        return {"type": "image_url", "image_url": {"url": url}}
    raise FormatError(f"{where}.source.type", f"unknown image source {source.get('type')!r}")


def _tool_result_from(block: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[Block]]:
    """A `tool` message, and the images of the result, which an OpenAI tool message cannot
    hold: they go to the user message that follows it, where the model still sees them."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise FormatError(f"{where}.tool_use_id", "expected a non-empty string")
    content = block.get("content")
    texts: list[str] = []
    images: list[Block] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, inner in enumerate(content):
            at = f"{where}.content[{index}]"
            kind = _block_type(inner, at)
            if kind == "text":
                texts.append(_text(inner, at))
            elif kind == "image":
                images.append(_part_from(inner, kind, at))
            else:
                raise _unsupported(kind, at)
    elif content is not None:
        raise FormatError(
            f"{where}.content",
            f"expected a string or an array of blocks; got {_type_name(content)}",
        )
    # is_error has no OpenAI counterpart; the text of the error still tells the model.
    return {"role": "tool", "tool_call_id": call_id, "content": "\n".join(texts)}, images


def _assistant_from(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}[{index}]"
        kind = _block_type(block, at)
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            calls.append(_tool_call_from(block, at))
        elif kind not in _THINKING_BLOCKS:
            raise _unsupported(kind, at)
    # Text and tool calls are apart in OpenAI's shape; its content is null when only tools.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_call_from(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise FormatError(f"{where}.id", "expected a non-empty string")
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}.name", "expected a non-empty string")
    if not isinstance(arguments, Mapping):
        raise FormatError(f"{where}.input", f"expected an object; got {_type_name(arguments)}")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _params_from_anthropic(params: Mapping[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or key in _LEFT_OUT:
            continue
        if key in OUTPUT_LIMITS or key in MULTIPLIERS:
            mapped[key] = value  # for params.split to fold or check
        elif key == "tools":
            mapped["tools"] = _tools_from_anthropic(value)
        elif key == "tool_choice":
            mapped.update(_choice_from_anthropic(value))
        elif key == "stop_sequences":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise FormatError("stop_sequences", "expected an array of strings")
            mapped["stop"] = value
        elif key == "service_tier":
            tier = _TIER_FROM_ANTHROPIC.get(value) if isinstance(value, str) else None
            if tier is None:
                raise FormatError(key, "expected auto or standard_only")
            mapped[key] = tier
        elif key in _SAME:
            mapped[key] = value
        else:
            raise not_forwarded(key, _ANTHROPIC_LIST)
    return mapped


def _tools_from_anthropic(tools: Any) -> list[Block]:
    if not isinstance(tools, list):
        raise FormatError("tools", f"expected an array; got {_type_name(tools)}")
    return [_tool_from_anthropic(tool, f"tools[{index}]") for index, tool in enumerate(tools)]


def _tool_from_anthropic(tool: Any, where: str) -> Block:
    if not isinstance(tool, Mapping):
        raise FormatError(where, f"expected a tool object; got {_type_name(tool)}")
    kind = tool.get("type", "custom")
    if kind not in ("custom", None):
        # Server tools (web search, code execution...) run at Anthropic; OpenAI has no such.
        raise FormatError(f"{where}.type", f"tool type {kind!r} has no OpenAI equivalent")
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise FormatError(f"{where}.name", "expected a non-empty string")
    if not isinstance(schema, Mapping):
        raise FormatError(f"{where}.input_schema", f"expected an object; got {_type_name(schema)}")
    function: Block = {"name": name, "parameters": schema}
    description = tool.get("description")
    if description is not None:
        function["description"] = description
    return {"type": "function", "function": function}


def _choice_from_anthropic(choice: Any) -> dict[str, Any]:
    """`tool_choice`, and `parallel_tool_calls` when the choice disables parallel use."""
    if not isinstance(choice, Mapping):
        raise FormatError("tool_choice", f"expected an object; got {_type_name(choice)}")
    kind = choice.get("type")
    mapped: dict[str, Any]
    if kind == "auto":
        mapped = {"tool_choice": "auto"}
    elif kind == "any":
        mapped = {"tool_choice": "required"}
    elif kind == "none":
        mapped = {"tool_choice": "none"}
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError("tool_choice.name", "expected a non-empty string")
        mapped = {"tool_choice": {"type": "function", "function": {"name": name}}}
    else:
        raise FormatError("tool_choice.type", f"expected auto, any, tool or none; got {kind!r}")
    if choice.get("disable_parallel_tool_use") is True:
        mapped["parallel_tool_calls"] = False
    return mapped
