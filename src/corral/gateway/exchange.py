"""One request as the operator sees it: its span, and its line in the access log.

The access log is the `corral.access` logger, one line per request (method, path,
status, agent, run, ms) at INFO: `corral serve --log-format json` makes each line a JSON
object, `--no-access-log` (or a log level above INFO) turns it off.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from dataclasses import dataclass

import orjson
from opentelemetry.trace import Span, Status, StatusCode

from corral.telemetry.tracing import traceparent

access = logging.getLogger("corral.access")
_listener: logging.handlers.QueueListener | None = None


def flush_logging() -> None:
    """Write out what is queued and stop the writer (at the end of `corral serve`)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


@dataclass(slots=True)
class Exchange:
    method: str
    path: str
    agent: str | None = None
    run_id: str | None = None
    span: Span | None = None

    def trace_header(self) -> tuple[bytes, bytes] | None:
        """The `traceparent` this request's answer returns: the gateway's own span."""
        if self.span is None:
            return None
        value = traceparent(self.span)
        return None if value is None else (b"traceparent", value)

    def ended(self, status: int, error: str | None) -> None:
        span = self.span
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        if self.run_id is not None:
            span.set_attribute("corral.run.id", self.run_id)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def log(self, status: int, seconds: float) -> None:
        if access.isEnabledFor(logging.INFO):
            access.info(
                "%s %s %d agent=%s run=%s %.1fms",
                self.method, self.path, status, self.agent or "-", self.run_id or "-",
                seconds * 1000,
                extra={"corral": {
                    "method": self.method, "path": self.path, "status": status,
                    "agent": self.agent, "run": self.run_id, "ms": round(seconds * 1000, 3),
                }},
            )  # fmt: skip


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and the fields an
    access line carries."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            **getattr(record, "corral", {"message": record.getMessage()}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure_logging(log_format: str, access_log: bool, level: str = "info") -> None:
    """How `corral serve` logs: text or JSON lines on stderr; the access log on or off.

    Records are queued and written by a thread of their own: formatting a line and
    writing it out cost the event loop ~16 µs a request (more with the writes contending),
    queueing it a few."""
    global _listener
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    if _listener is not None:
        _listener.stop()
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(lines, handler)
    _listener.start()
    queued = logging.handlers.QueueHandler(lines)
    for name in ("corral", "uvicorn", "uvicorn.error"):  # uvicorn's start-up lines too
        logger = logging.getLogger(name)
        logger.handlers[:] = [queued]
        logger.setLevel(level.upper())
        logger.propagate = False
    # On: as the level says (off above info); off: not even at debug.
    access.setLevel(logging.NOTSET if access_log else logging.CRITICAL + 1)
