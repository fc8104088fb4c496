"""The Anthropic messages wire format, as the official SDK expects it."""

from __future__ import annotations

from typing import Final

from mock_provider.wire import (
    JSON,
    BadRequest,
    ChatRequest,
    Reply,
    optional_bool,
    optional_positive_int,
    require_messages,
    require_model,
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
        )

    def completion(self, reply: Reply) -> JSON:
        return {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [{"type": "text", "text": "".join(reply.tokens)}],
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
        return [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
            sse({"type": "ping"}, "ping"),
        ]

    def stream_chunk(self, reply: Reply, text: str) -> bytes:
        return sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
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
    return "max_tokens" if reply.truncated else "end_turn"
