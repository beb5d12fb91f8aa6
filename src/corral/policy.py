"""The policy file: schema, loading with line-accurate errors, and reload.

The YAML is composed into nodes first so every value keeps its line; pydantic then
validates the plain data once, at load. Everything a caller gets back is frozen
(models are frozen, lists become tuples, mappings become read-only views), so a
snapshot can be shared by every in-flight call while a reload builds the next one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from corral.policy_approvals import (
    RULE_VARIABLES,
    SCOPE_RANK,
    ApprovalAction,
    ApprovalRule,
    ApprovalsNotify,
    Rule,
    Scope,
    ToolPlan,
    check_approvals,
    plan_tools,
)
from corral.policy_guards import Guards, Retention
from corral.policy_telemetry import Otlp, Telemetry
from corral.policy_types import (
    Count,
    Duration,
    Fraction,
    FrozenMap,
    PositiveCount,
    PositiveDuration,
    Strict,
    Usd,
    parse_duration,
    url,
)
from corral.policy_yaml import (
    Lines,
    Path_,
    PolicyError,
    PolicyIssue,
    Refused,
    compose,
    dotted,
    line_at,
    shown,
)
from corral.providers.pricing import ModelPrice, lookup_price

__all__ = [
    "RULE_VARIABLES",
    "SCOPE_RANK",
    "ApprovalAction",
    "ApprovalRule",
    "ApprovalsNotify",
    "GatewayLimits",
    "Limits",
    "LivePolicy",
    "Otlp",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Reload",
    "Rule",
    "Scope",
    "Telemetry",
    "ToolPlan",
    "WindowedLimits",
    "load_policy",
    "parse_duration",
    "parse_policy",
]

# --- schema ---------------------------------------------------------------------


class Limits(Strict):
    """Hard caps at one level. None means no cap on that dimension."""

    usd: Usd | None = None
    tokens: Count | None = None
    tool_calls: Count | None = None
    steps: Count | None = None
    wall_clock: Duration | None = None


class WindowedLimits(Limits):
    """Caps shared by many runs; `per` resets them every hour, day or week (UTC)."""

    per: Literal["hour", "day", "week"] | None = None

    @model_validator(mode="after")
    def _no_wall_clock(self) -> WindowedLimits:
        if self.wall_clock is not None:
            raise ValueError("wall_clock applies to a task or a session, not to many runs at once")
        return self


# Outcomes a completed run may report that still make it no success (see `succeeded`).
FAILURE_OUTCOMES = ("failed", "escalated", "abandoned")


class AgentType(Strict):
    task: Limits | None = None
    session: Limits | None = None
    fleet: WindowedLimits | None = None
    failure_outcomes: tuple[str, ...] = FAILURE_OUTCOMES

    def succeeded(self, status: str, outcome: object) -> bool:
        """The one definition of success: the run completed, and the outcome it reported
        (if any) is not one of this agent type's failure outcomes."""
        if status != "completed":
            return False
        return not (isinstance(outcome, str) and outcome in self.failure_outcomes)


class Provider(Strict):
    kind: Literal["openai", "anthropic"]
    base_url: Annotated[str, BeforeValidator(lambda v: url(v, ("http://", "https://")))]
    api_key_env: str | None = None
    timeout: Duration = 60.0
    # The provider's own request quota, shared by every agent: under saturation the
    # rate-limit gate serves higher-priority agents first.
    requests_per_minute: PositiveCount | None = None


class Price(Strict):
    input_per_mtok: Usd
    output_per_mtok: Usd
    cache_read_per_mtok: Usd | None = None
    cache_write_per_mtok: Usd | None = None


class Model(Strict):
    provider: str
    model: str
    context_window: PositiveCount
    price: Price | None = None
    # Sent as max_tokens when a call names none, so every call has a worst case.
    max_output_tokens: PositiveCount = 4096


class RateLimit(Strict):
    requests_per_minute: PositiveCount | None = None
    tokens_per_minute: PositiveCount | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    max_wait: Duration = 5.0  # past this a call fails with rate_limited instead of waiting


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _team(value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"expected a team name of letters, digits, '_', '.' or '-', got {value!r}")
    return value


class Agent(Strict):
    type: str
    route: str
    tools: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    # Agents of one team share a session id (its counters, loop and context state); an
    # agent without a team shares its sessions with no one.
    team: Annotated[str, BeforeValidator(_team)] | None = None
    # The highest scope of tool the agent may call, whatever its tool list says.
    max_scope: Scope | None = None
    # Shadow mode: its write and irreversible tool calls are recorded, not run.
    shadow: bool = False

    def session_scope(self, name: str) -> str:
        """Whose sessions this agent's session ids name: its team's, or its own."""
        return f"team:{self.team}" if self.team is not None else f"agent:{name}"


class GatewayLimits(Strict):
    """What one client connection may cost the gateway before and while it is served."""

    max_header_bytes: PositiveCount = 65536  # the request line and headers together
    max_headers: PositiveCount = 100
    header_timeout: Duration = 10.0  # from the connection (or the last request) to the headers
    body_timeout: Duration = 30.0  # from the headers to the end of the body
    max_connections: PositiveCount = 10000  # past it, new connections get 503 at once
    # How long an answer waiting for an approval is held before the client gets 429
    # approval_pending (well under the usual client timeouts of 60 s and more).
    approval_hold: PositiveDuration = 20.0


class Retry(Strict):
    max_attempts: PositiveCount = 3
    base_delay: Duration = 0.5
    max_delay: Duration = 8.0
    jitter: Literal["full", "equal", "none"] = "full"
    max_total_wait: Duration = 30.0
    # Retries per provider may be at most this share of its calls over `budget_window`
    # (plus `budget_min`), so a fleet cannot storm a provider that is struggling.
    budget: Fraction = 0.2
    budget_window: Duration = 10.0
    budget_min: Count = 10


class Breaker(Strict):
    window: PositiveCount = 20
    min_calls: PositiveCount = 10
    failure_rate: Fraction = 0.5
    slow_call: Duration = 10.0
    slow_rate: Fraction = 0.8
    open_for: Duration = 30.0
    half_open_probes: PositiveCount = 3

    @model_validator(mode="after")
    def _can_close(self) -> Breaker:
        # At 0 every call would trip the breaker: it could never close.
        for name in ("failure_rate", "slow_rate", "slow_call"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be above 0, or the breaker trips on every call")
        return self


class Similarity(Strict):
    threshold: Fraction = 0.9
    count: PositiveCount = 4


class Loops(Strict):
    repeat: PositiveCount = 3
    similar: Similarity = Similarity()
    no_progress_steps: PositiveCount = 5
    error_repeat: PositiveCount = 3
    # Bounces of near-identical content between two agents of one session (A, B, A, B...
    # counts 3 after the first message); similarity as in `similar.threshold`.
    ping_pong: PositiveCount = 4
    window: PositiveCount = 32
    action: Literal["halt", "warn"] = "halt"


class Context(Strict):
    warn_at: Fraction = 0.7
    critical_at: Fraction = 0.9
    compaction: tuple[Literal["pointers", "summarize", "evict"], ...] = (
        "pointers",
        "summarize",
        "evict",
    )
    # The model or route that writes summaries; default the cheapest model on the run's route.
    summarizer: str | None = None
    # Tool outputs larger than this (UTF-8 bytes) and older than the last `keep_recent`
    # messages become artifact handles under `pointers`; those messages are never compacted.
    pointer_min_bytes: PositiveCount = 2048
    keep_recent: PositiveCount = 4

    @model_validator(mode="after")
    def _ordered(self) -> Context:
        if self.warn_at > self.critical_at:
            raise ValueError(
                f"warn_at ({self.warn_at}) must not be above critical_at ({self.critical_at})"
            )
        return self


class Tool(Strict):
    scope: Scope
    description: str | None = None
    # Shown to the reviewer of an approval: how to undo the action if it goes wrong.
    rollback: str | None = None
    # An irreversible tool runs without a human only when the policy says so here.
    unattended: bool = False
    # Shadow mode for this tool: a write or irreversible call is recorded, not run.
    shadow: bool = False

    @model_validator(mode="after")
    def _acts(self) -> Tool:
        if self.unattended and self.scope != "irreversible":
            raise ValueError("unattended applies to irreversible tools only")
        if self.shadow and self.scope == "read":
            raise ValueError("shadow applies to write and irreversible tools: reads always run")
        return self


def _counters_url(value: object) -> str:
    if value == "memory":
        return value
    return url(value, ("redis://", "rediss://"))


class Policy(Strict):
    """One immutable snapshot of the policy file."""

    version: Literal[1]
    store: Annotated[str, BeforeValidator(lambda v: url(v, ("sqlite://", "postgresql://")))] = (
        "sqlite:///corral.db"
    )
    counters: Annotated[str, BeforeValidator(_counters_url)] = "memory"
    providers: FrozenMap[Provider] = Field(default_factory=lambda: MappingProxyType({}))
    models: FrozenMap[Model] = Field(default_factory=lambda: MappingProxyType({}))
    routes: FrozenMap[tuple[str, ...]] = Field(default_factory=lambda: MappingProxyType({}))
    agent_types: FrozenMap[AgentType] = Field(default_factory=lambda: MappingProxyType({}))
    agents: FrozenMap[Agent] = Field(default_factory=lambda: MappingProxyType({}))
    global_: WindowedLimits | None = Field(default=None, alias="global")
    retry: Retry = Retry()
    breaker: Breaker = Breaker()
    loops: Loops = Loops()
    context: Context = Context()
    tools: FrozenMap[Tool] = Field(default_factory=lambda: MappingProxyType({}))
    approvals: tuple[ApprovalRule, ...] = ()
    # For irreversible calls no rule matched (unless the tool is `unattended`).
    approvals_default: ApprovalAction = ApprovalAction()
    approvals_notify: ApprovalsNotify = Field(default_factory=ApprovalsNotify)
    guards: Guards = Field(default_factory=Guards)
    retention: Retention = Field(default_factory=Retention)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    gateway: GatewayLimits = GatewayLimits()
    source: str = Field(default="corral.yaml", exclude=True)
    _prices: Mapping[str, ModelPrice | None] = PrivateAttr(default_factory=dict)
    _tool_plans: Mapping[str, ToolPlan] = PrivateAttr(default_factory=dict)
    _gated_agents: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def tool_plans(self) -> Mapping[str, ToolPlan]:
        """Per declared tool, the approval rules its calls evaluate (policy_approvals.py)."""
        return self._tool_plans

    @property
    def gated_agents(self) -> frozenset[str]:
        """The agents with a tool whose calls may need a human or be shadowed: only their
        model answers are checked for such calls at the gateway."""
        return self._gated_agents

    @property
    def prices(self) -> Mapping[str, ModelPrice | None]:
        """Each model's price (the policy's override, else the table); None if unknown."""
        return self._prices

    def chain(self, model_or_route: str) -> tuple[Model, ...]:
        """The models to try, in order, for a name that is a route or a single model."""
        if model_or_route in self.routes:
            return tuple(self.models[name] for name in self.routes[model_or_route])
        if model_or_route in self.models:
            return (self.models[model_or_route],)
        known = ", ".join(sorted([*self.models, *self.routes]))
        raise KeyError(f"unknown model or route '{model_or_route}' (known: {known})")


# --- pydantic errors -> messages ------------------------------------------------


def _field_type(model: Any, loc: Path_) -> Any:
    """The annotation reached by walking `loc` from `model` (for listing allowed keys)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
        elif get_origin(current) in (dict, Mapping):
            current = get_args(current)[1]
        elif get_origin(current) in (tuple, list):
            current = get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional to reach the type that holds the fields."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or type(tp).__name__ == "UnionType":
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


_TYPE_NAMES = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _unknown_key(model: Any, key: str | int) -> str:
    allowed = (
        ", ".join(f.alias or n for n, f in model.model_fields.items() if not f.exclude)
        if isinstance(model, type) and issubclass(model, BaseModel)
        else "none"
    )
    return f"unknown key {shown(key)} (expected one of: {allowed})"


def _message(error: Any, data_model: type[BaseModel]) -> str:
    kind = error["type"]
    loc: Path_ = tuple(error["loc"])
    value = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(_field_type(data_model, loc[:-1]), loc[-1])
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "literal_error":
        return f"expected one of {error['ctx']['expected']}, got {shown(value)}"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {shown(value)}"
    return str(error["msg"])


# --- cross references -----------------------------------------------------------


def _check_references(policy: Policy, env: Mapping[str, str] | None) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []

    def need(path: Path_, kind: str, name: str, known: Mapping[str, object]) -> None:
        if name not in known:
            names = ", ".join(sorted(known)) or "none defined"
            found.append((path, f"unknown {kind} '{name}' (known: {names})"))

    for name, model in policy.models.items():
        need(("models", name, "provider"), "provider", model.provider, policy.providers)
        if name in policy.routes:
            found.append((("routes", name), f"'{name}' is both a model and a route"))
    for name, chain in policy.routes.items():
        if not chain:
            found.append((("routes", name), "a route needs at least one model"))
        for index, model_name in enumerate(chain):
            need(("routes", name, index), "model", model_name, policy.models)
    for name, agent in policy.agents.items():
        need(("agents", name, "type"), "agent type", agent.type, policy.agent_types)
        need(("agents", name, "route"), "route", agent.route, policy.routes)
        for index, tool in enumerate(agent.tools):
            need(("agents", name, "tools", index), "tool", tool, policy.tools)
    if not found:  # approvals read the tools and agents resolved above
        notify = policy.approvals_notify
        found.extend(
            check_approvals(
                policy.tools, policy.agents, policy.approvals, policy.approvals_default,
                notify.groups,
            )
        )  # fmt: skip
    if policy.context.summarizer is not None:
        known = {**policy.models, **policy.routes}
        need(("context", "summarizer"), "model or route", policy.context.summarizer, known)

    if env is None:
        return found
    # A key is needed only for a provider some model runs on.
    used: dict[str, list[str]] = {}
    for name, model in policy.models.items():
        used.setdefault(model.provider, []).append(name)
    for name, provider in policy.providers.items():
        variable = provider.api_key_env
        if variable and name in used and not env.get(variable):
            users = ", ".join(used[name])
            found.append(
                (
                    ("providers", name, "api_key_env"),
                    f"environment variable {variable} is not set "
                    f"(provider '{name}' is used by models {users})",
                )
            )
    return found


# --- prices ---------------------------------------------------------------------


def _price_of(policy: Policy, model: Model) -> ModelPrice | None:
    if model.price is None:
        return lookup_price(model.model, policy.providers[model.provider].kind)
    p = model.price
    return ModelPrice(
        p.input_per_mtok,
        p.output_per_mtok,
        p.input_per_mtok if p.cache_read_per_mtok is None else p.cache_read_per_mtok,
        p.input_per_mtok if p.cache_write_per_mtok is None else p.cache_write_per_mtok,
    )


def _under_usd_budget(policy: Policy) -> set[str]:
    """Models some USD cap applies to: every model under a global cap, else by agent type."""
    if policy.global_ is not None and policy.global_.usd is not None:
        return set(policy.models)
    found: set[str] = set()
    for agent in policy.agents.values():
        kind = policy.agent_types[agent.type]
        levels = (kind.task, kind.session, kind.fleet)
        if any(level is not None and level.usd is not None for level in levels):
            found.update(policy.routes[agent.route])
    return found


def _check_prices(policy: Policy) -> list[tuple[Path_, str]]:
    policy._prices = MappingProxyType(
        {name: _price_of(policy, model) for name, model in policy.models.items()}
    )
    return [
        (
            ("models", name),
            f"no known price for '{policy.models[name].model}', which runs under a USD budget "
            "(add price: {input_per_mtok: ..., output_per_mtok: ...}; it is never counted as 0 $)",
        )
        for name in sorted(_under_usd_budget(policy))
        if policy.prices[name] is None
    ]


# --- loading --------------------------------------------------------------------


def parse_policy(
    text: str,
    *,
    source: str = "corral.yaml",
    env: Mapping[str, str] | None = None,
    require_keys: bool = True,
) -> Policy:
    """Validate policy text. Raises PolicyError naming every mistake by line and key path.

    API keys are checked in `env` (default: the process environment) unless
    `require_keys` is false, for tools that read the store and call no provider.
    """
    environment = (os.environ if env is None else env) if require_keys else None
    root = compose(text, source)
    lines = Lines()
    try:
        data = lines.build(root, ()) if root is not None else None
    except Refused as exc:
        raise PolicyError(source, [*lines.issues, exc.issue]) from None
    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        top = PolicyIssue(line, "", "expected a mapping of policy keys at the top of the file")
        raise PolicyError(source, [*lines.issues, top])
    if "source" in data:  # a field of the snapshot, not a key of the file
        unknown = _unknown_key(Policy, "source")
        lines.issues.append(PolicyIssue(lines.lines[("source",)], "source", unknown))
    if lines.issues:
        raise PolicyError(source, lines.issues)
    try:
        policy = Policy.model_validate({**data, "source": source})
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc: Path_ = tuple(error["loc"])
            issues.append(PolicyIssue(lines.line_of(loc), dotted(loc), _message(error, Policy)))
        raise PolicyError(source, issues) from None
    problems = _check_references(policy, environment)
    if not problems:  # prices need every reference resolved
        problems = _check_prices(policy)
        policy._tool_plans = plans = plan_tools(policy.tools, policy.approvals)
        policy._gated_agents = frozenset(
            name
            for name, agent in policy.agents.items()
            for tool in agent.tools
            if plans[tool].gated or (agent.shadow and policy.tools[tool].scope != "read")
        )
    if problems:
        raise PolicyError(
            source,
            [PolicyIssue(lines.line_of(path), dotted(path), msg) for path, msg in problems],
        )
    return policy


def load_policy(
    path: str | Path, *, env: Mapping[str, str] | None = None, require_keys: bool = True
) -> Policy:
    """Read and validate a policy file; errors name the file as given."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(source, [PolicyIssue(0, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = line_at(data[: exc.start].decode("utf-8"))
        problem = f"not UTF-8 text: byte {data[exc.start]:#04x} cannot be decoded"
        raise PolicyError(source, [PolicyIssue(line, "", problem)]) from None
    return parse_policy(text, source=source, env=env, require_keys=require_keys)


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of a reload: the snapshot now in force, and why a bad file was refused."""

    policy: Policy
    error: PolicyError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class LivePolicy:
    """The policy in force. `reload()` swaps in a new snapshot, or keeps the old one on error.

    Readers take `current` once per call; a reload never mutates a snapshot in use.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._env = env
        self.current: Policy = load_policy(self.path, env=env)

    def reload(self) -> Reload:
        try:
            self.current = load_policy(self.path, env=self._env)
        except PolicyError as exc:
            return Reload(self.current, exc)
        return Reload(self.current)
