"""Stream translation, event by event: upstream SSE in one format, client SSE in the other.

Realistic upstream event sequences are classified with ``inspect`` (as the relay
does), fed through the translators, and the output bytes parsed back with
``SSEParser`` to check what a client would read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from sidecar.providers.formats import inspect
from sidecar.providers.streams import (
    AnthropicToOpenAI,
    ClientWriter,
    OpenAIToAnthropic,
    Passthrough,
    StreamTranslator,
    make_translator,
)
from sidecar.streaming.sse import Event, SSEParser
from sidecar.typedefs import WireFormat

JSON = dict[str, Any]


# -- building upstream events ------------------------------------------------------------


def an(body: JSON) -> Event:
    """An Anthropic event, named by its type, as the parser would have produced it."""
    data = json.dumps(body)
    kind = str(body["type"])
    return Event(data, kind, raw=f"event: {kind}\ndata: {data}\n\n".encode())


def oa(body: JSON | str) -> Event:
    data = body if isinstance(body, str) else json.dumps(body)
    return Event(data, raw=f"data: {data}\n\n".encode())


def an_start(input_tokens: int = 9) -> Event:
    message = {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }  # fmt: skip
    return an({"type": "message_start", "message": message})


def an_block(index: int, block: JSON) -> Event:
    return an({"type": "content_block_start", "index": index, "content_block": block})


def an_text(index: int, text: str) -> Event:
    delta = {"type": "text_delta", "text": text}
    return an({"type": "content_block_delta", "index": index, "delta": delta})


def an_json(index: int, partial: str) -> Event:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return an({"type": "content_block_delta", "index": index, "delta": delta})


def an_stop_block(index: int) -> Event:
    return an({"type": "content_block_stop", "index": index})


def an_delta(stop: str, output_tokens: int) -> Event:
    return an(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
    )


PING = an({"type": "ping"})
AN_STOP = an({"type": "message_stop"})


def anthropic_text_stream(*pieces: str, stop: str = "end_turn") -> list[Event]:
    return [
        an_start(),
        an_block(0, {"type": "text", "text": ""}),
        PING,
        *(an_text(0, piece) for piece in pieces),
        an_stop_block(0),
        an_delta(stop, len(pieces)),
        AN_STOP,
    ]


def oa_chunk(delta: JSON, finish: str | None = None, **extra: Any) -> Event:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return oa(
        {
            "id": "chatcmpl-01",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-2024-08-06",
            "choices": [choice],
            **extra,
        }
    )


def oa_usage(prompt: int, completion: int) -> Event:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    return oa(
        {
            "id": "chatcmpl-01",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-2024-08-06",
            "choices": [],
            "usage": usage,
        }
    )


OA_DONE = oa("[DONE]")


def openai_text_stream(*pieces: str, finish: str = "stop", usage: bool = True) -> list[Event]:
    events = [oa_chunk({"role": "assistant", "content": ""})]
    events += [oa_chunk({"content": piece}) for piece in pieces]
    events.append(oa_chunk({}, finish))
    if usage:
        events.append(oa_usage(5, len(pieces)))
    return [*events, OA_DONE]


# -- running a translator and reading its output back -----------------------------------


def run(translator: StreamTranslator, fmt: WireFormat, events: Iterable[Event]) -> bytes:
    out = b""
    for event in events:
        seen = inspect(fmt, event)
        assert not seen.malformed
        out += translator.event(event, seen)
    return out


def parse(raw: bytes) -> list[Event]:
    parser = SSEParser()
    events = parser.feed(raw)
    assert not parser.pending, "the output ends mid-event"
    return events


def openai_chunks(raw: bytes) -> tuple[list[JSON], int]:
    """The JSON chunks an OpenAI client reads, and how many [DONE] it saw (must be last)."""
    events = parse(raw)
    assert all(event.event == "message" for event in events)  # no Anthropic framing
    done = [i for i, event in enumerate(events) if event.data == "[DONE]"]
    if done:
        assert done == [len(events) - 1]
    return [json.loads(e.data) for e in events if e.data != "[DONE]"], len(done)


def anthropic_events(raw: bytes) -> list[JSON]:
    events = parse(raw)
    bodies = [json.loads(event.data) for event in events]
    for event, body in zip(events, bodies, strict=True):
        assert event.event == body["type"]  # the SSE event name matches the data's type
    return bodies


def joined_text(chunks: list[JSON]) -> str:
    return "".join(
        choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]
    )


def finishes(chunks: list[JSON]) -> list[str]:
    return [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]


# -- Anthropic upstream, OpenAI client ---------------------------------------------------


def test_anthropic_text_stream_for_an_openai_client() -> None:
    raw = run(AnthropicToOpenAI("rid", False), "anthropic", anthropic_text_stream("Hel", "lo", "!"))
    chunks, done = openai_chunks(raw)
    assert done == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined_text(chunks) == "Hello!"
    assert finishes(chunks) == ["stop"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == "chatcmpl-msg_01"
        assert chunk["model"] == "claude-sonnet-4-6"  # the model that answered
        assert "usage" not in chunk  # not asked for
        assert len(chunk["choices"]) == 1


def test_usage_chunk_only_when_the_client_asked() -> None:
    raw = run(AnthropicToOpenAI("rid", True), "anthropic", anthropic_text_stream("a", "b", "c"))
    chunks, done = openai_chunks(raw)
    assert done == 1
    usage_chunks = [chunk for chunk in chunks if "usage" in chunk]
    assert usage_chunks == [chunks[-1]]  # one, last before [DONE]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reason_becomes_the_finish_chunk(stop: str, finish: str) -> None:
    raw = run(AnthropicToOpenAI("rid", False), "anthropic", anthropic_text_stream("x", stop=stop))
    assert finishes(openai_chunks(raw)[0]) == [finish]


def test_anthropic_tool_use_stream_for_an_openai_client() -> None:
    events = [
        an_start(),
        an_block(0, {"type": "text", "text": ""}),
        an_text(0, "Checking."),
        an_stop_block(0),
        an_block(1, {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}),
        an_json(1, ""),
        an_json(1, '{"q": '),
        an_json(1, '"x"}'),
        an_stop_block(1),
        an_block(2, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}),
        an_json(2, "{}"),
        an_stop_block(2),
        an_delta("tool_use", 20),
        AN_STOP,
    ]
    chunks, done = openai_chunks(run(AnthropicToOpenAI("rid", False), "anthropic", events))
    assert done == 1
    assert joined_text(chunks) == "Checking."
    calls: dict[int, JSON] = {}
    for chunk in chunks:
        for piece in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(piece["index"], {"arguments": ""})
            if "id" in piece:
                assert "id" not in call  # the id and name come once, first
                call.update(id=piece["id"], name=piece["function"]["name"], type=piece["type"])
            call["arguments"] += piece["function"]["arguments"]
    assert calls == {
        0: {"id": "toolu_1", "name": "lookup", "type": "function", "arguments": '{"q": "x"}'},
        1: {"id": "toolu_2", "name": "now", "type": "function", "arguments": "{}"},
    }
    assert finishes(chunks) == ["tool_calls"]


def test_anthropic_thinking_and_pings_produce_nothing() -> None:
    translator = AnthropicToOpenAI("rid", False)
    run(translator, "anthropic", [an_start()])
    thinking = [
        an_block(0, {"type": "thinking", "thinking": ""}),
        an({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        an({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig"}}),
        an_stop_block(0),
        PING,
    ]  # fmt: skip
    assert run(translator, "anthropic", thinking) == b""


def test_text_in_a_content_block_start_is_not_lost() -> None:
    events = [an_start(), an_block(0, {"type": "text", "text": "Hi"}), an_text(0, " there")]
    chunks, _ = openai_chunks(run(AnthropicToOpenAI("rid", False), "anthropic", events))
    assert joined_text(chunks) == "Hi there"


@pytest.mark.parametrize("include_usage", [False, True])
def test_finalise_when_the_anthropic_stream_ended_without_message_stop(
    include_usage: bool,
) -> None:
    translator = AnthropicToOpenAI("rid", include_usage)
    events = anthropic_text_stream("a", "b")[:-1]  # no message_stop
    raw = run(translator, "anthropic", events)
    assert b"[DONE]" not in raw
    chunks, done = openai_chunks(raw + translator.finalise())
    assert done == 1
    assert finishes(chunks) == ["stop"]
    assert ("usage" in chunks[-1]) is include_usage


def test_anthropic_error_event_becomes_an_openai_error_event() -> None:
    translator = AnthropicToOpenAI("req-1", True)
    error = an({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    raw = run(translator, "anthropic", [an_start(), an_text(0, "Hel"), error])
    chunks, done = openai_chunks(raw)
    assert done == 0  # no terminator after an incomplete answer
    assert chunks[-1] == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "code": "upstream_error",
            "param": None,
        },
        "request_id": "req-1",
    }


# -- OpenAI upstream, Anthropic client ---------------------------------------------------


def block_texts(bodies: list[JSON]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for body in bodies:
        if body["type"] == "content_block_delta" and body["delta"]["type"] == "text_delta":
            texts[body["index"]] = texts.get(body["index"], "") + body["delta"]["text"]
    return texts


def test_openai_text_stream_for_an_anthropic_client() -> None:
    raw = run(OpenAIToAnthropic("rid"), "openai", openai_text_stream("Hel", "lo", "!"))
    bodies = anthropic_events(raw)
    kinds = [body["type"] for body in bodies]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = bodies[0]["message"]
    assert message["id"] == "msg_chatcmpl-01"
    assert message["model"] == "gpt-4o-2024-08-06"  # the model that answered
    assert message["role"] == "assistant"
    assert message["content"] == []
    assert bodies[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert block_texts(bodies) == {0: "Hello!"}
    assert bodies[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    assert b"[DONE]" not in raw


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_becomes_the_stop_reason(finish: str, stop: str) -> None:
    raw = run(OpenAIToAnthropic("rid"), "openai", openai_text_stream("x", finish=finish))
    [delta] = [body for body in anthropic_events(raw) if body["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] == stop


def test_openai_tool_call_stream_for_an_anthropic_client() -> None:
    def call(index: int, arguments: str, **head: str) -> Event:
        piece: JSON = {"index": index, "function": {"arguments": arguments}}
        if head:
            piece.update(id=head["id"], type="function")
            piece["function"]["name"] = head["name"]
        return oa_chunk({"tool_calls": [piece]})

    events = [
        oa_chunk({"role": "assistant", "content": None}),
        oa_chunk({"content": "Checking."}),
        call(0, "", id="call_1", name="lookup"),
        call(0, '{"q": '),
        call(0, '"x"}'),
        call(1, "{}", id="call_2", name="now"),
        oa_chunk({}, "tool_calls"),
        oa_usage(5, 20),
        OA_DONE,
    ]
    bodies = anthropic_events(run(OpenAIToAnthropic("rid"), "openai", events))
    starts = [body for body in bodies if body["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    assert starts[1]["content_block"] == {
        "type": "tool_use", "id": "call_1", "name": "lookup", "input": {}
    }  # fmt: skip
    assert starts[2]["content_block"]["id"] == "call_2"
    arguments: dict[int, str] = {}
    for body in bodies:
        if body["type"] == "content_block_delta" and body["delta"]["type"] == "input_json_delta":
            arguments[body["index"]] = (
                arguments.get(body["index"], "") + body["delta"]["partial_json"]
            )
    assert arguments == {1: '{"q": "x"}', 2: "{}"}
    # Every block is closed once, before the next opens, and before the message ends.
    opened: list[int] = []
    for body in bodies:
        if body["type"] == "content_block_start":
            assert not opened
            opened.append(body["index"])
        elif body["type"] == "content_block_stop":
            assert opened == [body["index"]]
            opened.clear()
        elif body["type"] == "content_block_delta":
            assert opened == [body["index"]]
    assert not opened
    assert bodies[-2]["delta"]["stop_reason"] == "tool_use"
    assert bodies[-2]["usage"] == {"input_tokens": 5, "output_tokens": 20}
    assert [body["type"] for body in bodies].count("message_stop") == 1


def test_finalise_when_the_openai_stream_ended_without_done() -> None:
    translator = OpenAIToAnthropic("rid")
    raw = run(translator, "openai", openai_text_stream("a", "b")[:-1])  # no [DONE]
    assert b"message_stop" not in raw
    bodies = anthropic_events(raw + translator.finalise())
    assert [body["type"] for body in bodies][-2:] == ["message_delta", "message_stop"]
    assert translator.finalise() == b""  # the ending is written once


def test_openai_stream_without_usage_reports_zero_tokens() -> None:
    raw = run(OpenAIToAnthropic("rid"), "openai", openai_text_stream("a", usage=False))
    [delta] = [body for body in anthropic_events(raw) if body["type"] == "message_delta"]
    assert delta["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_openai_error_event_becomes_an_anthropic_error_event() -> None:
    error = oa({"error": {"message": "Rate limit reached", "type": "requests",
                          "code": "rate_limit_exceeded"}})  # fmt: skip
    translator = OpenAIToAnthropic("req-1")
    events = [*openai_text_stream("Hel")[:2], error]
    raw = run(translator, "openai", events)
    parsed = parse(raw)
    assert parsed[-1].event == "error"
    assert json.loads(parsed[-1].data) == {
        "type": "error",
        "error": {"type": "api_error", "message": "Rate limit reached"},
        "request_id": "req-1",
    }
    assert b"message_stop" not in raw


def test_message_start_comes_first_even_for_an_early_finish() -> None:
    translator = OpenAIToAnthropic("rid")
    bodies = anthropic_events(run(translator, "openai", [oa_chunk({}, "stop"), OA_DONE]))
    assert [body["type"] for body in bodies] == ["message_start", "message_delta", "message_stop"]


# -- same format: bytes pass untouched ---------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "events", "end"),
    [
        ("openai", openai_text_stream("a", "b"), b"data: [DONE]\n\n"),
        ("anthropic", anthropic_text_stream("a", "b"),
         b'event: message_stop\ndata: {"type":"message_stop"}\n\n'),
    ],
)  # fmt: skip
def test_passthrough_returns_the_raw_bytes(
    fmt: WireFormat, events: list[Event], end: bytes
) -> None:
    translator = Passthrough(fmt)
    assert run(translator, fmt, events) == b"".join(event.raw for event in events)
    assert translator.finalise() == end


def test_make_translator_picks_by_formats() -> None:
    assert isinstance(make_translator("openai", "openai", "r", True), Passthrough)
    assert isinstance(make_translator("anthropic", "anthropic", "r", True), Passthrough)
    assert isinstance(make_translator("anthropic", "openai", "r", True), AnthropicToOpenAI)
    assert isinstance(make_translator("openai", "anthropic", "r", True), OpenAIToAnthropic)


# -- ClientWriter: what the sidecar writes itself (continuation) -------------------------


def test_client_writer_openai_text_and_ending() -> None:
    writer = ClientWriter("openai", "rid", "claude-sonnet-4-6", True, 0)
    assert writer.text("") == b""
    raw = writer.text("Hello") + writer.text(" world") + writer.ending("length", 4, 6)
    chunks, done = openai_chunks(raw)
    assert done == 1
    assert joined_text(chunks) == "Hello world"
    assert finishes(chunks) == ["length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert {chunk["model"] for chunk in chunks} == {"claude-sonnet-4-6"}
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}


def test_client_writer_openai_ending_without_usage() -> None:
    chunks, done = openai_chunks(ClientWriter("openai", "rid", "m", False, 0).ending("stop", 4, 6))
    assert done == 1
    assert all("usage" not in chunk for chunk in chunks)
    assert finishes(chunks) == ["stop"]


def test_client_writer_anthropic_text_and_ending() -> None:
    writer = ClientWriter("anthropic", "rid", "gpt-4o", True, 2)
    raw = writer.text("Hello") + writer.ending("tool_calls", 4, 6)
    bodies = anthropic_events(raw)
    assert bodies == [
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"input_tokens": 4, "output_tokens": 6}},
        {"type": "message_stop"},
    ]  # fmt: skip
