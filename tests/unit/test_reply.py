"""The reply's judgement, without sockets: the peek before the commit point, JSON answers."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.pipeline.call import Answer, AttemptFailed, Call, Outgoing, Upstreaming
from sidecar.pipeline.reply import Peek, check_json, refusal, usage
from sidecar.policy.model import REDACTED, Access, Auth, Match, Route, Secret, Target, Upstream
from sidecar.policy.redaction import Scrubber
from sidecar.providers.formats import inspect
from sidecar.providers.streams import Passthrough, make_translator
from sidecar.streaming.sse import SSEParser
from sidecar.typedefs import WireFormat

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


# -- error replies: secrets redacted, the sidecar's refused credential a 502 -------------

KEYED = Upstream(
    "gw", "http://gw.invalid", "openai", Auth("Authorization", Secret("Bearer sk-gw-key"))
)
BYOK = Upstream("byok", "http://byok.invalid", "openai", client_auth="pass")
LOCAL = Upstream("local", "http://local.invalid", "openai")  # no auth, the client's key dropped
SCRUBBER = Scrubber(["Bearer sk-gw-key"])


def refused(
    upstream: Upstream, status: int, client: WireFormat = "openai", keys: bool = False
) -> AttemptFailed:
    route = Route(
        "chat",
        Match("/v1/chat/completions"),
        (Target(upstream),),
        access=Access((Secret("client-key-1"),) if keys else ()),
    )
    call = Call(
        "rid",
        "POST",
        "/v1/chat/completions",
        CIMultiDictProxy(CIMultiDict()),
        client,
        route,
        b"{}",
        {},
        "gpt-4o",
        False,
    )
    call.outgoing = Outgoing("/v1/chat/completions", b"{}", translated=client != "openai")
    body = json.dumps({"error": {"message": "bad key Bearer sk-gw-key", "type": "x"}}).encode()
    reply = Answer(status, CIMultiDict({"content-type": "application/json"}), upstream, body)
    empty: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    return refusal(call, reply, empty, SCRUBBER)


@pytest.mark.parametrize(
    ("upstream", "client", "keys", "expected"),
    [
        (KEYED, "openai", False, 502),  # the policy's key was refused
        (LOCAL, "openai", False, 502),  # no key was sent: the policy's fault still
        (BYOK, "openai", False, 401),  # the client's own key: its refusal is the client's
        (BYOK, "anthropic", False, 502),  # an Anthropic key never goes to an OpenAI upstream
        (BYOK, "openai", True, 502),  # the route's access key is the sidecar's, never sent
    ],
)
def test_a_401_is_the_clients_only_when_its_own_key_was_sent(
    upstream: Upstream, client: WireFormat, keys: bool, expected: int
) -> None:
    failed = refused(upstream, 401, client, keys)
    assert failed.failure.status == 401  # never retried nor failed over (rule 5)
    assert failed.answer is not None
    assert failed.answer.status == expected
    body = json.loads(failed.answer.body)
    if expected == 502 and client == "openai":
        assert body["error"]["code"] == "upstream_auth_failed"
        assert f"upstream {upstream.name!r}" in body["error"]["message"]
        assert failed.answer.headers["x-should-retry"] == "false"
    elif expected == 502:
        assert body["error"]["type"] == "api_error"
    assert b"sk-gw-key" not in failed.answer.body


def test_an_error_body_loses_the_policys_secrets() -> None:
    failed = refused(KEYED, 400)
    assert failed.answer is not None
    assert json.loads(failed.answer.body)["error"]["message"] == f"bad key {REDACTED}"
