"""The OpenAI chat-completions wire format, as the official SDK expects it."""

from __future__ import annotations

from typing import Final

from mock_provider.wire import (
    JSON,
    BadRequest,
    ChatRequest,
    PrefillMode,
    Reply,
    named_tool,
    optional_bool,
    optional_field,
    optional_positive_int,
    optional_tools,
    require_messages,
    require_model,
    require_tool_name,
    sse,
)

_ERROR_TYPES: Final = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "model_not_found"),
    408: ("timeout_error", "request_timeout"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "gateway_timeout"),
}
DONE: Final = b"data: [DONE]\n\n"


class OpenAIFlavour:
    name = "openai"
    overloaded_status = 503
    default_prefill: PrefillMode = "ignore"  # OpenAI answers a trailing assistant turn afresh

    def parse_chat(self, body: object) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise BadRequest("'stream_options' must be an object", "stream_options")
        max_tokens = optional_positive_int(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = optional_positive_int(body, "max_tokens")
        return ChatRequest(
            model=require_model(body),
            messages=require_messages(body),
            stream=optional_bool(body, "stream"),
            include_usage=bool(stream_options.get("include_usage")),
            max_tokens=max_tokens,
            tool=_tool(body),
        )

    def completion(self, reply: Reply) -> JSON:
        message: JSON = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_call is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": reply.tool_call.id,
                    "type": "function",
                    "function": {"name": reply.tool_call.name, "arguments": reply.text},
                }
            ]
        return {
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(reply),
                }
            ],
            "usage": _usage(reply),
        }

    def stream_head(self, reply: Reply) -> list[bytes]:
        call = reply.tool_call
        if call is None:
            return [sse(_chunk(reply, {"role": "assistant", "content": ""}, None))]
        opening = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        return [
            sse(_chunk(reply, {"role": "assistant", "content": None}, None)),
            sse(_chunk(reply, {"tool_calls": [opening]}, None)),
        ]

    def stream_chunk(self, reply: Reply, text: str) -> bytes:
        if reply.tool_call is None:
            return sse(_chunk(reply, {"content": text}, None))
        piece = {"index": 0, "function": {"arguments": text}}
        return sse(_chunk(reply, {"tool_calls": [piece]}, None))

    def stream_malformed(self, reply: Reply) -> bytes:
        return b'data: {"id": "' + reply.id.encode() + b'", "choices": [{"delta": \n\n'

    def stream_tail(self, reply: Reply, include_usage: bool) -> list[bytes]:
        events = [sse(_chunk(reply, {}, _finish_reason(reply)))]
        if include_usage:
            usage_chunk = _chunk(reply, {}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _usage(reply)
            events.append(sse(usage_chunk))
        return events

    def stream_done(self) -> bytes:
        return DONE

    def error(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> JSON:
        kind, default_code = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
        )
        body = {"message": message, "type": kind, "code": code or default_code, "param": param}
        return {"error": body}

    def stream_error(self, status: int, message: str) -> bytes:
        return sse(self.error(status, message))


def _finish_reason(reply: Reply) -> str:
    if reply.truncated:
        return "length"
    return "stop" if reply.tool_call is None else "tool_calls"


def _tool(body: JSON) -> str | None:
    """The function a user turn is answered with: the first, or tool_choice's; None: none."""
    names = []
    for index, tool in enumerate(optional_tools(body)):
        where = f"tools[{index}]"
        if tool.get("type") != "function":
            raise BadRequest(f"{where}.type must be 'function'", "tools")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise BadRequest(f"{where}.function must be an object", "tools")
        names.append(require_tool_name(function.get("name"), f"{where}.function.name"))
        optional_field(function, "description", str, f"{where}.function")
        optional_field(function, "parameters", dict, f"{where}.function")
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "required"):
        return names[0] if names else None
    if choice == "none":
        return None
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
    ):
        name = choice["function"].get("name")
        return named_tool(
            names, require_tool_name(name, "tool_choice.function.name", "tool_choice")
        )
    raise BadRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def _usage(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _chunk(reply: Reply, delta: JSON, finish_reason: str | None) -> JSON:
    return {
        "id": reply.id,
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
