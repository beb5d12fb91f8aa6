"""Context: keep a model call's prompt inside the window of the models that may serve it.

A prompt is sized (`prompt_tokens`) against the room the largest window on the call's
route leaves once the answer's `max_tokens` is set aside: OpenAI, Anthropic and vLLM
refuse a request whose prompt plus `max_tokens` exceeds the window, so utilization 1.0
is exactly where a provider would refuse. Crossing `warn_at` or `critical_at` is an
audit event, once per crossing. Above `critical_at` the prompt is compacted by the
policy's strategies in order, stopping as soon as it is back at `critical_at`:

- pointers: large old tool outputs go to the store as artifacts; a handle stays;
- summarize: the old turns become one summary, written by a call that goes through the
  whole pipeline, so it is recorded, budgeted, rate-limited and routed like any call;
- evict: old tool outputs are blanked, then the oldest messages dropped.

System messages, the last user message and the last `keep_recent` messages are never
touched, and an assistant message that calls tools stays or goes with its results. A
prompt still over the window afterwards halts the run with `context_overflow`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from corral.calls import (
    UPSTREAM_REASONS,
    Call,
    Halt,
    HaltReason,
    LLMCall,
    LLMResult,
    Result,
    estimate_input_tokens,
)
from corral.gates.base import Next, RunContext
from corral.policy import Policy
from corral.state import ArtifactRecord, ConstraintError, Store
from corral.telemetry.audit import AuditLog

__all__ = [
    "BYTES_PER_TOKEN",
    "IMAGE_TOKENS",
    "SUMMARY_MAX_TOKENS",
    "ContextGate",
    "ContextState",
    "prompt_tokens",
]

# English prose and JSON average about four UTF-8 bytes per token in the GPT-4 and Claude
# tokenizers; the JSON framing of each message stands in for the tokens a chat template
# adds. Code and non-Latin scripts run denser (three bytes or fewer per token), which is
# what the margin between critical_at and the window is for.
BYTES_PER_TOKEN = 4
# What an image costs, whatever the bytes of its data URL: a large image on Anthropic
# (about 1,600 tokens at 1.15 megapixels) and more than a high-detail one on GPT-4o.
IMAGE_TOKENS = 1600
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
# A summary has to be much smaller than what it replaces to be worth a call.
SUMMARY_MAX_TOKENS = 512
PREVIEW_CHARS = 200
# Summaries kept per run for re-use, newest last: a gateway client sends the whole history
# with every request, so the same old turns come back until the conversation moves on.
SUMMARIES_KEPT = 8
# Below this many bytes of transcript, a summarizer's window is too small to be of use.
MIN_TRANSCRIPT_BYTES = 1024
EVICTED = "[evicted]"
SYSTEM_ROLES = ("system", "developer")  # `developer` is the system role of newer OpenAI models

SUMMARY_PROMPT = (
    "You compress the earlier part of an AI agent's conversation so that the agent can "
    "carry on its task without it. Write a concise summary of the transcript you are given: "
    "the goals and instructions stated, decisions taken, facts, figures and identifiers "
    "learned, the tool results that matter (copy any artifact handles verbatim), errors met, "
    "and what remains to be done. Plain text, no preamble."
)


@dataclass(slots=True)
class ContextState:
    """What the gate keeps per run, in `ctx.scratch["context"]`."""

    # 0 under warn_at, 1 over warn_at, 2 over critical_at: the band of the last prompt as
    # it arrived, so an event fires when a prompt enters a higher band, not on every call.
    level: int = 0
    utilization: float = 0.0  # the last prompt as it arrived (1.0 = the window is full)
    sent_utilization: float = 0.0  # the same prompt as it was sent on, after any compaction
    tokens: int = 0  # the last prompt's estimated tokens, as it arrived
    window: int = 0  # the window it was measured against
    compactions: int = 0
    stored: set[str] = field(default_factory=set)  # artifact handles known to be in the store
    # digest of a run of old messages -> (how many they are, their summary); oldest first
    summaries: dict[str, tuple[int, str]] = field(default_factory=dict)


def prompt_tokens(call: LLMCall) -> int:
    """A realistic estimate of the prompt's tokens: the UTF-8 bytes of the JSON of its
    messages and tools over BYTES_PER_TOKEN, each image counted as IMAGE_TOKENS.

    The byte count is `estimate_input_tokens`' own, cached on the call, so the budget gate
    (which uses it as an upper bound) and this gate serialize the prompt once between them.
    """
    size = estimate_input_tokens(call)
    for message in call.messages:
        if isinstance(message.get("content"), list):
            size += _image_bytes(message)
    return math.ceil(size / BYTES_PER_TOKEN)


class ContextGate:
    """Sits after the loop gate and before the budget gate, so a compacted prompt is what
    gets budgeted; `bind` it to the pipeline it sits in before the first run."""

    def __init__(
        self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._pipeline: Next | None = None
        # Summary calls in flight: they pass through this gate too, and must not be measured
        # against the agent's figures or compacted in turn.
        self._own: set[int] = set()
        self._windows_for: Policy | None = None
        self._windows: dict[str, tuple[int, str, int]] = {}

    def bind(self, pipeline: Next) -> None:
        """The whole pipeline this gate sits in, which summary calls are sent through."""
        self._pipeline = pipeline

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind == "tool" or call.id in self._own:
            return await next(call, ctx)
        limits = ctx.policy.context
        window, model, max_output = self._window(ctx.policy, call.model)
        reserved = call.max_tokens or max_output
        room = window - reserved
        tokens = prompt_tokens(call)
        state = ctx.scratch.get("context")
        if state is None:
            state = ctx.scratch["context"] = ContextState()
        if room <= 0:
            raise _overflow(call, tokens, window, model, reserved, [])
        utilization = tokens / room
        state.utilization = state.sent_utilization = utilization
        state.tokens, state.window = tokens, window
        level = 2 if utilization > limits.critical_at else 1 if utilization > limits.warn_at else 0
        previous, state.level = state.level, level  # set before any await: calls run at once
        if level > previous:
            figures = {
                "tokens": tokens,
                "window": window,
                "reserved": reserved,
                "model": model,
                "utilization": _percent(utilization),
            }
            for threshold, kind in ((1, "context.warn"), (2, "context.critical")):
                if previous < threshold <= level:
                    await self._audit.append(kind, figures, ctx.run_id)
        if level == 2:
            await self._compact(call, ctx, state, room, (window, model, reserved))
        return await next(call, ctx)

    def _window(self, policy: Policy, name: str) -> tuple[int, str, int]:
        """The largest window on a route, its model and that model's max_output_tokens.
        The route gate moves to larger windows when a model refuses a long prompt, so only
        a prompt too long for the largest is one no model can serve. Kept per snapshot."""
        if self._windows_for is not policy:
            self._windows_for, self._windows = policy, {}
        found = self._windows.get(name)
        if found is None:
            names = policy.routes.get(name, (name,))
            best = max(names, key=lambda n: policy.models[n].context_window)
            model = policy.models[best]
            found = self._windows[name] = (model.context_window, best, model.max_output_tokens)
        return found

    async def _compact(
        self,
        call: LLMCall,
        ctx: RunContext,
        state: ContextState,
        room: int,
        measured: tuple[int, str, int],
    ) -> None:
        limits = ctx.policy.context
        tools = call.params.get("tools")
        prompt = _Prompt(call.messages, len(orjson.dumps(tools)) if tools else 0)
        prompt.protect(limits.keep_recent)
        before = prompt.tokens()
        target = math.floor(limits.critical_at * room)
        tried: list[str] = []
        used: list[str] = []
        for strategy in limits.compaction:
            if prompt.tokens() <= target:
                break
            tried.append(strategy)
            if strategy == "pointers":
                changed = await self._pointers(prompt, ctx, target)
            elif strategy == "summarize":
                changed = await self._summarize(prompt, ctx, state)
            else:
                changed = _evict(prompt, target)
            if changed:
                used.append(strategy)
        after = prompt.tokens()
        if used:
            call.messages = prompt.messages
            # The new prompt's JSON size is known exactly; the budget gate need not redo it.
            call.input_bound = (prompt.messages, prompt.json_bytes())
            state.sent_utilization = after / room
            state.compactions += 1
            await self._audit.append(
                "context.compacted",
                {
                    "strategies": used,
                    "before": _percent(before / room),
                    "after": _percent(after / room),
                    "tokens_before": before,
                    "tokens_after": after,
                    "messages_before": prompt.count_before,
                    "messages_after": len(prompt.messages),
                },
                ctx.run_id,
            )
        if after > room:
            window, model, reserved = measured
            raise _overflow(call, after, window, model, reserved, tried)

    # --- pointers ---------------------------------------------------------------------

    async def _pointers(self, prompt: _Prompt, ctx: RunContext, target: int) -> bool:
        """Old tool outputs over pointer_min_bytes become handles, oldest first."""
        minimum = ctx.policy.context.pointer_min_bytes
        names = _tool_names(prompt.messages)
        changed = False
        for index in prompt.old():
            if prompt.tokens() <= target:
                break
            message = prompt.messages[index]
            if _role(message) != "tool":
                continue
            text = _plain_text(message.get("content"))
            if text is None:
                continue
            content = text.encode()
            if len(content) <= minimum:
                continue
            handle = "art_" + hashlib.sha256(f"{ctx.run_id}\0".encode() + content).hexdigest()[:24]
            name = names.get(message.get("tool_call_id")) or message.get("name") or "a tool"
            preview = text[:PREVIEW_CHARS] + ("..." if len(text) > PREVIEW_CHARS else "")
            pointer = (
                f"[artifact {handle}: {len(content)} bytes of tool output from {name}; "
                f"first {PREVIEW_CHARS} chars: {preview}]"
            )
            if len(pointer.encode()) >= len(content):
                continue  # a small pointer_min_bytes: the handle would cost more than it saves
            if not await self._keep(handle, content, ctx):
                continue
            prompt.replace(index, {**message, "content": pointer})
            changed = True
        return changed

    async def _keep(self, handle: str, content: bytes, ctx: RunContext) -> bool:
        """Store `content` under `handle` unless it is there already; false if it could not
        be stored (then the tool output stays in the prompt: a handle to nothing is worse)."""
        state: ContextState = ctx.scratch["context"]
        if handle in state.stored:
            return True
        if await self._store.get_artifact(handle) is None:
            record = ArtifactRecord(
                handle, ctx.run_id, content, _media_type(content), self._clock()
            )
            try:
                await self._store.put_artifact(record)
            except ConstraintError:
                # Another call of the run stored the same output first, or the run is not
                # in the store; only the first is fine.
                if await self._store.get_artifact(handle) is None:
                    return False
        state.stored.add(handle)
        return True

    # --- summarize --------------------------------------------------------------------

    async def _summarize(self, prompt: _Prompt, ctx: RunContext, state: ContextState) -> bool:
        """The old messages become one user message holding their summary.

        The summary sits where the newest of them was: before the last user message when
        all of them came before it, else after it, so what the model reads last is still
        the recent turns. A user message keeps the conversation valid for OpenAI and
        Anthropic alike (Anthropic takes system text apart and merges two user turns)."""
        old = prompt.old()
        # A summary may run to SUMMARY_MAX_TOKENS: over fewer than that, a call can't pay.
        if sum(prompt.raw[i] for i in old) <= SUMMARY_MAX_TOKENS * BYTES_PER_TOKEN:
            return False
        # Chained digests: the summary of the first k old messages is found again when a
        # later request brings the same k and more, and only the rest needs summarizing.
        digests: list[str] = []
        chain = b""
        for index in old:
            chain = hashlib.sha256(
                chain + orjson.dumps(prompt.messages[index], option=orjson.OPT_SORT_KEYS)
            ).digest()
            digests.append(chain.hex())
        covered, earlier = 0, ""
        for k in range(len(digests), 0, -1):
            found = state.summaries.pop(digests[k - 1], None)
            if found is not None:
                covered, earlier = k, found[1]
                state.summaries[digests[k - 1]] = found  # now the most recently used
                break
        text = earlier
        if covered < len(old):
            written = await self._write_summary(prompt, ctx, old[covered:], earlier)
            if written is None:
                return False
            text = written
            state.summaries.pop(digests[-1], None)
            state.summaries[digests[-1]] = (len(old), text)
            while len(state.summaries) > SUMMARIES_KEPT:
                del state.summaries[next(iter(state.summaries))]
        summary = {"role": "user", "content": f"[summary of {len(old)} earlier messages]\n{text}"}
        if prompt.splice(set(old), old[-1], summary, dry_run=True) >= prompt.tokens():
            return False
        prompt.splice(set(old), old[-1], summary)
        return True

    async def _write_summary(
        self, prompt: _Prompt, ctx: RunContext, indices: list[int], earlier: str
    ) -> str | None:
        """A summary of the messages at `indices`, following on from `earlier` (the summary
        of the messages before them, if any); None if none could be had."""
        summarizer = self._summarizer(ctx)
        if self._pipeline is None:
            await self._failed(ctx, summarizer, "the gate was never bound to a pipeline")
            return None
        budget = self._transcript_budget(ctx, summarizer)
        if budget < MIN_TRANSCRIPT_BYTES:
            await self._failed(ctx, summarizer, "the summarizer's window is too small")
            return None
        names = _tool_names(prompt.messages)
        texts = [_render(prompt.messages[i], names) for i in indices]
        head = ""
        if earlier:
            head = (
                f"Summary of the conversation so far:\n{earlier}\n\nThe conversation went on:\n\n"
            )
        body = "\n\n".join(_fit(texts, budget - len(head.encode()) - 2 * len(texts)))
        return await self._ask(ctx, summarizer, head + body)

    def _summarizer(self, ctx: RunContext) -> str:
        """The policy's summarizer, else the model of the agent's route with the lowest
        output price (a summary is mostly read, little written, but it is the output that
        is dear); models of unknown price come last."""
        chosen = ctx.policy.context.summarizer
        if chosen is not None:
            return chosen
        prices = ctx.policy.prices

        def cost(name: str) -> tuple[int, float, float]:
            price = prices.get(name)
            if price is None:
                return (1, 0.0, 0.0)
            return (0, price.output_per_mtok, price.input_per_mtok)

        return min(ctx.policy.routes[ctx.agent_policy.route], key=cost)

    def _transcript_budget(self, ctx: RunContext, summarizer: str) -> int:
        """Bytes of transcript the summarizer can take, kept at critical_at of its room as the
        agent's own prompts are."""
        window = self._window(ctx.policy, summarizer)[0]
        room = window - SUMMARY_MAX_TOKENS - math.ceil(len(SUMMARY_PROMPT) / BYTES_PER_TOKEN)
        return math.floor(room * ctx.policy.context.critical_at) * BYTES_PER_TOKEN

    async def _ask(self, ctx: RunContext, summarizer: str, transcript: str) -> str | None:
        """The summarizer's text, or None (with an audit event) if the call failed. Halts
        propagate, the run's budget or time is spent, except those saying the summarizer's
        models could not answer: that is the summary failing, not the run."""
        assert self._pipeline is not None
        call = LLMCall(
            model=summarizer,
            messages=[
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": transcript},
            ],
            max_tokens=SUMMARY_MAX_TOKENS,
        )
        self._own.add(call.id)
        try:
            result = await self._pipeline(call, ctx)
        except Halt as halt:
            if halt.reason not in UPSTREAM_REASONS:
                raise
            await self._failed(ctx, summarizer, str(halt))
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(ctx, summarizer, f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self._own.discard(call.id)
        text = result.text.strip() if isinstance(result, LLMResult) else ""
        if not text:
            await self._failed(ctx, summarizer, "the summarizer answered no text")
            return None
        return text

    async def _failed(self, ctx: RunContext, summarizer: str, error: str) -> None:
        await self._audit.append(
            "context.summarize_failed", {"model": summarizer, "error": error[:300]}, ctx.run_id
        )


# --- evict ------------------------------------------------------------------------------


def _evict(prompt: _Prompt, target: int) -> bool:
    """Old tool outputs become "[evicted]", oldest first; then the oldest old messages are
    dropped (an assistant message that calls tools with its results), and one user message
    says how many went, where the first of them was: the model learns that something is
    missing, and the first turn after the system prompt stays a user turn."""
    changed = False
    for index in prompt.old():
        if prompt.tokens() <= target:
            return changed
        message = prompt.messages[index]
        if _role(message) == "tool" and message.get("content") != EVICTED:
            blank = {**message, "content": EVICTED}
            if len(orjson.dumps(blank)) < prompt.raw[index]:
                prompt.replace(index, blank)
                changed = True
    if prompt.tokens() <= target:
        return changed
    dropped: set[int] = set()
    marker: dict[str, Any] = {}
    for unit in _units(prompt):
        dropped.update(unit)
        marker = {
            "role": "user",
            "content": f"[{len(dropped)} earlier messages were dropped to fit the context window]",
        }
        if prompt.splice(dropped, min(dropped), marker, dry_run=True) <= target:
            break
    # The note costs a little: dropping one short message could leave the prompt longer.
    if dropped and prompt.splice(dropped, min(dropped), marker, dry_run=True) < prompt.tokens():
        prompt.splice(dropped, min(dropped), marker)
        changed = True
    return changed


def _units(prompt: _Prompt) -> list[list[int]]:
    """The old messages in droppable units, oldest first: an assistant message that calls
    tools together with the tool results right after it, any other message alone."""
    units: list[list[int]] = []
    messages = prompt.messages
    for index in prompt.old():
        if (
            _role(messages[index]) == "tool"
            and units
            and units[-1][-1] == index - 1
            and _calls_tools(messages[units[-1][0]])
        ):
            units[-1].append(index)
        else:
            units.append([index])
    return units


# --- the prompt being compacted ------------------------------------------------------------


class _Prompt:
    """The messages being compacted, each with its JSON size, so that a change costs the
    changed message's serialization and not the whole prompt's.

    Messages are never changed in place: a replaced one is a new dict, and the list is the
    gate's own, so the caller's list and dicts stay as they were."""

    __slots__ = (
        "_kept",
        "count_before",
        "image_total",
        "images",
        "messages",
        "raw",
        "raw_total",
        "tools",
    )

    def __init__(self, messages: Sequence[Mapping[str, Any]], tools: int) -> None:
        self.messages: list[Mapping[str, Any]] = list(messages)
        self.count_before = len(self.messages)
        self.raw = [len(orjson.dumps(m)) for m in self.messages]
        self.images = [_image_bytes(m) for m in self.messages]
        self.raw_total = sum(self.raw)
        self.image_total = sum(self.images)
        self.tools = tools
        self._kept: set[int] = set()

    def protect(self, keep_recent: int) -> None:
        """Mark what no strategy may touch: system messages, the last user message and the
        last `keep_recent` messages, widened to the start of a tool-calling turn they cut.
        Kept by identity, so the marks hold while strategies replace other messages."""
        messages = self.messages
        start = max(len(messages) - keep_recent, 0)
        while start > 0 and _role(messages[start]) == "tool":
            start -= 1
        kept = {id(m) for m in messages[start:]}
        kept.update(id(m) for m in messages if _role(m) in SYSTEM_ROLES)
        for message in reversed(messages):
            if _role(message) == "user":
                kept.add(id(message))
                break
        self._kept = kept

    def old(self) -> list[int]:
        """Indices of the messages strategies may compact, oldest first."""
        return [i for i, m in enumerate(self.messages) if id(m) not in self._kept]

    def tokens(self) -> int:
        return self._tokens(self.raw_total, self.image_total, len(self.messages))

    def json_bytes(self) -> int:
        """len(orjson.dumps(messages)) plus the tools: `estimate_input_tokens`' figure."""
        return _list_bytes(self.raw_total, len(self.messages)) + self.tools

    def _tokens(self, raw: int, images: int, count: int) -> int:
        return math.ceil((_list_bytes(raw, count) + self.tools + images) / BYTES_PER_TOKEN)

    def replace(self, index: int, message: Mapping[str, Any]) -> None:
        raw, images = len(orjson.dumps(message)), _image_bytes(message)
        self.raw_total += raw - self.raw[index]
        self.image_total += images - self.images[index]
        self.messages[index], self.raw[index], self.images[index] = message, raw, images

    def splice(
        self,
        drop: set[int],
        at: int,
        insert: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> int:
        """Drop the messages at `drop` and put `insert` at index `at` (one of them); return
        the tokens the prompt has (or, with dry_run, would have) then."""
        raw = len(orjson.dumps(insert))
        images = _image_bytes(insert)
        raw_total = self.raw_total - sum(self.raw[i] for i in drop) + raw
        image_total = self.image_total - sum(self.images[i] for i in drop) + images
        count = len(self.messages) - len(drop) + 1
        if not dry_run:
            kept = [i for i in range(len(self.messages)) if i not in drop or i == at]
            messages = [insert if i == at else self.messages[i] for i in kept]
            self.raw = [raw if i == at else self.raw[i] for i in kept]
            self.images = [images if i == at else self.images[i] for i in kept]
            self.messages, self.raw_total, self.image_total = messages, raw_total, image_total
        return self._tokens(raw_total, image_total, count)


def _list_bytes(item_bytes: int, count: int) -> int:
    """The JSON size of a list of `count` items of `item_bytes` bytes in all: brackets, commas."""
    return item_bytes + count + 1 if count else 2


# --- messages --------------------------------------------------------------------------------


def _role(message: Mapping[str, Any]) -> Any:
    return message.get("role")


def _calls_tools(message: Mapping[str, Any]) -> bool:
    return _role(message) == "assistant" and bool(message.get("tool_calls"))


def _image_bytes(message: Mapping[str, Any]) -> int:
    """What to add to a message's JSON bytes so that each image part counts IMAGE_TOKENS:
    providers bill an image by its pixels, not by the bytes of its data URL or link."""
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    delta = 0
    for part in content:
        if isinstance(part, Mapping) and part.get("type") in _IMAGE_PARTS:
            delta += IMAGE_TOKENS * BYTES_PER_TOKEN - len(orjson.dumps(part))
    return delta


def _plain_text(content: Any) -> str | None:
    """A message's content as one text, or None if it holds anything but text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, Mapping) and part.get("type") == "text" for part in content
    ):
        return "\n".join(str(part.get("text", "")) for part in content)
    return None


def _media_type(content: bytes) -> str:
    if content.lstrip()[:1] in (b"{", b"["):
        try:
            orjson.loads(content)
        except orjson.JSONDecodeError:
            return "text/plain"
        return "application/json"
    return "text/plain"


def _tool_names(messages: Sequence[Mapping[str, Any]]) -> dict[Any, str]:
    """Tool call id -> the name of the tool it called, from the assistant messages."""
    names: dict[Any, str] = {}
    for message in messages:
        if not _calls_tools(message):
            continue
        for call in message["tool_calls"]:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                names[call.get("id")] = function["name"]
    return names


def _render(message: Mapping[str, Any], names: Mapping[Any, str]) -> str:
    """One message as a line of the transcript the summarizer reads."""
    role = _role(message)
    content = message.get("content")
    if isinstance(content, list):
        text = " ".join(
            str(part.get("text", ""))
            if isinstance(part, Mapping) and part.get("type") == "text"
            else f"[{part.get('type') if isinstance(part, Mapping) else 'part'}]"
            for part in content
        )
    else:
        text = "" if content is None else str(content)
    if role == "tool":
        name = names.get(message.get("tool_call_id")) or message.get("name") or "a tool"
        return f"[tool result from {name}] {text}"
    lines = [f"[{role}] {text}"] if text else []
    if _calls_tools(message):
        for call in message["tool_calls"]:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                called = f"{function.get('name')}({function.get('arguments') or ''})"
                lines.append(f"[{role} called {called}]")
    return "\n".join(lines) or f"[{role}]"


def _fit(texts: list[str], budget: int) -> list[str]:
    """Cut the longest texts down to one common length so that all fit in `budget` bytes:
    short messages stay whole and the long ones share what is left."""
    sizes = [len(text.encode()) for text in texts]
    if sum(sizes) <= budget:
        return texts
    left, cap = max(budget, 0), 0
    for position, size in enumerate(sorted(sizes)):
        share = left // (len(sizes) - position)
        if size > share:
            cap = share
            break
        left -= size
    return [
        text if size <= cap else _clip(text, size, cap)
        for text, size in zip(texts, sizes, strict=True)
    ]


def _clip(text: str, size: int, cap: int) -> str:
    note = f" ...[{size - cap} bytes cut]"
    keep = max(cap - len(note), 0)
    return text.encode()[:keep].decode(errors="ignore") + note


def _percent(utilization: float) -> float:
    return round(utilization * 100, 1)


def _overflow(
    call: LLMCall, tokens: int, window: int, model: str, reserved: int, tried: list[str]
) -> Halt:
    after = f" after {', '.join(tried)}" if tried else ""
    return Halt(
        HaltReason.CONTEXT_OVERFLOW,
        f"the prompt needs about {tokens} tokens{after}, and with {reserved} set aside for "
        f"the answer the largest window on '{call.model}' ({model}: {window}) has room for "
        f"{max(window - reserved, 0)}",
        {
            "rule": "context",
            "tokens": tokens,
            "window": window,
            "reserved": reserved,
            "model": model,
            "utilization": _percent(tokens / max(window - reserved, 1)),
            "strategies_tried": tried,
        },
    )
