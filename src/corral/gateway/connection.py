"""What one client connection may cost `corral serve`, enforced in uvicorn's httptools
protocol before a request reaches the app (so before authentication).

The policy's `gateway` limits, read for each new connection (a reload applies to the
connections opened after it):

- the request line and headers together over `max_header_bytes`, or more than
  `max_headers` header fields: 431 and close. httptools hands over a header only once it
  is whole, so the bytes of an unfinished head are counted as they arrive: a 50 MB header
  costs at most the limit and one read before it is refused.
- the headers not complete within `header_timeout` of the connection opening or of the
  previous answer: 408 and close (slowloris). A kept-alive connection on which nothing
  of a next request arrived is closed without an answer, as an idle one.
- the body not complete within `body_timeout` of the request being taken up (a
  Content-Length larger than what is sent): 408 and close; if the app answered without
  reading the body, the connection is only closed.
- a connection opened while `max_connections` are open: 503 as soon as it sends, and close.

Refusals are JSON that both API formats' clients read: `{"type": "error", "error":
{"type", "message"}}`. After one, the connection is closed for writing and what the
client still sends is read and dropped for up to LINGER_SECONDS: closing a socket with
unread input resets it, and the client, still writing its request, would lose the answer.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from corral.gateway.app import Gateway
from corral.policy import GatewayLimits

log = logging.getLogger("corral.gateway")

LINGER_SECONDS = 2.0


class _Wait(enum.Enum):
    """What the connection waits for from the client."""

    HEAD = "headers"
    BODY = "body"
    HANGUP = "hangup"  # refused: the end of what it is still sending


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a request that was refused."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the gateway's connection limits.

    The timeouts share one timer per connection: a phase change only sets a deadline
    (the timer is re-armed at once only for an earlier one), and the timer, when it fires
    before the deadline, re-arms for it. So a request costs a few assignments, not timers.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = config.app
        if not isinstance(app, Gateway):
            raise TypeError(f"{type(self).__name__} serves a corral Gateway, not {app!r}")
        self.limits: GatewayLimits = app.sup.policy.current.gateway
        # Read for every header: plain attributes of the connection, one lookup each.
        self._max_head_size = self.limits.max_header_bytes
        self._max_headers = self.limits.max_headers
        self._in_head = True  # the parser is between requests or inside a request's head
        self._head_bytes = 0  # bytes received while the head is unfinished
        self._head_size = 0  # header names and values of the head being parsed
        self._head_count = 0
        self._over_limit = False
        self._refused = False
        self._waiting: _Wait | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # --- connection ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Answered when it first sends, not now: a client still writing its request to a
        # closed socket is reset and may never read the answer.
        self._over_limit = len(self.connections) > self.limits.max_connections
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, with the head's bytes counted and refusals told from parse errors.
        if self._refused:
            return  # lingering: dropped
        self._unset_keepalive_if_required()
        if self._in_head:
            if self._over_limit:
                self._refuse_overloaded()
                return
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # the gateway speaks no WebSocket
        except httptools.HttpParserError:
            if not self._refused:  # not stopped by a callback: malformed
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self._in_head and self._head_bytes > self._max_head_size:
            self._refuse_head()

    # --- parser callbacks ----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_count > self._max_headers or self._head_size > self._max_head_size:
            self._refuse_head()
            raise _Stop
        # Not super(): Python 3.11 builds one on every call, and this runs for every header.
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        if self._head_size + len(self.url) > self._max_head_size:
            self._refuse_head()
            raise _Stop
        self._in_head = False
        self._waiting = None
        super().on_headers_complete()
        if not self.pipeline or self.pipeline[0][0] is not self.cycle:  # taken up, not queued
            self._expect(_Wait.BODY, self.limits.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = self._head_size = self._head_count = 0
        self._waiting = None
        self._expect_head()

    def on_response_complete(self) -> None:
        queued = self.pipeline[-1][0] if self.pipeline else None  # the one uvicorn takes up next
        super().on_response_complete()
        if self.transport.is_closing() or self._refused:
            return
        if queued is not None:
            if queued.more_body:
                self._expect(_Wait.BODY, self.limits.body_timeout)
        else:
            self._expect_head()

    # --- timeouts ------------------------------------------------------------

    def _expect_head(self) -> None:
        """Start the header timeout if no request is in hand: none parsed yet, or the last
        one answered and nothing queued."""
        cycle = self.cycle
        if self._in_head and (cycle is None or (cycle.response_complete and not self.pipeline)):
            self._expect(_Wait.HEAD, self.limits.header_timeout)

    def _expect(self, waiting: _Wait, timeout: float) -> None:
        self._waiting = waiting
        self._deadline = deadline = self.loop.time() + timeout
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        waiting = self._waiting
        if waiting is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline:
            self._arm(self._deadline)
            return
        if waiting is _Wait.HANGUP:
            self.transport.close()
        elif waiting is _Wait.BODY:
            if self.cycle.response_started:  # answered without the body; it never came
                self.transport.close()
                return
            self._drop_request_in_hand()
            message = f"the request body did not arrive within {self.limits.body_timeout:g}s"
            self._refuse(408, "request_timeout", message)
        elif self._over_limit:
            self._refuse_overloaded()
        elif self._head_bytes == 0 and self.cycle is not None:
            self.transport.close()  # kept alive, and idle since its last answer
        else:
            message = f"the request headers did not arrive within {self.limits.header_timeout:g}s"
            self._refuse(408, "request_timeout", message)

    # --- refusals ------------------------------------------------------------

    def _drop_request_in_hand(self) -> bool:
        """Tell the app its unanswered request lost its client, so it answers no one;
        whether there was one."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False
        cycle.disconnected = True
        cycle.message_event.set()
        return True

    def _refuse_head(self) -> None:
        if self._drop_request_in_hand():
            # A head sent before the last answer (pipelined): an answer now would be read
            # as the one to the request before, so the connection is only cut.
            self._refused = True
            self.transport.close()
            return
        if self._head_count > self._max_headers:
            what = f"have more than {self._max_headers} fields"
        else:
            what = f"are over the limit of {self._max_head_size} bytes"
        self._refuse(431, "request_too_large", f"the request line and headers {what}")

    def _refuse_overloaded(self) -> None:
        limit = self.limits.max_connections
        message = f"the gateway has its limit of {limit} connections open: try again later"
        self._refuse(503, "overloaded_error", message)

    def _refuse(self, status: int, kind: str, message: str) -> None:
        """Answer `status` at once and end the connection, whatever the request has sent."""
        self._refused = True
        if self.client is not None:
            log.info("%s:%d refused with %d: %s", *self.client, status, message)
        body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n",
        ]
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._expect(_Wait.HANGUP, LINGER_SECONDS)
        else:
            self.transport.close()
