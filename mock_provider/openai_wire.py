"""The OpenAI chat-completions wire format, as the official SDK expects it."""

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
        )

    def completion(self, reply: Reply) -> JSON:
        return {
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(reply.tokens),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": _finish_reason(reply),
                }
            ],
            "usage": _usage(reply),
        }

    def stream_head(self, reply: Reply) -> list[bytes]:
        return [sse(_chunk(reply, {"role": "assistant", "content": ""}, None))]

    def stream_chunk(self, reply: Reply, text: str) -> bytes:
        return sse(_chunk(reply, {"content": text}, None))

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
    return "length" if reply.truncated else "stop"


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
