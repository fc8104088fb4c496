"""The reply's judgement, without sockets: the peek before the commit point, JSON answers."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from sidecar.pipeline.call import Answer, AttemptFailed, Upstreaming
from sidecar.pipeline.reply import Peek, check_json, usage
from sidecar.policy.model import Upstream
from sidecar.providers.formats import inspect
from sidecar.providers.streams import Passthrough, make_translator
from sidecar.streaming.sse import SSEParser

ANTHROPIC = Upstream("claude", "http://claude.invalid", "anthropic")


def an_event(kind: str, **body: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **body})}\n\n".encode()


START = an_event("message_start", message={"id": "m", "usage": {"input_tokens": 3}})
TEXT = an_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
ERROR = an_event("error", error={"type": "overloaded_error", "message": "busy"})
STOP = an_event("message_stop")
FINISH = an_event("message_delta", delta={"stop_reason": "end_turn"})


def peek(*raw: bytes) -> tuple[Upstreaming, Peek, list[bool]]:
    """Feed *raw* events to a Peek; what it held and, per event, whether the stream ended."""
    stream = Upstreaming(None, SSEParser(), Passthrough("anthropic"), [])
    taking = Peek(stream)
    events = SSEParser().feed(b"".join(raw))
    return stream, taking, [taking.take(event, inspect("anthropic", event)) for event in events]


def test_opening_events_are_held_until_the_first_token() -> None:
    stream, taking, _ = peek(START, an_event("ping"))
    assert not taking.begun
    assert stream.first == [START, an_event("ping")]
    _, taking, ended = peek(START, TEXT)
    assert (taking.begun, ended) == (True, [False, False])


def test_an_error_before_the_first_token_is_a_failure() -> None:
    with pytest.raises(AttemptFailed) as failed:
        peek(START, ERROR)
    assert (failed.value.failure.status, failed.value.failure.detail) == (529, "busy")


def test_an_error_after_the_first_token_ends_the_stream_as_it_is() -> None:
    stream, _, ended = peek(START, TEXT, ERROR)
    assert ended == [False, False, True]
    assert (stream.errored, stream.terminated) == (True, False)
    assert stream.delivered.text == "Hi"


def test_a_stream_that_ends_in_the_peek_is_terminated() -> None:
    stream, _, ended = peek(
        START, TEXT, an_event("message_delta", delta={"stop_reason": "x"}), STOP
    )
    assert ended[-1]
    assert (stream.terminated, stream.finished) == (True, True)


def test_a_malformed_event_is_a_failure_even_after_the_first_token() -> None:
    with pytest.raises(AttemptFailed) as failed:
        peek(START, TEXT, b"data: {not json\n\n")
    assert (failed.value.failure.status, failed.value.failure.detail) == (502, "malformed event")


def test_an_event_that_cannot_be_translated_is_a_failure() -> None:
    stream = Upstreaming(None, SSEParser(), make_translator("anthropic", "openai", "r", False), [])
    (event,) = SSEParser().feed(an_event("message_delta", usage={"output_tokens": "lots"}))
    with pytest.raises(AttemptFailed) as failed:
        Peek(stream).take(event, inspect("anthropic", event))
    assert failed.value.failure.detail == "an event that cannot be translated"


def answer(body: bytes, content_type: str = "application/json") -> Answer:
    return Answer(200, CIMultiDict({"content-type": content_type}), ANTHROPIC, body=body)


def test_a_json_answer_is_translated_with_its_usage() -> None:
    message = {
        "id": "msg_1",
        "model": "claude",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    reply = answer(json.dumps(message).encode())
    check_json(reply, "anthropic", "openai", chat=True)
    assert reply.usage == (3, 1)
    translated = json.loads(reply.body)
    assert translated["choices"][0]["message"]["content"] == "Hi"


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"<html>login</html>", "text/html", "invalid JSON from upstream"),
        (b'"just a string"', "application/json", "chat answer is not a JSON object"),
    ],
)
def test_a_chat_answer_that_is_not_a_json_object_is_a_failure(
    body: bytes, content_type: str, detail: str
) -> None:
    with pytest.raises(AttemptFailed) as failed:
        check_json(answer(body, content_type), "anthropic", None, chat=True)
    assert (failed.value.failure.status, failed.value.failure.detail) == (502, detail)


def test_other_answers_pass_as_they_are() -> None:
    reply = answer(b"<html>not json</html>", "text/html")
    check_json(reply, "anthropic", "openai", chat=False)
    assert reply.body == b"<html>not json</html>"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"usage": {"prompt_tokens": 4, "completion_tokens": 2}}, (4, 2)),
        ({"usage": {"input_tokens": 4, "output_tokens": 2}}, (4, 2)),
        ({"usage": {"input_tokens": "4", "output_tokens": 2}}, None),
        ({"usage": None}, None),
        ({}, None),
    ],
)
def test_usage(body: dict[str, object], expected: tuple[int, int] | None) -> None:
    assert usage(body) == expected
