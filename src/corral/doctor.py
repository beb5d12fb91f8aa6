"""`corral doctor`: does the policy load, does the store open, do the providers answer."""

from __future__ import annotations

import os
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path

import httpx

from corral.policy import Policy, PolicyError, Provider, load_policy
from corral.state import open_counters, open_store


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(path: Path, *, probe_timeout: float = 3.0) -> list[Check]:
    checks: list[Check] = []
    try:
        policy = load_policy(path)
        checks.append(
            Check(
                "policy",
                True,
                f"{path}: {_count(policy.agents, 'agent')}, {_count(policy.models, 'model')}, "
                f"{_count(policy.routes, 'route')}",
            )
        )
    except PolicyError as exc:
        checks.append(Check("policy", False, str(exc)))
        try:  # a missing key should not hide whether the store and providers are fine
            policy = load_policy(path, require_keys=False)
        except PolicyError:
            return checks
    checks.append(await _check_store(policy))
    checks.append(await _check_counters(policy))
    used = {model.provider for model in policy.models.values()}
    async with httpx.AsyncClient(timeout=probe_timeout) as client:
        for name in sorted(used):
            checks.append(await _check_provider(client, name, policy.providers[name]))
    return checks


def _count(items: Sized, noun: str) -> str:
    n = len(items)
    return f"{n} {noun}{'' if n == 1 else 's'}"


async def _check_store(policy: Policy) -> Check:
    """The store opens, is migrated and answers a read (a server's store connects late)."""
    try:
        store = open_store(policy.store)
    except Exception as exc:  # any failure to open is the finding itself
        return Check("store", False, f"{policy.store}: {exc}")
    try:
        await store.list_runs(limit=1)
    except Exception as exc:  # unreachable, refused, unmigrated: the finding itself
        return Check("store", False, f"{policy.store}: {exc}")
    finally:
        await store.close()
    return Check("store", True, f"{policy.store} opens, is migrated and answers")


async def _check_counters(policy: Policy) -> Check:
    """The counters answer a read (shared counters connect at their first operation)."""
    try:
        counters = open_counters(policy.counters)
        try:
            await counters.get_many(["doctor:probe"])
        finally:
            await counters.close()
    except Exception as exc:  # any failure to connect is the finding itself
        return Check("counters", False, f"{policy.counters}: {exc}")
    return Check("counters", True, f"{policy.counters} answers")


async def _check_provider(client: httpx.AsyncClient, name: str, provider: Provider) -> Check:
    key = os.environ.get(provider.api_key_env or "", "")
    base = provider.base_url.rstrip("/")
    if provider.kind == "anthropic":
        url = f"{base}/v1/models"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = f"{base}/models"
        headers = {"Authorization": f"Bearer {key}"}
    label = f"provider {name}"
    try:
        response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Check(label, False, f"{url} unreachable: {type(exc).__name__} {exc}".strip())
    if response.status_code in (401, 403):
        return Check(label, False, f"{url} refused the API key (HTTP {response.status_code})")
    if response.status_code >= 400:
        return Check(label, False, f"{url} answered HTTP {response.status_code}")
    return Check(label, True, f"{url} answered HTTP {response.status_code}")
