"""The policy's approval rules: CEL expressions compiled at load, what happens while and
after a call waits for a human, and the index that keeps rules off the hot path.

A rule is evaluated for every tool call it could match, so at load each rule is read
for the tools and scopes it names in a top-level conjunct (`tool == "sql_write" && ...`)
and filed under them: a call of another tool never evaluates it. Per tool, the rules
that remain and the variables they read are fixed once per policy snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

import cel
from pydantic import BeforeValidator, Field, model_validator

from corral.policy_types import Duration, FrozenMap, HttpUrl, PositiveDuration, Strict

Scope = Literal["read", "write", "irreversible"]
SCOPE_RANK: Mapping[str, int] = MappingProxyType({"read": 0, "write": 1, "irreversible": 2})

# Names a rule may read; the approval gate binds them per tool call.
RULE_VARIABLES = frozenset(
    {"tool", "args", "scope", "agent", "agent_type", "session", "task", "run", "preview"}
)
# The fields of `run` a rule may read: the run's totals before this call.
RUN_FIELDS = frozenset({"cost_usd", "steps", "tool_calls", "tokens", "waiting_s"})
_CEL_FUNCTIONS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double",
        "string", "bool", "bytes", "type", "dyn", "duration", "timestamp", "has", "all",
        "exists", "exists_one", "map", "filter", "lowerAscii", "upperAscii", "trim",
        "getFullYear", "getMonth", "getDayOfMonth", "getDayOfWeek", "getHours", "getMinutes",
    }
)  # fmt: skip
# Variables bound by a comprehension macro, e.g. the `k` of args.exists(k, k == "x").
_MACRO_BINDING = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_CEL_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*?)(?:\n|$)")
_RUN_FIELD = re.compile(r"(?<![\w.])run\s*\.\s*([A-Za-z_]\w*)")
_STRING = r"(?:\"([^\"\\]*)\"|'([^'\\]*)')"
_EQUALS = re.compile(rf"^(tool|scope)\s*==\s*{_STRING}$|^{_STRING}\s*==\s*(tool|scope)$")
_IN_LIST = re.compile(r"^(tool|scope)\s+in\s*\[(.*)\]$", re.S)
_LIST_ITEM = re.compile(rf"\s*{_STRING}\s*(?:,|$)")


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled CEL expression, with what the index needs: the tools and scopes it can
    match (None: any) and the variables it reads."""

    source: str
    program: Any
    tools: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    variables: frozenset[str] = frozenset()
    run_fields: frozenset[str] = frozenset()  # the fields of `run` it reads

    def matches(self, variables: Mapping[str, Any] | Any) -> bool:
        """True if the rule fires; a cel.Context built once may serve many rules."""
        context = variables if isinstance(variables, cel.Context) else dict(variables)
        return self.program.execute(context) is True

    def can_match(self, tool: str, scope: str) -> bool:
        return (self.tools is None or tool in self.tools) and (
            self.scopes is None or scope in self.scopes
        )


def compile_rule(value: object) -> Rule:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a rule expression as a string, got {value!r}")
    try:
        program = cel.compile(value)
    except ValueError as exc:
        found = _CEL_ERROR.search(str(exc))
        where = f" at column {found.group(2)}: {found.group(3)}" if found else f": {exc}"
        raise ValueError(f"invalid rule expression{where}") from None
    bound = set(_MACRO_BINDING.findall(value))
    variables = set(program.variables()) - bound
    unknown = sorted(variables - RULE_VARIABLES)
    if unknown:
        known = ", ".join(sorted(RULE_VARIABLES))
        raise ValueError(f"unknown name '{unknown[0]}' in rule (known: {known})")
    for function in program.functions():
        if function[0] not in "_!-@" and function not in _CEL_FUNCTIONS:
            raise ValueError(f"unknown function '{function}' in rule")
    run_fields: set[str] = set()
    if "run" in variables:
        run_fields = set(_RUN_FIELD.findall(value))
        for field in sorted(run_fields - RUN_FIELDS):
            known = ", ".join(sorted(RUN_FIELDS))
            raise ValueError(f"unknown field 'run.{field}' in rule (known: {known})")
        if not run_fields:  # `run` read whole (e.g. has(run.x), run["steps"]): give it all
            run_fields = set(RUN_FIELDS)
    tools, scopes = _restrictions(value)
    return Rule(value, program, tools, scopes, frozenset(variables), frozenset(run_fields))


def _restrictions(source: str) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """The tools and scopes a rule's top-level conjuncts pin it to, if any. Conservative:
    a conjunct it cannot read restricts nothing, so the rule is evaluated more, never less."""
    tools: frozenset[str] | None = None
    scopes: frozenset[str] | None = None
    for conjunct in _conjuncts(source):
        found = _pinned(conjunct)
        if found is None:
            continue
        name, values = found
        if name == "tool":
            tools = values if tools is None else tools & values
        else:
            scopes = values if scopes is None else scopes & values
    return tools, scopes


def _conjuncts(source: str) -> list[str]:
    """`a && (b || c) && d` -> ['a', '(b || c)', 'd']: split on && outside brackets and
    strings."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    index = 0
    while index < len(source):
        char = source[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and source.startswith("&&", index):
            parts.append(source[start:index])
            start = index + 2
            index += 1
        index += 1
    parts.append(source[start:])
    return [_strip_brackets(part.strip()) for part in parts]


def _strip_brackets(text: str) -> str:
    """'((a))' -> 'a'; '(a) || (b)' stays: its first bracket closes before the end."""
    while text.startswith("(") and text.endswith(")") and _closes_at_end(text):
        text = text[1:-1].strip()
    return text


def _closes_at_end(text: str) -> bool:
    depth = 0
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index == len(text) - 1
    return False


def _pinned(conjunct: str) -> tuple[str, frozenset[str]] | None:
    equals = _EQUALS.match(conjunct)
    if equals is not None:
        name = equals.group(1) or equals.group(6)
        value = next(g for g in equals.group(2, 3, 4, 5) if g is not None)
        return name, frozenset({value})
    listed = _IN_LIST.match(conjunct)
    if listed is not None:
        body = listed.group(2)
        items = _LIST_ITEM.findall(body)
        if "".join(_LIST_ITEM.sub("", body).split()):
            return None  # something other than string literals in the list
        return listed.group(1), frozenset(a or b for a, b in items)
    return None


# --- what a rule does -------------------------------------------------------------


class ApprovalAction(Strict):
    """How long a call waits for a human, and what happens when nobody answers or the
    answer is no. `approvals_default` is one (for irreversible tools no rule matched)."""

    timeout: PositiveDuration = 3600.0
    on_timeout: Literal["cancel", "escalate", "fallback"] = "cancel"
    # escalate: who is told the second time (a webhook URL, or a group of
    # approvals_notify.groups), and how long the escalated approval may wait.
    escalate_to: str | None = None
    escalate_timeout: PositiveDuration | None = None
    # fallback: the lower-risk tool that runs instead, with the same arguments.
    fallback_tool: str | None = None
    on_reject: Literal["replan", "halt"] = "replan"

    @model_validator(mode="after")
    def _keys_that_act(self) -> ApprovalAction:
        # A key that loads must act: these do only with their own on_timeout.
        if self.on_timeout == "fallback" and self.fallback_tool is None:
            raise ValueError("on_timeout: fallback needs fallback_tool: the tool to run instead")
        if self.fallback_tool is not None and self.on_timeout != "fallback":
            raise ValueError(
                f"fallback_tool is used only with on_timeout: fallback (this is {self.on_timeout})"
            )
        for key in ("escalate_to", "escalate_timeout"):
            if getattr(self, key) is not None and self.on_timeout != "escalate":
                raise ValueError(
                    f"{key} is used only with on_timeout: escalate (this is {self.on_timeout})"
                )
        return self

    @property
    def second_timeout(self) -> float:
        return self.timeout if self.escalate_timeout is None else self.escalate_timeout


class ApprovalRule(ApprovalAction):
    when: Annotated[Rule, BeforeValidator(compile_rule)]


class ApprovalsNotify(Strict):
    """Where new approval requests are posted (JSON, with a Slack-compatible `text`)."""

    webhook: HttpUrl | None = None
    groups: FrozenMap[HttpUrl] = Field(default_factory=lambda: MappingProxyType({}))
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    backoff: Duration = 0.5  # doubled after each failed attempt
    timeout: PositiveDuration = 5.0


# --- the index --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What the approval gate does for calls of one tool: the rules that could match it,
    in policy order with their index there, and the variables (and fields of `run`)
    those rules read; `gated`: whether any call of the tool may need a human or be
    shadowed by the tool's own settings (an agent in shadow mode adds its writes)."""

    rules: tuple[tuple[int, ApprovalRule], ...]
    variables: frozenset[str]
    run_fields: frozenset[str]
    gated: bool
    # The rules as one expression giving the position of the first that matches, or -1:
    # one evaluation instead of one per rule (each costs about 1 µs more than its work).
    # It fails where a rule fails or gives no bool; then they are evaluated one by one.
    first: Any = None

    def first_match(self, context: Any) -> tuple[int, str | None]:
        """The position in `rules` of the first rule that matches, fails, or gives no bool
        (each counts as a match: fail closed), with why it failed; (-1, None) if none."""
        try:
            found: int = self.first.execute(context)
            return found, None
        except Exception:
            for position, (_, rule) in enumerate(self.rules):
                try:
                    result = rule.when.program.execute(context)
                except Exception as exc:
                    return position, f"{type(exc).__name__}: {exc}"
                if result is True:
                    return position, None
                if result is not False:
                    return position, f"gave {result!r}, not true or false"
            return -1, None


def plan_tools(tools: Mapping[str, Any], rules: tuple[ApprovalRule, ...]) -> Mapping[str, ToolPlan]:
    """Per declared tool, the rules its calls evaluate (see the module's docstring)."""
    plans: dict[str, ToolPlan] = {}
    for name, tool in tools.items():
        candidates = tuple(
            (index, rule)
            for index, rule in enumerate(rules)
            if rule.when.can_match(name, tool.scope)
        )
        variables = frozenset().union(*(rule.when.variables for _, rule in candidates))
        run_fields = frozenset().union(*(rule.when.run_fields for _, rule in candidates))
        gated = bool(candidates) or (
            tool.scope == "irreversible" and not tool.unattended
        ) or (tool.shadow and tool.scope != "read")  # fmt: skip
        first = None
        if candidates:
            source = "-1"
            for position in range(len(candidates) - 1, -1, -1):
                source = f"({candidates[position][1].when.source}) ? {position} : ({source})"
            first = cel.compile(source)
        plans[name] = ToolPlan(candidates, variables, run_fields, gated, first)
    return MappingProxyType(plans)


def check_approvals(
    tools: Mapping[str, Any],
    agents: Mapping[str, Any],
    rules: tuple[ApprovalRule, ...],
    default: ApprovalAction,
    groups: Mapping[str, str],
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross references of the approval rules: (key path, problem) for each mistake."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    actions: list[tuple[tuple[str | int, ...], ApprovalAction, Any]] = [
        (("approvals", index), rule, rule.when) for index, rule in enumerate(rules)
    ]
    actions.append((("approvals_default",), default, None))
    for path, action, when in actions:
        target = action.escalate_to
        if (
            target is not None
            and not target.startswith(("http://", "https://"))
            and target not in groups
        ):
            names = ", ".join(sorted(groups)) or "none defined"
            found.append(
                (
                    (*path, "escalate_to"),
                    f"'{target}' is neither a URL nor a group of "
                    f"approvals_notify.groups (groups: {names})",
                )
            )
        fallback = action.fallback_tool
        if fallback is None:
            continue
        where = (*path, "fallback_tool")
        if fallback not in tools:
            names = ", ".join(sorted(tools)) or "none defined"
            found.append((where, f"unknown tool '{fallback}' (known: {names})"))
            continue
        found.extend(_fallback_problems(where, fallback, tools, agents, when))
    return found


def _fallback_problems(
    where: tuple[str | int, ...],
    fallback: str,
    tools: Mapping[str, Any],
    agents: Mapping[str, Any],
    when: Rule | None,
) -> list[tuple[tuple[str | int, ...], str]]:
    """A fallback must be callable by every agent whose tools the rule can match, and of
    no higher scope than the tool it stands in for."""
    declared = tools[fallback]
    if when is not None and when.can_match(fallback, declared.scope):
        return [(where, f"fallback '{fallback}' is one this rule can match: it would wait again")]
    if declared.shadow or (declared.scope == "irreversible" and not declared.unattended):
        why = "is in shadow mode" if declared.shadow else "is irreversible"
        return [(where, f"fallback '{fallback}' {why}: a fallback must be a tool that can run")]
    rank = SCOPE_RANK[declared.scope]
    for agent_name, agent in agents.items():
        for tool_name in agent.tools:
            scope = tools[tool_name].scope
            matched = when.can_match(tool_name, scope) if when else scope == "irreversible"
            if not matched or tool_name == fallback:
                continue
            if rank > SCOPE_RANK[scope]:
                return [
                    (
                        where,
                        f"fallback '{fallback}' ({tools[fallback].scope}) is of a higher scope "
                        f"than '{tool_name}' ({scope}), which it would stand in for",
                    )
                ]
            allowed = fallback in agent.tools and (
                agent.max_scope is None or rank <= SCOPE_RANK[agent.max_scope]
            )
            if not allowed:
                return [
                    (
                        where,
                        f"fallback '{fallback}' is not a tool agent '{agent_name}' may call, "
                        f"and the rule can match its tool '{tool_name}'",
                    )
                ]
    return []
