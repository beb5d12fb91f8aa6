"""The policy file: schema, loading with line-accurate errors, and reload.

The YAML is composed into nodes first so every value keeps its line; pydantic then
validates the plain data once, at load. Everything a caller gets back is frozen
(models are frozen, lists become tuples, mappings become read-only views), so a
snapshot can be shared by every in-flight call while a reload builds the next one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import cel
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
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
    "ApprovalRule",
    "GatewayLimits",
    "Limits",
    "LivePolicy",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Reload",
    "Rule",
    "WindowedLimits",
    "load_policy",
    "parse_policy",
]

T = TypeVar("T")

# --- scalar types ---------------------------------------------------------------

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


# --- approval rules (CEL) -------------------------------------------------------

# Names a rule may read; bound per tool call by the approval gate.
RULE_VARIABLES = frozenset({"tool", "args", "scope", "agent", "agent_type", "session", "task"})
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


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled CEL expression. Compiled once at load; `matches` costs a few µs."""

    source: str
    program: Any

    def matches(self, variables: Mapping[str, Any]) -> bool:
        return self.program.execute(dict(variables)) is True


def _compile_rule(value: object) -> Rule:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a rule expression as a string, got {value!r}")
    try:
        program = cel.compile(value)
    except ValueError as exc:
        found = _CEL_ERROR.search(str(exc))
        where = f" at column {found.group(2)}: {found.group(3)}" if found else f": {exc}"
        raise ValueError(f"invalid rule expression{where}") from None
    bound = set(_MACRO_BINDING.findall(value))
    unknown = sorted(set(program.variables()) - RULE_VARIABLES - bound)
    if unknown:
        known = ", ".join(sorted(RULE_VARIABLES))
        raise ValueError(f"unknown name '{unknown[0]}' in rule (known: {known})")
    for function in program.functions():
        if function[0] not in "_!-@" and function not in _CEL_FUNCTIONS:
            raise ValueError(f"unknown function '{function}' in rule")
    return Rule(value, program)


# --- schema ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Limits(_Strict):
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


class AgentType(_Strict):
    task: Limits | None = None
    session: Limits | None = None
    fleet: WindowedLimits | None = None


class Provider(_Strict):
    kind: Literal["openai", "anthropic"]
    base_url: Annotated[str, BeforeValidator(lambda v: _url(v, ("http://", "https://")))]
    api_key_env: str | None = None
    timeout: Duration = 60.0
    # The provider's own request quota, shared by every agent: under saturation the
    # rate-limit gate serves higher-priority agents first.
    requests_per_minute: PositiveCount | None = None


class Price(_Strict):
    input_per_mtok: Usd
    output_per_mtok: Usd
    cache_read_per_mtok: Usd | None = None
    cache_write_per_mtok: Usd | None = None


class Model(_Strict):
    provider: str
    model: str
    context_window: PositiveCount
    price: Price | None = None
    # Sent as max_tokens when a call names none, so every call has a worst case.
    max_output_tokens: PositiveCount = 4096


class RateLimit(_Strict):
    requests_per_minute: PositiveCount | None = None
    tokens_per_minute: PositiveCount | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    max_wait: Duration = 5.0  # past this a call fails with rate_limited instead of waiting


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _team(value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"expected a team name of letters, digits, '_', '.' or '-', got {value!r}")
    return value


class Agent(_Strict):
    type: str
    route: str
    tools: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    # Agents of one team share a session id (its counters, loop and context state); an
    # agent without a team shares its sessions with no one.
    team: Annotated[str, BeforeValidator(_team)] | None = None

    def session_scope(self, name: str) -> str:
        """Whose sessions this agent's session ids name: its team's, or its own."""
        return f"team:{self.team}" if self.team is not None else f"agent:{name}"


class GatewayLimits(_Strict):
    """What one client connection may cost the gateway before and while it is served."""

    max_header_bytes: PositiveCount = 65536  # the request line and headers together
    max_headers: PositiveCount = 100
    header_timeout: Duration = 10.0  # from the connection (or the last request) to the headers
    body_timeout: Duration = 30.0  # from the headers to the end of the body
    max_connections: PositiveCount = 10000  # past it, new connections get 503 at once


class Retry(_Strict):
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


class Breaker(_Strict):
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


class Similarity(_Strict):
    threshold: Fraction = 0.9
    count: PositiveCount = 4


class Loops(_Strict):
    repeat: PositiveCount = 3
    similar: Similarity = Similarity()
    no_progress_steps: PositiveCount = 5
    error_repeat: PositiveCount = 3
    # Bounces of near-identical content between two agents of one session (A, B, A, B...
    # counts 3 after the first message); similarity as in `similar.threshold`.
    ping_pong: PositiveCount = 4
    window: PositiveCount = 32
    action: Literal["halt", "warn"] = "halt"


class Context(_Strict):
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


class Tool(_Strict):
    scope: Literal["read", "write", "irreversible"]
    description: str | None = None


class ApprovalRule(_Strict):
    when: Annotated[Rule, BeforeValidator(_compile_rule)]
    timeout: Duration = 3600.0
    on_timeout: Literal["cancel", "escalate", "fallback"] = "cancel"


class InputGuards(_Strict):
    injection: Literal["block", "flag", "off"] = "off"


class OutputGuards(_Strict):
    pii: Literal["redact", "block", "flag", "off"] = "off"


class Guards(_Strict):
    input: InputGuards = InputGuards()
    output: OutputGuards = OutputGuards()


def _url(value: object, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.startswith(schemes):
        raise ValueError(f"expected a URL starting with {' or '.join(schemes)}, got {value!r}")
    return value


def _counters_url(value: object) -> str:
    if value == "memory":
        return value
    return _url(value, ("redis://", "rediss://"))


class Policy(_Strict):
    """One immutable snapshot of the policy file."""

    version: Literal[1]
    store: Annotated[str, BeforeValidator(lambda v: _url(v, ("sqlite://", "postgresql://")))] = (
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
    guards: Guards = Guards()
    gateway: GatewayLimits = GatewayLimits()
    source: str = Field(default="corral.yaml", exclude=True)
    _prices: Mapping[str, ModelPrice | None] = PrivateAttr(default_factory=dict)

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
