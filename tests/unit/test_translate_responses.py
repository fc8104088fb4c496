"""Response and error translation, OpenAI ⇄ Anthropic (non-streaming bodies)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.errors import SidecarError, error_body
from sidecar.providers.responses import (
    anthropic_message_to_openai,
    error_status,
    openai_completion_to_anthropic,
    translate_error,
)


def message(*content: dict[str, Any], stop: str | None = "end_turn", **extra: Any) -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
        **extra,
    }


def completion(reply: dict[str, Any], finish: str | None = "stop", **extra: Any) -> dict:
    return {
        "id": "chatcmpl-01",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        **extra,
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


# -- Anthropic message -> OpenAI completion ---------------------------------------------


def test_anthropic_text_answer() -> None:
    out = anthropic_message_to_openai(message(text("Hello, "), text("world")))
    assert out["object"] == "chat.completion"
    assert out["id"] == "chatcmpl-msg_01"
    assert out["model"] == "claude-sonnet-4-6"  # the model that answered
    assert isinstance(out["created"], int)
    [choice] = out["choices"]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": "Hello, world", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def test_anthropic_tool_use_answer() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
    out = anthropic_message_to_openai(message(text("checking"), use, stop="tool_use"))
    reply = out["choices"][0]["message"]
    assert reply["content"] == "checking"
    [call] = reply["tool_calls"]
    assert call["id"] == "toolu_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"q": "x"}
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_tool_use_only_has_no_content() -> None:
    use = {"type": "tool_use", "id": "t", "name": "now", "input": {}}
    reply = anthropic_message_to_openai(message(use, stop="tool_use"))["choices"][0]["message"]
    assert reply["content"] is None
    assert reply["tool_calls"][0]["function"]["arguments"] == "{}"


def test_anthropic_thinking_blocks_are_left_out() -> None:
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    reply = anthropic_message_to_openai(message(thinking, text("42")))["choices"][0]["message"]
    assert reply["content"] == "42"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_becomes_finish_reason(stop: str | None, finish: str) -> None:
    out = anthropic_message_to_openai(message(text("x"), stop=stop))
    assert out["choices"][0]["finish_reason"] == finish


def test_anthropic_answer_without_usage_counts_zero() -> None:
    body = message(text("x"))
    del body["usage"]
    assert anthropic_message_to_openai(body)["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


# -- OpenAI completion -> Anthropic message ---------------------------------------------


def test_openai_text_answer() -> None:
    out = openai_completion_to_anthropic(completion({"role": "assistant", "content": "Hello"}))
    assert out == {
        "id": "msg_chatcmpl-01",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-2024-08-06",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 7},
    }


def test_openai_tool_calls_answer() -> None:
    calls = [
        {"id": "call_1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{oops"}},
    ]  # fmt: skip
    reply = {"role": "assistant", "content": None, "tool_calls": calls}
    out = openai_completion_to_anthropic(completion(reply, finish="tool_calls"))
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "x"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},  # invalid JSON: {}
    ]
    assert out["stop_reason"] == "tool_use"


def test_openai_text_and_tool_call_answer() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    reply = {"role": "assistant", "content": "checking", "tool_calls": [call]}
    out = openai_completion_to_anthropic(completion(reply, finish="tool_calls"))
    assert [block["type"] for block in out["content"]] == ["text", "tool_use"]


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_finish_reason_becomes_stop_reason(finish: str | None, stop: str) -> None:
    out = openai_completion_to_anthropic(completion({"content": "x"}, finish=finish))
    assert out["stop_reason"] == stop


def test_openai_answer_without_choices_or_usage() -> None:
    out = openai_completion_to_anthropic({"id": "x", "model": "m", "choices": []})
    assert out["content"] == []
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0}


# -- errors ------------------------------------------------------------------------------


def anthropic_error(kind: str, text: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": text}}).encode()


def openai_error(kind: str, text: str, code: str | None = None) -> bytes:
    body = {"error": {"message": text, "type": kind, "param": None, "code": code}}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "kind", "client_status", "client_type", "client_code"),
    [
        (529, "overloaded_error", 503, "server_error", "overloaded"),
        (429, "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        (400, "invalid_request_error", 400, "invalid_request_error", "invalid_request"),
        (500, "api_error", 500, "server_error", "internal_error"),
        (401, "authentication_error", 401, "authentication_error", "invalid_api_key"),
        (502, "api_error", 502, "server_error", "502"),
    ],
)
def test_anthropic_error_for_an_openai_client(
    status: int, kind: str, client_status: int, client_type: str, client_code: str
) -> None:
    body = translate_error("anthropic", "openai", status, anthropic_error(kind, "the reason"))
    assert error_status("anthropic", "openai", status) == client_status
    assert json.loads(body) == {
        "error": {"message": "the reason", "type": client_type, "code": client_code, "param": None}
    }


@pytest.mark.parametrize(
    ("status", "client_status", "client_type"),
    [
        (503, 529, "overloaded_error"),
        (429, 429, "rate_limit_error"),
        (400, 400, "invalid_request_error"),
        (500, 500, "api_error"),
        (404, 404, "not_found_error"),
        (504, 504, "timeout_error"),
        (502, 502, "api_error"),
        (422, 422, "invalid_request_error"),
    ],
)
def test_openai_error_for_an_anthropic_client(
    status: int, client_status: int, client_type: str
) -> None:
    body = translate_error("openai", "anthropic", status, openai_error("x", "the reason"))
    assert error_status("openai", "anthropic", status) == client_status
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": client_type, "message": "the reason"},
    }


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504])
def test_one_anthropic_error_type_per_status(status: int) -> None:
    """An Anthropic client reads one type per status, whether the sidecar or an upstream failed."""
    own = SidecarError("the reason")
    own.status = status
    translated = translate_error("openai", "anthropic", status, openai_error("x", "the reason"))
    own_type = json.loads(error_body(own, "anthropic", "req-1"))["error"]["type"]
    assert json.loads(translated)["error"]["type"] == own_type


@pytest.mark.parametrize(
    ("upstream", "client", "status"),
    [("anthropic", "openai", 503), ("openai", "anthropic", 529), ("openai", "openai", 503)],
)
def test_other_statuses_are_kept(upstream: Any, client: Any, status: int) -> None:
    assert error_status(upstream, client, status) == status


def test_anthropic_prompt_too_long_is_context_length_exceeded_for_openai() -> None:
    raw = anthropic_error("invalid_request_error", "prompt is too long: 250000 tokens > 200000")
    error = json.loads(translate_error("anthropic", "openai", 400, raw))["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "prompt is too long: 250000 tokens > 200000"


def test_openai_context_length_error_keeps_its_message_for_anthropic() -> None:
    text = "This model's maximum context length is 128000 tokens."
    raw = openai_error("invalid_request_error", text, "context_length_exceeded")
    error = json.loads(translate_error("openai", "anthropic", 400, raw))["error"]
    assert error == {"type": "invalid_request_error", "message": text}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"upstream connect error", "upstream connect error"),
        (b"", "upstream error 502"),
        (b'{"detail": "no error object"}', "upstream error 502"),
        (b"<html>" + b"x" * 1000, "<html>" + "x" * 494),
    ],
    ids=["text", "empty", "json-without-error", "long-html"],
)  # fmt: skip
def test_bodies_without_a_provider_message(raw: bytes, expected: str) -> None:
    for upstream, client in (("openai", "anthropic"), ("anthropic", "openai")):
        body = json.loads(translate_error(upstream, client, 502, raw))  # type: ignore[arg-type]
        assert body["error"]["message"] == expected
