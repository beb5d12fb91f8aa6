"""The policy file: the example loads and means what it says; every mistake is named by line."""

from __future__ import annotations

import resource
from itertools import zip_longest
from pathlib import Path

import pytest

from corral.policy import LivePolicy, PolicyError, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corral.yaml"
ENV = {"SIM_API_KEY": "sim"}


def example_text() -> str:
    return EXAMPLE.read_text()


def refuse(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="corral.yaml", env=ENV if env is None else env)
    return str(caught.value)


def edited(old: str, new: str) -> str:
    text = example_text()
    assert text.count(old) == 1, f"edit anchor {old!r} must occur once"
    return text.replace(old, new)


def changed_line(old: str, new: str) -> int:
    """The line of the example that `edited(old, new)` changes first."""
    text = example_text()
    start = text[: text.index(old)].count("\n") + 1
    pairs = zip_longest(old.splitlines(), new.splitlines())
    return start + next(i for i, (was, now) in enumerate(pairs) if was != now)


def line_of(text: str, needle: str) -> int:
    assert text.count(needle) == 1, f"{needle!r} must occur once"
    return text[: text.index(needle)].count("\n") + 1


def test_example_loads_and_means_what_it_says() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    assert policy.store == "sqlite:///corral.db"
    assert policy.counters == "memory"
    assert policy.providers["sim"].base_url == "http://127.0.0.1:4010/v1"
    assert policy.providers["anthropic"].kind == "anthropic"
    assert policy.models["smart"].price is not None
    assert policy.models["smart"].price.output_per_mtok == 10.0
    assert policy.models["fast"].price is None
    assert [m.model for m in policy.chain("default")] == ["gpt-4o", "gpt-4o-mini"]
    assert [m.model for m in policy.chain("fast")] == ["gpt-4o-mini"]
    operational = policy.agent_types["operational"]
    assert operational.session is not None and operational.session.wall_clock == 600.0
    assert operational.session.usd == 0.5 and operational.session.tool_calls == 50
    assert operational.task is not None and operational.task.usd == 0.2
    assert operational.fleet is not None and operational.fleet.per == "day"
    assert policy.agent_types["research"].session is not None
    assert policy.agent_types["research"].session.wall_clock == 3600.0
    support = policy.agents["support"]
    assert support.tools == ("get_customer", "draft_email", "send_email", "sql_write")
    assert support.rate_limit is not None and support.rate_limit.priority == "high"
    assert policy.agents["summarizer"].rate_limit is not None
    assert policy.agents["summarizer"].rate_limit.requests_per_minute is None
    assert policy.global_ is not None and policy.global_.usd == 1000.0
    assert policy.retry.max_attempts == 5 and policy.retry.max_total_wait == 30.0
    assert policy.breaker.slow_call == 10.0 and policy.breaker.half_open_probes == 3
    assert policy.loops.similar.threshold == 0.9 and policy.loops.error_repeat == 3
    assert policy.context.compaction == ("pointers", "summarize", "evict")
    assert policy.tools["send_email"].scope == "irreversible"
    first, second = policy.approvals
    assert first.timeout == 3600.0 and first.on_timeout == "cancel"
    assert first.on_reject == "replan"
    assert second.timeout == 900.0 and second.on_timeout == "escalate"
    assert second.second_timeout == 3600.0
    assert policy.approvals_default.timeout == 3600.0
    assert policy.tools["sql_write"].rollback == "restore the rows from the nightly snapshot"
    assert policy.agents["summarizer"].max_scope == "read"
    # Rules are filed under the tools they can match: the others never evaluate them.
    plans = policy.tool_plans
    assert [i for i, _ in plans["send_email"].rules] == [0]
    assert [i for i, _ in plans["sql_write"].rules] == [1]
    assert not plans["get_customer"].rules and not plans["draft_email"].rules
    assert plans["sql_write"].variables == {"tool", "preview"}
    # Only support has a tool that may need a human: only its answers are held at the gateway.
    assert policy.gated_agents == {"support"}
    assert policy.guards.input.action("tool") == "block"
    assert policy.guards.input.action("user") == "flag"
    assert policy.guards.input.spotlight == "delimit"
    assert policy.guards.output.pii == "redact" and policy.guards.output.grounding == "flag"
    assert policy.guards.output.schema_.repair == 1 and policy.guards.redact_storage
    assert policy.retention.steps == 30 * 86400.0 and policy.retention.artifacts == 7 * 86400.0


def test_a_fallback_the_agent_may_not_call_is_refused() -> None:
    tools = "  sql_write:    {scope: write,"
    text = (
        EXAMPLE.read_text()
        .replace(tools, "  archive: {scope: write}\n" + tools)
        .replace(
            "    on_timeout: cancel                  # cancel",
            "    on_timeout: fallback\n    fallback_tool: archive  # cancel",
        )
    )
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, env=ENV)
    assert str(refused.value).endswith(
        "approvals[0].fallback_tool: fallback 'archive' is not a tool agent 'support' may "
        "call, and the rule can match its tool 'send_email'"
    )


def test_rules_are_filed_under_the_tools_and_scopes_they_name() -> None:
    from corral.policy_approvals import compile_rule

    def pinned(source: str) -> tuple[object, object]:
        rule = compile_rule(source)
        return rule.tools, rule.scopes

    assert pinned('tool == "a" && args.n > 1') == ({"a"}, None)
    assert pinned('"a" == tool') == ({"a"}, None)
    assert pinned("(tool in ['a', 'b']) && scope == 'write'") == ({"a", "b"}, {"write"})
    assert pinned('tool == "a" || tool == "b"') == (None, None)  # not a conjunct: any tool
    assert pinned('(tool == "a") || (scope == "write")') == (None, None)
    assert pinned('args.note == "tool == \\"x\\""') == (None, None)
    assert pinned("tool in [args.name]") == (None, None)
    assert pinned('tool == "a" && tool == "b"') == (set(), None)  # matches nothing


def test_approval_rules_are_compiled_and_evaluate() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    irreversible, bulk = policy.approvals
    assert irreversible.when.matches({"scope": "irreversible", "tool": "send_email", "args": {}})
    assert not irreversible.when.matches({"scope": "read", "tool": "get_customer", "args": {}})
    assert bulk.when.matches({"tool": "sql_write", "preview": {"rows": 5000}})
    assert not bulk.when.matches({"tool": "sql_write", "preview": {"rows": 10}})


def test_snapshot_is_immutable() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    with pytest.raises(TypeError):
        policy.agents["x"] = policy.agents["support"]  # type: ignore[index]
    with pytest.raises(ValueError, match="frozen"):
        policy.version = 2  # type: ignore[misc]
    assert isinstance(policy.agents["support"].tools, tuple)


# Each broken file: an edit to the example, and the exact message expected; {line} is the
# line the edit changes, so the table holds while the example grows.
BROKEN = [
    pytest.param(
        ("    route: default\n    tools:", "    route: dflt\n    tools:"),
        "corral.yaml:{line} agents.support.route: unknown route 'dflt' (known: default)",
        id="unknown-route",
    ),
    pytest.param(
        ("    type: operational\n    route: default\n    rate_limit: {tokens",
         "    type: ops\n    route: default\n    rate_limit: {tokens"),
        "corral.yaml:{line} agents.summarizer.type: unknown agent type 'ops' "
        "(known: operational, research)",
        id="unknown-agent-type",
    ),
    pytest.param(
        ("[get_customer, draft_email, send_email,", "[get_customer, draft_mail, send_email,"),
        "corral.yaml:{line} agents.support.tools[1]: unknown tool 'draft_mail' "
        "(known: draft_email, get_customer, send_email, sql_write)",
        id="unknown-tool",
    ),
    pytest.param(
        ("fast:  {provider: sim,", "fast:  {provider: simm,"),
        "corral.yaml:{line} models.fast.provider: unknown provider 'simm' "
        "(known: anthropic, openai, sim)",
        id="unknown-provider",
    ),
    pytest.param(
        ("default: [smart, fast]", "default: [smart, quick]"),
        "corral.yaml:{line} routes.default[1]: unknown model 'quick' (known: fast, smart)",
        id="unknown-model-in-route",
    ),
    pytest.param(
        ("    rate_limit: {requests_per_minute: 600,", "    rate: {requests_per_minute: 600,"),
        "corral.yaml:{line} agents.support.rate: unknown key 'rate' "
        "(expected one of: type, route, tools, rate_limit, team, max_scope, shadow)",
        id="unknown-key",
    ),
    pytest.param(
        ("wall_clock: 10m}", "wall_clock: 10x}"),
        "corral.yaml:{line} agent_types.operational.session.wall_clock: "
        "expected a duration like 500ms, 30s, 10m, 1h or 1d, got '10x'",
        id="bad-duration",
    ),
    pytest.param(
        ("max_delay: 8s", "max_delay: 8"),
        "corral.yaml:{line} retry.max_delay: expected a duration like 500ms, 30s, 10m, 1h or 1d, "
        "got 8",
        id="duration-without-unit",
    ),
    pytest.param(
        ("task:    {usd: 0.20}", "task:    {usd: lots}"),
        "corral.yaml:{line} agent_types.operational.task.usd: "
        "expected an amount in USD like 0.50, got 'lots'",
        id="bad-amount",
    ),
    pytest.param(
        ("fleet:   {usd: 200,", "fleet:   {usd: -200,"),
        "corral.yaml:{line} agent_types.operational.fleet.usd: must not be negative, got -200",
        id="negative-amount",
    ),
    pytest.param(
        ("tool_calls: 50,", "tool_calls: -1,"),
        "corral.yaml:{line} agent_types.operational.session.tool_calls: "
        "must not be negative, got -1",
        id="negative-limit",
    ),
    pytest.param(
        ("steps: 40,", "steps: forty,"),
        "corral.yaml:{line} agent_types.operational.session.steps: "
        "expected a whole number, got 'forty'",
        id="wrong-type-count",
    ),
    pytest.param(
        ("priority: high}", "priority: urgent}"),
        "corral.yaml:{line} agents.support.rate_limit.priority: "
        "expected one of 'high', 'normal' or 'low', got 'urgent'",
        id="bad-enum",
    ),
    pytest.param(
        ("global: {usd: 1000, per: day}", "global: {usd: 1000, per: fortnight}"),
        "corral.yaml:{line} global.per: expected one of 'hour', 'day' or 'week', got 'fortnight'",
        id="bad-window",
    ),
    pytest.param(
        ("""- when: 'tool == "sql_write" && preview.rows > 1000'""",
         """- when: 'tool == "sql_write" &&'"""),
        "corral.yaml:{line} approvals[1].when: invalid rule expression at column 23: "
        "Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', "
        "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        id="rule-syntax",
    ),
    pytest.param(
        ("preview.rows > 1000", "run.cost > 1"),
        "corral.yaml:{line} approvals[1].when: unknown field 'run.cost' in rule "
        "(known: cost_usd, steps, tokens, tool_calls, waiting_s)",
        id="rule-unknown-run-field",
    ),
    pytest.param(
        ("    timeout: 1h                         #", "    timeout: 0s                         #"),
        "corral.yaml:{line} approvals[0].timeout: must be longer than 0, got '0s'",
        id="approval-timeout-zero",
    ),
    pytest.param(
        ("    on_timeout: cancel                  # cancel", "    on_timeout: fallback  # cancel"),
        "corral.yaml:65 approvals[0]: on_timeout: fallback needs fallback_tool: the tool "
        "to run instead",
        id="fallback-without-tool",
    ),
    pytest.param(
        ("    on_timeout: cancel                  # cancel",
         "    on_timeout: fallback\n    fallback_tool: draft_mail  # cancel"),
        "corral.yaml:68 approvals[0].fallback_tool: unknown tool 'draft_mail' "
        "(known: draft_email, get_customer, send_email, sql_write)",
        id="fallback-unknown-tool",
    ),
    pytest.param(
        ("    on_timeout: escalate                # told again, with a fresh timeout\n"
         "    escalate_timeout: 1h",
         "    on_timeout: fallback\n    fallback_tool: send_email"),
        "corral.yaml:72 approvals[1].fallback_tool: fallback 'send_email' is irreversible: a "
        "fallback must be a tool that can run",
        id="fallback-irreversible",
    ),
    pytest.param(
        ("""  - when: 'tool == "sql_write" && preview.rows > 1000'   # the tool's dry run """
         """counts rows
    timeout: 15m
    on_timeout: escalate                # told again, with a fresh timeout
    escalate_timeout: 1h""",
         """  - when: 'tool == "get_customer"'
    on_timeout: fallback
    fallback_tool: draft_email"""),
        "corral.yaml:71 approvals[1].fallback_tool: fallback 'draft_email' (write) is of a "
        "higher scope than 'get_customer' (read), which it would stand in for",
        id="fallback-higher-scope",
    ),
    pytest.param(
        ("    on_timeout: escalate                # told again, with a fresh timeout\n"
         "    escalate_timeout: 1h",
         "    on_timeout: fallback\n    fallback_tool: sql_write"),
        "corral.yaml:72 approvals[1].fallback_tool: fallback 'sql_write' is one this rule can "
        "match: it would wait again",
        id="fallback-itself",
    ),
    pytest.param(
        ("    escalate_timeout: 1h", "    escalate_to: oncall"),
        "corral.yaml:{line} approvals[1].escalate_to: 'oncall' is neither a URL nor a group of "
        "approvals_notify.groups (groups: none defined)",
        id="escalate-to-unknown-group",
    ),
    pytest.param(
        ("    on_reject: replan                   #", "    escalate_timeout: 5m  #"),
        "corral.yaml:65 approvals[0]: escalate_timeout is used only with on_timeout: "
        "escalate (this is cancel)",
        id="escalate-timeout-without-escalate",
    ),
    pytest.param(
        ("  get_customer: {scope: read}", "  get_customer: {scope: read, shadow: true}"),
        "corral.yaml:{line} tools.get_customer: shadow applies to write and irreversible "
        "tools: reads always run",
        id="shadow-on-a-read",
    ),
    pytest.param(
        ("  draft_email:  {scope: write}", "  draft_email:  {scope: write, unattended: true}"),
        "corral.yaml:{line} tools.draft_email: unattended applies to irreversible tools only",
        id="unattended-on-a-write",
    ),
    pytest.param(
        ("    max_scope: read ", "    max_scope: admin "),
        "corral.yaml:{line} agents.summarizer.max_scope: expected one of 'read', 'write' or "
        "'irreversible', got 'admin'",
        id="bad-max-scope",
    ),
    pytest.param(
        ("""- when: 'scope == "irreversible"'""", """- when: 'scop == "irreversible"'"""),
        "corral.yaml:{line} approvals[0].when: unknown name 'scop' in rule "
        "(known: agent, agent_type, args, preview, run, scope, session, task, tool)",
        id="rule-unknown-variable",
    ),
    pytest.param(
        ("""- when: 'scope == "irreversible"'""", """- when: 'shout(scope)'"""),
        "corral.yaml:{line} approvals[0].when: unknown function 'shout' in rule",
        id="rule-unknown-function",
    ),
    pytest.param(
        ("on_timeout: escalate", "on_timeout: shrug"),
        "corral.yaml:{line} approvals[1].on_timeout: "
        "expected one of 'cancel', 'escalate' or 'fallback', got 'shrug'",
        id="bad-on-timeout",
    ),
    pytest.param(
        ("tools: [get_customer, draft_email, send_email, sql_write]", "tools: get_customer"),
        "corral.yaml:{line} agents.support.tools: expected a list, got 'get_customer'",
        id="wrong-type-list",
    ),
    pytest.param(
        ("failure_rate: 0.5", "failure_rate: 50"),
        "corral.yaml:{line} breaker.failure_rate: expected a fraction between 0 and 1, got 50",
        id="fraction-out-of-range",
    ),
    pytest.param(
        ("context: {warn_at: 0.7,", "context: {warn_at: 0.95,"),
        "corral.yaml:{line} context: warn_at (0.95) must not be above critical_at (0.9)",
        id="warn-above-critical",
    ),
    pytest.param(
        ("store: sqlite:///corral.db", "store: mysql://db"),
        "corral.yaml:{line} store: expected a URL starting with sqlite:// or postgresql://, "
        "got 'mysql://db'",
        id="bad-store-url",
    ),
    pytest.param(
        ("  fast:  {provider: sim, model: gpt-4o-mini, context_window: 128000}\n",
         "  fast:  {provider: sim, context_window: 128000}\n"),
        "corral.yaml:{line} models.fast.model: missing required key 'model'",
        id="missing-key",
    ),
    pytest.param(
        ("  research:\n", "  operational:\n"),
        "corral.yaml:{line} agent_types.operational: duplicate key (first at line 22)",
        id="duplicate-key",
    ),
    pytest.param(
        ("fleet:   {usd: 200, per: day}", "fleet:   {usd: 200, per: day, wall_clock: 1h}"),
        "corral.yaml:{line} agent_types.operational.fleet: "
        "wall_clock applies to a task or a session, not to many runs at once",
        id="wall-clock-on-fleet",
    ),
    pytest.param(
        ("fast:  {provider: sim, model: gpt-4o-mini,", "fast:  {provider: sim, model: our-llm-7,"),
        "corral.yaml:{line} models.fast: no known price for 'our-llm-7', which runs under a USD "
        "budget (add price: {input_per_mtok: ..., output_per_mtok: ...}; it is never counted "
        "as 0 $)",
        id="unknown-price-under-usd-budget",
    ),
    pytest.param(
        ("version: 1", "version: 2"),
        "corral.yaml:{line} version: expected one of 1, got 2",
        id="bad-version",
    ),
    pytest.param(
        ("  default: [smart, fast]\n", "  default: [smart, fast]\n  fast: [smart]\n"),
        "corral.yaml:{line} routes.fast: 'fast' is both a model and a route",
        id="model-route-clash",
    ),
    pytest.param(
        ("  storage: {pii: redact}", "  storage: {pii: [redact}"),
        "corral.yaml:{line}: invalid YAML: did not find expected ',' or ']'",
        id="invalid-yaml",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "expected"), BROKEN)
def test_broken_policy_is_refused_with_exact_message(edit: tuple[str, str], expected: str) -> None:
    assert refuse(edited(*edit)) == expected.replace("{line}", str(changed_line(*edit)))


def test_every_mistake_is_listed_in_line_order() -> None:
    text = edited("priority: high}", "priority: urgent}").replace("max_delay: 8s", "max_delay: 8")
    priority, delay = line_of(text, "priority: urgent"), line_of(text, "max_delay: 8,")
    assert priority < delay
    assert refuse(text).splitlines() == [
        f"corral.yaml:{priority} agents.support.rate_limit.priority: "
        "expected one of 'high', 'normal' or 'low', got 'urgent'",
        f"corral.yaml:{delay} retry.max_delay: "
        "expected a duration like 500ms, 30s, 10m, 1h or 1d, got 8",
    ]


def test_missing_api_key_is_an_error_only_for_a_used_provider() -> None:
    # openai and anthropic have no key set, but no model runs on them: fine.
    assert parse_policy(example_text(), env={"SIM_API_KEY": "k"}).providers["openai"]
    line = line_of(example_text(), "  sim: ")
    assert refuse(example_text(), env={}) == (
        f"corral.yaml:{line} providers.sim.api_key_env: "
        "environment variable SIM_API_KEY is not set (provider 'sim' is used by models fast, smart)"
    )


def test_top_level_must_be_a_mapping() -> None:
    assert refuse("- 1\n- 2\n") == (
        "corral.yaml:1: expected a mapping of policy keys at the top of the file"
    )


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot read: No such file"):
        load_policy(missing)


def test_error_names_the_file_as_given(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(edited("version: 1", "version: 3"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path, env=ENV)
    line = line_of(path.read_text(), "version: 3")
    assert str(caught.value) == f"{path}:{line} version: expected one of 1, got 3"


def test_minimal_policy_takes_defaults() -> None:
    policy = parse_policy("version: 1\n", env={})
    assert policy.retry.max_attempts == 3
    assert policy.breaker.window == 20
    assert policy.loops.action == "halt"
    assert policy.guards.input.injection == "off"
    with pytest.raises(KeyError, match="unknown model or route 'x' \\(known: \\)"):
        policy.chain("x")


def test_reload_swaps_snapshot_and_keeps_old_one_on_error(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(example_text())
    live = LivePolicy(path, env=ENV)
    first = live.current

    path.write_text(edited("task:    {usd: 0.20}", "task:    {usd: 0.30}"))
    outcome = live.reload()
    assert outcome.ok and outcome.error is None
    assert live.current is outcome.policy and live.current is not first
    task = live.current.agent_types["operational"].task
    assert task is not None and task.usd == 0.3
    old_task = first.agent_types["operational"].task
    assert old_task is not None and old_task.usd == 0.2  # the old snapshot is untouched

    good = live.current
    path.write_text(edited("route: default\n    tools:", "route: dflt\n    tools:"))
    outcome = live.reload()
    assert not outcome.ok
    assert live.current is good and outcome.policy is good
    line = line_of(path.read_text(), "route: dflt")
    assert str(outcome.error) == (
        f"{path}:{line} agents.support.route: unknown route 'dflt' (known: default)"
    )


def test_unpriced_model_is_fine_without_a_usd_budget() -> None:
    policy = parse_policy(
        "version: 1\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {provider: p, model: our-llm-7, context_window: 8000}}\n"
        "routes: {r: [m]}\n"
        "agent_types: {t: {session: {tokens: 1000}}}\n"
        "agents: {a: {type: t, route: r}}\n",
        env={},
    )
    assert policy.prices["m"] is None


def test_prices_are_resolved_at_load() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    smart, fast = policy.prices["smart"], policy.prices["fast"]
    assert smart is not None and smart.input_per_mtok == 2.5  # the policy's override
    assert fast is not None and fast.input_per_mtok == 0.15  # the price table


def test_store_only_tools_can_skip_the_key_check() -> None:
    policy = parse_policy(example_text(), env={}, require_keys=False)
    assert policy.store == "sqlite:///corral.db"


def test_a_breaker_that_could_never_close_is_refused() -> None:
    text = edited("failure_rate: 0.5", "failure_rate: 0")
    assert refuse(text) == (
        f"corral.yaml:{line_of(text, 'breaker:')} breaker: "
        "failure_rate must be above 0, or the breaker trips on every call"
    )


TAGS = "(expected plain text, numbers, true/false, null, lists and mappings)"
INT_RANGE = "expected a whole number between -9223372036854775808 and 9223372036854775807"
TOP_KEYS = (
    "version, store, counters, providers, models, routes, agent_types, agents, global, retry, "
    "breaker, loops, context, tools, approvals, approvals_default, approvals_notify, guards, "
    "retention, telemetry, gateway"
)
RETRY_KEYS = (
    "max_attempts, base_delay, max_delay, jitter, max_total_wait, budget, budget_window, budget_min"
)

# YAML that once escaped as another exception (in the comment), or was refused at the wrong
# line or key path, or was accepted though it means nothing a policy can hold.
REFUSED = [
    pytest.param(  # ConstructorError
        "version: 1\nstore: !!python/object/apply:os.system [echo]\n",
        f"corral.yaml:2 store: unsupported YAML tag '!!python/object/apply:os.system' {TAGS}",
        id="python-tag",
    ),
    pytest.param(  # ConstructorError
        "version: 1\nstore: !vault secret/db\n",
        f"corral.yaml:2 store: unsupported YAML tag '!vault' {TAGS}",
        id="local-tag",
    ),
    pytest.param(  # loaded: a tag on a mapping or list was ignored
        "version: 1\nretry: !!python/object:os.system {max_attempts: 2}\n",
        f"corral.yaml:2 retry: unsupported YAML tag '!!python/object:os.system' {TAGS}",
        id="tag-on-mapping",
    ),
    pytest.param(  # read as a mapping of nulls: "tools.get_customer: expected a mapping"
        "version: 1\ntools: !!set {get_customer, send_email}\n",
        f"corral.yaml:2 tools: unsupported YAML tag '!!set' {TAGS}",
        id="set",
    ),
    pytest.param(  # ValueError: invalid literal for int()
        "version: 1\nretry:\n  max_attempts: !!int three\n",
        "corral.yaml:3 retry.max_attempts: expected a whole number as tag '!!int' says, "
        "got 'three'",
        id="int-tag-on-text",
    ),
    pytest.param(  # KeyError: 'maybe'
        "version: 1\nguards:\n  input: {injection: !!bool maybe}\n",
        "corral.yaml:3 guards.input.injection: expected true or false as tag '!!bool' says, "
        "got 'maybe'",
        id="bool-tag-on-text",
    ),
    pytest.param(  # IndexError: string index out of range
        "version: 1\nretry: {max_attempts: !!int ''}\n",
        "corral.yaml:2 retry.max_attempts: expected a whole number as tag '!!int' says, got ''",
        id="int-tag-on-nothing",
    ),
    pytest.param(  # ValueError: YAML's int pattern admits it, int() does not
        "version: 1\nretry: {max_attempts: 0x_}\n",
        f"corral.yaml:2 retry.max_attempts: {INT_RANGE}, got '0x_'",
        id="int-pattern-not-a-number",
    ),
    pytest.param(  # ValueError: Exceeds the limit (4300 digits) for integer string conversion
        "version: 1\nretry: {max_attempts: " + "9" * 5000 + "}\n",
        f"corral.yaml:2 retry.max_attempts: {INT_RANGE}, got '{'9' * 37}...{'9' * 38}'",
        id="int-past-4300-digits",
    ),
    pytest.param(  # OverflowError: int too large to convert to float
        "version: 1\nglobal: {usd: 0x" + "f" * 300 + "}\n",
        f"corral.yaml:2 global.usd: {INT_RANGE}, got '0x{'f' * 35}...{'f' * 38}'",
        id="usd-too-large-for-a-float",
    ),
    pytest.param(  # loaded: a cap no counter or store column can hold
        "version: 1\nglobal: {tokens: 9223372036854775808}\n",
        f"corral.yaml:2 global.tokens: {INT_RANGE}, got '9223372036854775808'",
        id="int-past-64-bits",
    ),
    pytest.param(  # ValueError: month must be in 1..12
        "version: 1\nstore: 2024-13-45\n",
        "corral.yaml:2 store: expected a URL starting with sqlite:// or postgresql://, "
        "got '2024-13-45'",
        id="impossible-date",
    ),
    pytest.param(  # ConstructorError: YAML 1.1 reads a bare '=' as a "value" type
        "version: 1\nstore: =\n",
        "corral.yaml:2 store: expected a URL starting with sqlite:// or postgresql://, got '='",
        id="bare-equals",
    ),
    pytest.param(  # ConstructorError: the merge check never ran for a real merge key
        "version: 1\nagent_types:\n  base: &base {task: {usd: 1}}\n  ops:\n    <<: *base\n",
        "corral.yaml:5 agent_types.ops: YAML merge keys ('<<') are not supported",
        id="merge-key",
    ),
    pytest.param(  # TypeError: unhashable type: 'dict'
        "version: 1\nagents:\n  ? {name: support}\n  : {type: t, route: r}\n",
        "corral.yaml:3 agents: expected a name as key, got a mapping",
        id="mapping-as-key",
    ),
    pytest.param(  # KeyError: ('tools', 'True'), as true == 1
        "version: 1\ntools:\n  1: {scope: read}\n  true: {scope: read}\n",
        "corral.yaml:3 tools.1: expected a name as key, got '1', which YAML reads as a whole "
        "number (put it in quotes)\n"
        "corral.yaml:4 tools.true: expected a name as key, got 'true', which YAML reads as "
        "true or false (put it in quotes)",
        id="number-and-bool-as-keys",
    ),
    pytest.param(  # "corral.yaml:2 models.None.[key]: expected a string, got None"
        "version: 1\nmodels:\n  ~: {provider: p}\n",
        "corral.yaml:3 models.~: expected a name as key, got '~', which YAML reads as null "
        "(put it in quotes)",
        id="null-as-key",
    ),
    pytest.param(  # RecursionError
        "version: 1\nroutes:\n  r: &r [fast, *r]\n",
        "corral.yaml:3 routes.r[1]: an alias to a value that contains it (it would never end)",
        id="alias-cycle",
    ),
    pytest.param(  # RecursionError (libyaml itself stops at 1000 levels)
        "version: 1\nretry: " + "[" * 999 + "]" * 999 + "\n",
        "corral.yaml:2 retry" + "[0]" * 31 + ": nested more than 32 levels deep",
        id="deep-nesting",
    ),
    pytest.param(  # always line 1, and a second line '  in "<unicode string>", position 36'
        "version: 1\n# café\nstore: \x1b[31m\n",
        "corral.yaml:3: invalid YAML: unacceptable character #x001b: "
        "control characters are not allowed",
        id="control-character",
    ),
    pytest.param(  # line 3, past the end of a file without a final newline
        "version: 1\nretry: {max_attempts: 3",
        "corral.yaml:2: invalid YAML: did not find expected ',' or '}'",
        id="end-of-file",
    ),
    pytest.param(  # UnicodeEncodeError: surrogates not allowed
        "version: 1\nstore: \ud800\n",
        "corral.yaml:2: invalid YAML: unacceptable character #xd800: a lone surrogate",
        id="lone-surrogate",
    ),
    pytest.param(  # loaded: the key was silently replaced by the file's name
        "version: 1\nsource: other.yaml\n",
        f"corral.yaml:2 source: unknown key 'source' (expected one of: {TOP_KEYS})",
        id="source-key",
    ),
    pytest.param(  # "corral.yaml:2: unknown key ''": no key path
        "version: 1\nretry: {'': 1}\n",
        f"corral.yaml:2 retry['']: unknown key '' (expected one of: {RETRY_KEYS})",
        id="empty-key",
    ),
    pytest.param(  # the message ran over two lines, as if two issues
        'version: 1\nretry: {"a\\n": 1}\n',
        f"corral.yaml:2 retry['a\\n']: unknown key 'a\\n' (expected one of: {RETRY_KEYS})",
        id="line-break-in-key",
    ),
    pytest.param(  # always line 1
        "# policy\n\n- version: 1\n",
        "corral.yaml:3: expected a mapping of policy keys at the top of the file",
        id="top-level-list",
    ),
    pytest.param(  # the whole value was repeated in the message
        "version: 1\ntools: " + "x" * 500 + "\n",
        f"corral.yaml:2 tools: expected a mapping, got '{'x' * 37}...{'x' * 38}'",
        id="long-value-cut-short",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_any_yaml_is_refused_with_a_located_message(text: str, expected: str) -> None:
    assert refuse(text, env={}) == expected


def test_plain_yaml_features_still_load() -> None:
    policy = parse_policy(
        "version: 1\n"
        "agent_types:\n"
        "  a: {session: &caps {usd: 1, wall_clock: 10m}}\n"
        "  b: {session: *caps}\n"  # an alias to a value defined once
        "tools:\n"
        "  2024-01-31: {scope: !!str read}\n"  # a date is a name; !!str changes nothing
        "breaker: {failure_rate: !!float 1}\n",
        env={},
    )
    assert policy.agent_types["a"].session == policy.agent_types["b"].session
    assert policy.tools["2024-01-31"].scope == "read"
    assert policy.breaker.failure_rate == 1.0


def test_a_mistake_under_an_alias_is_named_at_each_use_and_the_line_it_is_written() -> None:
    text = "version: 1\nagent_types:\n  a: {session: &caps {usd: -1}}\n  b: {session: *caps}\n"
    assert refuse(text, env={}).splitlines() == [
        "corral.yaml:3 agent_types.a.session.usd: must not be negative, got -1",
        "corral.yaml:3 agent_types.b.session.usd: must not be negative, got -1",
    ]


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    # A billion values if expanded (ten levels of ten aliases): building stops at 100,000.
    lines = ["version: 1", "l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = refuse("\n".join([*lines, "tools: [*l8]"]), env={})
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert message == (
        "corral.yaml:2 l4[7][8][8][8][8]: more than 100000 values once aliases are expanded"
    )
    assert grown < 64 * 1024


def test_a_file_that_is_not_utf8_is_refused_at_the_line_of_the_bad_byte(tmp_path: Path) -> None:
    # UnicodeDecodeError escaped from load_policy.
    path = tmp_path / "corral.yaml"
    path.write_bytes(b"version: 1\n# caf\xc3\xa9\nstore: sqlite:///\xff.db\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, env={})
    assert str(caught.value) == f"{path}:3: not UTF-8 text: byte 0xff cannot be decoded"


def test_on_off_yes_no_are_words_as_in_yaml_1_2() -> None:
    # PyYAML reads them as booleans (YAML 1.1): `pii: off` would be refused as false.
    text = EXAMPLE.read_text().replace("    pii: redact ", "    pii: off ")
    text = text.replace("  storage: {pii: redact}", "  storage: {pii: off}")
    text = text.replace("    shadow: false ", "    shadow: yes ")
    policy = parse_policy(text, env=ENV)
    assert policy.guards.output.pii == "off" and not policy.guards.redact_storage
    assert policy.agents["summarizer"].shadow is True
