"""What a new operator meets at 80 columns: whole ids in every listing, a pending kill, the
honest step count, breakers with in-process counters, --version."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console
from typer.testing import Result

from corral import __version__
from corral.calls import HaltReason, RunStatus
from corral.cli import app, breaker_table
from corral.state import (
    AgentKeyRecord,
    ApprovalRecord,
    ProposalRecord,
    RunRecord,
    StepRecord,
    Store,
)
from corral.tables import listing
from tests.support import example_policy, flat, on_store, runner

T0 = 1_700_000_000.0
# Ids as long as the runtime makes them, with tasks long enough to crowd them.
RUNS = [f"run_{n:x}123456789abcdef" for n in range(10, 14)]
APPROVALS = [f"apr_{n:x}123456789abcdef" for n in range(10, 13)]
PROPOSALS = [f"prp_{n:x}123456789abcdef" for n in range(10, 13)]
KEYS = [f"key_{n:x}1234567890" for n in range(10, 13)]
TASK = "Refund order #1042, tell the customer when it arrives and close the ticket"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return example_policy(tmp_path)


def at80(policy: Path, *args: str) -> Result:
    """The verb as a terminal 80 columns wide runs it."""
    return runner.invoke(app, [*args, "--policy", str(policy)], env={"COLUMNS": "80"})


def whole(output: str, ids: Sequence[str]) -> None:
    """Every id on a line of its own words, no line past 80 columns, nothing cut."""
    lines = output.splitlines()
    assert max(map(len, lines)) <= 80, output
    assert "…" not in output, output
    words = {word for line in lines for word in line.split()}
    for an_id in ids:
        assert an_id in words, f"{an_id} not whole in:\n{output}"


def run(run_id: str, **changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "agent": "support", "agent_type": "operational", "created_at": T0, "updated_at": T0,
        "task": TASK,
    } | changes  # fmt: skip
    return RunRecord(id=run_id, **fields)


async def seed(store: Store) -> None:
    """Runs in each state (two halted into the dead-letter queue), approvals, proposals and
    keys, all with full-length ids."""
    await store.create_run(run(RUNS[0], input_tokens=123456, output_tokens=65432))
    await store.create_run(run(RUNS[1], status=RunStatus.COMPLETED, ended_at=T0 + 9))
    for run_id, reason in ((RUNS[2], HaltReason.BUDGET_TOOL_CALLS), (RUNS[3], "loop.no_progress")):
        await store.create_run(run(run_id))
        halted = run(run_id, status=RunStatus.HALTED, halt_reason=reason, ended_at=T0 + 5)
        await store.halt_run(halted, {"reason": reason})
    for n, approval_id in enumerate(APPROVALS):
        await store.add_approval(
            ApprovalRecord(
                id=approval_id, run_id=RUNS[0], step=n + 1, tool="send_email",
                args={"to": "a@example.com"}, rule="approvals[0]", requested_at=T0 + n,
                timeout_at=time.time() + 3600, agent="support",
                panel={"task": TASK, "tool": "send_email"},
            )
        )  # fmt: skip
    for n, proposal_id in enumerate(PROPOSALS):
        await store.add_proposal(
            ProposalRecord(
                id=proposal_id, run_id=RUNS[0], agent="support-agent-for-refunds",
                tool="sql_write_to_the_orders_database", args={"n": n}, scope="write",
                proposed_at=T0 + n,
            )
        )  # fmt: skip
    for n, key_id in enumerate(KEYS):
        await store.add_agent_key(
            AgentKeyRecord(
                id=key_id, key_hash=f"h{n}", prefix=f"ck_admin_{n}Xy7Qz", agent=None,
                admin=True, created_at=T0, expires_at=T0 + 365 * 86400,
            )
        )  # fmt: skip


# --- ids whole at 80 columns ---------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "ids"),
    [
        (("runs", "ls"), RUNS),
        (("dlq", "ls"), RUNS[2:]),
        (("approvals", "ls"), APPROVALS),
        (("shadow", "ls"), PROPOSALS),
        (("keys", "ls"), [*KEYS, *(f"ck_admin_{n}Xy7Qz" for n in range(3))]),
    ],
)
def test_every_listing_keeps_its_ids_whole_at_80_columns(
    policy: Path, verb: tuple[str, ...], ids: list[str]
) -> None:
    on_store(policy, seed)
    result = at80(policy, *verb)
    assert result.exit_code == 0, result.output
    whole(result.output, ids)


def test_runs_ls_wraps_the_task_rather_than_cutting_it(policy: Path) -> None:
    on_store(policy, seed)
    result = at80(policy, "runs", "ls")
    assert result.exit_code == 0, result.output
    # Every word of the task is there, in order, on the lines of its row.
    assert " ".join(TASK.split()) in flat_column(result.output, "task")
    # The halt reason goes with the status, and wraps whole onto a line of its own.
    for reason in ("(budget.tool_calls)", "(loop.no_progress)"):
        assert reason in result.output.split()


def flat_column(output: str, header: str) -> str:
    """The text of one column of a table, its lines joined (the first row's only)."""
    lines = output.splitlines()
    head = next(line for line in lines if header in line.split())
    start = head.index(header)
    body = lines[lines.index(head) + 2 :]
    words = []
    for line in body:
        if words and not line.strip():
            break  # the blank line between rows
        cell = line[start:].split("   ")[0].strip()
        if cell:
            words.append(cell)
    return " ".join(words)


def test_runs_show_and_dlq_show_fit(policy: Path) -> None:
    on_store(policy, seed)
    shown = at80(policy, "runs", "show", RUNS[2])
    assert shown.exit_code == 0, shown.output
    whole(shown.output, [RUNS[2]])
    dead = at80(policy, "dlq", "show", RUNS[2])
    assert dead.exit_code == 0, dead.output
    whole(dead.output, [RUNS[2]])


def test_the_listing_drops_spare_columns_before_it_cuts_an_id() -> None:
    rows = [(run_id, TASK, "halted", "budget.tool_calls", "12") for run_id in RUNS]
    for width in (40, 60, 80, 100):
        table = listing(
            "Runs", ("run", "task", "status", "reason", "steps"), rows, width,
            ids=("run",), text="task", droppable=("steps", "reason"),
        )  # fmt: skip
        console = Console(width=width, record=True)
        console.print(table)
        output = console.export_text()
        assert "…" not in output
        for run_id in RUNS:
            assert run_id in output.split(), output
    with pytest.raises(ValueError, match="not columns of the table: id"):
        listing("Runs", ("run",), [], 80, ids=("id",))


def test_breaker_table_keeps_the_model_whole() -> None:
    rows = [
        {
            "provider": "openai", "model": f"gpt-4o-mini-2024-07-1{n}",
            "state": "half_open", "calls": 1000, "failure_rate": 0.5, "slow_rate": 0.25,
            "opened_at": 100.0, "half_open_in": 30.0, "probes_out": 2,
        }
        for n in range(3)
    ]  # fmt: skip
    console = Console(width=80, record=True)
    console.print(breaker_table(rows, 160.0, 80))
    output = console.export_text()
    whole(output, [f"openai/gpt-4o-mini-2024-07-1{n}" for n in range(3)])
    # What does not fit goes: the probes, when it opened, the call count; the rates stay.
    assert output.split("\n")[2].split() == ["model", "state", "failed", "slow", "half-open", "in"]
    assert "half_open   50%      25%    30s" in output
    console = Console(width=120, record=True)
    console.print(breaker_table(rows, 160.0, 120))
    assert "half_open   1000    50%      25%    60s ago   30s            2" in console.export_text()


# --- a pending kill ------------------------------------------------------------------


def test_runs_ls_shows_a_pending_kill(policy: Path) -> None:
    on_store(policy, seed)
    on_store(policy, lambda s: s.request_kill(RUNS[0], T0 + 20))
    wide = runner.invoke(app, ["runs", "ls", "--policy", str(policy)], env={"COLUMNS": "160"})
    assert wide.exit_code == 0, wide.output
    row = next(line for line in wide.output.splitlines() if RUNS[0] in line)
    assert "running (kill pending)" in row
    assert "kill" not in next(line for line in wide.output.splitlines() if RUNS[1] in line)
    narrow = at80(policy, "runs", "ls")
    whole(narrow.output, RUNS)
    assert "(kill" in narrow.output and "pending)" in narrow.output

    listed = orjson.loads(at80(policy, "runs", "ls", "--json").output)
    pending = {r["id"]: r["kill_pending"] for r in listed}
    assert pending == {RUNS[0]: True, RUNS[1]: False, RUNS[2]: False, RUNS[3]: False}
    by_id = {r["id"]: r for r in listed}
    assert by_id[RUNS[0]]["kill_requested_at"] == T0 + 20

    shown = runner.invoke(
        app, ["runs", "show", RUNS[0], "--policy", str(policy)], env={"COLUMNS": "120"}
    )
    assert "running (kill pending)" in shown.output
    as_json = orjson.loads(at80(policy, "runs", "show", RUNS[0], "--json").output)
    assert (as_json["status"], as_json["kill_pending"]) == ("running", True)


# --- the step count ------------------------------------------------------------------


def step(
    seq: int, status: Any, output: Any, kind: Any = "tool", error: str | None = None
) -> StepRecord:
    return StepRecord(
        RUNS[0], seq, kind, "get_customer", {"customer_id": 42}, T0 + seq, T0 + seq,
        output=output, status=status, error=error,
    )  # fmt: skip


async def seed_steps(store: Store) -> None:
    """As the record gate writes them: three answered calls counted (one of them halted
    after its answer, by the output guard), one halted before it ran, one failed."""
    await store.create_run(run(RUNS[0], steps=3, tool_calls=1))
    await store.add_steps(
        [
            step(1, "ok", {"text": "hi", "tool_calls": []}, kind="llm"),
            step(2, "ok", {"name": "Ada"}),
            step(3, "error", None, kind="llm", error="ProviderError: 503"),
            step(4, "halted", {"text": "ada@example.com", "tool_calls": []}, kind="llm",
                 error="guard.output: the answer holds personal data"),
            step(5, "halted", None, error="loop.repeat: tool 'get_customer' called 3 times"),
        ]
    )  # fmt: skip


def test_runs_show_counts_what_the_count_leaves_out(policy: Path) -> None:
    on_store(policy, seed_steps)
    result = at80(policy, "runs", "show", RUNS[0])
    assert result.exit_code == 0, result.output
    assert "steps                 3 (+1 halted, +1 failed)" in result.output
    told = flat(result.output)
    assert (
        "Not in the run's 3 steps, which count the calls that were answered: "
        "step 5 (halted); step 3 (failed)."
    ) in told
    assert "loop.repeat" in told

    as_json = orjson.loads(at80(policy, "runs", "show", RUNS[0], "--json").output)
    assert as_json["step_count"] == 3
    assert as_json["uncounted_steps"] == {"halted": 1, "failed": 1, "replayed": 0}
    assert [s["seq"] for s in as_json["steps"]] == [1, 2, 3, 4, 5]
    counted = len(as_json["steps"]) - sum(as_json["uncounted_steps"].values())
    assert counted == as_json["step_count"]


def test_runs_show_of_a_run_that_lost_nothing_is_the_bare_count(policy: Path) -> None:
    async def seed_ok(store: Store) -> None:
        await store.create_run(run(RUNS[0], steps=1))
        await store.add_steps([step(1, "ok", {"name": "Ada"})])

    on_store(policy, seed_ok)
    result = at80(policy, "runs", "show", RUNS[0])
    assert ["steps", "1"] in [line.split() for line in result.output.splitlines()]
    assert "Not in the run's" not in result.output


# --- breakers with in-process counters -----------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_breakers_with_memory_counters_points_to_the_gateway(policy: Path, as_json: bool) -> None:
    args = ["breakers", "--policy", str(policy), *(["--json"] if as_json else [])]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    # Nothing listed, so no empty table, and no `[]` a script would take for "none".
    assert result.exit_code == 1
    assert result.stdout == ""
    told = flat(result.stderr)
    assert "keeps counters in memory (`counters: memory`)" in told
    assert "GET /admin/breakers with an admin key ($CORRAL_ADMIN_KEY" in told
    assert (
        'curl -H "Authorization: Bearer $CORRAL_ADMIN_KEY" http://127.0.0.1:4100/admin/breakers'
        in result.stderr
    )


# --- version and help ----------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version_both_ways(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert result.output == f"corral {__version__}\n"


def test_version_option_wins_over_a_verb() -> None:
    result = runner.invoke(app, ["--version", "runs", "ls"])
    assert (result.exit_code, result.output) == (0, f"corral {__version__}\n")


def test_demo_help_says_what_the_demo_does() -> None:
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    told = flat(result.output)
    for what in (
        "in five runs",
        "One ticket is answered",
        "halted by the loop gate (loop.repeat",
        "rejects one draft and approves the next",
        "blocked (guard.input)",
        "reach the caller redacted",
    ):
        assert what in told, told
    assert "budget" not in told.split("Options")[0]  # no run of the demo halts on a budget


def test_help_paragraphs_are_reflowed_to_the_terminal() -> None:
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "80"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert max(map(len, lines)) <= 80
    # A paragraph fills its lines: no line of prose ends after a word or two.
    prose = [line.strip() for line in lines if not line.lstrip().startswith(("│", "╭", "╰"))]
    assert all(len(line) > 40 for line in prose[2:-1]), prose


# --- the demo's data key -------------------------------------------------------------


def test_a_missing_data_key_points_to_the_demos(policy: Path) -> None:
    args = ["runs", "ls", "--policy", str(policy)]
    bare = runner.invoke(app, args, env={"CORRAL_DATA_KEY": None})
    assert bare.exit_code == 2
    assert "CORRAL_DATA_KEY is not set" in bare.stderr and "corral demo" not in bare.stderr

    key_file = policy.parent / ".corral-demo-key"  # where `corral demo` leaves it
    key_file.write_text("not needed: only its place is told\n")
    told = runner.invoke(app, args, env={"CORRAL_DATA_KEY": None})
    assert told.exit_code == 2
    assert told.stderr.splitlines()[-1] == (
        f"`corral demo` keeps its key beside the store: export CORRAL_DATA_KEY=$(cat {key_file})"
    )


def test_runs_ls_with_a_filter_nothing_matches_says_so(policy: Path) -> None:
    on_store(policy, seed)
    on_store(policy, lambda s: s.request_kill(RUNS[0], T0 + 20))
    assert at80(policy, "runs", "ls", "--agent", "nobody").output == "No runs of agent nobody.\n"
    listed = at80(policy, "runs", "ls", "--status", "running")
    whole(listed.output, [RUNS[0]])
    empty = at80(policy, "runs", "ls", "--status", "completed", "--agent", "analyst")
    assert empty.output == "No completed runs of agent analyst.\n"
