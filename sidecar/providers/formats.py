"""What the sidecar must know of each wire format to relay it: stream ends, errors, usage.

Translation between the formats is a separate concern; this module only reads
a format's own events and writes its own error shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import orjson

from sidecar.streaming import sse
from sidecar.streaming.sse import Event
from sidecar.typedefs import JSON, WireFormat

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

# Status -> Anthropic error type: the sidecar's own errors and the upstream errors it
# translates for an Anthropic client (OpenAI's 503 arrives as 529, see error_status).
_ANTHROPIC_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """The Anthropic error type for *status*; others: api_error (5xx), invalid_request_error."""
    default = "api_error" if status >= 500 else "invalid_request_error"
    return _ANTHROPIC_ERROR_TYPES.get(status, default)


@dataclass(frozen=True, slots=True)
class Seen:
    """What one parsed stream event tells the relay."""

    malformed: bool = False
    terminator: bool = False  # data: [DONE] / event: message_stop
    finished: bool = False  # a finish_reason / stop_reason arrived
    error_status: int | None = None  # an error event, and the status it stands for
    error_message: str = ""
    content: bool = False  # carries answer content (the first token), a finish or the end
    text: str = ""  # the answer text this event adds
    tool: bool = False  # carries tool-call content
    finish_reason: str | None = None  # in OpenAI's words: stop, length, tool_calls, ...
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    block_index: int | None = None  # Anthropic content block of a delta

    @property
    def substantive(self) -> bool:
        """Whether the answer has really begun (ends the peek before the commit point)."""
        return self.content or self.finished or self.terminator


MALFORMED: Final = Seen(malformed=True)
PLAIN: Final = Seen()
KEEPALIVE: Final = Seen()  # an event with no data: carries nothing, never relayed
CONTENT: Final = Seen(content=True)

# OpenAI finish_reason <-> Anthropic stop_reason (answers, streams and translations).
FINISH_TO_STOP: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
STOP_TO_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def inspect(fmt: WireFormat, event: Event) -> Seen:
    """Classify one upstream stream event of format *fmt*."""
    if fmt == "openai" and event.data == "[DONE]":
        return Seen(terminator=True)
    if fmt == "anthropic" and event.event in ("ping",):
        return PLAIN
    if not event.data.strip():  # a keep-alive: an event with no data carries nothing
        return KEEPALIVE
    try:
        parsed = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return MALFORMED
    if not isinstance(parsed, dict):
        return MALFORMED
    if fmt == "anthropic":
        return _anthropic(event, parsed)
    if "error" in parsed:
        return _error(parsed.get("error"))
    return _openai(parsed)


def openai_deltas(chunk: JSON) -> Iterator[tuple[JSON, JSON]]:
    """Each choice of an OpenAI stream chunk that is an object, with its delta (or {})."""
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            delta = choice.get("delta")
            yield choice, delta if isinstance(delta, dict) else {}


def _openai(parsed: JSON) -> Seen:
    usage = parsed.get("usage")
    prompt = completion = None
    if isinstance(usage, dict):
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
    for choice, delta in openai_deltas(parsed):
        text = delta.get("content") or delta.get("refusal") or ""
        tool = bool(delta.get("tool_calls"))
        finish = choice.get("finish_reason")
        if text or tool or finish:
            return Seen(
                finished=bool(finish),
                content=bool(text or tool),
                text=str(text),
                tool=tool,
                finish_reason=str(finish) if finish else None,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
    if prompt is not None or completion is not None:
        return Seen(prompt_tokens=prompt, completion_tokens=completion)
    return PLAIN


def _anthropic(event: Event, parsed: JSON) -> Seen:
    kind = parsed.get("type")
    if event.event == "error" or kind == "error":
        return _error(parsed.get("error"))
    if kind == "message_stop":
        return Seen(terminator=True)
    if kind == "message_start":
        message = parsed.get("message")
        usage = message.get("usage") if isinstance(message, dict) else None
        if isinstance(usage, dict):
            return Seen(prompt_tokens=_int(usage.get("input_tokens")))
        return PLAIN
    if kind == "message_delta":
        delta = parsed.get("delta")
        usage = parsed.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        return Seen(
            finished=bool(stop),
            finish_reason=STOP_TO_FINISH.get(str(stop), "stop") if stop else None,
            prompt_tokens=_int(usage.get("input_tokens")),
            completion_tokens=_int(usage.get("output_tokens")),
        )
    if kind == "content_block_delta":
        delta = parsed.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        index = _int(parsed.get("index"))
        if delta.get("type") == "text_delta":
            return Seen(content=True, text=str(delta.get("text", "")), block_index=index)
        return Seen(content=True, tool=delta.get("type") == "input_json_delta", block_index=index)
    if kind == "content_block_start":
        block = parsed.get("content_block")
        if isinstance(block, dict) and block.get("type") == "tool_use":
            return Seen(tool=True, block_index=_int(parsed.get("index")))
    return PLAIN


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        return sse.encode(body)
    body = {
        "type": "error",
        "error": {"type": "api_error", "message": message},
        "request_id": request_id,
    }
    return sse.encode(body, "error")


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
