"""The `corral` command. Thin: parse arguments, call the library, render with Rich."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from corral import __version__
from corral.calls import RunStatus
from corral.policy import Policy, PolicyError, load_policy
from corral.state import RunRecord, Store, open_store

T = TypeVar("T")

app = typer.Typer(
    name="corral",
    help="Corral: hard budgets, breakers, loop detection and audit for LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="List and inspect runs.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)

PolicyPath = Annotated[
    Path,
    typer.Option(
        "--policy",
        envvar="CORRAL_POLICY",
        help="Policy file (default: $CORRAL_POLICY, else ./corral.yaml).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print("[red]error:[/red]", message, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def policy_for_store(path: Path) -> Policy:
    """The policy, for verbs that only read the store (no provider keys needed)."""
    try:
        return load_policy(path, require_keys=False)
    except PolicyError as exc:
        fail(str(exc), 2)


def with_store(path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(policy_for_store(path).store)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ValueError as exc:  # a bad store URL or a store from a newer Corral
        fail(str(exc), 2)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def version() -> None:
    """Print Corral's version."""
    out.print(f"corral {__version__}")


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


@runs_app.command("ls")
def runs_ls(
    policy: PolicyPath = Path("corral.yaml"),
    limit: Annotated[int, typer.Option(min=1, help="Newest N runs.")] = 50,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only runs of this agent.")] = None,
    as_json: AsJson = False,
) -> None:
    """List runs, newest first."""
    rows = with_store(policy, lambda s: s.list_runs(limit=limit, status=status, agent=agent))
    if as_json:
        print_json([run_json(r) for r in rows])
        return
    if not rows:
        out.print("No runs yet. Start one with `corral demo`, the SDK, or `corral serve`.")
        return
    table = Table(title="Runs")
    for column in ("run", "agent", "task", "status", "reason", "steps", "tokens", "usd", "started"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.id,
            r.agent,
            r.task or "-",
            r.status,
            r.halt_reason or "-",
            str(r.steps),
            str(r.input_tokens + r.output_tokens),
            f"{r.cost_usd:.4f}",
            when(r.created_at),
        )
    out.print(table)


def run_json(run: RunRecord) -> dict[str, Any]:
    return {name: getattr(run, name) for name in run.__dataclass_fields__}


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    policy: PolicyPath = Path("corral.yaml"),
    as_json: AsJson = False,
) -> None:
    """Show one run and its steps."""

    async def load(store: Store) -> tuple[RunRecord | None, list[Any]]:
        run = await store.get_run(run_id)
        return run, (await store.list_steps(run_id) if run else [])

    run, steps = with_store(policy, load)
    if run is None:
        fail(f"no run '{run_id}' in the store (list them with `corral runs ls`)")
    if as_json:
        record = run_json(run)
        record["steps"] = [{n: getattr(s, n) for n in s.__dataclass_fields__} for s in steps]
        print_json(record)
        return
    details = Table.grid(padding=(0, 2))
    for name, value in run_json(run).items():
        shown = when(value) if name.endswith("_at") and value is not None else value
        details.add_row(name, "-" if shown is None else str(shown))
    out.print(details)
    if not steps:
        out.print("No steps recorded.")
        return
    table = Table(title=f"Steps of {run.id}")
    for column in ("#", "kind", "name", "status", "tokens in/out", "usd", "error"):
        table.add_column(column)
    for s in steps:
        table.add_row(
            str(s.seq),
            s.kind,
            s.name,
            s.status,
            f"{s.input_tokens}/{s.output_tokens}",
            f"{s.cost_usd:.4f}",
            s.error or "",
        )
    out.print(table)


@audit_app.command("verify")
def audit_verify(policy: PolicyPath = Path("corral.yaml")) -> None:
    """Check the audit chain. Exit 0 with the entry count, or 1 naming the first broken entry."""
    from corral.telemetry.audit import AuditLog

    result = with_store(policy, lambda s: AuditLog(s).verify())
    if not result.ok:
        fail(f"audit chain broken at {result.reason}")
    out.print(f"audit chain intact: {result.count} entries")


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
    """Start the simulated provider in-process and send a few calls through the OpenAI client."""
    from corral.demo import run_demo

    try:
        asyncio.run(run_demo(policy, out))
    except PolicyError as exc:
        fail(str(exc), 2)


def main() -> None:
    app()
