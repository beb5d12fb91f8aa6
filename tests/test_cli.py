"""The `corral` command, in-process through Typer's runner, against real SQLite files."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
from pathlib import Path

import orjson
import pytest

from corral import __version__
from corral.cli import app
from corral.state import RunRecord, SQLiteStore, StepRecord
from corral.telemetry.audit import AuditLog
from tests.support import EXAMPLE, example_policy, runner


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example policy with its store in tmp_path and the sim on a closed port."""
    monkeypatch.setenv("SIM_API_KEY", "sim")
    return example_policy(tmp_path, {"127.0.0.1:4010": "127.0.0.1:9"})


def store_path(policy: Path) -> Path:
    return policy.parent / "corral.db"


def seed_run(policy: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(store_path(policy))
        await store.create_run(
            RunRecord(
                id="run_a", agent="support", agent_type="operational", task="t-1",
                created_at=1.0, updated_at=1.0, input_tokens=10, output_tokens=5,
            )
        )  # fmt: skip
        await store.add_steps(
            [StepRecord("run_a", 1, "llm", "fast", {"q": "hi"}, 1.0, 2.0, output={"a": "yo"})]
        )
        log = AuditLog(store)
        for n in range(3):
            await log.append("step", {"n": n}, "run_a")
        await store.close()

    asyncio.run(seed())


def test_help_lists_the_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("version", "sim", "audit", "runs", "doctor", "demo"):
        assert verb in result.output


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == f"corral {__version__}"


def test_runs_ls_empty_is_a_friendly_line(policy: Path) -> None:
    result = runner.invoke(app, ["runs", "ls", "--policy", str(policy)])
    assert result.exit_code == 0
    assert "No runs yet" in result.output


def test_runs_ls_and_show(policy: Path) -> None:
    seed_run(policy)
    listing = runner.invoke(app, ["runs", "ls", "--policy", str(policy), "--json"])
    assert listing.exit_code == 0, listing.output
    assert '"id": "run_a"' in listing.output
    shown = runner.invoke(app, ["runs", "show", "run_a", "--policy", str(policy)])
    assert shown.exit_code == 0, shown.output
    assert "support" in shown.output and "fast" in shown.output
    table = runner.invoke(app, ["runs", "ls", "--policy", str(policy)])
    assert "run_a" in table.output


def test_runs_show_unknown_run_is_a_clear_error(policy: Path) -> None:
    result = runner.invoke(app, ["runs", "show", "nope", "--policy", str(policy)])
    assert result.exit_code == 1
    assert "no run 'nope' in the store" in result.output


def test_policy_from_the_environment(policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_POLICY", str(policy))
    result = runner.invoke(app, ["runs", "ls"])
    assert result.exit_code == 0 and "No runs yet" in result.output


def test_bad_policy_exits_2_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "corral.yaml"
    bad.write_text("version: 1\nretry: {max_delay: 8}\n")
    result = runner.invoke(app, ["runs", "ls", "--policy", str(bad)])
    assert result.exit_code == 2
    assert "corral.yaml:2 retry.max_delay: expected a duration" in result.output


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", "ls", "--policy", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "absent.yaml: cannot read" in result.output


def test_audit_verify_intact_then_broken(policy: Path) -> None:
    seed_run(policy)
    intact = runner.invoke(app, ["audit", "verify", "--policy", str(policy)])
    assert intact.exit_code == 0, intact.output
    assert "audit chain intact: 3 entries" in intact.output
    with sqlite3.connect(store_path(policy)) as conn:
        conn.execute("UPDATE audit SET kind = 'forged' WHERE seq = 2")
    broken = runner.invoke(app, ["audit", "verify", "--policy", str(policy)])
    assert broken.exit_code == 1
    assert "entry 2: content does not match its hash" in broken.output


def test_doctor_reports_each_check_with_the_reason(policy: Path) -> None:
    result = runner.invoke(app, ["doctor", "--policy", str(policy)])
    assert result.exit_code == 1  # the sim is not running on port 9
    assert "✓ policy" in result.output
    assert "✓ store" in result.output
    assert "✓ counters" in result.output
    assert "✗ provider sim: http://127.0.0.1:9/v1/models unreachable" in result.output


def test_doctor_reads_the_shared_counters_it_names(policy: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    text = policy.read_text()
    for url, shown in (
        (f"redis://127.0.0.1:{closed}/0", f"✗ counters: redis://127.0.0.1:{closed}/0"),
        ("redis://127.0.0.1:6379/0", "✓ counters: redis://127.0.0.1:6379/0 answers"),
    ):
        policy.write_text(text.replace("counters: memory", f"counters: {url}", 1))
        result = runner.invoke(app, ["doctor", "--policy", str(policy)])
        assert shown in " ".join(result.output.split()), result.output


def test_doctor_names_a_missing_key(policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIM_API_KEY")
    result = runner.invoke(app, ["doctor", "--policy", str(policy)])
    assert result.exit_code == 1
    assert "✗ policy" in result.output and "SIM_API_KEY is not set" in result.output
    assert "✓ store" in result.output


def test_sim_refuses_a_bad_fault_spec() -> None:
    result = runner.invoke(app, ["sim", "--fault", "gpt-4o=explode"])
    assert result.exit_code == 2
    assert "--fault 'gpt-4o=explode'" in result.output


def test_demo_runs_and_leaves_an_inspectable_run(policy: Path) -> None:
    with socket.socket() as probe:  # a free port for the demo's simulated provider
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy.write_text(policy.read_text().replace("127.0.0.1:9", f"127.0.0.1:{port}"))
    shutil.copy(EXAMPLE.parent / "support_agent.py", policy.parent / "support_agent.py")
    result = runner.invoke(app, ["demo", "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "completed:" in result.output and "halted: loop.repeat" in result.output
    # The refund's email waited for a human, who rejected the first and approved the second.
    assert result.output.count("approval requested") == 2
    assert "rejected by on-call" in result.output and "approved by on-call" in result.output
    assert "sql_write ran unasked: its preview counted 1 row(s)" in result.output
    # An injection in a tool result is blocked, and an answer's personal data redacted.
    assert "halted: guard.input" in result.output
    assert "You can reach Ada at [EMAIL_ADDRESS] or on [PHONE_NUMBER]." in result.output
    listing = runner.invoke(app, ["runs", "ls", "--policy", str(policy), "--json"])
    assert '"status": "completed"' in listing.output
    assert '"halt_reason": "loop.repeat"' in listing.output
    # The third identical call was stopped before it ran: listed, and counted apart.
    [looped] = [r for r in orjson.loads(listing.output) if r["halt_reason"] == "loop.repeat"]
    shown = runner.invoke(app, ["runs", "show", looped["id"], "--policy", str(policy)])
    steps = next(line.split()[1:] for line in shown.output.splitlines() if line.startswith("steps"))
    assert steps == [str(looped["steps"]), "(+1", "halted)"]
    decided = runner.invoke(app, ["approvals", "ls", "--status", "all", "--policy", str(policy)])
    assert decided.exit_code == 0 and "rejected" in decided.output, decided.output
    assert runner.invoke(app, ["audit", "verify", "--policy", str(policy)]).exit_code == 0


def test_demo_names_a_busy_port(policy: Path) -> None:
    shutil.copy(EXAMPLE.parent / "support_agent.py", policy.parent / "support_agent.py")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        policy.write_text(policy.read_text().replace("127.0.0.1:9", f"127.0.0.1:{port}"))
        result = runner.invoke(app, ["demo", "--policy", str(policy)])
    assert result.exit_code == 1
    assert f"cannot serve the simulated provider at 127.0.0.1:{port}" in result.output


async def test_doctor_ticks_a_provider_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.doctor import run_checks
    from corral.providers.sim import SimProvider

    monkeypatch.setenv("SIM_API_KEY", "sim")
    async with SimProvider() as sim:
        url = sim.openai_base_url
        checks = await run_checks(example_policy(tmp_path, {"http://127.0.0.1:4010/v1": url}))
    assert [(c.name, c.ok) for c in checks] == [
        ("policy", True),
        ("store", True),
        ("counters", True),
        ("provider sim", True),
    ]
    assert checks[-1].detail == f"{url}/models answered HTTP 200"
