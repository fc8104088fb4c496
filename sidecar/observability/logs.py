"""Structured logs: one object per line on stdout, fixed keys, never prompts or keys.

``json`` (the default) is for machines; ``text`` renders the same fields as
``key=value`` pairs for a human following a demo.

Field values may come from the client (a path, a model name, a breaker key
holding one): every field is bounded (``fields.clip``) and, in text lines,
escaped (``fields.text_value``), so a record is one line of bounded size in
both formats whatever a client sends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import logging
import sys
import time
from typing import BinaryIO, Final

import orjson
from aiohttp.http_exceptions import HttpProcessingError

from sidecar.observability.fields import MAX_FIELD_LENGTH as MAX_FIELD_LENGTH  # re-exported
from sidecar.observability.fields import clip, text_lines, text_value
from sidecar.resilience.breaker import BreakerEvent, BreakerOpened

attempt_log: Final = logging.getLogger("sidecar.attempt")
breaker_log: Final = logging.getLogger("sidecar.breaker")
request_log: Final = logging.getLogger("sidecar.request")
refusal_log: Final = logging.getLogger("sidecar.refusal")


class JSONLineFormatter(logging.Formatter):
    """Renders records whose message is a dict as one JSON line; others as {"msg": ...}."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            **_payload(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextLineFormatter(logging.Formatter):
    """``HH:MM:SS.mmm level logger key=value ...`` — the JSON fields, for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        millis = int(record.created * 1000) % 1000
        line = f"{stamp}.{millis:03d} {record.levelname.lower():7} {record.name:16} "
        payload = _payload(record)
        listed = payload.get("errors")
        if isinstance(listed, list) and len(listed) > 1:  # a refused policy: one per line
            payload = {**payload, "errors": len(listed)}
        fields = payload.items()
        line += " ".join(f"{text_value(key)}={text_value(value)}" for key, value in fields)
        if isinstance(listed, list) and len(listed) > 1:
            line += text_lines("\n".join(str(error) for error in listed))  # indented
        if record.exc_info and record.exc_info[0] is not None:
            line += text_lines(self.formatException(record.exc_info))  # indented: no record
        return line


def _payload(record: logging.LogRecord) -> dict[str, object]:
    """The record's fields, bounded: its dict, or its message as ``msg``."""
    if isinstance(record.msg, dict):
        return clip(record.msg)
    return clip({"msg": record.getMessage()})


class _FastLines:
    """The hot path's lines (one per request and per attempt) written without the logging
    machinery: the same JSON shape as JSONLineFormatter, straight to stdout's bytes.
    Off (None) until ``configure()`` turns it on; tests and libraries keep ``logging``."""

    sink: BinaryIO | None = None
    flush_pending = False


FLUSH_AFTER = 0.05  # seconds: lines reach stdout at most this late, in one write under load


def _flush() -> None:
    _FastLines.flush_pending = False
    sink = _FastLines.sink
    if sink is not None:
        try:
            sink.flush()
        except (OSError, ValueError):
            _FastLines.sink = None


def _emit(logger: logging.Logger, fields: dict[str, object]) -> None:
    fields = clip(fields)
    sink = _FastLines.sink
    if sink is not None:
        line = {"ts": round(time.time(), 3), "level": "info", "logger": logger.name, **fields}
        try:
            sink.write(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
            if not _FastLines.flush_pending:
                _FastLines.flush_pending = True
                try:
                    asyncio.get_running_loop().call_later(FLUSH_AFTER, _flush)
                except RuntimeError:  # no loop (a script): write through
                    _flush()
        except (OSError, ValueError):  # stdout closed or replaced: fall back to logging
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


def log_refusal(fields: dict[str, object]) -> None:
    """request_id, method, path, route, status, error, remote, latency_ms (rate-limited by
    ``observability.refusals``)."""
    _emit(refusal_log, fields)


def log_refusals_suppressed(count: int, seconds: float) -> None:
    """The summary of refusal lines the rate limit held back."""
    refusal_log.warning(
        {
            "event": "refusals_suppressed",
            "suppressed": count,
            "seconds": round(seconds, 1),
            "msg": f"suppressed {count} refusal lines in the last {seconds:.1f} s",
        }
    )


def log_breaker_event(event: BreakerEvent) -> None:
    """Subscribed to every breaker: one line per state change."""
    fields: dict[str, object] = {"event": type(event).__name__, "breaker": event.key}
    if isinstance(event, BreakerOpened):
        fields["reason"] = event.reason
        breaker_log.warning(fields)
    else:
        breaker_log.info(fields)


def _stdout() -> tuple[BinaryIO, io.TextIOWrapper | None]:
    """A buffered binary stdout, and a text stream over it when one had to be made.

    Under ``PYTHONUNBUFFERED=1`` (set in most container images, ours included)
    ``sys.stdout.buffer`` is the raw file: one write syscall per line, which on
    the hot path costs more than rendering the line. The sidecar then writes
    through its own buffer over the same descriptor, flushed within
    ``FLUSH_AFTER`` by the fast path, after every ``logging`` record (so the two
    kinds of line keep their order) and at exit.
    """
    binary = sys.stdout.buffer
    if not isinstance(binary, io.RawIOBase):  # already buffered
        return binary, None
    raw = io.FileIO(sys.stdout.fileno(), "wb", closefd=False)
    buffered = io.BufferedWriter(raw, buffer_size=64 * 1024)
    atexit.register(_flush_quietly, buffered)
    return buffered, io.TextIOWrapper(buffered, encoding="utf-8", errors="replace")


def _flush_quietly(stream: BinaryIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.flush()


class QuietBadRequests(logging.Filter):
    """aiohttp logs every malformed request (bad header, head too large, ...) at ERROR
    with a traceback, before any handler runs. That is the client's fault, answered
    with a 400, and a flood of such requests must not flood the log: one WARNING
    line without traceback instead, naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # Only the problem's name: aiohttp's message quotes the offending bytes, which
            # may hold a client's credential.
            text = str(getattr(exc, "message", "") or exc)
            message = text.splitlines()[0].split(":", 1)[0][:120] if text else ""
            record.msg = {
                "event": "bad_http_request",
                "detail": f"{type(exc).__name__}: {message}",
                "answered": getattr(exc, "code", 400),
            }
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(level: int = logging.INFO, fmt: str = "json") -> None:
    """Lines on stdout for everything the sidecar logs: ``json`` or ``text``."""
    fast = fmt == "json" and level <= logging.INFO
    binary, text = _stdout()
    _FastLines.sink = binary if fast else None
    handler = logging.StreamHandler(text if text is not None else sys.stdout)
    handler.setFormatter(JSONLineFormatter() if fmt == "json" else TextLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("watchfiles").setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in server_log.filters):
        server_log.addFilter(QuietBadRequests())
    # Caller, thread and process lookups cost more than the line itself on the hot path.
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
