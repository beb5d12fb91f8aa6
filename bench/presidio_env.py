"""The bench virtualenv for Presidio (bench/.venv-presidio, gitignored), built on first use.

Presidio and spaCy are large and not Corral's dependencies, so they live in their own venv:
``python -m venv bench/.venv-presidio`` and ``pip install presidio-analyzer spacy`` from the
registry pip is configured for. The bench scripts run ``presidio_run.py`` in it as a
subprocess and read its predictions and timings as JSON. When the venv cannot be built (no
registry, an install that fails) they say so and print Corral's figures alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-presidio"
PYTHON = VENV / "bin" / "python"
RUNNER = BENCH / "presidio_run.py"
PACKAGES = ("presidio-analyzer", "spacy")


def ensure_venv() -> str | None:
    """Build the venv if it is missing or incomplete; the reason it failed, or None."""
    if _imports_presidio():
        return None
    print(f"building {VENV} (pip install {' '.join(PACKAGES)})...", file=sys.stderr)
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(PYTHON), "-m", "pip", "install", "--quiet", *PACKAGES],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
        except OSError as exc:
            return f"`{' '.join(step[:4])} ...` could not start: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            why = " / ".join(tail) or f"exit status {done.returncode}"
            return f"`{' '.join(step[:4])} ...` failed: {why}"
    return None if _imports_presidio() else "presidio_analyzer does not import in the venv"


def _imports_presidio() -> bool:
    if not PYTHON.exists():
        return False
    probe = [str(PYTHON), "-c", "import presidio_analyzer, spacy"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def run_presidio(texts: list[str], entities: list[str], passes: int = 1) -> dict[str, Any] | str:
    """Presidio's predictions and per-text analyze() seconds (in its fastest of ``passes``
    passes), or why it could not run."""
    problem = ensure_venv()
    if problem is not None:
        return problem
    request = json.dumps({"texts": texts, "entities": entities, "passes": passes})
    done = subprocess.run(
        [str(PYTHON), str(RUNNER)], input=request, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"presidio_run.py failed: {done.stderr.strip().splitlines()[-1:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result
