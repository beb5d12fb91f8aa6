"""Property: no request body, through either door, makes the upstream bill past the hold.

Bodies mix the fields each door forwards, output limits under every name, answer
multipliers, fields known to bill past a hold and fields nobody knows, with good and bad
values, streamed or not, to OpenAI- and Anthropic-kind upstreams. The gateway runs on
loopback in front of the simulated provider, which keeps the bodies it answers and always
writes as long an answer as the one limit it reads lets it (max_completion_tokens before
max_tokens, as issue 10 found it). The task cap is small, so the budget gate's clamp binds.

Each body is either refused with a 400 naming one of the fields that must be refused, or
answered; then the upstream got one output limit, no other field that could bill, at most
the smallest limit the client gave, reported at most that many output tokens, and the run
was charged no more than its cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from corral.calls import Usage
from corral.providers.anthropic_format import ANTHROPIC_FIELDS
from corral.providers.params import FORWARDED, MULTIPLIERS, OUTPUT_LIMITS, SERVICE_TIERS
from corral.providers.sim import Script, SimProvider, SimReply
from tests.gateway.conftest import Serve, Served, serve  # noqa: F401 (the fixture)

CAP_USD = 0.002  # the task cap: a few hundred output tokens at these prices
CLAUDE = (
    "  claude: {provider: anthropic, model: claude-sonnet-4-5, context_window: 200000,\n"
    "           price: {input_per_mtok: 3.00, output_per_mtok: 15.00}}\n"
)
# As long an answer as the request's limit allows.
LONG = Script.of(SimReply("Lorem ipsum. " * 20, output_tokens=1_000_000))
MODELS = ("default", "fast", "claude")  # a route of OpenAI-kind models; one of each kind
USER = [{"role": "user", "content": "Tell me everything about the weather in Paris."}]

OPENAI_DOOR = "/v1/chat/completions"
ANTHROPIC_DOOR = "/v1/messages"
OPENAI_WIRE = FORWARDED | {"model", "messages", "max_tokens", "stream", "stream_options"}
ANTHROPIC_WIRE = ANTHROPIC_FIELDS | {"model", "messages", "system", "max_tokens", "stream"}
# Fields each door knows that bill past a hold, whatever their value.
BILLING = {
    OPENAI_DOOR: ("prediction", "audio", "modalities", "web_search_options", "functions"),
    ANTHROPIC_DOOR: ("speed", "inference_geo", "cache_control", "container", "mcp_servers"),
}
TIERS = {OPENAI_DOOR: SERVICE_TIERS, ANTHROPIC_DOOR: ("auto", "standard_only")}

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,  # a failure prints its own reproduction; a run leaves nothing behind
    suppress_health_check=[HealthCheck.too_slow],
)


class RecordingSim(SimProvider):
    """The simulated provider, keeping the body of every request it answers."""

    def __init__(self) -> None:
        names = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5")
        super().__init__(scripts=dict.fromkeys(names, LONG))
        self.bodies: list[dict[str, Any]] = []

    def _answer(self, body: Mapping[str, Any], *args: Any) -> Any:
        self.bodies.append(dict(body))
        return super()._answer(body, *args)


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    async with RecordingSim() as provider:
        yield provider


# --- bodies ----------------------------------------------------------------------------------

JSON = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**9), st.text(max_size=8))
# Good values mostly, so most bodies are answered, and bad ones of every kind.
GOOD_LIMIT = st.integers(1, 3000)
LIMITS = st.one_of(
    GOOD_LIMIT,
    GOOD_LIMIT,
    GOOD_LIMIT,
    st.sampled_from([0, -1, 100_000, "10", True, 2.5, None, [5]]),
)
COUNTS = st.sampled_from([1, 1, 1, 1, None, 2, 0, 8, "1", True, 1.0])
SAMPLING = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(1, 50),
}
KNOWN = {
    OPENAI_DOOR: {
        **SAMPLING,
        "seed": st.integers(0, 99),
        "stop": st.lists(st.text(min_size=1, max_size=4), max_size=2),
        "user": st.text(max_size=8),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 5),
        "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "response_format": st.just({"type": "text"}),
        "presence_penalty": st.floats(-2, 2),
        "store": st.booleans(),
        "service_tier": st.sampled_from(["auto", "default", "flex", "flex", "priority", "scale"]),
    },
    ANTHROPIC_DOOR: {
        **SAMPLING,
        "stop_sequences": st.lists(st.text(min_size=1, max_size=4), max_size=2),
        "metadata": st.just({"user_id": "u-1"}),
        "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
        "service_tier": st.sampled_from(["auto", "standard_only", "priority"]),
    },
}
OWN = {"model", "messages", "system", "stream", "stream_options"}
# Every name either door knows: no unknown field drawn may be one of them.
NAMED = (
    OWN
    | FORWARDED
    | ANTHROPIC_FIELDS
    | {"metadata", "thinking", "extra_headers", "function_call"}
    | set(OUTPUT_LIMITS + MULTIPLIERS + BILLING[OPENAI_DOOR] + BILLING[ANTHROPIC_DOOR])
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    door = draw(st.sampled_from([OPENAI_DOOR, ANTHROPIC_DOOR]))
    body: dict[str, Any] = {"model": draw(st.sampled_from(MODELS)), "messages": USER}
    if draw(st.booleans()):
        body["stream"] = True
        if door == OPENAI_DOOR:
            body["stream_options"] = {"include_usage": True}  # else no usage to compare
    if door == ANTHROPIC_DOOR:
        body["max_tokens"] = draw(LIMITS)  # required
    for name in draw(st.sets(st.sampled_from(OUTPUT_LIMITS + MULTIPLIERS), max_size=3)):
        body[name] = draw(LIMITS if name in OUTPUT_LIMITS else COUNTS)
    known = KNOWN[door]
    for name in draw(st.sets(st.sampled_from(sorted(known)), max_size=4)):
        body[name] = draw(known[name])
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.sampled_from(BILLING[door]))] = draw(JSON)
    if draw(st.integers(0, 3)) == 0:
        unknown = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
        body[draw(unknown.filter(lambda name: name not in NAMED))] = draw(JSON)
    return door, body


def must_refuse(door: str, body: Mapping[str, Any]) -> set[str]:
    """The fields of `body` the door has to refuse (null is a field not given)."""
    refused = set()
    for name, value in body.items():
        if name in OWN or (value is None and not (door == ANTHROPIC_DOOR and name == "max_tokens")):
            continue
        if name in OUTPUT_LIMITS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif name in MULTIPLIERS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value == 1
        elif name == "service_tier":
            ok = value in TIERS[door]
        else:
            ok = name in KNOWN[door]
        if not ok:
            refused.add(name)
    return refused


def smallest_limit(body: Mapping[str, Any]) -> int | None:
    given = [body[name] for name in OUTPUT_LIMITS if isinstance(body.get(name), int)]
    return min(given, default=None)


# --- the exchange ----------------------------------------------------------------------------


def reported_usage(door: str, response: httpx.Response, stream: bool) -> Usage:
    """The usage the answer reports, whole or streamed, as the upstream reported it."""
    if not stream:
        usage = response.json()["usage"]
    else:
        events = [
            orjson.loads(line[len("data: ") :])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        usage = [e.get("usage") for e in events if e.get("usage")][-1]
    if door == OPENAI_DOOR:
        # An OpenAI-kind upstream's answer passes as it came: the sim's has no details.
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        return Usage(usage["prompt_tokens"] - cached, usage["completion_tokens"], cached)
    return Usage(usage["input_tokens"], usage["output_tokens"])


def check_answered(
    gw: Served,
    loop: asyncio.AbstractEventLoop,
    door: str,
    body: Mapping[str, Any],
    response: httpx.Response,
    sent: Sequence[dict[str, Any]],
) -> None:
    assert response.status_code == 200, response.text
    [upstream] = sent  # no fault injected: one attempt, one upstream request
    wire = ANTHROPIC_WIRE if body["model"] == "claude" else OPENAI_WIRE
    assert set(upstream) <= wire, set(upstream) - wire
    assert [name for name in OUTPUT_LIMITS if name in upstream] == ["max_tokens"]
    limit = upstream["max_tokens"]
    asked = smallest_limit(body)
    assert asked is None or limit <= asked
    usage = reported_usage(door, response, body.get("stream") is True)
    assert usage.output_tokens <= limit
    # Priced at the dearest model the call could have reached, as the budget holds it.
    policy = gw.sup.policy.current
    names = policy.routes.get(body["model"], (body["model"],))
    prices = [price for price in (policy.prices[name] for name in names) if price is not None]
    assert max(price.cost(usage) for price in prices) <= CAP_USD
    run_id = response.headers["x-corral-run"]
    run = asyncio.run_coroutine_threadsafe(gw.sup.store.get_run(run_id), loop).result()
    assert run is not None and run.cost_usd <= CAP_USD


async def test_no_body_makes_the_upstream_bill_past_the_hold(
    serve: Serve,  # noqa: F811 (the fixture imported above)
    sim: RecordingSim,
) -> None:
    gw = await serve(
        {
            "task:    {usd: 0.20}": f"task:    {{usd: {CAP_USD}}}",
            "requests_per_minute: 600, tokens_per_minute: 200000": (
                "requests_per_minute: 600000, tokens_per_minute: 100000000"
            ),
            '"https://api.anthropic.com", api_key_env: ANTHROPIC_API_KEY': (
                f'"{sim.base_url}", api_key_env: SIM_API_KEY'
            ),
            "\nroutes:": f"\n{CLAUDE}\nroutes:",
            "default: [smart, fast]": "default: [smart, fast, claude]",
        }
    )
    loop = asyncio.get_running_loop()
    client = httpx.Client(
        base_url=gw.url, headers={"Authorization": f"Bearer {gw.agent_key}"}, timeout=30
    )
    outcomes = {"refused": 0, "answered": 0}

    @PROPERTY
    @given(bodies())
    def exchange(case: tuple[str, dict[str, Any]]) -> None:
        door, body = case
        note(f"POST {door} {orjson.dumps(body).decode()}")  # the failing body, shown whole
        before = len(sim.bodies)
        response = client.post(door, json=body)
        sent = sim.bodies[before:]
        refused = must_refuse(door, body)
        if refused:
            assert response.status_code == 400, (refused, response.text)
            error = response.json()["error"]
            named = error["param"] if door == OPENAI_DOOR else error["message"].split(":")[0]
            assert named in refused, (named, refused)
            assert sent == []
            outcomes["refused"] += 1
        else:
            check_answered(gw, loop, door, body, response, sent)
            outcomes["answered"] += 1

    with client:
        await asyncio.to_thread(exchange)
    # Both outcomes were exercised, not one of them alone.
    assert outcomes["refused"] > 20 and outcomes["answered"] > 20, outcomes
