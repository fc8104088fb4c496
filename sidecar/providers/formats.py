"""What the sidecar must know of each wire format to relay it: stream ends, errors, usage.

Translation between the formats is a separate concern; this module only reads
a format's own events and writes its own error shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import orjson

from sidecar.streaming.sse import Event

WireFormat = Literal["openai", "anthropic"]

# Upstream error "type" -> the status it means (for a 200 stream whose first event is an error).
_ERROR_STATUS: Final = {
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "overloaded_error": 529,
    "api_error": 500,
    "server_error": 500,
    "timeout_error": 504,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
}


@dataclass(frozen=True, slots=True)
class Seen:
    """What one parsed stream event tells the relay."""

    malformed: bool = False
    terminator: bool = False  # data: [DONE] / event: message_stop
    finished: bool = False  # a finish_reason / stop_reason arrived
    error_status: int | None = None  # an error event, and the status it stands for
    error_message: str = ""
    content: bool = False  # carries answer content (the first token), a finish or the end

    @property
    def substantive(self) -> bool:
        """Whether the answer has really begun (ends the peek before the commit point)."""
        return self.content or self.finished or self.terminator


MALFORMED: Final = Seen(malformed=True)
PLAIN: Final = Seen()
CONTENT: Final = Seen(content=True)


def inspect(fmt: WireFormat, event: Event) -> Seen:
    """Classify one upstream stream event of format *fmt*."""
    if fmt == "openai" and event.data == "[DONE]":
        return Seen(terminator=True)
    if fmt == "anthropic" and event.event in ("ping",):
        return PLAIN
    try:
        parsed = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return MALFORMED
    if not isinstance(parsed, dict):
        return MALFORMED
    if fmt == "anthropic":
        kind = parsed.get("type")
        if event.event == "error" or kind == "error":
            return _error(parsed.get("error"))
        if kind == "message_stop":
            return Seen(terminator=True)
        if kind == "message_delta":
            delta = parsed.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                return Seen(finished=True)
        if kind == "content_block_delta":
            return CONTENT
        return PLAIN
    if "error" in parsed:
        return _error(parsed.get("error"))
    choices = parsed.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                return Seen(finished=True)
            delta = choice.get("delta")
            if isinstance(delta, dict) and (
                delta.get("content") or delta.get("tool_calls") or delta.get("refusal")
            ):
                return CONTENT
    return PLAIN


def _error(error: object) -> Seen:
    status, message = _ERROR_STATUS["api_error"], "upstream stream error"
    if isinstance(error, dict):
        # OpenAI's own 429 is {"type": "tokens" | "requests", "code": "rate_limit_exceeded"}:
        # the first of type and code that names a known error decides.
        kinds = [str(error[key]) for key in ("type", "code") if error.get(key)] or ["api_error"]
        status = next((_ERROR_STATUS[kind] for kind in kinds if kind in _ERROR_STATUS), 502)
        message = str(error.get("message") or message)
    return Seen(error_status=status, error_message=message)


def terminator(fmt: WireFormat) -> bytes:
    """The success terminator the client expects."""
    if fmt == "openai":
        return b"data: [DONE]\n\n"
    return b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def stream_error(fmt: WireFormat, message: str, request_id: str, kind: str) -> bytes:
    """A final error event in the client's format (the stream then ends without terminator)."""
    if fmt == "openai":
        body = {
            "error": {"message": message, "type": "server_error", "code": kind, "param": None},
            "request_id": request_id,
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"
    body = {
        "type": "error",
        "error": {"type": "api_error", "message": message},
        "request_id": request_id,
    }
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


_CONTEXT_MARKERS: Final = (
    b"context_length_exceeded",
    b"maximum context length",
    b"prompt is too long",
    b"context window",
)


def is_context_length_error(status: int, body: bytes) -> bool:
    """A 400 that says the prompt does not fit the model (OpenAI and Anthropic wordings)."""
    if status != 400:
        return False
    lowered = body[:4096].lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)
