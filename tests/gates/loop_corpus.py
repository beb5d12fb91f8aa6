"""Agent traces for the loop gate: normal work that must never halt, and loops that must.

A trace is a list of events as an agent produced them: tool calls with their result (or
the exception they raised), model calls with the answer, progress reports. Events name
the agent that made them; a trace with two agents runs them as two runs of one session.
test_loops.py replays every trace through a LoopGate with the example thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The scope of every tool the traces use (policy `tools:`): write scopes are changes.
SCOPES = {
    "search": "read",
    "web_search": "read",
    "fetch_url": "read",
    "get_customer": "read",
    "get_order": "read",
    "list_orders": "read",
    "get_ticket": "read",
    "update_ticket": "write",
    "send_email": "irreversible",
    "check_stock": "read",
    "read_file": "read",
    "write_file": "write",
    "run_tests": "read",
    "shell": "write",
    "submit_job": "write",
    "job_status": "read",
    "sql": "read",
    "geocode": "read",
    "translate": "read",
    "calendar_free": "read",
    "book_meeting": "write",
    "process_next": "write",
    "list_files": "read",
    "get_weather": "read",
    "create_invoice": "write",
    "get_invoice": "read",
    "list_messages": "read",
    "get_status": "read",
}


@dataclass(frozen=True)
class Tool:
    name: str
    args: dict[str, Any]
    result: Any = None
    error: str | None = None  # the name of an exception in ERRORS the call raises
    agent: str = "a"


@dataclass(frozen=True)
class Ask:
    """A model call. With a prompt the user asks it; without, the model is called on the
    conversation as it stands (after tool results, as an agent loop does)."""

    prompt: str | None
    answer: str
    agent: str = "a"
    fresh: bool = False  # start a new conversation: the system prompt and this prompt only


@dataclass(frozen=True)
class Report:
    """The agent's `run.progress(value)`."""

    value: Any
    agent: str = "a"


Event = Tool | Ask | Report


@dataclass(frozen=True)
class Trace:
    name: str
    events: tuple[Event, ...]
    expect: str | None = None  # the halt reason a loop trace must end with
    system: str = "You are a careful assistant. Use the tools to answer."
    agents: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        seen = dict.fromkeys(event.agent for event in self.events)
        object.__setattr__(self, "agents", tuple(seen))


def tool(
    name: str, result: Any = None, *, error: str | None = None, agent: str = "a", **args: Any
) -> Tool:
    return Tool(name, args, result, error, agent)


Events = Event | Sequence["Events"]


def flatten(events: Events) -> list[Event]:
    if isinstance(events, Tool | Ask | Report):
        return [events]
    return [event for nested in events for event in flatten(nested)]


def trace(name: str, *events: Events, expect: str | None = None) -> Trace:
    return Trace(name, tuple(flatten(list(events))), expect)


# --- builders of normal work --------------------------------------------------------


def hits(query: str, start: int, count: int = 3) -> list[dict[str, Any]]:
    slug = query.replace(" ", "-")
    return [
        {"title": f"{query} #{n}", "url": f"https://ex.com/{slug}/{n}"}
        for n in range(start, start + count)
    ]


def paging_by_page(query: str, pages: int) -> Trace:
    return trace(
        f"paging by page: {query}",
        Ask(f"Collect every result for '{query}'.", "I will page through the results."),
        [tool("search", hits(query, 3 * p), q=query, page=p) for p in range(1, pages + 1)],
        Ask(None, f"Collected {3 * pages} results for {query}."),
    )


def paging_by_offset(tool_name: str, query: str, pages: int, size: int) -> Trace:
    return trace(
        f"paging by offset: {tool_name} {query}",
        [
            tool(tool_name, hits(query, offset, size), query=query, offset=offset, limit=size)
            for offset in range(0, pages * size, size)
        ],
        Ask(None, f"There are {pages * size} matching records."),
    )


def paging_by_cursor(query: str, pages: int) -> Trace:
    cursors = [None, *(f"c{n:04x}ZQ{n * 7919:x}" for n in range(1, pages))]
    events: list[Event] = []
    for index, cursor in enumerate(cursors):
        following = cursors[index + 1] if index + 1 < len(cursors) else None
        args: dict[str, Any] = {"q": query, "limit": 50}
        if cursor is not None:
            args["cursor"] = cursor
        events.append(
            Tool("list_messages", args, {"items": hits(query, index * 50, 2), "next": following})
        )
    return trace(f"paging by cursor: {query}", events, Ask(None, "All messages read."))


def walk_ids(tool_name: str, key: str, ids: list[Any], make: Any) -> Trace:
    return trace(
        f"walk {tool_name} over {len(ids)} ids",
        Ask(f"Check the {tool_name.split('_')[-1]}s on my list.", "Looking them up one by one."),
        [Tool(tool_name, {key: i}, make(i)) for i in ids],
        Ask(None, f"Checked {len(ids)} records."),
    )


def customer(i: Any) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"Customer {i}",
        "plan": "pro" if int(str(i)[-1]) % 2 else "free",
        "open_tickets": int(str(i)[-1]) % 3,
    }


def order(i: str) -> dict[str, Any]:
    return {"id": i, "status": "shipped", "items": 2, "total": 41.5}


def not_found_sometimes(i: str) -> dict[str, Any]:
    if i.endswith(("3", "4", "5")):
        return {"error": "not found"}
    return order(i)


def distinct_searches(tool_name: str, template: str, subjects: list[str]) -> Trace:
    return trace(
        f"distinct searches: {template}",
        [
            Tool(tool_name, {"q": template.format(s)}, hits(template.format(s), 0, 2))
            for s in subjects
        ],
        Ask(None, "Here is what I found for each of them."),
    )


def retry_then_succeed(url: str, failures: int, error: str) -> Trace:
    return trace(
        f"retry {failures}x {error} then succeed",
        [tool("fetch_url", error=error, url=url) for _ in range(failures)],
        tool("fetch_url", {"status": 200, "body": f"<html>{url}</html>"}, url=url),
        Ask(None, "The page says what we needed."),
        tool("fetch_url", error=error, url=url + "/about"),
        tool("fetch_url", {"status": 200, "body": "about us"}, url=url + "/about"),
    )


def poll_job(statuses: list[Any], *, between: str | None = None) -> Trace:
    """Poll until the job is done; the same status twice in a row only when something else
    happened in between (other work, or a progress report)."""
    events: list[Event] = [tool("submit_job", {"job": "j-77"}, spec="nightly-report")]
    for index, status in enumerate(statuses):
        events.append(tool("job_status", status, job="j-77"))
        if index + 1 == len(statuses):
            break
        if between == "work":
            events.append(
                tool("get_ticket", {"id": 300 + index, "title": f"t{index}"}, id=300 + index)
            )
        elif between == "report":
            events.append(Report({"waited_s": 30 * (index + 1)}))
    events.append(Ask(None, "The job finished."))
    return trace(f"poll job, {between or 'nothing'} between, {len(statuses)} polls", events)


def read_write_read(path: str, versions: int) -> Trace:
    events: list[Event] = [tool("read_file", "v0 content", path=path)]
    for n in range(1, versions + 1):
        body = f"line one\nline two revised {n}\n"
        events += [
            tool("write_file", {"ok": True}, path=path, content=body),
            tool("read_file", body, path=path),
        ]
    return trace(f"read write read {path} x{versions}", events)


def coding_run(fixes: int, commands: tuple[str, ...] = ("pytest -q tests",)) -> Trace:
    """Edit, test, edit, test: the same (or a slightly varied) test command after each
    edit, results improving."""
    events: list[Event] = [
        Ask("Make the test suite pass.", "Let me look at the failing tests."),
        tool("run_tests", {"failed": fixes, "passed": 40}, cmd=commands[0]),
        tool("read_file", "def add(a, b):\n    return a - b\n", path="src/calc.py"),
    ]
    for n in range(fixes):
        body = f"def add(a, b):\n    return a + b  # fix {n}\n" + "# padding\n" * n
        events += [
            Ask(None, f"Fix number {n + 1}: adjusting calc.py."),
            tool("write_file", {"ok": True, "bytes": len(body)}, path="src/calc.py", content=body),
            tool(
                "run_tests",
                {"failed": fixes - n - 1, "passed": 41 + n},
                cmd=commands[(n + 1) % len(commands)],
            ),
        ]
    events.append(Ask(None, "All tests pass now."))
    return trace(f"coding run {fixes} fixes", events)


def support_shift(tickets: int) -> Trace:
    """A long productive run: read a ticket, its customer, draft, update, email."""
    events: list[Event] = []
    for n in range(tickets):
        tid, cid = 9000 + n, 500 + 3 * n
        events += [
            tool("get_ticket", {"id": tid, "customer": cid, "title": f"Issue {n}"}, id=tid),
            tool("get_customer", customer(cid), customer_id=cid),
            Ask(None, f"Drafting a reply for ticket {tid} about issue {n}."),
            tool("update_ticket", {"ok": True}, id=tid, status="answered"),
            tool(
                "send_email",
                {"status": "sent"},
                to=f"c{cid}@example.com",
                subject=f"Re: Issue {n}",
                body=f"Hello, about issue {n}: it is fixed.",
            ),
        ]
    return trace(f"support shift {tickets} tickets", events)


def email_batch(count: int) -> Trace:
    return trace(
        f"email batch {count}",
        Ask("Send the launch note to the beta list.", "Sending it to each address."),
        [
            tool(
                "send_email",
                {"status": "sent"},
                to=f"user{n}@example.com",
                subject="We launched",
                body="Thanks for testing the beta.",
            )
            for n in range(count)
        ],
        Ask(None, f"Sent {count} emails."),
    )


def stock_check(skus: list[str]) -> Trace:
    return trace(
        f"stock check {len(skus)}",
        [tool("check_stock", {"in_stock": True}, sku=sku) for sku in skus],
        Ask(None, "Everything on the order is in stock."),
    )


def batch_with_progress(items: int) -> Trace:
    """The same call with the same answer each time, the agent reporting what it got done."""
    events: list[Event] = []
    for n in range(items):
        events += [tool("process_next", {"ok": True}, queue="imports"), Report({"done": n + 1})]
    return trace(f"queue drain with progress {items}", events)


def research(topics: list[str]) -> Trace:
    events: list[Event] = [Ask("Write a short brief on these topics.", "Researching each.")]
    for n, topic in enumerate(topics):
        events += [
            tool("web_search", hits(topic, 0, 3), query=topic),
            tool(
                "fetch_url",
                {"status": 200, "body": f"article about {topic}"},
                url=f"https://ex.com/{topic.replace(' ', '-')}/0",
            ),
            Ask(None, f"Notes on {topic}: point {n}, with a source."),
        ]
    events.append(Ask(None, "The brief is done."))
    return trace(f"research {len(topics)} topics", events)


def chat(turns: list[tuple[str, str]]) -> Trace:
    return trace(f"chat {len(turns)} turns", [Ask(q, a) for q, a in turns])


def writing_run(sections: list[str]) -> Trace:
    """A long writing run: the same 'continue' prompt, a new section every time."""
    events: list[Event] = [
        Ask("Write a guide to sourdough baking, section by section.", sections[0])
    ]
    events += [
        Ask("Please continue writing the next section of the guide.", s) for s in sections[1:]
    ]
    return trace(f"writing run {len(sections)} sections", events)


def classify_documents(docs: list[tuple[str, str]]) -> Trace:
    """The same instruction about new material each time, often with the same answer."""
    events: list[Event] = []
    for path, label in docs:
        events += [
            tool("read_file", f"review text of {path}", path=path),
            Ask("Classify the sentiment of the review above as positive or negative.", label),
        ]
    return trace(f"classify {len(docs)} documents", events)


def sql_session(queries: list[str]) -> Trace:
    return trace(
        f"sql {len(queries)} queries",
        [tool("sql", [{"row": n, "query": q[:20]}], query=q) for n, q in enumerate(queries)],
        Ask(None, "The numbers are in the table below."),
    )


def planner_worker(rounds: list[tuple[str, str]]) -> Trace:
    """Two agents of one session: a planner hands out distinct tasks, a worker reports."""
    events: list[Event] = []
    for task, report in rounds:
        events += [
            Ask(f"Plan the next step after: {report[:30]}", task, agent="a"),
            Ask(f"Do this: {task}", report, agent="b"),
        ]
    return trace(f"planner and worker {len(rounds)} rounds", events)


def writer_reviewer(rounds: int) -> Trace:
    """Drafts that converge, reviews that ask for something else each time."""
    asks = [
        "tighten the introduction",
        "add a concrete example about invoices",
        "explain the refund policy in plain words",
        "fix the tone of the closing",
        "shorten the second paragraph",
        "mention the support hours",
    ]
    events: list[Event] = []
    draft = "Dear customer, thank you for your message about the invoice."
    for n in range(rounds):
        draft += f" Done: {asks[n % len(asks)]}."
        events += [
            Ask(f"Write the reply. Notes: {asks[(n - 1) % len(asks)]}", draft, agent="a"),
            Ask(
                f"Review this draft: {draft[-60:]}",
                f"Better. Now please {asks[n % len(asks)]}.",
                agent="b",
            ),
        ]
    return trace(f"writer and reviewer {rounds} rounds", events)


def two_agents_lookup(count: int) -> Trace:
    """Two agents in one session looking up different things, interleaved."""
    events: list[Event] = []
    for n in range(count):
        events += [
            tool("get_customer", customer(100 + n), customer_id=100 + n, agent="a"),
            tool("get_order", order(f"ORD-{2000 + n}"), order_id=f"ORD-{2000 + n}", agent="b"),
        ]
    return trace(f"two agents lookups {count}", events)


def parallel_paging(query: str, pages: int) -> Trace:
    """Two agents of one session paging the same search side by side: the same content
    from both, but each moves on, so nothing bounces."""
    events: list[Event] = []
    for page in range(1, pages + 1):
        events += [
            tool("search", hits(query, 3 * page), q=query, page=page, agent="a"),
            tool("search", hits(query, 3 * page), q=query, page=page, agent="b"),
        ]
    return trace(f"two agents paging {query}", events)


def data_pipeline(tables: list[str]) -> Trace:
    """A long ETL run: per table, count, sample, transform, load, verify."""
    events: list[Event] = [Ask("Load the warehouse tables.", "Starting with the first table.")]
    for n, table in enumerate(tables):
        events += [
            tool("sql", [{"count": 1000 + 37 * n}], query=f"SELECT count(*) FROM raw.{table}"),
            tool("sql", [{"id": 1, "t": table}], query=f"SELECT * FROM raw.{table} LIMIT 5"),
            tool("shell", f"transformed {table}", cmd=f"dbt run --select {table}"),
            tool("sql", [{"count": 1000 + 37 * n}], query=f"SELECT count(*) FROM dw.{table}"),
            Report({"tables_loaded": n + 1}),
        ]
    events.append(Ask(None, f"Loaded {len(tables)} tables."))
    return trace(f"data pipeline {len(tables)} tables", events)


# --- the normal corpus --------------------------------------------------------------

SECTIONS = [
    "Sourdough starts with a starter: flour and water left to ferment for a week.",
    "Feeding the starter means discarding half and adding fresh flour and water daily.",
    "Mixing the dough: combine flour, water, salt and a ripe starter until shaggy.",
    "Bulk fermentation takes four to six hours at room temperature with stretch and folds.",
    "Shaping builds surface tension; a tight boule holds its form in the banneton overnight.",
    "Baking in a preheated Dutch oven traps steam, giving an open crumb and crisp crust.",
    "Cooling on a rack for an hour lets the crumb set before slicing.",
    "Troubleshooting: a dense loaf usually means an underactive starter or short proofing.",
]

NORMAL: list[Trace] = [
    paging_by_page("flights paris", 6),
    paging_by_page("hotels near louvre", 4),
    paging_by_page("python asyncio tutorial", 10),
    paging_by_offset("list_orders", "status shipped", 8, 25),
    paging_by_offset("search", "invoices march", 5, 10),
    paging_by_cursor("from alice", 7),
    paging_by_cursor("label urgent", 12),
    walk_ids("get_customer", "customer_id", list(range(1, 13)), customer),
    walk_ids("get_customer", "customer_id", [str(n) for n in range(40, 47)], customer),
    walk_ids("get_order", "order_id", [f"ORD-{n}" for n in range(1001, 1011)], order),
    walk_ids("get_order", "order_id", [f"ORD-{n}" for n in range(1001, 1009)], not_found_sometimes),
    distinct_searches("search", "weather in {}", ["paris", "london", "berlin", "rome", "madrid"]),
    distinct_searches(
        "web_search",
        "best restaurants in {}",
        ["lyon", "nice", "lille", "nantes", "bordeaux", "toulouse"],
    ),
    distinct_searches(
        "search", "{} quarterly revenue 2024", ["acme", "globex", "initech", "umbrella", "hooli"]
    ),
    distinct_searches(
        "search", "how to configure {} logging", ["nginx", "postgres", "redis", "kafka", "django"]
    ),
    distinct_searches(
        "web_search",
        "python {} example",
        [
            "list comprehension",
            "dataclass field",
            "asyncio gather",
            "contextlib suppress",
            "typing protocol",
        ],
    ),
    retry_then_succeed("https://status.example.com", 2, "TimeoutError"),
    retry_then_succeed("https://api.example.com/v1/items", 1, "ConnectionError"),
    retry_then_succeed("https://docs.example.com/guide", 2, "ConnectionError"),
    poll_job(
        [
            {"state": "queued"},
            {"state": "running", "pct": 10},
            {"state": "running", "pct": 60},
            {"state": "done", "url": "s3://r/7"},
        ]
    ),
    poll_job([{"state": "running", "pct": p} for p in (5, 20, 45, 70, 95)] + [{"state": "done"}]),
    poll_job([{"state": "running"}] * 5 + [{"state": "done"}], between="work"),
    poll_job(
        [{"state": "queued"}] * 3 + [{"state": "running"}] * 4 + [{"state": "done"}],
        between="report",
    ),
    read_write_read("notes.md", 3),
    read_write_read("config/settings.yaml", 5),
    coding_run(3),
    coding_run(6),
    support_shift(6),
    support_shift(8),
    email_batch(12),
    stock_check([f"SKU-{n}" for n in range(100, 108)]),
    stock_check(["apple", "pear", "plum", "kiwi", "fig", "lime"]),
    batch_with_progress(10),
    research(
        ["solar panel efficiency", "heat pump costs", "grid battery storage", "offshore wind farms"]
    ),
    research(["rust ownership", "go channels", "erlang supervisors"]),
    chat(
        [
            ("Hi, can you help me plan a trip?", "Of course. Where to?"),
            ("yes", "Great, which city?"),
            ("Lisbon in May", "Lisbon is lovely in May."),
            ("yes", "Shall I look at flights?"),
            ("yes", "Here are three options."),
            ("ok", "Booked the second one."),
            ("yes", "Anything else?"),
        ]
    ),
    chat(
        [
            ("What is a monad?", "A monad is a pattern for chaining computations."),
            ("Can you give an example?", "Maybe in Haskell chains computations that may fail."),
            ("And in Python?", "Optional chaining with functions returning None is close."),
            ("Why is it useful?", "It separates the plumbing from the logic."),
        ]
    ),
    writing_run(SECTIONS),
    writing_run(SECTIONS[:5]),
    classify_documents([(f"reviews/{n}.txt", "positive") for n in range(8)]),
    classify_documents([(f"mail/{n}.eml", "negative" if n % 3 else "positive") for n in range(6)]),
    sql_session(
        [
            "SELECT count(*) FROM orders",
            "SELECT status, count(*) FROM orders GROUP BY 1",
            "SELECT avg(total) FROM invoices WHERE paid",
            "SELECT max(created_at) FROM users",
            "SELECT region, sum(total) FROM invoices GROUP BY region",
        ]
    ),
    planner_worker(
        [
            ("fetch the sales csv", "fetched 1200 rows of sales"),
            ("clean the date column", "normalised 1200 dates, 3 were invalid"),
            ("compute monthly totals", "12 monthly totals, peak in december"),
            ("plot the totals", "saved chart to totals.png"),
            ("write the summary", "summary: sales grew 14 percent year on year"),
        ]
    ),
    writer_reviewer(5),
    parallel_paging("kubernetes ingress timeout", 5),
    data_pipeline(
        [
            "orders",
            "customers",
            "invoices",
            "payments",
            "refunds",
            "shipments",
            "products",
            "suppliers",
        ]
    ),
    coding_run(10),
    coding_run(
        5,
        (
            "pytest -q tests",
            "pytest -q tests -x",
            "pytest tests -q --lf",
            "pytest -q tests -k calc",
        ),
    ),
    research(
        [
            "tidal energy",
            "geothermal wells",
            "hydrogen storage",
            "carbon capture",
            "nuclear smr",
            "biogas digesters",
            "wave power",
            "perovskite cells",
        ]
    ),
    two_agents_lookup(6),
    trace(
        "geocode addresses",
        [
            tool(
                "geocode",
                {"lat": 48.85 + n / 100, "lon": 2.35},
                address=f"{n} rue de Rivoli, Paris",
            )
            for n in range(1, 9)
        ],
    ),
    trace(
        "translate sentences",
        [
            tool("translate", f"fr{n}", text=s, target="fr")
            for n, s in enumerate(
                [
                    "Good morning, how are you today?",
                    "The meeting is moved to Thursday afternoon.",
                    "Please send the signed contract back by Friday.",
                    "Our office is closed for the holiday.",
                    "Thank you for your quick reply.",
                ]
            )
        ],
    ),
    trace(
        "calendar booking",
        [
            tool("calendar_free", [f"{d} 10:00", f"{d} 15:00"], date=d)
            for d in ("2025-06-02", "2025-06-03", "2025-06-04", "2025-06-05")
        ],
        tool("book_meeting", {"id": "m-1"}, date="2025-06-04", time="15:00", title="Kickoff"),
        Ask(None, "Booked the kickoff for Wednesday 15:00."),
    ),
    trace(
        "invoice run",
        [
            [
                tool("create_invoice", {"id": f"inv-{n}"}, customer_id=n, amount=100 + n),
                tool("get_invoice", {"id": f"inv-{n}", "state": "open"}, id=f"inv-{n}"),
            ]
            for n in range(1, 8)
        ],
    ),
    trace(
        "shell session",
        tool("shell", "README.md src tests", cmd="ls"),
        tool("shell", "On branch main, nothing to commit", cmd="git status"),
        tool("write_file", {"ok": True}, path="src/app.py", content="print('hi')\n"),
        tool("shell", "On branch main, modified: src/app.py", cmd="git status"),
        tool("shell", "1 file changed", cmd="git commit -am 'greet'"),
        tool("shell", "On branch main, nothing to commit", cmd="git status"),
    ),
    trace(
        "list then read every file",
        tool("list_files", ["a.py", "b.py", "c.py", "d.py"], dir="src"),
        [tool("read_file", f"contents of {f}", path=f"src/{f}") for f in "abcd"],
        tool("list_files", ["test_a.py", "test_b.py"], dir="tests"),
        [tool("read_file", f"tests of {f}", path=f"tests/test_{f}.py") for f in "ab"],
    ),
    trace(
        "weather for a trip, re-checked after the plan changed",
        tool("get_weather", {"temp": 21, "sky": "clear"}, city="Lisbon", date="2025-05-10"),
        tool("get_weather", {"temp": 19, "sky": "rain"}, city="Porto", date="2025-05-11"),
        Report("itinerary v2"),
        tool("get_weather", {"temp": 21, "sky": "clear"}, city="Lisbon", date="2025-05-10"),
        tool("get_weather", {"temp": 24, "sky": "clear"}, city="Faro", date="2025-05-12"),
        Report("itinerary v3"),
        tool("get_weather", {"temp": 21, "sky": "clear"}, city="Lisbon", date="2025-05-10"),
    ),
    trace(
        "re-ask once after a vague answer",
        Ask("Summarise the attached contract in three bullet points.", "It is a contract."),
        Ask(
            "Please give three concrete bullet points about the contract terms.",
            "- 12 month term\n- 30 day notice\n- net 45 payment",
        ),
    ),
    trace(
        "status checks between deploy steps",
        tool("get_status", {"service": "api", "version": "1.4"}, service="api"),
        tool("shell", "deployed 1.5 to canary", cmd="deploy api 1.5 --canary"),
        tool("get_status", {"service": "api", "version": "1.5", "canary": True}, service="api"),
        tool("shell", "promoted 1.5", cmd="deploy api 1.5 --promote"),
        tool("get_status", {"service": "api", "version": "1.5"}, service="api"),
    ),
    trace(
        "sequential chat runs share a session",
        Ask("What's the capital of Australia?", "Canberra.", agent="a"),
        Ask("And its population?", "About 460,000 people.", agent="b"),
        Ask("Which state is it in?", "The Australian Capital Territory.", agent="a"),
        Ask("When was it founded?", "It was founded in 1913.", agent="b"),
        Ask("Who designed it?", "Walter Burley Griffin and Marion Mahony Griffin.", agent="a"),
        Ask("Is it the largest city?", "No, Sydney is the largest.", agent="b"),
    ),
]


# --- loops: each must halt with `expect` --------------------------------------------

REPHRASED = [
    "best flights paris",
    "cheapest flights to paris",
    "paris flights cheap",
    "cheap flights to paris",
    "flights paris cheapest",
    "cheap paris flights",
]

LOOPS: list[Trace] = [
    trace(
        "rephrasing search loop",
        Ask("Find me the cheapest flight to Paris.", "Searching."),
        [tool("search", hits("flights", n, 3), q=q) for n, q in enumerate(REPHRASED)],
        expect="loop.similar",
    ),
    trace(
        "same lookup again and again",
        [tool("get_customer", customer(7), customer_id=7) for _ in range(5)],
        expect="loop.repeat",
    ),
    trace(
        "same call, other spacing and 7.0 for 7",
        tool("get_order", order("ORD-7"), order_id="ORD-7", options={"full": True, "n": 7}),
        tool("get_order", order("ORD-7"), options={"n": 7.0, "full": True}, order_id=" ORD-7 "),
        tool("get_order", order("ORD-7"), order_id="ORD-7", options={"full": True, "n": 7}),
        expect="loop.repeat",
    ),
    trace(
        "malformed call retried",
        [
            tool("search", error="ToolArgumentError", arguments='{"q": "paris", "page":')
            for _ in range(6)
        ],
        expect="loop.error_repeat",
    ),
    trace(
        "reading the same unchanged state",
        [
            [
                tool("get_status", {"queue": 12}, service="queue"),
                tool("list_files", ["a.csv", "b.csv"], dir="inbox"),
                tool("get_ticket", {"id": 4, "state": "waiting"}, id=4),
            ]
            for _ in range(4)
        ],
        expect="loop.no_progress",
    ),
    trace(
        "re-asking the model, same answer",
        Ask("Return the order as JSON with keys id and total.", "Sure! The order id is 7."),
        Ask(
            "That was not JSON. Return the order as JSON with keys id and total.",
            "Sure! The order id is 7.",
        ),
        Ask(
            "Return the order as JSON with keys id and total, only JSON.",
            "Sure! The order id is 7.",
        ),
        Ask(
            "Please return the order as JSON with the keys id and total.",
            "Sure! The order id is 7.",
        ),
        Ask("Return the order as JSON, keys id and total.", "Sure! The order id is 7."),
        expect="loop.similar",
    ),
    trace(
        "analyzer and verifier ping-pong",
        [
            [
                Ask(
                    "Analyse the Q3 numbers.",
                    "Revenue rose because of the new pricing; the churn figure is an outlier.",
                    agent="a",
                ),
                Ask(
                    "Verify this analysis.",
                    "The churn figure is not an outlier; please re-check the pricing effect.",
                    agent="b",
                ),
            ]
            for _ in range(2)
        ],
        Ask(
            "Analyse the Q3 numbers.",
            "Revenue rose because of the new pricing; the churn figure is an outlier.",
            agent="a",
        ),
        expect="loop.ping_pong",
    ),
    trace(
        "ping-pong through a shared tool",
        [
            [
                tool(
                    "send_email",
                    {"status": "sent"},
                    to="team@example.com",
                    subject="Re: plan",
                    body=f"{opener}I think plan A is better, see my notes.",
                    agent="a",
                ),
                tool(
                    "send_email",
                    {"status": "sent"},
                    to="team@example.com",
                    subject="Re: plan",
                    body=f"{opener}No, plan B is better, see my notes.",
                    agent="b",
                ),
            ]
            for opener in ("", "Again: ")
        ],
        tool(
            "send_email",
            {"status": "sent"},
            to="team@example.com",
            subject="Re: plan",
            body="I think plan A is better, see my notes again.",
            agent="a",
        ),
        expect="loop.ping_pong",
    ),
]
