"""The store as the policy says to keep what it is given: with `guards.redact_storage`, a
SealedStore (what is kept for people redacted, what is used again encrypted under
CORRAL_DATA_KEY); otherwise the store itself, at no cost.

Decided when a process opens its store: a policy reload does not change it (a store
cannot start or stop sealing halfway through what it holds). The key is checked before
the store is opened, so a missing one is an error at start, not at the first approval.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from corral.guards.storage import redact_json
from corral.policy import Policy
from corral.state import Store, open_store
from corral.state.sealed import DATA_KEY_ENV, SealedStore, data_key


def sealed(store: Store, policy: Policy, env: Mapping[str, str] | None = None) -> Store:
    """`store`, wrapped in a SealedStore when the policy redacts storage (unless it is one
    already). DataKeyError if CORRAL_DATA_KEY is then missing or malformed: it is taken
    from `env` if that has it, else from the process's environment (a caller that passes
    the provider keys alone still gets the deployment's data key)."""
    if not policy.guards.redact_storage or isinstance(store, SealedStore):
        return store
    return SealedStore(store, _key(env), redact_json)


def open_policy_store(
    policy: Policy, env: Mapping[str, str] | None = None, *, migrate: bool = True
) -> Store:
    """The policy's store, opened as `sealed` says; the key is checked first. `migrate`:
    as open_store."""
    if policy.guards.redact_storage:
        key = _key(env)
        return SealedStore(open_store(policy.store, migrate=migrate), key, redact_json)
    return open_store(policy.store, migrate=migrate)


def _key(env: Mapping[str, str] | None) -> bytes:
    return data_key(env if env is not None and DATA_KEY_ENV in env else os.environ)
