"""What a gateway request that failed answers: the status, error type, code and headers
of each kind of failure (a halt, a rate limit, an upstream down, the store or the
counters out of reach, a fault of the gateway's own)."""

from __future__ import annotations

import logging
import math

from corral.calls import ApprovalPending, Halted, UpstreamUnavailable
from corral.gates.ratelimit import RateLimited
from corral.gateway.wire import ClientError
from corral.providers.base import FailureKind, ProviderError
from corral.state import ConstraintError, CountersUnavailable, NotFoundError, StoreError

log = logging.getLogger("corral.gateway")
Headers = list[tuple[bytes, bytes]]
_JSON = (b"content-type", b"application/json")

# Upstream failures as HTTP statuses: a bad gateway unless the upstream timed out (504)
# or is refusing load for now (503, which clients retry later).
_UPSTREAM_STATUS = {
    FailureKind.TIMEOUT: 504,
    FailureKind.RATE_LIMITED: 503,
    FailureKind.UNAVAILABLE: 502,
    FailureKind.AUTH: 502,  # our key for the upstream, not the client's: a gateway fault
    FailureKind.BAD_REQUEST: 400,
    FailureKind.CONTEXT_LENGTH: 400,
    FailureKind.CONTENT_POLICY: 400,
}


class Failure(ClientError):
    """Any answer other than 200: a client's mistake, or what went wrong for it, with the
    code, run and retry time its error body and headers carry."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        run_id: str | None = None,
        retry_after: float | None = None,
        allow: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, type, message, param=param)
        self.code = code
        self.run_id = run_id
        self.retry_after = retry_after
        self.allow = allow  # a 405's Allow header
        self.request_id = request_id  # a 500's, as logged and audited


def failure_of(exc: Exception, run_id: str | None) -> Failure:
    """What a request that raised `exc` answers. Halts are 403, so no client retries them."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, ClientError):  # a door's or the session's: the run is known here
        return Failure(exc.status, exc.type, exc.message, param=exc.param, run_id=run_id)
    if isinstance(exc, Halted):
        return Failure(403, "corral_halt", exc.message, code=exc.reason.value, run_id=exc.run_id)
    if isinstance(exc, ApprovalPending):
        return Failure(
            429,
            "approval_pending",
            f"{exc}: the answer waits for a human (corral approvals ls)",
            code="approval_pending",
            run_id=run_id,
            retry_after=exc.retry_after,
        )
    if isinstance(exc, RateLimited):
        if exc.retry_after is None:  # no wait would ever serve it: not worth a retry
            return Failure(400, "invalid_request_error", str(exc), code="request_too_large")
        return Failure(
            429,
            "rate_limit_error",
            str(exc),
            code="rate_limited",
            run_id=run_id,
            retry_after=exc.retry_after,
        )
    if isinstance(exc, UpstreamUnavailable):
        tried = exc.detail.get("tried") or []
        timeouts = bool(tried) and all(t.get("failure") == "timeout" for t in tried)
        status = {"circuit_open": 503, "context_overflow": 400}.get(exc.reason.value, 502)
        return Failure(
            504 if timeouts else status,
            "upstream_error",
            exc.message,
            code=exc.reason.value,
            run_id=run_id,
        )
    if isinstance(exc, ProviderError):
        status = _UPSTREAM_STATUS.get(exc.kind, 502)
        kind = "invalid_request_error" if status == 400 else "upstream_error"
        return Failure(
            status,
            kind,
            f"upstream: {exc.message}",
            code=exc.kind.value,
            run_id=run_id,
            retry_after=exc.retry_after,
        )
    # The store failing (closed, locked past its timeout, disk full), not the request:
    # worth a retry later. Its refusals of a write (constraint, not found) are bugs: 500.
    if isinstance(exc, StoreError) and not isinstance(exc, ConstraintError | NotFoundError):
        log.error("gateway request failed on the store: %s", exc)
        return Failure(
            503, "store_unavailable", f"the store failed: {exc}",
            code="store_unavailable", run_id=run_id, retry_after=1,
        )  # fmt: skip
    # Shared counters out of reach: no cap can be checked, so nothing is admitted (the
    # call never went upstream). Worth a retry once they are back.
    if isinstance(exc, CountersUnavailable):
        log.error("gateway request refused, the counters are unavailable: %s", exc)
        return Failure(
            503, "counters_unavailable", f"the counters failed, nothing was sent: {exc}",
            code="counters_unavailable", run_id=run_id, retry_after=1,
        )  # fmt: skip
    # A fault of the gateway: Gateway._failed logs and audits it under a request id.
    return Failure(500, "internal_error", f"{type(exc).__name__}: {exc}", run_id=run_id)


def failure_headers(failure: Failure) -> Headers:
    headers = [_JSON]
    if failure.run_id is not None:
        headers.append((b"x-corral-run", failure.run_id.encode()))
    if failure.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(failure.retry_after))).encode()))
    if failure.allow is not None:
        headers.append((b"allow", failure.allow.encode()))
    if failure.request_id is not None:
        headers.append((b"x-corral-request-id", failure.request_id.encode()))
    return headers
