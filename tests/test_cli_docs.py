"""The operator's documents tell the truth: the README and docs/ link only inside the
repository, and docs/architecture.md names the pipeline's gates in the order the
supervisor builds them and every halt reason there is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.calls import HaltReason
from corral.runtime.supervisor import pipeline_gates
from corral.state import MemoryCounters, SQLiteStore
from corral.telemetry.audit import AuditLog

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)|<(https?://[^>]+)>")


def prose(text: str) -> str:
    """The text outside code: fenced blocks and inline code hold examples, not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_links_stay_inside_the_repository(document: Path) -> None:
    text = prose(document.read_text())
    for found in LINK.finditer(text):
        target = found.group(1) or found.group(2)
        assert not re.match(r"[a-z]+:", target), f"{document.name} links out: {target}"
        path = (document.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{document.name} links outside: {target}"
        assert path.exists(), f"{document.name} links to a missing {target}"
    assert not re.search(r"https?://", text), f"{document.name} has a bare URL in its prose"
    # A document named, linked or not, is one the reader can open here.
    for named in re.findall(r"[\w./-]+\.md\b", document.read_text()):
        assert (document.parent / named).exists() or (ROOT / named).exists(), named
        assert ".." not in Path(named).parts, f"{document.name} points outside: {named}"


def test_the_readme_links_the_architecture() -> None:
    assert "](docs/architecture.md)" in (ROOT / "README.md").read_text()


async def test_architecture_lists_the_gates_in_pipeline_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "corral.db")
    try:
        gates = [
            type(gate).__name__ for gate in pipeline_gates(store, MemoryCounters(), AuditLog(store))
        ]
    finally:
        await store.close()
    listed = re.findall(r"^\d+\. `(\w+Gate)`", ARCHITECTURE.read_text(), flags=re.M)
    assert listed == gates


def test_architecture_says_when_each_halt_reason_fires() -> None:
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.+) \|$", ARCHITECTURE.read_text(), flags=re.M)
    assert [reason for reason, _ in rows] == [reason.value for reason in HaltReason]
    assert all(len(when.split()) >= 4 for _, when in rows)


def test_architecture_names_every_module_of_the_source() -> None:
    text = ARCHITECTURE.read_text()
    source = ROOT / "src" / "corral"
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("_") or entry.name == "py.typed":
            continue
        named = f"`{entry.name}/`" if entry.is_dir() else f"`{entry.name}`"
        assert named in text, f"docs/architecture.md does not name {named}"
