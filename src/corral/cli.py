"""The `corral` command. Thin: parse arguments, call the library, render with Rich."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.json import JSON
from rich.table import Table

from corral import __version__
from corral.calls import RunStatus
from corral.cli_common import (
    AsJson,
    PolicyPath,
    err,
    fail,
    out,
    policy_for_store,
    print_json,
    when,
    with_store,
)
from corral.cli_observe import graph, report
from corral.cli_purge import data_key, purge
from corral.cli_review import approvals_app, shadow_app
from corral.cli_store import migrate, store_app
from corral.gateway.keys import check_lifetime, issue, key_status
from corral.policy import PolicyError, parse_duration
from corral.runtime import operations
from corral.state import AgentKeyRecord, CountersUnavailable, Store, StoreError
from corral.tables import listing
from corral.telemetry.audit import AuditLog

app = typer.Typer(
    name="corral",
    help="Corral: hard budgets, breakers, loop detection and audit for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown reflows a docstring's paragraphs to the terminal; Typer's rich mode keeps
    # each of its line breaks, which reads badly at 80 columns.
    rich_markup_mode="markdown",
)
runs_app = typer.Typer(help="List, inspect and kill runs.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="The dead-letter queue: halted runs waiting for a human to retry or drop them.",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Gateway keys: one identifies an agent, an admin key opens /admin/.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(approvals_app, name="approvals")
app.add_typer(shadow_app, name="shadow")
app.add_typer(store_app, name="store")
app.command()(graph)
app.command()(report)
app.command()(purge)
app.command()(migrate)
keys_app.command("data-key")(data_key)

RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)]


async def audit(
    store: Store, kind: str, payload: Mapping[str, Any], run_id: str | None = None
) -> None:
    await AuditLog(store).append(kind, payload, run_id)


def print_version(asked: bool) -> None:
    if asked:
        out.print(f"corral {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=print_version,
            is_eager=True,
            help="Print Corral's version and exit.",
        ),
    ] = False,
) -> None:
    # The app's help is Typer(help=...): a docstring here would replace it.
    pass


@app.command()
def version() -> None:
    """Print Corral's version."""
    out.print(f"corral {__version__}", highlight=False)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 4010,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Inject a fault: MODEL=SPEC for one model, or SPEC for every request "
            "(e.g. gpt-4o=503, rate_limit;retry_after=2, error;status=500;rate=0.1).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for percentage faults.")] = 0,
) -> None:
    """Run the simulated OpenAI/Anthropic-compatible provider."""
    from corral.providers.sim import Fault, serve

    per_model: dict[str, Fault] = {}
    everywhere: Fault | None = None
    for spec in fault or []:
        model, sep, rest = spec.partition("=")
        try:
            if sep:
                per_model[model] = Fault.parse(rest)
            else:
                everywhere = Fault.parse(spec)
        except ValueError as exc:
            fail(f"--fault {spec!r}: {exc}", 2)
    out.print(f"corral sim listening on http://{host}:{port}/v1 (Ctrl-C stops)")
    serve(host, port, faults=per_model, fault=everywhere, seed=seed)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.command()
def serve(
    policy: PolicyPath = Path("corral.yaml"),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 4100,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as text or as one JSON object each.")
    ] = LogFormat.text,
    log_level: Annotated[
        LogLevel, typer.Option(help="Least severe level logged (warning: no access log).")
    ] = LogLevel.info,
    access_log: Annotated[
        bool, typer.Option(help="One line per request: method, path, status, agent, run, ms.")
    ] = True,
) -> None:
    """Run the OpenAI/Anthropic-compatible gateway."""
    # Imported here: the server pulls in uvicorn and the gateway, which no other verb needs.
    from corral.gateway.exchange import configure_logging, flush_logging
    from corral.gateway.server import serve as serve_gateway

    configure_logging(log_format.value, access_log, log_level.value)
    try:
        serve_gateway(policy, host, port, log_level.value)
    except (ValueError, StoreError) as exc:  # the policy refused, a URL it cannot open, a
        flush_logging()  # store that is not migrated or not there
        fail(str(exc), 2)
    flush_logging()


def kill_pending(run: Mapping[str, Any]) -> bool:
    """An operator asked to kill the run and it has not halted yet (its process halts it
    at its next gate)."""
    return run["status"] == RunStatus.RUNNING and run["kill_requested_at"] is not None


def status_text(run: Mapping[str, Any], *, reason: bool = False) -> str:
    """running, running (kill pending), completed, halted; with `reason`, halted
    (loop.repeat)."""
    if kill_pending(run):
        return "running (kill pending)"
    if reason and run["halt_reason"] is not None:
        return f"{run['status']} ({run['halt_reason']})"
    return str(run["status"])


# How a step the run's count leaves out is named, by its status. The record gate counts a
# call once it was answered (an answer a halt followed counts: its output is on the step).
UNCOUNTED = {"halted": "halted", "error": "failed", "replayed": "replayed"}


def uncounted(steps: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The seqs of the steps not in the run's step count, by what became of them."""
    left_out: dict[str, list[int]] = {kind: [] for kind in UNCOUNTED.values()}
    for step in steps:
        kind = UNCOUNTED.get(step["status"])
        if kind is not None and not (kind == "halted" and step["output"] is not None):
            left_out[kind].append(step["seq"])
    return left_out


def step_count_text(count: int, left_out: Mapping[str, list[int]]) -> str:
    """5, or 5 (+1 halted, +2 failed)."""
    extra = ", ".join(f"+{len(seqs)} {kind}" for kind, seqs in left_out.items() if seqs)
    return f"{count} ({extra})" if extra else str(count)


@runs_app.command("ls")
def runs_ls(
    policy: PolicyPath = Path("corral.yaml"),
    limit: Annotated[int, typer.Option(min=1, help="Newest N runs.")] = 50,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only runs of this agent.")] = None,
    as_json: AsJson = False,
) -> None:
    """List runs, newest first.

    A run an operator killed that has not halted yet (its process halts it at its next
    gate) shows as "running (kill pending)"; in --json, "kill_pending" says so."""
    rows = with_store(
        policy, lambda s: operations.list_runs(s, limit=limit, status=status, agent=agent)
    )
    if as_json:
        print_json([{**r, "kill_pending": kill_pending(r)} for r in rows])
        return
    if not rows and status is None and agent is None:
        out.print("No runs yet. Start one with `corral demo`, the SDK, or `corral serve`.")
        return
    if not rows:
        which = " ".join(
            part
            for part in ("No", status and status.value, "runs", agent and f"of agent {agent}")
            if part
        )
        out.print(f"{which}.", highlight=False)
        return
    # The halt reason goes with the status: a column of its own would be "-" for most runs
    # and take the room the task needs at 80 columns.
    columns = ("run", "agent", "task", "status", "steps", "tokens", "usd", "started")
    lines = [
        (
            r["id"],
            r["agent"],
            r["task"] or "-",
            status_text(r, reason=True),
            str(r["steps"]),
            str(r["input_tokens"] + r["output_tokens"]),
            f"{r['cost_usd']:.4f}",
            when(r["created_at"], short=True),
        )
        for r in rows
    ]
    spare = ("tokens", "started", "agent")
    table = listing("Runs", columns, lines, out.width, ids=("run",), text="task", droppable=spare)
    out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: RunId,
    policy: PolicyPath = Path("corral.yaml"),
    as_json: AsJson = False,
) -> None:
    """Show one run and its steps.

    The run's step count is what its budgets count: the calls that were answered. A call
    stopped before it ran (halted), one that failed or one replayed from its recorded
    result is listed among the steps but not counted; the count says how many of each."""
    found = with_store(policy, lambda s: operations.show_run(s, run_id))
    record, steps = found["run"], found["steps"]
    left_out = uncounted(steps)
    if as_json:
        # The CLI's JSON has always been the run's fields with its steps listed in place
        # of the step count; scripts read it that way. The count is `step_count`.
        print_json(
            {
                **record,
                "steps": steps,
                "step_count": record["steps"],
                "uncounted_steps": {kind: len(seqs) for kind, seqs in left_out.items()},
                "kill_pending": kill_pending(record),
            }
        )
        return
    details = Table.grid(padding=(0, 2))
    for name, value in record.items():
        if name == "status":
            shown = status_text(record)
        elif name == "steps":
            shown = step_count_text(record["steps"], left_out)
        elif name.endswith("_at") and value is not None:
            shown = f"{when(value)} UTC"
        elif isinstance(value, dict | list):  # an outcome, a top-up: as --json has them
            shown = orjson.dumps(value).decode()
        else:
            shown = "-" if value is None else str(value)
        details.add_row(name, shown)
    out.print(details)
    if not steps:
        out.print("No steps recorded.")
        return
    columns = ("#", "kind", "name", "status", "tokens in/out", "usd", "error")
    lines = [
        (
            str(s["seq"]),
            s["kind"],
            s["name"],
            s["status"],
            f"{s['input_tokens']}/{s['output_tokens']}",
            f"{s['cost_usd']:.4f}",
            s["error"] or "",
        )
        for s in steps
    ]
    out.print(listing(f"Steps of {record['id']}", columns, lines, out.width, text="error"))
    if any(left_out.values()):
        which = "; ".join(
            f"{'step' if len(seqs) == 1 else 'steps'} {', '.join(map(str, seqs))} ({kind})"
            for kind, seqs in left_out.items()
            if seqs
        )
        out.print(
            f"Not in the run's {record['steps']} steps, which count the calls that were "
            f"answered: {which}.",
            highlight=False,
        )


@runs_app.command("kill")
def runs_kill(run_id: RunId, policy: PolicyPath = Path("corral.yaml")) -> None:
    """Halt a running run with 'killed'; works from any process.

    A run a live process serves halts at its next gate; one nobody serves (its process
    died) halts at once, its calls in flight charged at their worst case."""
    done = with_store(
        policy, lambda s: operations.kill_run(s, AuditLog(s), run_id, now=time.time())
    )
    said = "halted with 'killed'" if done["halted"] else "kill requested; it halts with"
    tail = "" if done["halted"] else " 'killed' at its next gate"
    out.print(f"run {run_id}: {said}{tail}", highlight=False, soft_wrap=True)


@dlq_app.command("ls")
def dlq_ls(
    policy: PolicyPath = Path("corral.yaml"),
    status: Annotated[
        operations.DeadLetterFilter, typer.Option(help="Only dead letters with this status.")
    ] = "open",
    as_json: AsJson = False,
) -> None:
    """List dead letters, oldest first (`corral dlq show RUN_ID` prints the packet)."""
    rows = with_store(policy, lambda s: operations.list_dead_letters(s, status=status))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(
            "The dead-letter queue is empty." if status == "all" else f"No {status} dead letters."
        )
        return
    columns = ("run", "reason", "status", "dead letter", "created")
    lines = [
        (d["run_id"], d["reason"], d["status"], str(d["id"]), when(d["created_at"], short=True))
        for d in rows
    ]
    out.print(listing("Dead letters", columns, lines, out.width, ids=("run", "dead letter")))


@dlq_app.command("show")
def dlq_show(
    run_id: RunId, policy: PolicyPath = Path("corral.yaml"), as_json: AsJson = False
) -> None:
    """Show a run's newest dead letter and its escalation packet."""
    dead = with_store(policy, lambda s: operations.show_dead_letter(s, run_id))
    if as_json:
        print_json(dead)
        return
    packet = dead.pop("packet")
    details = Table.grid(padding=(0, 2))
    for name, value in dead.items():
        details.add_row(name, f"{when(value)} UTC" if name.endswith("_at") else str(value))
    out.print(details)
    out.print(JSON.from_data(packet))


def topup_text(topup: Mapping[str, float]) -> str:
    if not topup:
        return "no budget top-up"
    parts = []
    for key, amount in topup.items():
        if key == "usd":
            # Two decimals read best, unless they would round the amount away.
            shown = f"{amount:.2f}" if amount == round(amount, 2) else repr(amount)
            parts.append(f"+{shown} USD")
        elif key == "wall_clock":
            parts.append(f"+{amount:g}s wall clock")
        else:
            parts.append(f"+{amount} {key.replace('_', ' ')}")
    return ", ".join(parts)


def added(budget: str) -> Any:
    return typer.Option(min=0, metavar="N", help=f"Add N to the run's {budget} budget.")


@dlq_app.command("retry")
def dlq_retry(
    run_id: RunId,
    policy: PolicyPath = Path("corral.yaml"),
    add_usd: Annotated[
        float | None,
        typer.Option(
            parser=operations.parse_usd,
            metavar="USD",
            help="Add this much to the run's cost budget.",
        ),
    ] = None,
    add_tokens: Annotated[int | None, added("token")] = None,
    add_tool_calls: Annotated[int | None, added("tool-call")] = None,
    add_steps: Annotated[int | None, added("step")] = None,
    add_wall_clock: Annotated[
        float | None,
        typer.Option(
            parser=parse_duration,
            metavar="DURATION",
            help="Add time to the run's wall-clock limit, e.g. 30s, 10m, 1h.",
        ),
    ] = None,
) -> None:
    """Reopen a halted run with an optional budget top-up.

    The run goes on where it is picked up again: with the SDK, `sup.resume(RUN_ID)` in
    the agent's code; at the gateway, the next request of the run's session."""
    # Typer has parsed each flag already (with the parsers the admin API uses for its
    # body); what is left is dropping the flags not given, in the store's key order.
    given = {
        "usd": add_usd,
        "tokens": add_tokens,
        "tool_calls": add_tool_calls,
        "steps": add_steps,
        "wall_clock": add_wall_clock,
    }
    topup = {key: amount for key, amount in given.items() if amount is not None}
    retried = with_store(
        policy,
        lambda s: operations.retry_dead_letter(
            s, AuditLog(s), run_id, topup=topup, now=time.time()
        ),
    )
    reopened = retried["run"]
    checkpoint = reopened["last_checkpoint_id"]
    start = "the start" if checkpoint is None else f"checkpoint {checkpoint}"
    out.print(
        f"run {run_id} reopened from {start} with {topup_text(retried['topup'])}",
        highlight=False,
        soft_wrap=True,
    )
    for line in continues(reopened):
        out.print(line, highlight=False, soft_wrap=True)


def continues(run: Mapping[str, Any]) -> list[str]:
    """How a reopened run goes on: nothing runs it until its agent picks it up again."""
    session = run["session"]
    if session is not None:
        gateway = f"the next request of session '{session}' continues it"
    elif run["oneshot"]:
        gateway = "it was one request without X-Corral-Session: no later request continues it"
    else:
        gateway = "only a session's next request continues a run; this one has none"
    return [
        "It goes on once it is picked up again:",
        f'  SDK: sup.resume("{run["id"]}") in the agent\'s code continues it',
        f"  gateway: {gateway}",
    ]


@dlq_app.command("drop")
def dlq_drop(run_id: RunId, policy: PolicyPath = Path("corral.yaml")) -> None:
    """Drop a run's open dead letter: nobody will retry it, and the run stays halted."""
    dropped = with_store(policy, lambda s: operations.drop_dead_letter(s, AuditLog(s), run_id))
    out.print(
        f"dropped dead letter {dropped['dead_letter_id']} of run {run_id}; the run stays halted",
        highlight=False,
        soft_wrap=True,
    )


def parse_lifetime(text: str) -> float:
    return check_lifetime(parse_duration(text))


@keys_app.command("create")
def keys_create(
    policy: PolicyPath = Path("corral.yaml"),
    agent: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Make a key that identifies this agent of the policy."),
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Make an admin key, for the gateway's /admin/ API.")
    ] = False,
    expires: Annotated[
        float | None,
        typer.Option(
            parser=parse_lifetime,
            metavar="DURATION",
            help="Expire the key after this long, e.g. 12h or 30d (default: never).",
        ),
    ] = None,
) -> None:
    """Make a gateway key and print it once: the store keeps only its hash."""
    if agent is not None and admin:
        fail("--agent and --admin are mutually exclusive: an admin key belongs to no agent", 2)
    if agent is None and not admin:
        fail("say whose key it is: --agent NAME for an agent, or --admin for an admin key", 2)
    if agent is not None:
        known = sorted(policy_for_store(policy).agents)
        if agent not in known:
            listed = f"are {', '.join(known)}" if known else "are none"
            fail(f"unknown agent '{agent}': the agents in {policy} {listed}", 2)

    async def create(store: Store) -> tuple[str, AgentKeyRecord]:
        key, record = await issue(
            store, agent=agent, admin=admin, expires_in=expires, now=time.time()
        )
        # The plaintext and the hash stay out of the log: the log is for reading.
        payload = {
            "id": record.id,
            "agent": record.agent,
            "admin": record.admin,
            "expires_at": record.expires_at,
        }
        await audit(store, "key.created", payload)
        return key, record

    key, record = with_store(policy, create)
    whose = "an admin key" if admin else f"a key for agent {agent}"
    expiry = (
        "never expires" if record.expires_at is None else f"expires {when(record.expires_at)} UTC"
    )
    # Only the key goes to stdout, so `KEY=$(corral keys create ...)` captures just it.
    err.print(f"created {whose}, id {record.id}, {expiry}:", highlight=False, soft_wrap=True)
    out.print(key, highlight=False, soft_wrap=True)
    err.print("Copy it now: it will not be shown again.", highlight=False, soft_wrap=True)


def key_json(record: AgentKeyRecord, now: float) -> dict[str, Any]:
    fields = {n: getattr(record, n) for n in record.__dataclass_fields__ if n != "key_hash"}
    return {**fields, "status": key_status(record, now)}


@keys_app.command("ls")
def keys_ls(policy: PolicyPath = Path("corral.yaml"), as_json: AsJson = False) -> None:
    """List gateway keys, oldest first: ids and prefixes, never the keys themselves."""
    rows = with_store(policy, lambda s: s.list_agent_keys())
    now = time.time()
    if as_json:
        print_json([key_json(r, now) for r in rows])
        return
    if not rows:
        out.print("No keys yet. Make one with `corral keys create --agent NAME` (or --admin).")
        return
    # The id is what `keys revoke` takes and the prefix what a key holder matches, so neither
    # is ever cut; in a narrow terminal the other columns wrap rather than lose characters
    # to an ellipsis. Times keep their year: a key can expire in years.
    columns = ("id", "prefix", "agent", "created", "expires", "status")
    lines = [
        (
            r.id,
            r.prefix,
            "(admin)" if r.admin else r.agent or "-",
            when(r.created_at),
            "never" if r.expires_at is None else when(r.expires_at),
            key_status(r, now),
        )
        for r in rows
    ]
    table = listing(
        "Gateway keys", columns, lines, out.width, ids=("id", "prefix"), droppable=("created",)
    )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str,
        typer.Argument(
            metavar="KEY_ID", help="The key's id (see `corral keys ls`).", show_default=False
        ),
    ],
    policy: PolicyPath = Path("corral.yaml"),
) -> None:
    """Revoke a key for good: the gateway refuses it from then on."""

    async def revoke(store: Store) -> None:
        if not await store.revoke_agent_key(key_id, time.time()):
            # The store refuses unknown and revoked keys alike; the listing tells which.
            found = {k.id: k for k in await store.list_agent_keys()}.get(key_id)
            if found is None:
                fail(f"no key '{key_id}' in the store (list them with `corral keys ls`)")
            fail(f"key '{key_id}' was already revoked, at {when(found.revoked_at)} UTC")
        await audit(store, "key.revoked", {"id": key_id})

    with_store(policy, revoke)
    out.print(f"revoked key {key_id}", highlight=False, soft_wrap=True)


@audit_app.command("verify")
def audit_verify(policy: PolicyPath = Path("corral.yaml")) -> None:
    """Check the audit chain. Exit 0 with the entry count, or 1 naming the first broken entry."""
    result = with_store(policy, lambda s: operations.verify_audit(AuditLog(s)))
    if not result["ok"]:
        fail(f"audit chain broken at {result['reason']}")
    out.print(f"audit chain intact: {result['entries']} entries")


# Where `corral serve` listens by default.
BREAKERS_CURL = (
    'curl -H "Authorization: Bearer $CORRAL_ADMIN_KEY" http://127.0.0.1:4100/admin/breakers'
)


@app.command()
def breakers(policy: PolicyPath = Path("corral.yaml"), as_json: AsJson = False) -> None:
    """List the circuit breakers: state, failure and slow-call rates, time until half-open.

    Only with counters shared between processes: with `counters: memory` a breaker lives
    in the process that makes the calls, and a gateway lists its own at GET /admin/breakers.
    """
    from corral.state import open_counters

    loaded = policy_for_store(policy)
    if loaded.counters == "memory":
        # A breaker lives where its counters do: in-process counters live and die with the
        # process that makes the calls, which this one is not. An empty list would say
        # "no breakers", which nobody here can know.
        err.print(
            f"[red]error:[/red] {policy} keeps counters in memory (`counters: memory`): each "
            "circuit breaker lives inside the process that makes the calls (the gateway, or "
            "an agent's own Supervisor), and this command cannot see them. Ask the gateway "
            "for its breakers, GET /admin/breakers with an admin key ($CORRAL_ADMIN_KEY, or "
            "one from `corral keys create --admin`):",
            highlight=False,
        )
        err.print(f"  {BREAKERS_CURL}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    now = time.time()

    async def report() -> list[dict[str, Any]]:
        counters = open_counters(loaded.counters)
        try:
            return await operations.list_breakers(counters, now=now)
        finally:
            await counters.close()

    try:
        rows = asyncio.run(report())
    except (ValueError, CountersUnavailable) as exc:  # a URL it cannot open, a Redis not there
        fail(str(exc), 2)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("No breakers yet: one appears with the first call to a model.")
        return
    out.print(breaker_table(rows, now, out.width))


def breaker_table(rows: list[dict[str, Any]], now: float, width: int) -> Table:
    """The breakers, one a row. The model is what a reader looks for: other columns wrap
    before it is cut."""
    columns = ("model", "state", "calls", "failed", "slow", "opened", "half-open in", "probes")
    lines = [
        (
            f"{row['provider']}/{row['model']}",
            row["state"],
            str(row["calls"]),
            f"{row['failure_rate']:.0%}",
            f"{row['slow_rate']:.0%}",
            "-" if row["opened_at"] is None else f"{now - row['opened_at']:.0f}s ago",
            "-" if row["half_open_in"] is None else f"{row['half_open_in']:.0f}s",
            str(row["probes_out"]),
        )
        for row in rows
    ]
    spare = ("probes", "opened", "calls")  # the rates say why a breaker opened: they stay
    return listing("Circuit breakers", columns, lines, width, ids=("model",), droppable=spare)


@app.command()
def doctor(policy: PolicyPath = Path("corral.yaml")) -> None:
    """Check that the policy loads, the store opens and the providers answer."""
    from corral.doctor import run_checks

    checks = asyncio.run(run_checks(policy))
    for check in checks:
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        out.print(mark, f"{check.name}: {check.detail}", highlight=False, soft_wrap=True)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


@app.command()
def demo(policy: PolicyPath = Path("examples/corral.yaml")) -> None:
    """Run a support agent under Corral against the simulated provider, in five runs.

    One ticket is answered; a model that keeps asking for the same tool is halted by the
    loop gate (loop.repeat, with an escalation packet and a dead letter); a refund's email
    waits for a human, who rejects one draft and approves the next; an injection hidden
    in a customer record is blocked (guard.input); an answer's email address and phone
    number reach the caller redacted. The store is left for the CLI to inspect."""
    from corral.demo import DemoError, run_demo

    try:
        asyncio.run(run_demo(policy, out))
    except PolicyError as exc:
        fail(str(exc), 2)
    except DemoError as exc:
        fail(str(exc))


def main() -> None:
    app()
