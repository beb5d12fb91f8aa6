"""Fuzz: schemathesis against the gateway's own /openapi.json.

Every operation is called with an agent key and with the admin key, with cases that fit
the document and cases that break it (schemathesis' positive and negative modes), a
bounded number each. No answer may be a 5xx, and each must be one the document
describes: its status, content type, headers and body. The gateway runs under uvicorn
on a loopback port, in a thread of its own (schemathesis calls it synchronously), with
the simulated provider as its upstream.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from corral import Supervisor
from corral.aio import loop_factory
from corral.gateway.app import Gateway
from corral.gateway.keys import issue
from corral.gateway.openapi import OPENAPI
from corral.gateway.server import config
from corral.providers.sim import SimProvider
from tests import support

ADMIN_KEY = "ck_admin_fuzz-admin-key"
# Cases per operation with the key it takes; with 16 operations and a third as many with
# the other key, the file takes well under a minute.
MAX_EXAMPLES = 30
# The example policy, with limits a fuzzer's few hundred calls a minute never reach and
# upstream retries in milliseconds: what is fuzzed is the gateway, not the waits.
EDITS = {
    "requests_per_minute: 600, tokens_per_minute: 200000": (
        "requests_per_minute: 1000000, tokens_per_minute: 1000000000"
    ),
    "base_delay: 1s, max_delay: 8s": "base_delay: 1ms, max_delay: 5ms",
}
MODELS = ("fast", "smart", "default")
# Checks of the requests' side left out where the document cannot say what the gateway
# takes: the model-call bodies are described loosely (the OpenAI and Anthropic references
# own those formats), so a body may fit the document and be refused, or not fit it and be
# passed upstream; a retry's counts given as 5.0 are refused, though JSON Schema calls
# them integers (runtime/operations.parse_count).
LOOSE = {
    "/v1/chat/completions": [positive_data_acceptance, negative_data_rejection],
    "/v1/messages": [positive_data_acceptance, negative_data_rejection],
    "/admin/dlq/{run_id}/retry": [positive_data_acceptance],
}


@dataclass
class Served:
    url: str
    agent_key: str


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    served: list[Served] = []
    failed: list[BaseException] = []
    servers: list[uvicorn.Server] = []

    async def main() -> None:
        async with SimProvider() as sim:
            edits = {"http://127.0.0.1:4010/v1": sim.openai_base_url, **EDITS}
            policy = support.example_policy(tmp, edits)
            sup = Supervisor.from_policy(policy, env={"SIM_API_KEY": "sim"})
            app = Gateway(sup, admin_key=ADMIN_KEY)
            key, _ = await issue(
                sup.store, agent="support", admin=False, expires_in=None, now=time.time()
            )
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = uvicorn.Server(config(app, "127.0.0.1", 0, log_level="warning"))
            servers.append(server)
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.01)
            served.append(Served(f"http://127.0.0.1:{sock.getsockname()[1]}", key))
            ready.set()
            await serving

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(main())
        except BaseException as exc:  # handed to the test thread, which fails with it
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fuzzed-gateway")
    thread.start()
    ready.wait(30)
    if failed or not served:
        raise RuntimeError("the fuzzed gateway did not start") from (failed[0] if failed else None)
    yield served[0]
    servers[0].should_exit = True
    thread.join(30)


# The document the app serves (test_the_fuzzed_document_is_the_one_served), loaded at
# collection so each operation is a test of its own.
schema = schemathesis.openapi.from_dict(OPENAPI)
# The keys are the test's to send (both kinds, below), not the generator's to make up.
schema.config.generation.update(
    modes=list(GenerationMode), with_security_parameters=False, deterministic=True
)


def fuzzing(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # the same cases on every run: a CI failure is reproducible
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def call(case: Case, gateway: Served, key: str) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        # A made-up model name is refused before anything else (404): map the cases onto
        # the policy's models so the fuzzing reaches the pipeline.
        body["model"] = MODELS[len(body["model"]) % len(MODELS)]
    case.call_and_validate(
        base_url=gateway.url,
        headers={"Authorization": f"Bearer {key}"},
        excluded_checks=LOOSE.get(case.operation.path),
        timeout=30,
    )


def is_admin(case: Case) -> bool:
    return case.operation.path.startswith("/admin/")


@schema.parametrize()
@fuzzing(MAX_EXAMPLES)
def test_with_the_key_each_route_takes_no_answer_is_a_5xx_and_each_fits_the_document(
    case: Case, gateway: Served
) -> None:
    """The admin key on /admin/, an agent key elsewhere (the open routes take either)."""
    call(case, gateway, ADMIN_KEY if is_admin(case) else gateway.agent_key)


@schema.parametrize()
@fuzzing(MAX_EXAMPLES // 3)  # refused at the key but on open routes: fewer cases show as much
def test_with_the_other_key_no_answer_is_a_5xx_and_each_fits_the_document(
    case: Case, gateway: Served
) -> None:
    """An agent key on /admin/ (403), the admin key elsewhere (401 on model calls)."""
    call(case, gateway, gateway.agent_key if is_admin(case) else ADMIN_KEY)


def test_the_fuzzed_document_is_the_one_served(gateway: Served) -> None:
    served = httpx.get(f"{gateway.url}/openapi.json")
    assert served.json() == OPENAPI
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded)
    operations = sum(len(item) for item in OPENAPI["paths"].values())
    assert len(loaded) == operations
