"""The output gate: what a model answers is checked before anyone receives it.

- `guards.output.pii`: `redact` replaces personal data in the answer's text with labels
  (or masks, or a hash stable within the run: `redact_style`); `block` halts with
  `guard.output`; `flag` records an event. Tool-call arguments are left alone: they are
  input to the agent's own tools, which need the real address.
- A JSON schema (the request's `response_format`, or `run.chat(schema=...)`): an answer
  that does not match is sent back once (`guards.output.schema.repair`) with the
  validation error, as a held call of its own through the whole pipeline, charged to the
  run; still wrong, the run halts with `guard.output`.
- `guards.output.grounding`: sentences the run's tool results do not support are flagged
  or, with `block`, halt the run (guards/grounding.py).

A stream is redacted as it goes without letting a value through split across chunks:
the gate holds back its last word (a value without spaces, such as an email or a URL,
ends at a whitespace) and the digit groups before it (a value with spaces, such as a
card, a phone number or an IBAN, is made of them; see safe_cut), and moves the cut
before any finding it would split. Ordinary text goes out one word behind. A stream
that must be checked whole (a schema, or grounding that blocks) is held whole and sent
once checked.

A detector that raises, or runs past `guards.output.timeout`, blocks the answer: fail
closed. The answer's upstream body (`raw`) is dropped whenever its text is rewritten, so
a pass-through door never sends the unredacted original.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from corral.calls import Call, Halt, HaltReason, LLMCall, LLMResult, Result, StreamDelta, StreamSink
from corral.gates.base import Next, RunContext
from corral.gates.guard_clock import run_timed
from corral.gates.input_guard import message_text
from corral.guards import Finding, find_pii, redact
from corral.guards.grounding import unsupported
from corral.guards.pii_patterns import CONTEXT_BEFORE
from corral.policy_guards import OutputGuards
from corral.providers.base import ProviderError
from corral.telemetry.audit import AuditLog
from corral.telemetry.guard_stats import GuardStats

# A piece of a value written with spaces: a card's or a phone's digit groups, an IBAN's
# first group (DE89), a number in brackets or with a sign.
_VALUE_PART = re.compile(r"[\d+()\-./]*\d[\d+()\-./,:;]*|[A-Z]{2}\d{2}[A-Z0-9]*")
_WORDS = re.compile(r"\S+")
# How much of what a stream sent already is read again before what it holds: the
# detector looks this far back for a label (pii_patterns.CONTEXT_BEFORE).
CONTEXT_CHARS = CONTEXT_BEFORE
SHOWN = 200
REPAIR_PROMPT = (
    "Your answer does not match the required JSON schema: {error}. Answer again with only "
    "the corrected JSON, nothing else."
)


def answer_schema(call: LLMCall) -> Mapping[str, Any] | None:
    """The JSON schema the answer must match: the SDK's, else the request's."""
    if call.schema is not None:
        return call.schema
    wanted = call.params.get("response_format")
    if not isinstance(wanted, Mapping):
        return None
    if wanted.get("type") == "json_schema":
        spec = wanted.get("json_schema")
        if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
            return spec["schema"]  # type: ignore[no-any-return]
    if wanted.get("type") == "json_object":
        return {"type": "object"}
    return None


class OutputGuardGate:
    def __init__(
        self,
        audit: AuditLog,
        stats: GuardStats,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._audit = audit
        self._stats = stats
        self._clock = clock
        self._pipeline: Next | None = None

    def bind(self, pipeline: Next) -> None:
        """The whole pipeline, for repair calls (they are held and charged as any call)."""
        self._pipeline = pipeline

    async def __call__(self, call: Call, ctx: RunContext, next: Next) -> Result:
        if call.kind != "llm" or call.guard_made:
            return await next(call, ctx)
        guards = ctx.policy.guards.output
        schema = answer_schema(call)
        if guards.pii == "off" and guards.grounding == "off" and schema is None:
            return await next(call, ctx)
        sink = call.sink
        stream = None
        if sink is not None:
            whole = schema is not None or guards.grounding == "block"
            stream = _Holdback(self, sink, guards, ctx, whole)
            call.sink = stream.feed
        try:
            result = await next(call, ctx)
        except ProviderError:
            # A stream cut mid-way: what arrived and was held back goes out checked, as the
            # end of what the caller got (nothing of a stream checked whole: it was not).
            if stream is not None and not stream.whole:
                with contextlib.suppress(Halt):
                    await stream.finish(stream.sent + stream.redacted_rest())
            raise
        finally:
            call.sink = sink
        assert isinstance(result, LLMResult)
        try:
            checked = await self._checked(call, ctx, result, schema, guards, stream)
        except Halt as halt:
            if halt.spent is None:
                halt.spent = result  # the answer was paid for: its step shows the cost
            raise
        if stream is not None:
            await stream.finish(checked.text)
        return checked

    async def _checked(
        self,
        call: LLMCall,
        ctx: RunContext,
        result: LLMResult,
        schema: Mapping[str, Any] | None,
        guards: OutputGuards,
        stream: _Holdback | None,
    ) -> LLMResult:
        if schema is not None:
            result = await self._matching(call, ctx, result, schema, guards)
        text = result.text
        if guards.pii != "off" and stream is not None and not stream.whole:
            # Redacted (or refused) as it streamed: the answer is what the stream says.
            text = stream.sent + stream.redacted_rest()
            if guards.pii == "flag":
                await self._pii(result.text, guards, ctx)
        elif guards.pii != "off":
            text = await self._pii(text, guards, ctx)
        if guards.grounding != "off":
            await self._grounded(text, call.messages, guards, ctx)
        if text == result.text:
            return result
        return replace(result, text=text, raw=None)  # the upstream body holds the original

    async def _pii(self, text: str, guards: OutputGuards, ctx: RunContext) -> str:
        findings = self._timed(guards, ctx, lambda: find_pii(text))
        if not findings:
            return text
        entities = sorted({f.entity for f in findings})
        if guards.pii == "block":
            raise self._personal_data(findings)
        if guards.pii == "flag":
            self._stats.count("output", "flagged")
            await self._audit.append(
                "guard.flagged", {"guard": "output.pii", "entities": entities}, ctx.run_id
            )
            return text
        self._stats.count("output", "redacted")
        salt = ctx.run_id.encode()
        return redact(text, findings, guards.redact_style, salt=salt)

    def _timed(self, guards: OutputGuards, ctx: RunContext, check: Callable[[], Any]) -> Any:
        """Run a detector under the guard's time budget; a failure blocks (fail closed)."""
        try:
            found, took = run_timed(check, self._clock)
        except Exception as exc:
            raise self._failed(f"{type(exc).__name__}: {exc}") from exc
        if took > guards.timeout:
            raise self._failed(f"it took {took * 1000:.0f} ms, over {guards.timeout * 1000:g} ms")
        return found

    def _personal_data(self, findings: Sequence[Finding]) -> Halt:
        self._stats.count("output", "blocked")
        entities = sorted({f.entity for f in findings})
        return Halt(
            HaltReason.GUARD_OUTPUT,
            f"the answer holds personal data ({', '.join(entities)})",
            {"rule": "guards.output.pii", "entities": entities, "count": len(findings)},
        )

    def _failed(self, why: str) -> Halt:
        self._stats.error("output")
        return Halt(
            HaltReason.GUARD_OUTPUT,
            f"the output guard could not check the answer ({why}), so it is blocked",
            {"rule": "guards.output (fail closed)", "error": why},
        )

    async def _matching(
        self,
        call: LLMCall,
        ctx: RunContext,
        result: LLMResult,
        schema: Mapping[str, Any],
        guards: OutputGuards,
    ) -> LLMResult:
        """The answer if it matches the schema, else its repair; a halt if none does."""
        error = _schema_error(result.text, schema)
        attempts = guards.schema_.repair
        while error is not None and attempts > 0 and self._pipeline is not None:
            attempts -= 1
            await self._audit.append(
                "guard.repair", {"guard": "output.schema", "error": error[:SHOWN]}, ctx.run_id
            )
            repair = LLMCall(
                call.model,
                [
                    *call.messages,
                    {"role": "assistant", "content": result.text},
                    {"role": "user", "content": REPAIR_PROMPT.format(error=error)},
                ],
                call.params,
                max_tokens=call.max_tokens,
                schema=schema,
                guard_made=True,
            )
            repaired = await self._pipeline(repair, ctx)
            assert isinstance(repaired, LLMResult)
            result = replace(repaired, usage=result.usage, cost_usd=result.cost_usd)
            error = _schema_error(result.text, schema)
        if error is not None:
            self._stats.count("output", "blocked")
            raise Halt(
                HaltReason.GUARD_OUTPUT,
                f"the answer does not match its JSON schema: {error}",
                {"rule": "guards.output.schema", "error": error[:SHOWN],
                 "repairs": guards.schema_.repair},
            )  # fmt: skip
        return result

    async def _grounded(
        self,
        text: str,
        messages: Sequence[Mapping[str, Any]],
        guards: OutputGuards,
        ctx: RunContext,
    ) -> None:
        sources = [message_text(m.get("content")) for m in messages if m.get("role") == "tool"]
        found = self._timed(guards, ctx, lambda: unsupported(text, sources))
        if not found:
            return
        shown = [{"text": s.text[:SHOWN], "support": s.support} for s in found[:10]]
        if guards.grounding == "block":
            self._stats.count("output", "blocked")
            raise Halt(
                HaltReason.GUARD_OUTPUT,
                f"{len(found)} sentence(s) of the answer are not supported by the run's sources",
                {"rule": "guards.output.grounding", "unsupported": shown},
            )
        self._stats.count("output", "flagged")
        await self._audit.append(
            "guard.flagged", {"guard": "output.grounding", "unsupported": shown}, ctx.run_id
        )


def safe_cut(held: str) -> int:
    """Where the text a stream holds may be cut: before its last word (it may still be
    growing: an email, a URL) and before the words at its end that could be parts of a
    value written with spaces (digit groups). Ordinary text goes out a word behind."""
    cut = len(held)
    for word in reversed(list(_WORDS.finditer(held))):
        if word.end() == len(held) or _VALUE_PART.fullmatch(word.group()):
            cut = word.start()
            continue
        break
    return cut


def _schema_error(text: str, schema: Mapping[str, Any]) -> str | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    try:
        error = best_match(Draft202012Validator(schema).iter_errors(value))
    except SchemaError as exc:
        return f"the schema itself is invalid ({exc.message})"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


class _Holdback:
    """A stream's text on its way to the client, redacted, never cut inside a value."""

    def __init__(
        self,
        gate: OutputGuardGate,
        sink: StreamSink,
        guards: OutputGuards,
        ctx: RunContext,
        whole: bool,
    ) -> None:
        self._gate = gate
        self._sink = sink
        self._guards = guards
        self._ctx = ctx
        self.whole = whole  # held whole, sent once checked
        self._pending = ""
        self.sent = ""

    async def feed(self, delta: StreamDelta) -> None:
        if delta.tool_index is not None or delta.keepalive:
            await self._sink(delta)
            return
        self._pending += delta.text
        if self.whole or self._guards.pii in ("off", "flag"):
            if not self.whole:
                await self._emit(self._pending)
                self._pending = ""
            return
        cut = safe_cut(self._pending)
        if cut <= 0:
            return
        findings = self._findings(self._pending)
        for finding in findings:
            if finding.start < cut < finding.end:
                cut = finding.start  # never split a value: hold it whole
        head = self._pending[:cut]
        if not head:
            return
        kept = [f for f in findings if f.end <= cut]
        await self._emit(self._clean(head, kept))
        self._pending = self._pending[cut:]

    def _clean(self, text: str, findings: Sequence[Finding]) -> str:
        """`text` as it may be sent: its findings redacted, or a halt under `block`."""
        if not findings:
            return text
        if self._guards.pii == "block":
            raise self._gate._personal_data(findings)
        self._gate._stats.count("output", "redacted")
        return redact(text, findings, self._guards.redact_style, salt=self._ctx.run_id.encode())

    def redacted_rest(self) -> str:
        """What is still held, as it will be sent, at the end of the answer."""
        rest = self._pending
        if not rest or self._guards.pii in ("off", "flag"):
            return rest
        return self._clean(rest, self._findings(rest))

    def _findings(self, held: str) -> list[Finding]:
        """The findings in the text held back, read with the end of what was sent before
        it: a label sent already ("Phone: ") still makes the number after it one."""
        context = self.sent[-CONTEXT_CHARS:]
        found = self._gate._timed(self._guards, self._ctx, lambda: find_pii(context + held))
        shift = len(context)
        return [
            Finding(f.entity, max(f.start - shift, 0), f.end - shift, f.score)
            for f in found
            if f.end > shift
        ]

    async def finish(self, text: str) -> None:
        """Send what the client has not had of the checked answer."""
        self._pending = ""
        rest = text[len(self.sent) :] if text.startswith(self.sent) else text
        await self._emit(rest)

    async def _emit(self, text: str) -> None:
        if text:
            self.sent += text
            await self._sink(StreamDelta(text=text))
