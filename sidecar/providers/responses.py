"""Response translation (non-streaming bodies and error bodies), both directions."""

from __future__ import annotations

import time
from typing import Final

import orjson

from sidecar.providers.formats import FINISH_TO_STOP, STOP_TO_FINISH, anthropic_error_type
from sidecar.typedefs import JSON, WireFormat

# status -> (OpenAI type, code)
_OPENAI_ERRORS: Final = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "overloaded"),
    504: ("timeout_error", "timeout"),
}


def anthropic_message_to_openai(message: JSON) -> JSON:
    """A non-streaming Anthropic message as an OpenAI chat completion."""
    texts: list[str] = []
    calls: list[JSON] = []
    for block in _list(message.get("content")):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: JSON = {"role": "assistant", "content": "".join(texts) or None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    stop = str(message.get("stop_reason") or "end_turn")
    return {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(stop, "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def openai_completion_to_anthropic(completion: JSON) -> JSON:
    """A non-streaming OpenAI chat completion as an Anthropic message."""
    choices = _list(completion.get("choices"))
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    content: list[JSON] = []
    if message.get("content"):
        content.append({"type": "text", "text": str(message["content"])})
    for call in _list(message.get("tool_calls")):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _json_object(function.get("arguments")),
            }
        )
    usage = completion.get("usage") if isinstance(completion.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    finish = str(choice.get("finish_reason") or "stop")
    return {
        "id": f"msg_{completion.get('id', '')}",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(finish, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def error_status(upstream: WireFormat, client: WireFormat, status: int) -> int:
    """Anthropic's 529 overloaded is OpenAI's 503, and back."""
    if upstream == "anthropic" and client == "openai" and status == 529:
        return 503
    if upstream == "openai" and client == "anthropic" and status == 503:
        return 529
    return status


def translate_error(upstream: WireFormat, client: WireFormat, status: int, body: bytes) -> bytes:
    """An upstream error body in the client's format, keeping the provider's message."""
    message = _error_message(body) or f"upstream error {status}"
    status = error_status(upstream, client, status)  # typed as the status the client gets
    if client == "openai":
        kind, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
        )
        if b"context_length" in body or b"prompt is too long" in body:
            code = "context_length_exceeded"
        return orjson.dumps(
            {"error": {"message": message, "type": kind, "code": code, "param": None}}
        )
    kind = anthropic_error_type(status)
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _error_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", errors="replace").strip()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return ""


def _json_object(arguments: object) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str | bytes) else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
