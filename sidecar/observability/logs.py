"""Structured logs: one JSON object per line, fixed keys, never prompts or keys."""

from __future__ import annotations

import logging
import sys
import time
from typing import BinaryIO, Final

import orjson

from sidecar.resilience.breaker import BreakerEvent, BreakerOpened

attempt_log: Final = logging.getLogger("sidecar.attempt")
breaker_log: Final = logging.getLogger("sidecar.breaker")
request_log: Final = logging.getLogger("sidecar.request")


class JSONLineFormatter(logging.Formatter):
    """Renders records whose message is a dict as one JSON line; others as {"msg": ...}."""

    def format(self, record: logging.LogRecord) -> str:
        payload = record.msg if isinstance(record.msg, dict) else {"msg": record.getMessage()}
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            **payload,
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _FastLines:
    """The hot path's lines (one per request and per attempt) written without the logging
    machinery: the same JSON shape as JSONLineFormatter, straight to stderr's bytes.
    Off (None) until ``configure()`` turns it on; tests and libraries keep ``logging``."""

    sink: BinaryIO | None = None


def _emit(logger: logging.Logger, fields: dict[str, object]) -> None:
    sink = _FastLines.sink
    if sink is not None:
        line = {"ts": round(time.time(), 3), "level": "info", "logger": logger.name, **fields}
        try:
            sink.write(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
            sink.flush()
        except (OSError, ValueError):  # stderr closed or replaced: fall back to logging
            _FastLines.sink = None
        else:
            return
    if logger.isEnabledFor(logging.INFO):
        logger.info(fields)


def log_attempt(fields: dict[str, object]) -> None:
    """request_id, route, upstream, model, attempt, status, error, latency_ms, backoff_ms."""
    _emit(attempt_log, fields)


def log_request(fields: dict[str, object]) -> None:
    """request_id, route, outcome, status, attempts, upstream, latency_ms."""
    _emit(request_log, fields)


def log_breaker_event(event: BreakerEvent) -> None:
    """Subscribed to every breaker: one line per state change."""
    fields: dict[str, object] = {"event": type(event).__name__, "breaker": event.key}
    if isinstance(event, BreakerOpened):
        fields["reason"] = event.reason
        breaker_log.warning(fields)
    else:
        breaker_log.info(fields)


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for everything the sidecar logs."""
    _FastLines.sink = sys.stderr.buffer if level <= logging.INFO else None
    handler = logging.StreamHandler()
    handler.setFormatter(JSONLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # Caller, thread and process lookups cost more than the line itself on the hot path.
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
