"""uvicorn (uvloop + httptools) against granian (ASGI), serving the same tiny app, in one run.

The app does what the gateway's hot path does per request, with no framework: read a small JSON
body (an OpenAI chat-completion request), parse it with orjson and answer a small chat completion
serialized with orjson (fixed apart from echoing the request's model). Each server runs alone,
with one worker, on a free loopback port, and is loaded by wrk: at one connection for latency and
at 32 connections for throughput.

The servers are not the project's dependencies, so they live in a throwaway virtualenv that is
created on first use and reused afterwards (CORRAL_BENCH_VENV overrides its place).

Run: .venv/bin/python bench/asgi_server.py  (needs `wrk`: apt-get install -y wrk)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sim_throughput import PATH, REQUEST, Result, parse_wrk, stop_server

DURATION = "5s"
WARMUP = "1s"
CONNECTIONS = 32
PACKAGES = ("uvicorn[standard]", "granian", "orjson")
DISTRIBUTIONS = ("uvicorn", "uvloop", "httptools", "granian", "orjson")
VENV = Path(
    os.environ.get("CORRAL_BENCH_VENV", Path.home() / ".cache" / "corral-bench" / "asgi-venv")
)

APP = """
import orjson

HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = orjson.loads(body)
    model = request["model"]
    reply = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Simulated reply from " + model + " to the bench.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22},
        }
    )
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": reply})
"""


def venv_python() -> Path:
    """The benchmark's own virtualenv, created and filled on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    probe = [str(python), "-c", "import uvicorn, uvloop, httptools, granian, orjson"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip", *PACKAGES],
            check=True,
        )
    return python


def versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m;"
        f"print(json.dumps({{d: m.version(d) for d in {DISTRIBUTIONS!r}}}))"
    )
    output = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(output.stdout)
    return versions


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def commands(python: Path, port: int) -> dict[str, list[str]]:
    address = ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return {
        "uvicorn": [
            *(str(python), "-m", "uvicorn", *address),
            *("--loop", "uvloop", "--http", "httptools", "--ws", "none"),
            *("--no-access-log", "--log-level", "warning", "bench_app:app"),
        ],
        "granian": [
            *(str(python), "-m", "granian", *address),
            *("--interface", "asgi", "--loop", "uvloop", "--no-ws"),
            *("--log-level", "warning", "bench_app:app"),
        ],
    }


def start(command: list[str], port: int, app_dir: Path) -> subprocess.Popen[str]:
    """Starts a server and waits until its port accepts connections."""
    process = subprocess.Popen(command, cwd=app_dir, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return process
    stop_server(process)
    raise RuntimeError(f"{command[2]} did not listen on port {port}")


def check(url: str) -> None:
    """One request by hand, so a broken server fails loudly instead of as wrk's errors."""
    request = urllib.request.Request(
        url, data=REQUEST.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        reply = json.loads(response.read())
    if response.status != 200 or reply["model"] != json.loads(REQUEST)["model"]:
        raise RuntimeError(f"unexpected reply from {url}: {response.status} {reply}")


def wrk(url: str, script: Path, connections: int, duration: str) -> Result:
    completed = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return parse_wrk(completed.stdout)


def measure(command: list[str], port: int, scratch: Path) -> tuple[Result, Result]:
    """Latency at one connection, then throughput at CONNECTIONS, from one server process."""
    url = f"http://127.0.0.1:{port}{PATH}"
    script = scratch / "post.lua"
    process = start(command, port, scratch)
    try:
        check(url)
        wrk(url, script, CONNECTIONS, WARMUP)
        single = wrk(url, script, 1, DURATION)
        loaded = wrk(url, script, CONNECTIONS, DURATION)
    finally:
        stop_server(process)
    return single, loaded


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    python = venv_python()
    installed = versions(python)
    rows: dict[str, tuple[Result, Result]] = {}
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        (scratch / "bench_app.py").write_text(APP)
        (scratch / "post.lua").write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{REQUEST}]]\n"
        )
        for name in ("uvicorn", "granian"):
            port = free_port()
            rows[name] = measure(commands(python, port)[name], port, scratch)

    print(", ".join(f"{name} {version}" for name, version in installed.items()))
    print(f"one worker each, POST {PATH}; wrk -t1 -d{DURATION} at -c1 and -c{CONNECTIONS}")
    print(
        f"{'server':<10}{'c1 p50 ms':>11}{'c1 p99 ms':>11}"
        f"{f'c{CONNECTIONS} req/s':>11}{f'c{CONNECTIONS} p99 ms':>12}{'errors':>8}"
    )
    for name, (single, loaded) in rows.items():
        print(
            f"{name:<10}{single.p50_ms:>11.3f}{single.p99_ms:>11.3f}"
            f"{loaded.requests_per_s:>11.0f}{loaded.p99_ms:>12.2f}"
            f"{single.errors + loaded.errors:>8}"
        )
    (u1, u32), (g1, g32) = rows["uvicorn"], rows["granian"]
    print(
        f"granian / uvicorn: c1 p50 {g1.p50_ms / u1.p50_ms:.2f}, "
        f"c1 p99 {g1.p99_ms / u1.p99_ms:.2f}, "
        f"c{CONNECTIONS} req/s {g32.requests_per_s / u32.requests_per_s:.2f}, "
        f"c{CONNECTIONS} p99 {g32.p99_ms / u32.p99_ms:.2f}"
    )


if __name__ == "__main__":
    main()
