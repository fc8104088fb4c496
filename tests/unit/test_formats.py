"""Wire formats: classifying upstream stream events, terminators and error events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.providers.formats import KEEPALIVE, Seen, inspect, stream_error, terminator
from sidecar.streaming.sse import Event, SSEParser


def oa(body: Any) -> Event:
    return Event(body if isinstance(body, str) else json.dumps(body))


def an(kind: str, body: Any) -> Event:
    return Event(body if isinstance(body, str) else json.dumps(body), event=kind)


def chunk(**choice: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]}


# -- OpenAI ---------------------------------------------------------------------------------


def test_openai_done_is_the_terminator() -> None:
    seen = inspect("openai", oa("[DONE]"))
    assert seen == Seen(terminator=True)
    assert seen.substantive


def test_openai_finish_reason() -> None:
    seen = inspect("openai", oa(chunk(delta={}, finish_reason="stop")))
    assert seen.finished
    assert seen.substantive
    assert not seen.terminator


@pytest.mark.parametrize(
    "delta",
    [
        {"content": "Hello"},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
        {"refusal": "no"},
    ],
)
def test_openai_delta_content(delta: dict[str, Any]) -> None:
    seen = inspect("openai", oa(chunk(delta=delta, finish_reason=None)))
    assert seen.content
    assert seen.substantive
    assert not seen.finished


@pytest.mark.parametrize(
    "body",
    [
        chunk(delta={"role": "assistant", "content": ""}, finish_reason=None),
        chunk(delta={"role": "assistant"}, finish_reason=None),
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3}},
        {"id": "c1", "choices": ["odd"]},
        {"id": "c1"},
    ],
)
def test_openai_non_substantive_chunks(body: dict[str, Any]) -> None:
    seen = inspect("openai", oa(body))
    assert seen == Seen(prompt_tokens=body.get("usage", {}).get("prompt_tokens"))
    assert not seen.substantive
    assert not seen.malformed


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ({"type": "rate_limit_error", "message": "slow down"}, 429),
        ({"type": "overloaded_error", "message": "busy"}, 529),
        ({"type": "server_error", "message": "oops"}, 500),
        ({"type": "invalid_request_error", "message": "bad"}, 400),
        ({"type": "something_new", "message": "??"}, 502),
        ({"code": "rate_limit_exceeded", "message": "slow"}, 429),
        # OpenAI's own 429 shape: type "requests"/"tokens", code "rate_limit_exceeded".
        ({"type": "requests", "code": "rate_limit_exceeded", "message": "slow"}, 429),
        ({"type": "tokens", "code": "rate_limit_exceeded", "message": "slow"}, 429),
    ],
)
def test_openai_error_event(error: dict[str, Any], status: int) -> None:
    seen = inspect("openai", oa({"error": error}))
    assert seen.error_status == status
    assert seen.error_message == error["message"]
    assert not seen.malformed


def test_openai_error_without_details() -> None:
    seen = inspect("openai", oa({"error": "boom"}))
    assert seen.error_status == 500  # treated as a generic api_error
    assert seen.error_message == "upstream stream error"


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '"text"', "42", "null"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_malformed(fmt: str, data: str) -> None:
    seen = inspect(
        fmt, Event(data, event="content_block_delta" if fmt == "anthropic" else "message")
    )  # type: ignore[arg-type]
    assert seen.malformed
    assert not seen.substantive


@pytest.mark.parametrize("data", ["", " ", "\n"])
@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_an_event_without_data_is_a_keepalive_not_a_malformed_event(fmt: str, data: str) -> None:
    seen = inspect(fmt, Event(data, event="message"))  # type: ignore[arg-type]
    assert seen is KEEPALIVE
    assert not seen.malformed
    assert not seen.substantive


# -- Anthropic ------------------------------------------------------------------------------


def test_anthropic_message_stop_is_the_terminator() -> None:
    seen = inspect("anthropic", an("message_stop", {"type": "message_stop"}))
    assert seen == Seen(terminator=True)


def test_anthropic_stop_reason_finishes() -> None:
    body = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}
    assert inspect("anthropic", an("message_delta", body)) == Seen(
        finished=True, finish_reason="stop"
    )


def test_anthropic_message_delta_without_stop_reason_is_plain() -> None:
    body = {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {}}
    assert inspect("anthropic", an("message_delta", body)) == Seen()


def test_anthropic_content_block_delta_is_content() -> None:
    body = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
    seen = inspect("anthropic", an("content_block_delta", body))
    assert seen.content
    assert seen.substantive


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("ping", {"type": "ping"}),
        ("ping", ""),  # a ping is never parsed
        ("message_start", {"type": "message_start", "message": {"id": "m"}}),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ],
)
def test_anthropic_plain_events(kind: str, body: Any) -> None:
    seen = inspect("anthropic", an(kind, body))
    assert seen == Seen()
    assert not seen.substantive


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("timeout_error", 504),
        ("authentication_error", 401),
        ("brand_new_error", 502),
    ],
)
def test_anthropic_error_event(kind: str, status: int) -> None:
    body = {"type": "error", "error": {"type": kind, "message": "bad things"}}
    seen = inspect("anthropic", an("error", body))
    assert seen.error_status == status
    assert seen.error_message == "bad things"


def test_anthropic_error_by_type_only() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert inspect("anthropic", Event(json.dumps(body))).error_status == 529


def test_anthropic_done_is_not_a_terminator() -> None:
    assert inspect("anthropic", Event("[DONE]")).malformed


# -- what the sidecar writes ------------------------------------------------------------------


def parse_one(data: bytes) -> Event:
    parser = SSEParser()
    events = parser.feed(data)
    assert len(events) == 1
    assert parser.close() is None
    assert events[0].raw == data
    return events[0]


def test_terminators() -> None:
    assert terminator("openai") == b"data: [DONE]\n\n"
    assert terminator("anthropic") == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert inspect("openai", parse_one(terminator("openai"))).terminator
    assert inspect("anthropic", parse_one(terminator("anthropic"))).terminator


def test_openai_stream_error_shape() -> None:
    data = stream_error("openai", "it broke", "req-1", "stream_cut")
    event = parse_one(data)
    assert event.event == "message"  # no event: line, as the SDK expects
    body = json.loads(event.data)
    assert body == {
        "error": {
            "message": "it broke",
            "type": "server_error",
            "code": "stream_cut",
            "param": None,
        },
        "request_id": "req-1",
    }
    # What the openai SDK checks before raising APIError from a stream:
    assert isinstance(body, dict)
    assert body.get("error")
    assert isinstance(body["error"]["message"], str)
    assert inspect("openai", event).error_status == 500


def test_anthropic_stream_error_shape() -> None:
    data = stream_error("anthropic", "it broke", "req-2", "stream_stalled")
    event = parse_one(data)
    assert event.event == "error"
    body = json.loads(event.data)
    assert body == {
        "type": "error",
        "error": {"type": "api_error", "message": "it broke"},
        "request_id": "req-2",
    }
    assert inspect("anthropic", event).error_status == 500


def test_stream_error_escapes_the_message() -> None:
    message = 'quote " newline \n done'
    for fmt in ("openai", "anthropic"):
        event = parse_one(stream_error(fmt, message, "r", "k"))  # type: ignore[arg-type]
        assert json.loads(event.data)["error"]["message"] == message


def test_error_without_type_or_code_is_a_generic_api_error() -> None:
    seen = inspect("openai", oa({"error": {"message": "vague"}}))
    assert seen.error_status == 500
    assert seen.error_message == "vague"
