"""The Anthropic messages wire format, as the official SDK expects it."""

from __future__ import annotations

from typing import Final

import orjson

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
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicFlavour:
    name = "anthropic"
    overloaded_status = 529
    default_prefill: PrefillMode = "accept"  # Anthropic continues a trailing assistant turn

    def parse_chat(self, body: object) -> ChatRequest:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        model = require_model(body)
        messages = require_messages(body)
        max_tokens = optional_positive_int(body, "max_tokens")
        if max_tokens is None:
            raise BadRequest("'max_tokens' is required", "max_tokens")
        return ChatRequest(
            model=model,
            messages=messages,
            stream=optional_bool(body, "stream"),
            include_usage=True,
            max_tokens=max_tokens,
            system=body.get("system"),
            tool=_tool(body),
        )

    def completion(self, reply: Reply) -> JSON:
        block: JSON = {"type": "text", "text": reply.text}
        if reply.tool_call is not None:
            block = _tool_use(reply, _tool_input(reply.text))
        return {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [block],
            "stop_reason": _stop_reason(reply),
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
            },
        }

    def stream_head(self, reply: Reply) -> list[bytes]:
        message: JSON = {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 1},
        }
        block: JSON = {"type": "text", "text": ""}
        if reply.tool_call is not None:
            block = _tool_use(reply, {})
        return [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            ),
            sse({"type": "ping"}, "ping"),
        ]

    def stream_chunk(self, reply: Reply, text: str) -> bytes:
        delta = (
            {"type": "text_delta", "text": text}
            if reply.tool_call is None
            else {"type": "input_json_delta", "partial_json": text}
        )
        return sse(
            {"type": "content_block_delta", "index": 0, "delta": delta},
            "content_block_delta",
        )

    def stream_malformed(self, reply: Reply) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": \n\n'

    def stream_tail(self, reply: Reply, include_usage: bool) -> list[bytes]:
        return [
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                    "usage": {"output_tokens": reply.completion_tokens},
                },
                "message_delta",
            ),
        ]

    def stream_done(self) -> bytes:
        return sse({"type": "message_stop"}, "message_stop")

    def error(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> JSON:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def stream_error(self, status: int, message: str) -> bytes:
        return sse(self.error(status, message), "error")


def _stop_reason(reply: Reply) -> str:
    if reply.truncated:
        return "max_tokens"
    return "end_turn" if reply.tool_call is None else "tool_use"


def _tool_use(reply: Reply, tool_input: JSON) -> JSON:
    assert reply.tool_call is not None
    return {
        "type": "tool_use",
        "id": reply.tool_call.id,
        "name": reply.tool_call.name,
        "input": tool_input,
    }


def _tool_input(arguments: str) -> JSON:
    """The arguments as an object; ``{}`` when max_tokens cut them short (as the SDK's
    stream accumulator, which drops an unfinished string, also ends up with)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool(body: JSON) -> str | None:
    """The tool a user turn is answered with: the first, or tool_choice's; None: none."""
    names = []
    for index, tool in enumerate(optional_tools(body)):
        where = f"tools[{index}]"
        if tool.get("type") not in (None, "custom"):
            raise BadRequest(f"{where}.type must be 'custom' or absent (no server tools)", "tools")
        names.append(require_tool_name(tool.get("name"), f"{where}.name"))
        if not isinstance(tool.get("input_schema"), dict):
            raise BadRequest(f"{where}.input_schema must be an object", "tools")
        optional_field(tool, "description", str, where)
    choice = body.get("tool_choice")
    if choice is None:
        return names[0] if names else None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or kind not in ("auto", "any", "tool", "none"):
        raise BadRequest(
            "'tool_choice' must be an object whose type is auto, any, tool or none",
            "tool_choice",
        )
    if kind == "none":
        return None
    if kind == "tool":
        name = require_tool_name(choice.get("name"), "tool_choice.name", "tool_choice")
        return named_tool(names, name)
    return names[0] if names else None
