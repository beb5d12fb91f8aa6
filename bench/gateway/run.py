"""`corral serve` against a bare upstream, nginx and the LiteLLM proxy, in one run.

Each target answers the same small non-streamed chat completion (two messages, max_tokens 16)
from the same fast fake upstream, and is loaded by wrk alone, one target at a time:

  (a) direct   the fake upstream itself: an nginx server block that returns a fixed
               chat.completion body (with usage), one worker
  (b) nginx    an nginx reverse proxy in front of it (one worker, upstream keepalive)
  (c) litellm  the LiteLLM proxy, one worker, no database, no master key, one model
  (d) corral   `corral serve` with every gate of the policy on, counters in memory and a
               SQLite store, all requests of one agent in one session
  (e) corral@REF  with --before REF only: the same `corral serve` and policy, but the code of
               git ref REF, checked out in a detached worktree in the scratch dir and run by
               the same venv's python with PYTHONPATH=<worktree>/src (removed afterwards)
  (f) corral-traced  only when named in --targets: the same `corral serve` and policy with
               tracing on, run by traced_serve.py beside this file: its Supervisor gets a
               TracerProvider with SimpleSpanProcessor(InMemorySpanExporter) (the spans
               held bounded); (d) traces to OpenTelemetry's global provider, a no-op
  (g) corral-shared  only when named in --targets: the same `corral serve` and policy with
               the state several nodes share: `store:` a PostgreSQL database made for the
               run (CREATE DATABASE corral_bench_<random> from the postgres database, then
               `corral migrate`; dropped afterwards) and `counters:` a Redis database the
               bench owns (db 14, flushed before and after)

At one connection it reports p50 and p99 latency (and the p50 each target adds over direct);
at 32 connections, requests/s, p99, and throughput as a multiple of LiteLLM's. Every process
shares the machine's cores with wrk and with each other, so the figures compare targets
measured in the same run, on the same machine, rather than stand alone. With --before it also
prints the current corral's throughput and added p50 as multiples of corral@REF's; with
corral-traced, what tracing adds to corral's p50 at one connection and takes from its
requests/s at 32 (e.g. --targets direct,corral,corral-traced); with corral-shared, both
corrals' added p50 at one connection and requests/s at 32, and shared/local ratios of each
(e.g. --targets direct,corral,corral-shared).

Any non-2xx answer or socket error fails the run (exit 1) and is printed instead of numbers.

Run: .venv/bin/python bench/gateway/run.py  [--quick] [--json] [--targets direct,nginx,...]
                                             [--before REF]
Installs what is missing: wrk and nginx with apt-get (as root), LiteLLM into its own virtualenv
under ~/.cache/corral-bench/litellm-venv (CORRAL_BENCH_LITELLM_VENV overrides), reused after.
corral-shared needs PostgreSQL at CORRAL_BENCH_POSTGRES_URL (a user who may CREATE DATABASE;
postgresql://postgres@127.0.0.1:5432/postgres by default) and Redis at
CORRAL_BENCH_SHARED_REDIS_URL (redis://127.0.0.1:6379/14 by default: a database FLUSHDB empties).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
PATH = "/v1/chat/completions"
TRACED = "corral-traced"
SHARED = "corral-shared"
TARGETS = ("direct", "nginx", "litellm", "corral", TRACED, SHARED)
DEFAULT_TARGETS = ("direct", "nginx", "litellm", "corral")  # corral-traced/-shared when named
CORRALS = ("corral", TRACED, SHARED)  # the targets that run this tree's `corral`
LABELS = {
    "direct": "(a) direct",
    "nginx": "(b) nginx",
    "litellm": "(c) litellm",
    "corral": "(d) corral",
    TRACED: "(f) corral-traced",
    SHARED: "(g) corral-shared",
}
TRACED_SERVE = Path(__file__).resolve().parent / "traced_serve.py"
BEFORE_PREFIX = "corral@"  # the --before target is named corral@REF
BEFORE_LABEL = "(e)"
CONNECTIONS = 32
ADDED_P50_TARGET_MS = 0.5
THROUGHPUT_TARGET = 30.0
UPSTREAM_KEY_ENV = "CORRAL_BENCH_UPSTREAM_KEY"
SESSION = "bench"
# corral-shared: the PostgreSQL database it connects to in order to create (and drop) one of
# its own per run, and the Redis database it owns (emptied before and after).
POSTGRES_ADMIN_URL = os.environ.get(
    "CORRAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SHARED_REDIS_URL = os.environ.get("CORRAL_BENCH_SHARED_REDIS_URL", "redis://127.0.0.1:6379/14")
DATABASE_PREFIX = "corral_bench_"
LITELLM_VENV = Path(
    os.environ.get(
        "CORRAL_BENCH_LITELLM_VENV", Path.home() / ".cache" / "corral-bench" / "litellm-venv"
    )
)

NUMBER_MARK = "@N@"  # where wrk puts each request's number
REQUEST = {
    "model": "fast",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello to the bench, request #@N@."},
    ],
    "max_tokens": 16,
}
REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, bench!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25},
    "system_fingerprint": "fp_bench",
}

# wrk's own summary, read in done() so latencies come in µs rather than as rounded text.
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("CORRAL-BENCH %d %d %d %d %d %d %d %d %d\\n",
    summary.duration, summary.requests, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""
_DONE_LINE = re.compile(r"^CORRAL-BENCH" + r" (\d+)" * 9 + r"$", re.MULTILINE)


class BenchError(Exception):
    """A target that could not be measured honestly: the run fails and says why."""


# --- processes ----------------------------------------------------------------------


class Processes:
    """Every process the bench starts, each in its own process group, stopped on the way out."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        command: list[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,  # a group of its own: its children go with it
            )
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process in self._running:
            self._running.remove(process)
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            break
        # Whatever the leader left behind in its group (an nginx worker, say).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for process in reversed(list(self._running)):
            self.stop(process)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    note(f"stopping on {signal.Signals(signum).name}")
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop children


def tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def label(name: str) -> str:
    return LABELS.get(name, f"{BEFORE_LABEL} {name}")


def slug(name: str) -> str:
    """A target's name as a file name: a ref such as origin/main or HEAD~3 holds / or ~."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", name)


# --- tools ----------------------------------------------------------------------------


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def apt_install(package: str) -> None:
    if os.geteuid() != 0:
        raise BenchError(f"{package} is not installed: apt-get install -y {package}")
    note(f"installing {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(command, env=env, capture_output=True, check=True)


def ensure_tools() -> str:
    """wrk and nginx, installed with apt-get if missing; returns nginx's path."""
    if shutil.which("wrk") is None:
        apt_install("wrk")
    if find_nginx() is None:
        apt_install("nginx")
    nginx = find_nginx()
    if nginx is None or shutil.which("wrk") is None:
        raise BenchError("wrk or nginx is still missing after apt-get install")
    return nginx


def litellm_venv() -> Path:
    """The LiteLLM proxy's own virtualenv, created and filled on first use."""
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
    probe = [str(python), "-c", "import litellm, fastapi, uvicorn, backoff, orjson, yaml"]
    if (
        not (LITELLM_VENV / "bin" / "litellm").exists()
        or subprocess.run(probe, capture_output=True).returncode != 0
    ):
        note(f"installing litellm[proxy] into {LITELLM_VENV} (about a minute)")
        started = time.monotonic()
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip", "litellm[proxy]"],
            check=True,
        )
        note(f"installed litellm[proxy] in {time.monotonic() - started:.0f} s")
    return LITELLM_VENV


def corral_command() -> Path:
    """The project's `corral`, beside the python running the bench, else in the repo's venv."""
    for candidate in (Path(sys.executable).parent / "corral", ROOT / ".venv" / "bin" / "corral"):
        if candidate.exists():
            return candidate
    raise BenchError("no `corral` next to this python nor in .venv/bin: install the project")


def corral_serve_available(command: list[str], env: Mapping[str, str] | None = None) -> str | None:
    """None if `corral serve` runs, else why not."""
    probe = subprocess.run(
        [*command, "serve", "--help"],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
    )
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    why = next((ln.strip("│ ") for ln in lines if "serve" in ln or "rror" in ln), "")
    return f"`corral serve --help` exited with {probe.returncode}: {why}".rstrip(": ")


def versions(nginx: str, targets: list[str], corral: Path | None) -> dict[str, str]:
    found: dict[str, str] = {}
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", wrk.stdout + wrk.stderr)
    found["wrk"] = match[1] if match else "?"
    text = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\S+)", text)
    found["nginx"] = match[1] if match else "?"
    if "litellm" in targets:
        code = "import importlib.metadata as m; print(m.version('litellm'))"
        python = str(LITELLM_VENV / "bin" / "python")
        found["litellm"] = subprocess.run(
            [python, "-c", code], capture_output=True, text=True
        ).stdout.strip()
    if corral is not None:
        out = subprocess.run([str(corral), "version"], capture_output=True, text=True).stdout
        found["corral"] = out.strip().split()[-1] if out.strip() else "?"
    return found


# --- the fake upstream and nginx ----------------------------------------------------------


def _nginx_quote(text: str) -> str:
    if "'" in text or "$" in text or "\\" in text:
        raise ValueError("the fixed reply must not hold ', $ or \\ (nginx would read them)")
    return f"'{text}'"


def nginx_config(scratch: Path, port: int, location: str) -> str:
    # As root the master would hand its workers to `nobody`, who cannot read the scratch dir.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    temp = " ".join(
        f"{kind}_temp_path {scratch / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {scratch / "nginx.pid"};
error_log {scratch / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp}
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    {location.replace("PORT", str(port))}
}}
"""


def fake_upstream_block() -> str:
    body = json.dumps(REPLY, separators=(",", ":"))
    return f"""
    server {{
        listen 127.0.0.1:PORT backlog=4096;
        location = {PATH} {{
            default_type application/json;
            return 200 {_nginx_quote(body)};
        }}
        location / {{ return 404; }}
    }}
"""


def proxy_block(upstream_port: int) -> str:
    return f"""
    upstream fake {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
    }}
    server {{
        listen 127.0.0.1:PORT backlog=4096;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


def start_nginx(
    processes: Processes, nginx: str, scratch: Path, block: str
) -> tuple[subprocess.Popen[bytes], int]:
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = scratch / "nginx.conf"
    conf.write_text(nginx_config(scratch, port, block))
    log = scratch / "stdout.log"
    test = subprocess.run(
        [nginx, "-t", "-q", "-p", str(scratch), "-e", str(scratch / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    if test.returncode != 0:
        raise BenchError(f"nginx refused {conf}:\n{test.stderr}")
    command = [nginx, "-p", str(scratch), "-e", str(scratch / "error.log"), "-c", str(conf)]
    process = processes.start(command, log)
    wait_listening(process, port, "nginx", scratch / "error.log")
    return process, port


def wait_listening(process: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode}:\n{tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise BenchError(f"{name} did not listen on port {port} in 30 s:\n{tail(log)}")


def wait_ready(
    process: subprocess.Popen[bytes], url: str, name: str, log: Path, timeout: float
) -> float:
    """Polls `url` until it answers 200; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise BenchError(
                f"{name} exited with {process.returncode} before it was ready; its log:\n"
                f"{tail(log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise BenchError(f"{name} was not ready at {url} after {timeout:.0f} s; its log:\n{tail(log)}")


# --- the targets ------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    ready_s: float | None = None
    # A corral's answers carry a traceparent (True) or not (False); None: not checked.
    traced: bool | None = None


def start_litellm(processes: Processes, scratch: Path, upstream_port: int) -> Target:
    scratch.mkdir(parents=True, exist_ok=True)
    config = scratch / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fast\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: x\n"
        # LiteLLM refuses to start without a master key since 1.8x unless told this; the bench
        # runs it with none, its cheapest path (no key check at all).
        "general_settings:\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"
    )
    port = free_port()
    env = {
        **os.environ,
        # This machine reaches no GitHub: use the cost map the package ships, at once.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",  # LiteLLM's production advice: no per-request log lines
    }
    env.pop("LITELLM_MASTER_KEY", None)
    env.pop("DATABASE_URL", None)
    command = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
        *("--num_workers", "1"),
    ]
    log = scratch / "litellm.log"
    process = processes.start(command, log, env=env, cwd=scratch)
    ready = wait_ready(process, f"http://127.0.0.1:{port}/health/liveliness", "litellm", log, 180)
    return Target("litellm", f"http://127.0.0.1:{port}{PATH}", {}, process, log, ready)


def corral_policy(
    scratch: Path, upstream_port: int, store: str | None = None, counters: str = "memory"
) -> str:
    """Every corral's policy; only corral-shared passes a store and counters of its own."""
    if store is None:
        store = f"sqlite:///{scratch / 'corral.db'}"
    return f"""version: 1
store: {store}
counters: {counters}

providers:
  upstream:
    kind: openai
    base_url: "http://127.0.0.1:{upstream_port}/v1"
    api_key_env: {UPSTREAM_KEY_ENV}
    requests_per_minute: 100000000

models:
  fast:
    provider: upstream
    model: gpt-4o-mini
    context_window: 128000
    price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}

routes:
  default: [fast]

agent_types:
  bench:
    task:    {{usd: 1000000, tokens: 1000000000000, tool_calls: 1000000000,
              steps: 1000000000, wall_clock: 1d}}
    session: {{usd: 1000000, tokens: 1000000000000, tool_calls: 1000000000,
              steps: 1000000000, wall_clock: 1d}}
    fleet:   {{usd: 1000000, tokens: 1000000000000, per: day}}

agents:
  bench:
    type: bench
    route: default
    tools: [lookup]
    rate_limit: {{requests_per_minute: 100000000, tokens_per_minute: 1000000000000}}

global: {{usd: 1000000, per: day}}

retry:   {{max_attempts: 3, base_delay: 500ms, max_delay: 8s, jitter: full, max_total_wait: 30s}}
breaker: {{window: 20, min_calls: 10, failure_rate: 0.5, slow_call: 10s, slow_rate: 0.8,
          open_for: 30s, half_open_probes: 3}}
loops:   {{repeat: 3, similar: {{threshold: 0.9, count: 4}}, no_progress_steps: 5,
          error_repeat: 3}}
context: {{warn_at: 0.7, critical_at: 0.9}}

tools:
  lookup: {{scope: read}}

approvals:
  - when: 'scope == "irreversible"'
    timeout: 1h
    on_timeout: cancel

guards:
  input:  {{injection: block}}
  output: {{pii: redact}}
"""


def start_corral(
    processes: Processes,
    corral: list[str],
    scratch: Path,
    upstream_port: int,
    *,
    name: str = "corral",
    base_env: Mapping[str, str] | None = None,
    traced: bool | None = None,
    shared: SharedState | None = None,
) -> Target:
    """`corral` is the command line that runs the CLI; `base_env` (os.environ by default) is
    where corral@REF's PYTHONPATH comes in, so its key is made by the same code that serves.
    With `shared` (corral-shared) the policy names its PostgreSQL store and Redis counters,
    and `corral migrate` runs first: serve refuses a PostgreSQL schema that is behind."""
    scratch.mkdir(parents=True, exist_ok=True)
    policy = scratch / "corral.yaml"
    if shared is None:
        policy.write_text(corral_policy(scratch, upstream_port))
    else:
        policy.write_text(corral_policy(scratch, upstream_port, shared.store, shared.counters))
    env = {**(os.environ if base_env is None else base_env), UPSTREAM_KEY_ENV: "x"}
    # The policy redacts what the store keeps, which needs a data key (older refs ignore it).
    env.setdefault("CORRAL_DATA_KEY", Fernet.generate_key().decode())
    for variable in ("CORRAL_POLICY", "CORRAL_ADMIN_KEY"):
        env.pop(variable, None)
    if shared is not None:
        migrated = subprocess.run(
            [*corral, "migrate", "--policy", str(policy)],
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch,
        )
        if migrated.returncode != 0:
            raise BenchError(
                f"`corral migrate` on {shared.shown_store} exited with {migrated.returncode}:\n"
                f"{migrated.stdout}{migrated.stderr}"
            )
    created = subprocess.run(
        [*corral, "keys", "create", "--agent", "bench", "--policy", str(policy)],
        capture_output=True,
        text=True,
        env=env,
        cwd=scratch,
    )
    key = created.stdout.strip()
    if created.returncode != 0 or not key or len(key.split()) != 1:
        raise BenchError(
            f"`corral keys create` exited with {created.returncode}:\n"
            f"{created.stdout}{created.stderr}"
        )
    port = free_port()
    command = [
        *corral,
        *("serve", "--policy", str(policy), "--host", "127.0.0.1", "--port", str(port)),
    ]
    log = scratch / "corral.log"
    process = processes.start(command, log, env=env, cwd=scratch)
    ready = wait_ready(process, f"http://127.0.0.1:{port}/healthz", f"{name} serve", log, 60)
    headers = {"Authorization": f"Bearer {key}", "X-Corral-Session": SESSION}
    return Target(name, f"http://127.0.0.1:{port}{PATH}", headers, process, log, ready, traced)


# --- corral-shared: a PostgreSQL database and a Redis database of the bench's own --------


def shown_url(url: str) -> str:
    """`url` with any password as ***, fit to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


def with_database(url: str, database: str) -> str:
    """The postgresql:// URL `url` with its database replaced by `database`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise BenchError(f"CORRAL_BENCH_POSTGRES_URL must be a postgresql:// URL, not {url!r}")
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


@dataclass(frozen=True)
class SharedState:
    """corral-shared's store and counters, made for the run and removed after it."""

    database: str
    store: str
    counters: str
    postgres_version: str
    redis_version: str

    @property
    def shown_store(self) -> str:
        return shown_url(self.store)

    @property
    def shown_counters(self) -> str:
        return shown_url(self.counters)


@contextlib.contextmanager
def shared_state() -> Iterator[SharedState]:
    """A fresh PostgreSQL database (created from POSTGRES_ADMIN_URL's, dropped on the way out)
    and the Redis database at SHARED_REDIS_URL, flushed before and after."""
    # Imported here: only corral-shared needs them (both are the project's dependencies).
    import psycopg
    import redis
    from psycopg import sql

    admin = shown_url(POSTGRES_ADMIN_URL)
    database = f"{DATABASE_PREFIX}{secrets.token_hex(6)}"
    store = with_database(POSTGRES_ADMIN_URL, database)
    name = sql.Identifier(database)
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
            shown = conn.execute("SHOW server_version").fetchone()
            postgres_version = "?" if shown is None else str(shown[0])
    except psycopg.Error as exc:
        raise BenchError(f"could not create database {database} at {admin}: {exc}") from None
    try:
        client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=10)
        try:
            client.flushdb()
            redis_version = str(client.info("server").get("redis_version", "?"))
        except redis.RedisError as exc:
            raise BenchError(
                f"Redis at {shown_url(SHARED_REDIS_URL)} did not answer: {exc}"
            ) from None
        try:
            yield SharedState(database, store, SHARED_REDIS_URL, postgres_version, redis_version)
        finally:
            try:
                client.flushdb()
            except redis.RedisError as exc:
                note(f"warning: FLUSHDB on {shown_url(SHARED_REDIS_URL)} failed: {exc}")
            client.close()
    finally:
        try:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=10) as conn:
                # FORCE: a connection serve left open must not keep the database alive.
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        except psycopg.Error as exc:
            note(f"warning: could not drop database {database} at {admin}: {exc}")


def shared_usage(shared: SharedState) -> str:
    """What corral-shared left in its store and counters, as proof that it used them: it
    fails the row if either is empty (a policy whose store or counters were not read)."""
    import psycopg
    import redis

    try:
        with psycopg.connect(shared.store, connect_timeout=10) as conn:
            found = conn.execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps)"
            ).fetchone()
            runs, steps = (0, 0) if found is None else (int(found[0]), int(found[1]))
    except psycopg.Error as exc:
        raise BenchError(f"{SHARED}: could not read {shared.shown_store}: {exc}") from None
    try:
        with redis.Redis.from_url(shared.counters, socket_timeout=10) as client:
            keys = int(client.dbsize())
    except redis.RedisError as exc:
        raise BenchError(f"{SHARED}: could not read {shared.shown_counters}: {exc}") from None
    if not steps or not keys:
        raise BenchError(
            f"{SHARED}: after its load {shared.shown_store} holds {steps} steps and "
            f"{shared.shown_counters} {keys} keys: it did not use them"
        )
    return (
        f"store {shared.shown_store} (migrated; {runs} runs, {steps} steps after the load), "
        f"counters {shared.shown_counters} ({keys} keys after the load)"
    )


# --- corral@REF: the code of an earlier commit ------------------------------------------


@dataclass(frozen=True)
class Before:
    """corral@REF, ready to start: REF's code, checked out and proven to be what imports."""

    name: str
    ref: str
    commit: str
    command: list[str]
    env: dict[str, str]
    imports: str  # corral.__file__ as that interpreter, with that PYTHONPATH, sees it
    version: str


def git(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True, text=True)


def resolve_ref(ref: str) -> str:
    """REF's full commit id, resolved once so the worktree and the report name the same one."""
    found = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise BenchError(f"--before {ref}: not a commit of {ROOT}")
    return found.stdout.strip()


def source_of_work_tree() -> str:
    """What the current corral runs: the work tree (an editable install), which may differ
    from HEAD while others edit it, so the report says so."""
    head = git("rev-parse", "--short=12", "HEAD").stdout.strip() or "?"
    dirty = git("status", "--porcelain", "--", "src").stdout.strip()
    return f"HEAD {head}" + (" with uncommitted changes under src/" if dirty else "")


@contextlib.contextmanager
def worktree(commit: str, path: Path) -> Iterator[Path]:
    """A detached worktree of `commit` at `path`, removed on the way out (else git would keep
    a stale entry for it once the scratch dir is gone)."""
    added = git("worktree", "add", "--detach", "--quiet", str(path), commit)
    if added.returncode != 0:
        raise BenchError(f"git worktree add {path} {commit} failed:\n{added.stderr}")
    try:
        yield path
    finally:
        removed = git("worktree", "remove", "--force", str(path))
        if removed.returncode != 0:
            note(
                f"warning: git worktree remove {path} failed ({removed.stderr.strip()}); "
                "`git worktree prune` clears it once the scratch dir is gone"
            )


def venv_python() -> Path:
    """The python beside the current `corral`, so the old code runs on the same dependencies."""
    with contextlib.suppress(BenchError):
        python = corral_command().parent / "python"
        if python.exists():
            return python
    return Path(sys.executable)


def corral_import(python: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """corral.__file__ and __version__ as `python` imports them under `env`."""
    code = "import corral; print(corral.__file__); print(corral.__version__)"
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=dict(env))
    lines = probe.stdout.split()
    if probe.returncode != 0 or len(lines) != 2:
        raise BenchError(f"{python} could not import corral:\n{probe.stdout}{probe.stderr}")
    return lines[0], lines[1]


def prepare_before(ref: str, commit: str, checkout: Path) -> Before:
    """corral@REF from the checkout at `checkout`; fails unless the interpreter imports corral
    from there: PYTHONPATH comes before the venv's editable path to the work tree, but a check
    costs less than a row that silently measures the current code twice."""
    name = f"{BEFORE_PREFIX}{ref}"
    python = venv_python()
    src = checkout / "src"
    # Replaced, not prepended to: an inherited PYTHONPATH could name the current src/.
    env = {**os.environ, "PYTHONPATH": str(src)}
    imports, version = corral_import(python, env)
    if not Path(imports).resolve().is_relative_to(src.resolve()):
        raise BenchError(f"{name}: {python} imports corral from {imports}, not from {src}")
    # `-m corral`, not `-m corral.cli`: cli.py has no __main__ guard, so that would do nothing.
    command = [str(python), "-m", "corral"]
    why = corral_serve_available(command, env)
    if why is not None:
        raise BenchError(f"{name}: corral serve is not available: {why}")
    return Before(name, ref, commit, command, env, imports, version)


def check(target: Target) -> dict[str, Any]:
    """One request by hand, so a broken target fails loudly rather than as wrk's counts.

    A corral answers with a `traceparent` only when its request's span is recorded: where
    the target says which it should be (corral-traced, and corral beside it), it is
    checked, so the two rows cannot measure the same thing."""
    request = urllib.request.Request(
        target.url,
        data=json.dumps(REQUEST).encode(),
        headers={"Content-Type": "application/json", **target.headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, response.read()
            traced = response.headers.get("traceparent") is not None
    except urllib.error.HTTPError as exc:
        status, body, traced = exc.code, exc.read(), False
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"{target.name}: request failed: {exc}") from None
    try:
        reply = json.loads(body)
        content = reply["choices"][0]["message"]["content"]
        usage = reply["usage"]
    except (ValueError, KeyError, IndexError, TypeError):
        reply, content, usage = None, None, None
    if status != 200 or not content or not usage:
        raise BenchError(
            f"{target.name}: unexpected answer {status}: {body[:2000].decode(errors='replace')}"
        )
    assert isinstance(reply, dict)
    if target.traced is not None and traced != target.traced:
        raise BenchError(
            f"{target.name}: answered {'with' if traced else 'without'} a traceparent, "
            f"so its requests were {'' if traced else 'not '}traced"
        )
    return reply


# --- load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def wrk_script(target: Target, scratch: Path) -> Path:
    """Every request asks something new (a thread and request number in the user message),
    as an agent does: the same prompt over and over in one session is what Corral's loop
    gate is there to stop. Every target gets the same script, so the rows compare alike."""
    body = json.dumps(REQUEST)
    prefix, suffix = body.split(NUMBER_MARK)
    lines = [
        'wrk.method = "POST"',
        f"local prefix, suffix = {json.dumps(prefix)}, {json.dumps(suffix)}",
        "local threads, sent = 0, 0",
        'function setup(thread) threads = threads + 1; thread:set("tid", threads) end',
        "function request()",
        "  sent = sent + 1",
        '  return wrk.format(nil, nil, nil, prefix .. tid .. "-" .. sent .. suffix)',
        "end",
    ]
    for name, value in {"Content-Type": "application/json", **target.headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    script = scratch / f"{slug(target.name)}.lua"
    script.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return script


def wrk(url: str, script: Path, threads: int, connections: int, seconds: int) -> Load:
    command = [
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"),
        *("--latency", "-s", str(script), url),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"wrk did not finish within {seconds + 60} s: {' '.join(command)}"
        ) from None
    match = _DONE_LINE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise BenchError(
            f"wrk exited with {completed.returncode}:\n{completed.stdout}{completed.stderr}"
        )
    duration_us, requests, connect, read, write, timeout, status, p50, p99 = map(
        int, match.groups()
    )
    errors = {"connect": connect, "read": read, "write": write, "timeout": timeout}
    errors["non_2xx_3xx"] = status
    return Load(requests, requests / (duration_us / 1e6), p50 / 1000, p99 / 1000, errors)


@dataclass
class Row:
    target: str
    single: Load | None = None
    loaded: Load | None = None
    error: str | None = None
    ready_s: float | None = None


def measure(target: Target, scratch: Path, seconds: int, warmup: int) -> Row:
    check(target)
    script = wrk_script(target, scratch)
    row = Row(target.name, ready_s=target.ready_s)
    runs = (
        ("warm-up", 2, CONNECTIONS, warmup),
        ("c=1", 1, 1, seconds),
        (f"c={CONNECTIONS}", 2, CONNECTIONS, seconds),
    )
    for label, threads, connections, duration in runs:
        note(f"  {target.name}: {label}, {duration} s")
        load = wrk(target.url, script, threads, connections, duration)
        if load.failed:
            counts = ", ".join(f"{k} {v}" for k, v in load.errors.items() if v)
            log = f"\n{target.name}'s log:\n{tail(target.log)}" if target.log else ""
            raise BenchError(
                f"{target.name}, {label}: {load.failed} of {load.requests} requests failed "
                f"({counts}){log}"
            )
        if label == "c=1":
            row.single = load
        elif label != "warm-up":
            row.loaded = load
    # A target that died under load would have shown as socket errors; check it still answers.
    check(target)
    return row


@contextlib.contextmanager
def scratch_dir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="corral-gateway-bench-"))
        note(f"scratch dir (kept): {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="corral-gateway-bench-") as directory:
        yield Path(directory)


# --- the run ------------------------------------------------------------------------------


def run(
    args: argparse.Namespace,
) -> tuple[dict[str, Row], dict[str, str], float, dict[str, str]]:
    """The rows, the versions, the load average before, and (with --before) where each
    corral's code came from."""
    targets: list[str] = args.targets
    # A ref that names no commit is a typo: fail before anything is installed or started.
    before_commit = None if args.before is None else resolve_ref(args.before)
    sources: dict[str, str] = {}
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        note(f"warning: load average {load_before:.2f} before the run: other work shares the cores")
    nginx = ensure_tools()
    corral: Path | None = None
    rows: dict[str, Row] = {}
    if any(name in targets for name in CORRALS):
        try:
            corral = corral_command()
            why = corral_serve_available([str(corral)])
        except BenchError as exc:
            why = str(exc)
        if why is not None:
            for name in CORRALS:
                if name in targets:
                    rows[name] = Row(name, error=f"corral serve is not available: {why}")
                    note(f"{label(name)}: {rows[name].error}")
    if "litellm" in targets:
        litellm_venv()
    found = versions(nginx, targets, corral)
    if corral is not None and before_commit is not None:
        imports, _ = corral_import(venv_python(), os.environ)
        sources["corral"] = f"{source_of_work_tree()}, imports {imports}"

    processes = Processes()
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C raises even where SIGINT came in ignored (a background job of a script).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # The stack exits first: the worktree goes before the scratch dir that holds it.
        with scratch_dir(args.keep) as scratch, contextlib.ExitStack() as stack:
            before: Before | None = None
            if args.before is not None and before_commit is not None:
                name = f"{BEFORE_PREFIX}{args.before}"
                try:
                    checkout = scratch / f"worktree-{slug(args.before)}"
                    stack.enter_context(worktree(before_commit, checkout))
                    before = prepare_before(args.before, before_commit, checkout)
                except BenchError as exc:
                    rows[name] = Row(name, error=str(exc))
                    note(f"{label(name)}: {exc}")
                else:
                    found[name] = f"{before.version} at {before.commit[:12]}"
                    sources[name] = f"worktree of {before.commit[:12]}, imports {before.imports}"
                    note(f"{label(name)}: imports corral from {before.imports}")
            _, upstream_port = start_nginx(
                processes, nginx, scratch / "upstream", fake_upstream_block()
            )
            for name in targets:
                if name in rows:
                    continue
                note(f"{label(name)}")
                place = scratch / slug(name)
                place.mkdir()
                target: Target | None = None
                # What a target owns beyond its process (corral-shared's databases), removed
                # once the process is stopped.
                owned = contextlib.ExitStack()
                shared: SharedState | None = None
                try:
                    if name == "direct":
                        target = Target(name, f"http://127.0.0.1:{upstream_port}{PATH}")
                    elif name == "nginx":
                        process, port = start_nginx(
                            processes, nginx, place, proxy_block(upstream_port)
                        )
                        target = Target(
                            name, f"http://127.0.0.1:{port}{PATH}", {}, process, place / "error.log"
                        )
                    elif name == "litellm":
                        target = start_litellm(processes, place, upstream_port)
                    elif name in ("corral", SHARED):
                        assert corral is not None
                        # Beside corral-traced it must not trace (no OTEL_* collector).
                        traced = False if TRACED in targets else None
                        if name == SHARED:
                            shared = owned.enter_context(shared_state())
                            found["postgresql"] = shared.postgres_version
                            found["redis"] = shared.redis_version
                        target = start_corral(
                            processes,
                            [str(corral)],
                            place,
                            upstream_port,
                            name=name,
                            traced=traced,
                            shared=shared,
                        )
                    elif name == TRACED:
                        command = [str(venv_python()), str(TRACED_SERVE)]
                        target = start_corral(
                            processes, command, place, upstream_port, name=name, traced=True
                        )
                    else:
                        assert before is not None and name == before.name
                        target = start_corral(
                            processes,
                            before.command,
                            place,
                            upstream_port,
                            name=name,
                            base_env=before.env,
                        )
                    rows[name] = measure(target, place, args.duration, args.warmup)
                    if shared is not None:
                        sources[name] = shared_usage(shared)
                except BenchError as exc:
                    rows[name] = Row(name, error=str(exc))
                    note(f"{label(name)} FAILED: {str(exc).splitlines()[0]}")
                finally:
                    if target is not None and target.process is not None:
                        processes.stop(target.process)
                    owned.close()
    finally:
        processes.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return {name: rows[name] for name in targets if name in rows}, found, load_before, sources


def figures(rows: dict[str, Row]) -> dict[str, Any]:
    def ok(name: str) -> Row | None:
        row = rows.get(name)
        return row if row is not None and row.error is None else None

    direct, litellm, corral = ok("direct"), ok("litellm"), ok("corral")
    out: dict[str, Any] = {"targets": {}}
    for name, row in rows.items():
        entry: dict[str, Any] = {"error": row.error}
        if row.single is not None and row.loaded is not None:
            # wrk records latency in whole µs.
            entry |= {
                "c1_p50_ms": row.single.p50_ms,
                "c1_p99_ms": row.single.p99_ms,
                "c1_requests": row.single.requests,
                f"c{CONNECTIONS}_requests_per_s": round(row.loaded.requests_per_s, 1),
                f"c{CONNECTIONS}_p99_ms": row.loaded.p99_ms,
                f"c{CONNECTIONS}_requests": row.loaded.requests,
                "ready_s": None if row.ready_s is None else round(row.ready_s, 2),
            }
            if direct is not None and direct.single is not None:
                entry["added_p50_ms"] = round(row.single.p50_ms - direct.single.p50_ms, 3)
            if litellm is not None and litellm.loaded is not None:
                entry["throughput_vs_litellm"] = round(
                    row.loaded.requests_per_s / litellm.loaded.requests_per_s, 2
                )
        out["targets"][name] = entry
    corral_entry = out["targets"].get("corral", {}) if corral is not None else {}
    out["corral_added_p50_ms"] = corral_entry.get("added_p50_ms")
    out["corral_throughput_vs_litellm"] = corral_entry.get("throughput_vs_litellm")
    before_name = next((name for name in rows if name.startswith(BEFORE_PREFIX)), None)
    if before_name is not None:
        out["corral_vs_before"] = versus_before(out["targets"], before_name)
    if "corral" in rows and TRACED in rows:
        out["corral_tracing"] = tracing_cost(out["targets"])
    if "corral" in rows and SHARED in rows:
        out["corral_shared_state"] = shared_cost(out["targets"])
    return out


def shared_cost(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """corral-shared (PostgreSQL store, Redis counters) against corral (SQLite, memory): the
    p50 each adds over direct at c=1, requests/s at c=32, and shared/local ratios of both."""
    local, shared = entries.get("corral", {}), entries.get(SHARED, {})
    rps = f"c{CONNECTIONS}_requests_per_s"
    out: dict[str, Any] = {
        "added_p50_ms_local": local.get("added_p50_ms"),
        "added_p50_ms_shared": shared.get("added_p50_ms"),
        "c1_p50_ms_local": local.get("c1_p50_ms"),
        "c1_p50_ms_shared": shared.get("c1_p50_ms"),
        "p50_ms_shared_adds": None,
        "added_p50_ratio_shared_local": None,
        f"{rps}_local": local.get(rps),
        f"{rps}_shared": shared.get(rps),
        f"{rps}_difference": None,
        "throughput_ratio_shared_local": None,
    }
    if local.get("c1_p50_ms") is not None and shared.get("c1_p50_ms") is not None:
        out["p50_ms_shared_adds"] = round(shared["c1_p50_ms"] - local["c1_p50_ms"], 3)
    # A ratio to an added p50 of zero or less (noise beside direct's) would mean nothing.
    if shared.get("added_p50_ms") is not None and (local.get("added_p50_ms") or 0) > 0:
        out["added_p50_ratio_shared_local"] = round(
            shared["added_p50_ms"] / local["added_p50_ms"], 2
        )
    if local.get(rps) and shared.get(rps):
        out[f"{rps}_difference"] = round(shared[rps] - local[rps], 1)
        out["throughput_ratio_shared_local"] = round(shared[rps] / local[rps], 3)
    return out


def tracing_cost(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """corral-traced against corral: the p50 each adds over direct at c=1 and the p50
    tracing adds, and requests/s at c=32 with their difference and ratio."""
    off, on = entries.get("corral", {}), entries.get(TRACED, {})
    rps = f"c{CONNECTIONS}_requests_per_s"
    out: dict[str, Any] = {
        "added_p50_ms_off": off.get("added_p50_ms"),
        "added_p50_ms_on": on.get("added_p50_ms"),
        "c1_p50_ms_off": off.get("c1_p50_ms"),
        "c1_p50_ms_on": on.get("c1_p50_ms"),
        "p50_ms_tracing_adds": None,
        f"{rps}_off": off.get(rps),
        f"{rps}_on": on.get(rps),
        f"{rps}_difference": None,
        "throughput_ratio_on_off": None,
    }
    if off.get("c1_p50_ms") is not None and on.get("c1_p50_ms") is not None:
        out["p50_ms_tracing_adds"] = round(on["c1_p50_ms"] - off["c1_p50_ms"], 3)
    if off.get(rps) and on.get(rps):
        out[f"{rps}_difference"] = round(on[rps] - off[rps], 1)
        out["throughput_ratio_on_off"] = round(on[rps] / off[rps], 3)
    return out


def versus_before(entries: dict[str, dict[str, Any]], before_name: str) -> dict[str, Any]:
    """The current corral's throughput and added p50 as multiples of corral@REF's."""
    now, then = entries.get("corral", {}), entries.get(before_name, {})
    rps = f"c{CONNECTIONS}_requests_per_s"
    throughput = None
    if now.get(rps) and then.get(rps):
        throughput = round(now[rps] / then[rps], 2)
    added = None
    # A ratio to an added p50 of zero or less (noise beside direct's) would mean nothing.
    if now.get("added_p50_ms") is not None and (then.get("added_p50_ms") or 0) > 0:
        added = round(now["added_p50_ms"] / then["added_p50_ms"], 2)
    return {"before": before_name, "throughput_ratio": throughput, "added_p50_ratio": added}


def report(
    rows: dict[str, Row],
    found: dict[str, str],
    load_before: float,
    args: argparse.Namespace,
    sources: dict[str, str],
) -> None:
    data = figures(rows)
    print(", ".join(f"{name} {version}" for name, version in found.items()))
    for name, source in sources.items():
        print(f"{name}: {source}")
    print(f"{os.cpu_count()} cores, load average {load_before:.2f} before the run")
    print(
        f"POST {PATH}, 2 messages, max_tokens 16, non-streamed; fake upstream: nginx return, "
        f"1 worker; wrk -t1 -c1 and -t2 -c{CONNECTIONS}, {args.duration} s each after "
        f"{args.warmup} s warm-up"
    )
    c = CONNECTIONS
    # 13 wide as ever, wider only for a corral@REF or corral-traced label.
    w = max(13, *(len(label(name)) + 1 for name in rows))
    print(
        f"{'target':<{w}}{'c1 p50 ms':>10}{'c1 p99 ms':>10}{'+p50 ms':>9}"
        f"{f'c{c} req/s':>11}{f'c{c} p99 ms':>11}{'x litellm':>11}"
    )
    for name, row in rows.items():
        entry = data["targets"][name]
        if row.error is not None:
            first = row.error.splitlines()[0]
            print(f"{label(name):<{w}}FAILED: {first}")
            continue
        added = entry.get("added_p50_ms")
        ratio = entry.get("throughput_vs_litellm")
        print(
            f"{label(name):<{w}}{entry['c1_p50_ms']:>10.3f}{entry['c1_p99_ms']:>10.3f}"
            f"{'-' if added is None else f'{added:.3f}':>9}"
            f"{entry[f'c{c}_requests_per_s']:>11.0f}{entry[f'c{c}_p99_ms']:>11.2f}"
            f"{'-' if ratio is None else f'{ratio:.1f}x':>11}"
        )
    added = data["corral_added_p50_ms"]
    ratio = data["corral_throughput_vs_litellm"]
    if added is not None:
        verdict = "met" if added <= ADDED_P50_TARGET_MS else "MISSED"
        print(
            f"corral added p50 at c=1: {added:.3f} ms "
            f"(target <= {ADDED_P50_TARGET_MS} ms: {verdict})"
        )
    else:
        print(f"corral added p50 at c=1: n/a (target <= {ADDED_P50_TARGET_MS} ms)")
    if ratio is not None:
        verdict = "met" if ratio >= THROUGHPUT_TARGET else "MISSED"
        print(
            f"corral throughput / litellm at c={c}: {ratio:.1f}x "
            f"(target >= {THROUGHPUT_TARGET:.0f}x: {verdict})"
        )
    else:
        print(f"corral throughput / litellm at c={c}: n/a (target >= {THROUGHPUT_TARGET:.0f}x)")
    if "corral_vs_before" in data:
        report_versus_before(data["corral_vs_before"])
    if "corral_tracing" in data:
        report_tracing(data["corral_tracing"])
    if "corral_shared_state" in data:
        report_shared(data["corral_shared_state"])


def report_shared(cost: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f} ms"

    def times(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}x"

    c = CONNECTIONS
    rps = f"c{c}_requests_per_s"
    print(
        f"shared (PostgreSQL store, Redis counters) vs local (SQLite, memory), added p50 at "
        f"c=1: shared {ms(cost['added_p50_ms_shared'])}, local {ms(cost['added_p50_ms_local'])}"
        f", shared/local {times(cost['added_p50_ratio_shared_local'], 2)} (p50 "
        f"{ms(cost['p50_ms_shared_adds'])} more)"
    )
    shared, local, difference = (
        cost[f"{rps}_shared"],
        cost[f"{rps}_local"],
        cost[f"{rps}_difference"],
    )
    if shared is None or local is None or difference is None:
        print(f"shared vs local, req/s at c={c}: n/a")
        return
    print(
        f"shared vs local, req/s at c={c}: shared {shared:.0f}, local {local:.0f}, difference "
        f"{difference:+.0f} (shared/local {times(cost['throughput_ratio_shared_local'], 2)})"
    )


def report_tracing(cost: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f} ms"

    c = CONNECTIONS
    rps = f"c{c}_requests_per_s"
    print(
        f"tracing on (in-memory exporter) vs off, added p50 at c=1: on "
        f"{ms(cost['added_p50_ms_on'])}, off {ms(cost['added_p50_ms_off'])}, tracing adds "
        f"{ms(cost['p50_ms_tracing_adds'])}"
    )
    on, off, difference = cost[f"{rps}_on"], cost[f"{rps}_off"], cost[f"{rps}_difference"]
    if on is None or off is None or difference is None:
        print(f"tracing on vs off, req/s at c={c}: n/a")
        return
    print(
        f"tracing on vs off, req/s at c={c}: on {on:.0f}, off {off:.0f}, difference "
        f"{difference:+.0f} (on/off {cost['throughput_ratio_on_off']:.2f}x)"
    )


def report_versus_before(versus: dict[str, Any]) -> None:
    before = versus["before"]
    throughput, added = versus["throughput_ratio"], versus["added_p50_ratio"]
    shown = "n/a" if throughput is None else f"{throughput:.2f}x"
    print(f"corral throughput / {before} at c={CONNECTIONS}: {shown} (above 1: faster now)")
    shown = "n/a" if added is None else f"{added:.2f}x"
    print(f"corral added p50 / {before} at c=1: {shown} (below 1: less added now)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=5, metavar="S", help="seconds per measurement (5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, metavar="S", help="seconds of warm-up per target (2)"
    )
    parser.add_argument("--quick", action="store_true", help="2 s measurements, 1 s warm-up")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch dir (configs, logs) and print it"
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default: "
        f"{','.join(DEFAULT_TARGETS)}; {TRACED}: corral with tracing on, to an in-memory "
        f"exporter; {SHARED}: corral with a PostgreSQL store and Redis counters; each "
        "compared with corral when both are named)",
    )
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run corral@REF: `corral serve` from a git worktree of REF (e.g. e2e779d), "
        "and print the current corral's figures as multiples of its",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2, 1
    if args.duration < 1 or args.warmup < 1:
        parser.error("--duration and --warmup take whole seconds, at least 1")
    chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown or not chosen:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    args.targets = [t for t in TARGETS if t in chosen]
    if args.before is not None:
        if not args.before.strip() or args.before.startswith("-"):
            parser.error("--before takes a git ref, e.g. --before e2e779d")
        args.targets.append(f"{BEFORE_PREFIX}{args.before}")  # its row right after corral's
    return args


@contextlib.contextmanager
def _keyboard_interrupt_exits() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        note("interrupted")
        raise SystemExit(130) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with _keyboard_interrupt_exits():
        try:
            rows, found, load_before, sources = run(args)
        except (BenchError, subprocess.CalledProcessError) as exc:
            note(f"FAILED: {exc}")
            return 1
    if args.json:
        settings = {"seconds": args.duration, "warmup_seconds": args.warmup}
        machine = {"cores": os.cpu_count(), "load_average_before": load_before}
        output = {"versions": found, **settings, **machine, **figures(rows)}
        if sources:
            output["sources"] = sources
        print(json.dumps(output, indent=2))
    else:
        report(rows, found, load_before, args, sources)
    failed = [name for name, row in rows.items() if row.error is not None]
    for name in failed:
        note(f"\n{label(name)} FAILED:\n{rows[name].error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
