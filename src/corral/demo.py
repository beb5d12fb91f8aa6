"""`corral demo`: a supervised support agent against the simulated provider, in five runs.

1. A ticket is answered and the run completes.
2. A model keeps asking for the same tool: the loop gate halts the run on the third
   identical call with a named reason (`loop.repeat`), an escalation packet naming the
   steps and a dead-letter entry.
3. A refund: the SQL write's preview counts the rows it touches (few, so nobody is
   asked), and the email, irreversible, waits for a human, who rejects the first draft
   with feedback the model replans with and approves the second.
4. A customer record whose notes carry a prompt injection: the input guard blocks it
   (`guard.input`).
5. An answer with an email address and a phone number reaches the caller redacted.

All on embedded defaults (SQLite, the in-process counters, the simulated provider); the
store is left for the CLI to inspect.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from rich.console import Console
from rich.json import JSON
from rich.table import Table

from corral.calls import Halted
from corral.policy import Policy, load_policy
from corral.providers.sim import Script, SimProvider, SimReply, SimToolCall
from corral.runtime import review
from corral.runtime.sealing import open_policy_store
from corral.runtime.supervisor import Supervisor
from corral.state import ApprovalRecord
from corral.state.sealed import DATA_KEY_ENV, new_data_key
from corral.tables import listing

# The sim accepts any key; the example policy names SIM_API_KEY, so give it one.
SIM_KEY_DEFAULT = "sim-demo-key"

# A well-behaved model: look the customer up, draft a reply, answer.
HELPFUL = Script(
    (
        SimReply(tool_calls=(SimToolCall("get_customer", {"customer_id": 42}),)),
        SimReply(
            tool_calls=(
                SimToolCall("draft_email", {"to": "ada@example.com", "body": "Your order ships."}),
            )
        ),
        SimReply("Your order #1042 ships tomorrow; I've drafted an email with the details."),
    )
)
# A confused model: it asks for the same look-up forever.
RUNAWAY = Script((SimReply(tool_calls=(SimToolCall("get_customer", {"customer_id": 42}),)),))
# A refund: one SQL write, then an email the reviewer sends back once.
REFUND_SQL = "UPDATE orders SET status = 'refunded' WHERE id = 1042"
REFUND = Script(
    (
        SimReply(
            "Marking order #1042 refunded.",
            tool_calls=(SimToolCall("sql_write", {"statement": REFUND_SQL}),),
        ),
        SimReply(
            "Telling the customer.",
            tool_calls=(
                SimToolCall(
                    "send_email",
                    {"to": "ada@example.com", "body": "Your refund for #1042 arrives tomorrow."},
                ),
            ),
        ),
        SimReply(
            "Telling the customer, without promising a date.",
            tool_calls=(
                SimToolCall(
                    "send_email",
                    {"to": "ada@example.com", "body": "Your refund for #1042 takes 3-5 days."},
                ),
            ),
        ),
        SimReply("Order #1042 is refunded and the customer has been told."),
    )
)
# A record whose notes carry an injection, and an answer that carries personal data.
POISONED = Script(
    (
        SimReply(tool_calls=(SimToolCall("get_customer", {"customer_id": 666}),)),
        SimReply("Done as the notes say."),
    )
)
CONTACT = Script(
    (SimReply("You can reach Ada at ada.lovelace@example.com or on +1 415 555 0134."),)
)
# What the demo's on-call reviewer decides, in order.
VERDICTS = (
    ("reject", "Don't promise a date: refunds take 3-5 business days."),
    ("approve", "wording checked"),
)


async def play_reviewer(sup: Supervisor, console: Console) -> list[str]:
    """The human on the other side: read each approval's panel, decide as VERDICTS say
    (as `corral approvals reject|approve` would). Returns the approvals' ids."""
    decided: list[str] = []
    for verdict, words in VERDICTS:
        approval = await _next_pending(sup, decided)
        panel = approval.panel or {}
        args = ", ".join(f"{k}={v!r}" for k, v in approval.args.items())
        console.print(f"[yellow]approval requested[/yellow] {approval.id} ({approval.rule}):")
        console.print(f"  {panel.get('tool')}({args})", highlight=False)
        console.print(f"  the agent's reason: {panel.get('reason')}", highlight=False)
        console.print(f"  rollback plan: {panel.get('rollback')}", highlight=False)
        store, audit, wake = sup.store, sup.audit, sup.approvals.wake
        if verdict == "reject":
            await review.reject(
                store, audit, approval.id, by="on-call", now=time.time(), feedback=words,
                on_decided=wake,
            )  # fmt: skip
            console.print(f"[red]rejected[/red] by on-call: {words}")
        else:
            await review.approve(
                store, audit, approval.id, by="on-call", now=time.time(), note=words,
                on_decided=wake,
            )  # fmt: skip
            console.print(f"[green]approved[/green] by on-call: {words}")
        decided.append(approval.id)
    return decided


async def _next_pending(sup: Supervisor, seen: list[str]) -> ApprovalRecord:
    while True:
        for approval in await sup.store.list_approvals(status="pending"):
            if approval.id not in seen:
                return approval
        await asyncio.sleep(0.05)


def demo_key_file(policy: Policy) -> Path:
    """Where the demo keeps the data key it made: beside the policy's store."""
    return Path(policy.store.removeprefix("sqlite:///")).parent / ".corral-demo-key"


def demo_data_key(policy: Policy) -> Path | None:
    """The demo's CORRAL_DATA_KEY when none is set and the policy redacts storage: kept in
    a file beside the store (owner-only), so later demos and the CLI read what it sealed.
    A deployment sets its own key; this is for the demo on embedded defaults."""
    if not policy.guards.redact_storage or os.environ.get(DATA_KEY_ENV):
        return None
    where = demo_key_file(policy)
    if not where.exists():
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(new_data_key())
        where.chmod(0o600)
    os.environ[DATA_KEY_ENV] = where.read_text().strip()
    return where


class DemoError(Exception):
    """The demo cannot run here; the message says why."""


def load_agent(policy_path: Path) -> ModuleType:
    """The example agent lives beside the example policy."""
    path = policy_path.parent / "support_agent.py"
    spec = importlib.util.spec_from_file_location("corral_example_support_agent", path)
    if spec is None or spec.loader is None or not path.exists():
        raise DemoError(f"{path}: the demo's example agent is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run_demo(policy_path: Path, console: Console) -> None:
    os.environ.setdefault("SIM_API_KEY", SIM_KEY_DEFAULT)
    agent = load_agent(policy_path)
    policy = load_policy(policy_path)
    key_file = demo_data_key(policy)
    # Serve the sim where the policy says it is (127.0.0.1:4010 in the example).
    where = urlsplit(policy.providers["sim"].base_url)
    sim = SimProvider(
        scripts={
            "helpful": HELPFUL,
            "runaway": RUNAWAY,
            "refund": REFUND,
            "poisoned": POISONED,
            "contact": CONTACT,
        }
    )
    try:
        await sim.start(where.hostname or "127.0.0.1", where.port or 80)
    except OSError as exc:
        raise DemoError(f"cannot serve the simulated provider at {where.netloc}: {exc}") from None
    try:
        sup = Supervisor.from_policy(policy_path)
        agent.register_tools(sup)
        console.rule("1. A ticket the agent can answer")
        answer = await agent.answer_ticket(
            sup, "Where is my order #1042?", headers={"X-Sim-Script": "helpful"}
        )
        console.print(f"[green]completed:[/green] {answer}")

        console.rule("2. A model that keeps asking for the same tool")
        halted_run = None
        try:
            await agent.answer_ticket(
                sup, "Why was I charged twice?", headers={"X-Sim-Script": "runaway"}
            )
        except Halted as halt:
            halted_run = halt.run_id
            console.print(f"[red]halted:[/red] [bold]{halt.reason.value}[/bold] — {halt.message}")
            console.print("Escalation packet:")
            console.print(JSON.from_data({k: v for k, v in halt.packet.items() if k != "steps"}))
            steps = Table(title="…with the last steps it carries")
            for column in ("#", "kind", "name", "status"):
                steps.add_column(column)
            for step in halt.packet["steps"][-4:]:
                steps.add_row(str(step["seq"]), step["kind"], step["name"], step["status"])
            console.print(steps)

        console.rule("3. An irreversible action waits for a human")
        reviewer = asyncio.create_task(play_reviewer(sup, console))
        answer = await agent.answer_ticket(
            sup, "Refund order #1042 and tell me.", headers={"X-Sim-Script": "refund"}
        )
        approval_ids = await reviewer
        console.print(f"[green]completed:[/green] {answer}")
        rows = agent.rows_touched(REFUND_SQL)["rows"]
        console.print(
            f"(sql_write ran unasked: its preview counted {rows} row(s), and the policy's rule "
            "asks a human only above 1,000)"
        )

        console.rule("4. An injection hidden in a customer record")
        try:
            await agent.answer_ticket(
                sup, "What do the notes on customer 666 say?", headers={"X-Sim-Script": "poisoned"}
            )
        except Halted as halt:
            rule = halt.packet["rule"]
            console.print(f"[red]halted:[/red] [bold]{halt.reason.value}[/bold] — {halt.message}")
            console.print(f"  in the {rule['source']} text: {rule['text']!r}", highlight=False)

        console.rule("5. Personal data in an answer")
        answer = await agent.answer_ticket(
            sup, "How do I reach Ada?", headers={"X-Sim-Script": "contact"}
        )
        console.print(f"[green]completed, redacted:[/green] {answer}", highlight=False)
        await sup.close()
    finally:
        await sim.stop()

    store = open_policy_store(policy)
    runs = await store.list_runs(limit=5)
    await store.close()
    lines = [
        (
            run.id,
            run.task or "-",
            # As `corral runs ls` shows it.
            run.status.value if run.halt_reason is None else f"halted ({run.halt_reason})",
            str(run.steps),
            str(run.tool_calls),
            f"{run.cost_usd:.4f}",
        )
        for run in runs
    ]
    columns = ("run", "task", "status", "steps", "tools", "usd")
    spare = ("tools",)
    table = listing(
        "The five runs", columns, lines, console.width, ids=("run",), text="task", droppable=spare
    )
    console.print(table)
    flag = f"--policy {policy_path}"
    console.print("Inspect them with the CLI (from .venv/bin, or after `. .venv/bin/activate`):")
    if key_file is not None:  # the store keeps what it reuses encrypted under this key
        console.print(f"  export {DATA_KEY_ENV}=$(cat {key_file})", highlight=False, soft_wrap=True)
    for line in (
        f"corral runs ls {flag}",
        f"corral runs show {halted_run} {flag}",
        f"corral dlq ls {flag}",
        f"corral dlq show {halted_run} {flag}",
        # A loop is not cured by more budget: the operator closes the case (or retries it).
        f"corral dlq drop {halted_run} {flag}",
        f"corral approvals ls --status all {flag}",
        f"corral approvals show {approval_ids[0]} {flag}",
        f"corral audit verify {flag}",
    ):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
