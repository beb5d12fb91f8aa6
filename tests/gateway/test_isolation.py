"""Sessions belong to a team or to one agent: no client reaches another's session budget."""

from __future__ import annotations

from corral.calls import RunStatus
from tests.gateway.conftest import Serve


def chat(n: int) -> dict[str, object]:
    """A request asking something new each time, as an agent does (no loop to detect)."""
    question = f"What is the status of order {n * 7919 % 10007}?"
    return {
        "model": "default",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 5,
    }


# Five steps per session; two agents of one team, and the summarizer alone.
EDITS = {
    "steps: 40": "steps: 5",
    "agents:\n": (
        "agents:\n"
        "  drafter: {type: operational, route: default, team: qa}\n"
        "  checker: {type: operational, route: default, team: qa}\n"
    ),
}


async def test_another_agent_sending_a_session_id_spends_a_session_of_its_own(
    serve: Serve,
) -> None:
    gw = await serve(EDITS)
    summarizer = await gw.key("summarizer")
    async with gw.client(**{"X-Corral-Session": "victim"}) as support:
        assert (await support.post("/v1/chat/completions", json=chat(0))).status_code == 200
    # The summarizer sends the victim's session id until its own five steps are spent...
    async with gw.client(summarizer, **{"X-Corral-Session": "victim"}) as intruder:
        codes = [(await intruder.post("/v1/chat/completions", json=chat(n))) for n in range(6)]
    assert [c.status_code for c in codes] == [200] * 5 + [403]
    assert codes[-1].json()["error"]["code"] == "budget.steps"
    # ...and the victim's session is untouched: four steps left.
    async with gw.client(**{"X-Corral-Session": "victim"}) as support:
        answers = [await support.post("/v1/chat/completions", json=chat(n)) for n in range(1, 5)]
    assert [a.status_code for a in answers] == [200] * 4
    runs = {r.agent: r for r in await gw.sup.store.list_runs(session="victim")}
    assert (runs["support"].steps, runs["support"].status) == (5, RunStatus.RUNNING)
    assert (runs["summarizer"].steps, runs["summarizer"].status) == (5, RunStatus.HALTED)


async def test_agents_of_one_team_share_the_session_budget(serve: Serve) -> None:
    gw = await serve(EDITS)
    drafter, checker = await gw.key("drafter"), await gw.key("checker")
    statuses = []
    for n in range(6):
        async with gw.client(
            drafter if n % 2 else checker, **{"X-Corral-Session": "shared"}
        ) as client:
            statuses.append((await client.post("/v1/chat/completions", json=chat(n))).status_code)
    # Five steps between them; the sixth call, whoever makes it, crosses the session cap.
    assert statuses == [200] * 5 + [403]
    runs = await gw.sup.store.list_runs(session="shared")
    assert sum(r.steps for r in runs) == 5 and {r.agent for r in runs} == {"drafter", "checker"}


async def test_a_request_without_a_session_names_its_cap_honestly(serve: Serve) -> None:
    gw = await serve({"tokens: 200000": "tokens: 10"})
    async with gw.client() as client:
        answer = await client.post("/v1/chat/completions", json=chat(0))
    assert answer.status_code == 403
    message = answer.json()["error"]["message"]
    assert "this run has no session: the session caps apply to it alone" in message


async def test_tool_arguments_nested_past_the_body_limit_are_recorded_as_text(
    serve: Serve,
) -> None:
    gw = await serve()
    deep = '{"a": ' + "[" * 300 + "1" + "]" * 300 + "}"
    call = {"id": "c1", "type": "function", "function": {"name": "get_customer", "arguments": deep}}
    messages = [
        {"role": "user", "content": "look her up"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "Ada"},
    ]
    async with gw.client(**{"X-Corral-Session": "deep"}) as client:
        answer = await client.post(
            "/v1/chat/completions", json={"model": "default", "messages": messages}
        )
    assert answer.status_code == 200, answer.text
    [run] = await gw.sup.store.list_runs(session="deep")
    tool = [s for s in await gw.sup.store.list_steps(run.id) if s.kind == "tool"]
    assert [s.input for s in tool] == [{"arguments": deep}]
