"""Throughput of the simulated provider against bare aiohttp, both loaded by wrk in one run.

The baseline is the least an aiohttp server can do for the same request: read the body and
return a fixed chat completion of about the same size. The ratio sim/baseline is the cost of the
simulator's own work (parsing, script and fault selection, rendering). Each server runs alone in
its own process on uvloop, so they never compete for a core.

Run: .venv/bin/python bench/sim_throughput.py  (needs `wrk`: apt-get install -y wrk)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DURATION = "5s"
CONNECTIONS = 32
PATH = "/v1/chat/completions"
REQUEST = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the bench."}]}'
STREAMED = REQUEST[:-1] + ',"stream":true}'

SIM_SERVER = """
from corral.providers.sim import serve
serve(port=0, on_ready=lambda provider: print(provider.port, flush=True))
"""

BASELINE_SERVER = """
import asyncio
import uvloop
from aiohttp import web

BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Simulated reply from gpt-4o-mini to: Say hello to the bench.",'
    b'"refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":6,"completion_tokens":16,"total_tokens":22}}'
)

async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")

async def main():
    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> Result:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"could not read wrk's report:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Result(float(rate[1]), _ms(p50[1]), _ms(p99[1]), errors)


def start_server(code: str) -> tuple[subprocess.Popen[str], int]:
    """Starts a server process that prints its port once it listens."""
    env = dict(os.environ)
    # Works from a plain checkout too, without the package installed.
    source = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        stop_server(process)
        raise RuntimeError(f"server did not report a port (got {line!r})")
    return process, int(line)


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(code: str, body: str, scratch: Path) -> Result:
    script = scratch / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{body}]]\n"
    )
    process, port = start_server(code)
    try:
        completed = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{CONNECTIONS}",
                f"-d{DURATION}",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}{PATH}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    finally:
        stop_server(process)
    return parse_wrk(completed.stdout)


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as scratch:
        rows = {
            "baseline (bare aiohttp)": load(BASELINE_SERVER, REQUEST, Path(scratch)),
            "sim": load(SIM_SERVER, REQUEST, Path(scratch)),
            "sim, streamed": load(SIM_SERVER, STREAMED, Path(scratch)),
        }
    print(f"wrk -t1 -c{CONNECTIONS} -d{DURATION}, POST {PATH}, non-streamed unless noted")
    print(f"{'server':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, result in rows.items():
        print(
            f"{name:<26}{result.requests_per_s:>10.0f}{result.p50_ms:>10.2f}"
            f"{result.p99_ms:>10.2f}{result.errors:>8}"
        )
    ratio = rows["sim"].requests_per_s / rows["baseline (bare aiohttp)"].requests_per_s
    print(f"sim / baseline throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
