"""The policy file: the example loads and means what it says; every mistake is named by line."""

from __future__ import annotations

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
    assert support.tools == ("get_customer", "draft_email", "send_email")
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
    assert second.timeout == 900.0 and second.on_timeout == "escalate"
    assert policy.guards.input.injection == "block"
    assert policy.guards.output.pii == "redact"


def test_approval_rules_are_compiled_and_evaluate() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    irreversible, bulk = policy.approvals
    assert irreversible.when.matches({"scope": "irreversible", "tool": "send_email", "args": {}})
    assert not irreversible.when.matches({"scope": "read", "tool": "get_customer", "args": {}})
    assert bulk.when.matches({"tool": "sql_write", "args": {"rows": 5000}, "scope": "write"})
    assert not bulk.when.matches({"tool": "sql_write", "args": {"rows": 10}, "scope": "write"})


def test_snapshot_is_immutable() -> None:
    policy = load_policy(EXAMPLE, env=ENV)
    with pytest.raises(TypeError):
        policy.agents["x"] = policy.agents["support"]  # type: ignore[index]
    with pytest.raises(ValueError, match="frozen"):
        policy.version = 2  # type: ignore[misc]
    assert isinstance(policy.agents["support"].tools, tuple)


# Each broken file: an edit to the example, and the exact message expected.
BROKEN = [
    pytest.param(
        ("    route: default\n    tools:", "    route: dflt\n    tools:"),
        "corral.yaml:32 agents.support.route: unknown route 'dflt' (known: default)",
        id="unknown-route",
    ),
    pytest.param(
        ("    type: operational\n    route: default\n    rate_limit: {tokens",
         "    type: ops\n    route: default\n    rate_limit: {tokens"),
        "corral.yaml:36 agents.summarizer.type: unknown agent type 'ops' "
        "(known: operational, research)",
        id="unknown-agent-type",
    ),
    pytest.param(
        ("[get_customer, draft_email, send_email]", "[get_customer, draft_mail, send_email]"),
        "corral.yaml:33 agents.support.tools[1]: unknown tool 'draft_mail' "
        "(known: draft_email, get_customer, send_email)",
        id="unknown-tool",
    ),
    pytest.param(
        ("fast:  {provider: sim,", "fast:  {provider: simm,"),
        "corral.yaml:14 models.fast.provider: unknown provider 'simm' "
        "(known: anthropic, openai, sim)",
        id="unknown-provider",
    ),
    pytest.param(
        ("default: [smart, fast]", "default: [smart, quick]"),
        "corral.yaml:19 routes.default[1]: unknown model 'quick' (known: fast, smart)",
        id="unknown-model-in-route",
    ),
    pytest.param(
        ("    rate_limit: {requests_per_minute: 600,", "    rate: {requests_per_minute: 600,"),
        "corral.yaml:34 agents.support.rate: unknown key 'rate' "
        "(expected one of: type, route, tools, rate_limit)",
        id="unknown-key",
    ),
    pytest.param(
        ("wall_clock: 10m}", "wall_clock: 10x}"),
        "corral.yaml:23 agent_types.operational.session.wall_clock: "
        "expected a duration like 500ms, 30s, 10m, 1h or 1d, got '10x'",
        id="bad-duration",
    ),
    pytest.param(
        ("max_delay: 8s", "max_delay: 8"),
        "corral.yaml:42 retry.max_delay: expected a duration like 500ms, 30s, 10m, 1h or 1d, "
        "got 8",
        id="duration-without-unit",
    ),
    pytest.param(
        ("task:    {usd: 0.20}", "task:    {usd: lots}"),
        "corral.yaml:24 agent_types.operational.task.usd: "
        "expected an amount in USD like 0.50, got 'lots'",
        id="bad-amount",
    ),
    pytest.param(
        ("fleet:   {usd: 200,", "fleet:   {usd: -200,"),
        "corral.yaml:25 agent_types.operational.fleet.usd: must not be negative, got -200",
        id="negative-amount",
    ),
    pytest.param(
        ("tool_calls: 50,", "tool_calls: -1,"),
        "corral.yaml:23 agent_types.operational.session.tool_calls: must not be negative, got -1",
        id="negative-limit",
    ),
    pytest.param(
        ("steps: 40,", "steps: forty,"),
        "corral.yaml:23 agent_types.operational.session.steps: "
        "expected a whole number, got 'forty'",
        id="wrong-type-count",
    ),
    pytest.param(
        ("priority: high}", "priority: urgent}"),
        "corral.yaml:34 agents.support.rate_limit.priority: "
        "expected one of 'high', 'normal' or 'low', got 'urgent'",
        id="bad-enum",
    ),
    pytest.param(
        ("global: {usd: 1000, per: day}", "global: {usd: 1000, per: fortnight}"),
        "corral.yaml:40 global.per: expected one of 'hour', 'day' or 'week', got 'fortnight'",
        id="bad-window",
    ),
    pytest.param(
        ("""- when: 'tool == "sql_write" && args.rows > 1000'""",
         """- when: 'tool == "sql_write" &&'"""),
        "corral.yaml:57 approvals[1].when: invalid rule expression at column 23: "
        "Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', "
        "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        id="rule-syntax",
    ),
    pytest.param(
        ("""- when: 'scope == "irreversible"'""", """- when: 'scop == "irreversible"'"""),
        "corral.yaml:54 approvals[0].when: unknown name 'scop' in rule "
        "(known: agent, agent_type, args, scope, session, task, tool)",
        id="rule-unknown-variable",
    ),
    pytest.param(
        ("""- when: 'scope == "irreversible"'""", """- when: 'shout(scope)'"""),
        "corral.yaml:54 approvals[0].when: unknown function 'shout' in rule",
        id="rule-unknown-function",
    ),
    pytest.param(
        ("on_timeout: escalate", "on_timeout: shrug"),
        "corral.yaml:59 approvals[1].on_timeout: "
        "expected one of 'cancel', 'escalate' or 'fallback', got 'shrug'",
        id="bad-on-timeout",
    ),
    pytest.param(
        ("tools: [get_customer, draft_email, send_email]", "tools: get_customer"),
        "corral.yaml:33 agents.support.tools: expected a list, got 'get_customer'",
        id="wrong-type-list",
    ),
    pytest.param(
        ("failure_rate: 0.5", "failure_rate: 50"),
        "corral.yaml:43 breaker.failure_rate: expected a fraction between 0 and 1, got 50",
        id="fraction-out-of-range",
    ),
    pytest.param(
        ("context: {warn_at: 0.7,", "context: {warn_at: 0.95,"),
        "corral.yaml:46 context: warn_at (0.95) must not be above critical_at (0.9)",
        id="warn-above-critical",
    ),
    pytest.param(
        ("store: sqlite:///corral.db", "store: mysql://db"),
        "corral.yaml:5 store: expected a URL starting with sqlite:// or postgresql://, "
        "got 'mysql://db'",
        id="bad-store-url",
    ),
    pytest.param(
        ("  fast:  {provider: sim, model: gpt-4o-mini, context_window: 128000}\n",
         "  fast:  {provider: sim, context_window: 128000}\n"),
        "corral.yaml:14 models.fast.model: missing required key 'model'",
        id="missing-key",
    ),
    pytest.param(
        ("  research:\n", "  operational:\n"),
        "corral.yaml:26 agent_types.operational: duplicate key (first at line 22)",
        id="duplicate-key",
    ),
    pytest.param(
        ("fleet:   {usd: 200, per: day}", "fleet:   {usd: 200, per: day, wall_clock: 1h}"),
        "corral.yaml:25 agent_types.operational.fleet: "
        "wall_clock applies to a task or a session, not to many runs at once",
        id="wall-clock-on-fleet",
    ),
    pytest.param(
        ("fast:  {provider: sim, model: gpt-4o-mini,", "fast:  {provider: sim, model: our-llm-7,"),
        "corral.yaml:14 models.fast: no known price for 'our-llm-7', which runs under a USD "
        "budget (add price: {input_per_mtok: ..., output_per_mtok: ...}; it is never counted "
        "as 0 $)",
        id="unknown-price-under-usd-budget",
    ),
    pytest.param(
        ("version: 1", "version: 2"),
        "corral.yaml:4 version: expected one of 1, got 2",
        id="bad-version",
    ),
    pytest.param(
        ("routes:                                 # fallback chains: the first that answers wins\n"
         "  default: [smart, fast]",
         "routes:\n  default: [smart, fast]\n  fast: [smart]"),
        "corral.yaml:20 routes.fast: 'fast' is both a model and a route",
        id="model-route-clash",
    ),
    pytest.param(
        ("  input:  {injection: block}", "  input:  {injection: [block"),
        "corral.yaml:63: invalid YAML: did not find expected ',' or ']'",
        id="invalid-yaml",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "expected"), BROKEN)
def test_broken_policy_is_refused_with_exact_message(edit: tuple[str, str], expected: str) -> None:
    assert refuse(edited(*edit)) == expected


def test_every_mistake_is_listed_in_line_order() -> None:
    text = edited("priority: high}", "priority: urgent}").replace("max_delay: 8s", "max_delay: 8")
    assert refuse(text).splitlines() == [
        "corral.yaml:34 agents.support.rate_limit.priority: "
        "expected one of 'high', 'normal' or 'low', got 'urgent'",
        "corral.yaml:42 retry.max_delay: expected a duration like 500ms, 30s, 10m, 1h or 1d, got 8",
    ]


def test_missing_api_key_is_an_error_only_for_a_used_provider() -> None:
    # openai and anthropic have no key set, but no model runs on them: fine.
    assert parse_policy(example_text(), env={"SIM_API_KEY": "k"}).providers["openai"]
    assert refuse(example_text(), env={}) == (
        "corral.yaml:9 providers.sim.api_key_env: environment variable SIM_API_KEY is not set "
        "(provider 'sim' is used by models fast, smart)"
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
    assert str(caught.value) == f"{path}:4 version: expected one of 1, got 3"


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
    assert str(outcome.error) == (
        f"{path}:32 agents.support.route: unknown route 'dflt' (known: default)"
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
        "corral.yaml:43 breaker: failure_rate must be above 0, or the breaker trips on every call"
    )
